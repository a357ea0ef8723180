"""`/healthz` and `/readyz` on healthProbePort, as the Go controller serves them.

`/healthz` runs every liveness check (report directory present, each server up,
the leader's pod watch alive); `/readyz` runs them too plus the readiness checks
(the runtime passes "history loaded"). Readiness never means leadership: every
healthy replica is Ready, or a Deployment with two replicas could never roll. A
failing check answers 500 with the name of each failing check, like
controller-runtime's healthz handler, so `kubectl describe` shows why.

Deliberately not here: the checks themselves beyond the report directory one; the
controller registers what it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

Check = Callable[[], bool]

CHECKS: web.AppKey[dict[str, Check]] = web.AppKey("checks")
READINESS: web.AppKey[dict[str, Check]] = web.AppKey("readiness")


def report_directory_check(root: Path | str) -> Check:
    """True while the report directory exists (a stat; fast enough for a probe)."""
    path = os.fspath(root)
    return lambda: os.path.isdir(path)


def runner_check(runner: web.AppRunner) -> Check:
    """True while an aiohttp runner has at least one site listening."""

    return lambda: bool(runner.addresses)


def _failures(checks: Mapping[str, Check]) -> list[str]:
    failed = []
    for name, check in checks.items():
        try:
            ok = check()
        except Exception:
            ok = False
        if not ok:
            failed.append(name)
    return failed


def _answer(failed: list[str], checks: Mapping[str, Check]) -> web.Response:
    lines = [f"[{'-' if n in failed else '+'}]{n} {'failed' if n in failed else 'ok'}"
             for n in checks]  # fmt: skip
    if failed:
        return web.Response(status=500, text="\n".join([*lines, "check failed"]) + "\n")
    return web.Response(text="ok\n")


async def healthz(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    return _answer(_failures(checks), checks)


async def readyz(request: web.Request) -> web.Response:
    liveness: dict[str, Check] = request.app[CHECKS]
    readiness: dict[str, Check] = request.app[READINESS]
    checks = {**liveness, **readiness}
    return _answer(_failures(checks), checks)


def make_health_app(
    checks: Mapping[str, Check], readiness: Mapping[str, Check] | None = None
) -> web.Application:
    """`checks` are liveness checks by name; `readiness` the extra ones of /readyz.

    Checks may be added later with `app[CHECKS][name] = check` (e.g. once a server runs).
    """
    app = web.Application()
    app[CHECKS] = dict(checks)
    app[READINESS] = dict(readiness or {})
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
