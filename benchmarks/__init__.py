"""Benchmarks (numbers, never asserted in tests), and the one switch that shrinks them.

Every benchmark takes its sizes from `scaled(full, smoke)`. `nox -s bench` runs the
full sizes. With BJC_BENCH_SMOKE=1 (set by `python -m benchmarks --smoke`, which the
test suite runs: tests/integration/test_bench_smoke.py) every benchmark runs at a small
size in seconds: no number means anything then, but a benchmark that no longer runs
(a module it imports or reads moved, a result key the table reads went missing) fails
the test suite instead of rotting until the next `nox -s bench`. Processes a benchmark
starts inherit the variable, so they shrink too.
"""

from __future__ import annotations

import os
from typing import TypeVar

SMOKE_ENV = "BJC_BENCH_SMOKE"

_Size = TypeVar("_Size", int, float)


def smoke() -> bool:
    """True when the benchmarks run at smoke size (BJC_BENCH_SMOKE=1)."""
    return os.environ.get(SMOKE_ENV) == "1"


def scaled(full: _Size, small: _Size) -> _Size:
    """`small` at smoke size, else `full`."""
    return small if smoke() else full
