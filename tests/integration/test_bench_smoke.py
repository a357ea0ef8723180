"""Every benchmark still runs, so `nox -s bench` cannot rot unnoticed.

`python -m benchmarks --smoke` runs every benchmark the way `nox -s bench` does, through
the same entry point and summary table, but at a small size (benchmarks/__init__.py):
seconds each, real processes, and no number judged (at that size they mean nothing).
What fails here is a benchmark that no longer runs: a bjc module it imports or reads
that moved (bench_takeover read bjc/execution.py long after the folder layout moved
it), a changed signature, a result key the table reads. The benchmark on a real
control plane (bench_kwok) is imported, its kwok configuration built when the binaries
exist, and no control plane started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, HISTORY, RESULTS

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_is_run_by_nox_bench() -> None:
    """A new benchmarks/bench_*.py that `nox -s bench` (and so the smoke) skips fails."""
    files = {p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert files == set(BENCHMARKS)


@pytest.mark.timeout(900)  # a hang bound: the smoke takes about a minute
def test_every_benchmark_runs_at_smoke_size() -> None:
    kept = {path: path.read_bytes() for path in (RESULTS, HISTORY)}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("BJC_BENCH_SMOKE", None)  # --smoke must set it itself
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    for name in BENCHMARKS:
        assert f"bench: {name} done" in done.stderr
    # the summary table was built from every benchmark's result keys
    assert "| takeover after kill -9 of the leader" in done.stdout
    assert "| summary index, 30 executions of 5,000 nodes" in done.stdout
    # a smoke run records nothing: the measured numbers stay as they were
    assert {path: path.read_bytes() for path in kept} == kept
