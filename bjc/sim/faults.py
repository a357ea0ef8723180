"""Fault injection for the simulated cluster: the failures a real apiserver shows.

Exists so tests can prove that clients survive what production throws at them:
dropped watch streams, slow responses, 500s and 429s (with Retry-After), and
compacted history (410 Gone). Failures are chosen by a seeded RNG so a test run is
reproducible. It deliberately does not simulate network partitions or partial
writes: a request either fails before touching the store or succeeds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class FailureRule:
    share: float
    status: int
    retry_after: int
    verb: str | None
    resource: str | None
    times: int | None = None  # requests left to fail (None: until cleared)


class Faults:
    """Switches read by the server on every request (the `/_sim/` admin paths excepted)."""

    def __init__(
        self,
        seed: int = 0,
        drop: Callable[[], int] | None = None,
        expire: Callable[[], None] | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._drop = drop
        self._expire = expire
        self.delay_seconds = 0.0
        self.rules: list[FailureRule] = []
        self.injected = 0

    def drop_watches(self) -> int:
        """End every open watch stream now; returns how many were open."""
        return self._drop() if self._drop else 0

    def delay(self, seconds: float) -> None:
        """Delay every API response by ``seconds`` (0 switches it off)."""
        if seconds < 0:
            raise ValueError(f"delay seconds must be >= 0, got {seconds}")
        self.delay_seconds = float(seconds)

    def fail(
        self,
        share: float,
        status: int = 500,
        retry_after: int = 1,
        verb: str | None = None,
        resource: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``share`` (0..1) of matching requests with ``status`` (500, 429, or 403:
        refused as by RBAC without the permission).

        ``verb`` is a Kubernetes verb (get, list, watch, create, update, patch, delete,
        deletecollection); ``resource`` a plural, optionally with subresource ("pods/status");
        ``times`` ends the rule after that many failures (an outage of N requests).
        """
        if not 0 <= share <= 1:
            raise ValueError(f"fail share must be within 0..1, got {share}")
        if status not in (500, 429, 403):
            raise ValueError(f"fail status must be 500, 429 or 403, got {status}")
        if times is not None and times < 1:
            raise ValueError(f"fail times must be >= 1, got {times}")
        self.rules.append(FailureRule(share, status, retry_after, verb, resource, times))

    def clear(self) -> None:
        """Remove delays and failure rules."""
        self.delay_seconds = 0.0
        self.rules.clear()

    def expire_history(self) -> None:
        """Compact the history: every resourceVersion seen so far is now too old to watch from."""
        if self._expire:
            self._expire()

    def pick_failure(self, verb: str, resource: str) -> FailureRule | None:
        for rule in self.rules:
            if rule.verb is not None and rule.verb != verb:
                continue
            if rule.resource is not None and rule.resource != resource:
                continue
            if rule.share >= 1 or self._rng.random() < rule.share:
                self.injected += 1
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self.rules.remove(rule)
                return rule
        return None

    async def apply_delay(self) -> None:
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
