"""The retry delays of bjc.kube.backoff: doubling, capped, jittered into [d/2, d], reset."""

from __future__ import annotations

import pytest

from bjc.kube.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter():
    backoff = Backoff(0.2, 1.0)
    nominal = [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for _ in range(200):  # many runs: the jitter never leaves [d/2, d]
        backoff.reset()
        delays = [backoff.next_delay() for _ in nominal]
        assert all(d / 2 <= got <= d for got, d in zip(delays, nominal, strict=True)), delays


def test_jitter_spreads_the_delays():
    backoff = Backoff(1.0, 1.0)
    assert len({backoff.next_delay() for _ in range(20)}) > 1


def test_reset_starts_over():
    backoff = Backoff(0.5, 8.0)
    for _ in range(10):
        backoff.next_delay()
    assert backoff.next_delay() > 4.0 - 1e-9
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="0 < first <= cap"):
        Backoff(2.0, 1.0)
