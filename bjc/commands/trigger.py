"""`bjc trigger`: start an execution now, from a shell, a CI job or a CronJob.

It does what `kubectl annotate` would: sets the controller ConfigMap's
`batch-job-controller.bakito.github.com/trigger` annotation to a new value (who
may trigger is who may patch the ConfigMap), then watches the ConfigMap until the
controller answers that value and prints the execution id it started.

Exit codes: 0 started (the id is printed on stdout), 1 error (ConfigMap not found,
not allowed, API unreachable, trigger replaced by another one), 2 usage, 3 skipped
by the controller (the reason is printed: concurrencyPolicy Forbid, suspended, no
free execution id, replaced before it started), 4 no answer within `--timeout` (the
trigger stays set and runs once a leader sees it), 5 the execution could not start
(the reason is printed: its report directory is not writable).

Deliberately not here: anything the controller decides. This is a client of the
annotation protocol in `bjc.engine.configwatch`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import secrets
import sys
from typing import TextIO

import aiohttp

from bjc.engine.configwatch import (
    FAILED_PREFIX,
    REPLACED_ANSWER,
    SKIPPED_PREFIX,
    TRIGGER_ANNOTATION,
    TRIGGERED_ANNOTATION,
    TRIGGERED_EXECUTION_ANNOTATION,
    config_map_path,
    observe,
)
from bjc.kube.client import ApiError, Credentials, KubeClient, KubeConfigError, load_credentials
from bjc.terminal import visible

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_NO_ANSWER, EXIT_FAILED = 0, 1, 2, 3, 4, 5


def new_trigger_value() -> str:
    """A value never used before: UTC time to the microsecond plus a random suffix."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{now}-{secrets.token_hex(3)}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bjc trigger",
        description="Start an execution now by annotating the controller's ConfigMap; "
        "prints the execution id the controller started.",
    )
    p.add_argument(
        "configmap",
        nargs="?",
        default=os.environ.get("CONFIG_MAP_NAME") or "bjc",
        help="the controller's ConfigMap (default: $CONFIG_MAP_NAME, else 'bjc')",
    )
    p.add_argument(
        "-n", "--namespace", help="its namespace (default: the kubeconfig context's, else default)"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the answer (default 60)"
    )
    p.add_argument(
        "--no-wait", action="store_true", help="set the annotation and print its value, no wait"
    )
    return p


async def trigger(
    creds: Credentials,
    namespace: str,
    name: str,
    *,
    wait_seconds: float,
    wait: bool = True,
    out: TextIO,
    err: TextIO,
) -> int:
    value = new_trigger_value()
    async with KubeClient(creds) as kube:
        try:
            await kube.patch(
                config_map_path(namespace, name),
                {"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}},
            )
        except ApiError as e:
            what = {404: "not found", 403: "not allowed to patch it"}.get(e.status, visible(str(e)))
            print(f"bjc trigger: ConfigMap {namespace}/{name}: {what}", file=err)
            return EXIT_ERROR
        except (aiohttp.ClientError, OSError) as e:
            print(
                f"bjc trigger: cannot reach the Kubernetes API at {kube.server}: {visible(str(e))}",
                file=err,
            )
            return EXIT_ERROR
        if not wait:
            print(value, file=out)
            return EXIT_OK
        try:
            async with asyncio.timeout(wait_seconds):
                return await _answer(kube, namespace, name, value, out, err)
        except TimeoutError:
            print(
                f"bjc trigger: no controller answered trigger {value} within {wait_seconds:g}s; "
                "it stays set and starts an execution once a leading controller sees it",
                file=err,
            )
            return EXIT_NO_ANSWER


async def _answer(
    kube: KubeClient, namespace: str, name: str, value: str, out: TextIO, err: TextIO
) -> int:
    async with contextlib.aclosing(observe(kube, namespace, name)) as states:
        async for config_map in states:
            if config_map is None:
                print(f"bjc trigger: ConfigMap {namespace}/{name} was deleted", file=err)
                return EXIT_ERROR
            annotations = config_map.metadata.annotations
            if annotations.get(TRIGGERED_ANNOTATION) == value:
                answer = visible(annotations.get(TRIGGERED_EXECUTION_ANNOTATION, ""))
                if answer.startswith(SKIPPED_PREFIX) or answer == REPLACED_ANSWER:
                    print(f"bjc trigger: {answer}", file=err)
                    return EXIT_SKIPPED
                if answer.startswith(FAILED_PREFIX):
                    print(f"bjc trigger: {answer}", file=err)
                    return EXIT_FAILED
                print(answer, file=out)
                return EXIT_OK
            current = annotations.get(TRIGGER_ANNOTATION)
            if current != value:
                print(
                    f"bjc trigger: trigger {value} was replaced by {current!r} before the "
                    "controller answered it",
                    file=err,
                )
                return EXIT_ERROR
    raise AssertionError("observe() never ends")


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        if args.context:
            from bjc.kube.client import kubeconfig_credentials

            creds = kubeconfig_credentials(args.kubeconfig, args.context)
        else:
            creds = load_credentials(args.kubeconfig)
    except KubeConfigError as e:
        print(f"bjc trigger: {e}", file=err)
        return EXIT_ERROR
    namespace = args.namespace or creds.namespace or "default"
    return asyncio.run(
        trigger(
            creds,
            namespace,
            args.configmap,
            wait_seconds=args.timeout,
            wait=not args.no_wait,
            out=out,
            err=err,
        )
    )
