"""The real control plane for the tests that run on one (see tests/e2e/controlplane.py).

Used by tests/e2e and by the integration scenarios that run on both bjc.sim and the
real control plane (the `plane` fixture in tests/integration/conftest.py). Nothing
starts unless a test asks for it, and only with `BJC_E2E=1` (`nox -s e2e`).

The binaries follow the envtest convention: `KUBEBUILDER_ASSETS` names a directory
with all of them; otherwise they come from the version-keyed cache that
tests/e2e/build_binaries.sh fills, built at session start when missing. Without
them the tests are skipped with the reason, except in CI (`CI=true`), where they
fail: CI must never pass by running nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.binaries import Binaries, build, locate
from tests.e2e.controlplane import ControlPlane

E2E = os.environ.get("BJC_E2E") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real control plane (nox -s e2e)")
    config.addinivalue_line(
        "markers", "realnode: runs the image on a real kubelet (nox -s e2e -- -m realnode)"
    )


_FOUND: tuple[Binaries | None, str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Find (or build) the binaries before any test runs: a build outlasts test timeouts."""
    global _FOUND
    if E2E:
        _FOUND = _binaries()


def _binaries() -> tuple[Binaries | None, str]:
    """The control plane's binaries, or None and why not."""
    binaries = locate()
    missing = binaries.missing()
    if not missing:
        return binaries, ""
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return None, f"KUBEBUILDER_ASSETS lacks {', '.join(missing)}"
    if os.environ.get("BJC_E2E_NO_BUILD") == "1":
        return None, f"not built: {', '.join(missing)} (see build_binaries.sh's output)"
    if shutil.which("go") is None and not os.path.exists("/usr/local/go/bin/go"):
        return None, "no KUBEBUILDER_ASSETS, no cached binaries and no go to build them"
    ok, tail = build("control-plane")
    if not ok:
        return None, f"building the control plane failed:\n{tail}"
    return binaries, ""


def unavailable(why: str) -> None:
    """Skip, or in CI fail: a CI run must not go green on tests that did not run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"e2e (CI): {why}", pytrace=False)
    pytest.skip(f"e2e: {why}")


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    found, why = _FOUND if _FOUND is not None else _binaries()
    if found is None:
        unavailable(why)
    if shutil.which("openssl") is None:
        unavailable("no openssl to generate the service-account key")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def control_plane(binaries: Binaries) -> Iterator[ControlPlane]:
    plane = ControlPlane(binaries)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
