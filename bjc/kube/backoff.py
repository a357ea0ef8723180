"""How long to wait before trying the apiserver again: jittered, capped, exponential.

Every retry loop that talks to the apiserver (the pod watch's relists and reconnects,
the client's read retries) spaces its attempts the same way, so that a failing server
or a storm of 410 Gone answers costs a bounded number of requests per second: each
delay doubles up to a cap, is jittered down to as little as half so that many
clients do not retry in step, and starts over after a success.

Deliberately not here: deciding what is worth retrying (the callers know) and
honouring a server's Retry-After (the client does that).
"""

from __future__ import annotations

import random


class Backoff:
    """Delays first, 2·first, 4·first … up to cap, each jittered into [d/2, d]."""

    def __init__(self, first: float, cap: float) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={first} cap={cap}")
        self.first = first
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        nominal = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return nominal * (0.5 + 0.5 * random.random())

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits `first` again."""
        self.failures = 0
