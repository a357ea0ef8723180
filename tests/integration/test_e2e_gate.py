"""Without its binaries the e2e suite skips, saying why, except in CI, where it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/e2e/test_e2e.py::test_manifests_rbac_allow_what_bjc_needs_and_no_more"


def run_e2e(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(BJC_E2E="1", KUBEBUILDER_ASSETS=str(tmp_path / "nothing-here"))
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", ONE_TEST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(("ci", "code", "says"), [(False, 0, "1 skipped"), (True, 1, "1 error")])
def test_missing_binaries_skip_outside_ci_and_fail_in_ci(tmp_path, ci, code, says) -> None:
    done = run_e2e(tmp_path, ci)
    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout
    assert "KUBEBUILDER_ASSETS lacks etcd" in done.stdout
