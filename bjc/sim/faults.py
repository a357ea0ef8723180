"""Fault injection for the simulated cluster: the failures a real apiserver shows.

Exists so tests can prove that clients survive what production throws at them:
dropped watch streams, slow responses, 500s and 429s (with Retry-After),
compacted history (410 Gone), and an answer held in flight (`hold`: the request is
served, its answer arrives when the test says, so the test can act in between, as
other clients do while a real apiserver's answer travels). Failures are chosen by a
seeded RNG so a test run is reproducible. It deliberately does not simulate network
partitions or partial writes: a request either fails before touching the store or
succeeds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class FailureRule:
    share: float
    status: int
    retry_after: int
    verb: str | None
    resource: str | None
    times: int | None = None  # requests left to fail (None: until cleared)


@dataclass
class Hold:
    """The answer to the next matching request, held until `release()`."""

    verb: str
    resource: str
    where: Callable[[Mapping[str, str]], bool]
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # the answer is held
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


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
        self.holds: list[Hold] = []
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

    def hold(
        self,
        verb: str,
        resource: str,
        where: Callable[[Mapping[str, str]], bool] = lambda query: True,
    ) -> Hold:
        """Hold the answer to the next `verb` of `resource` whose query satisfies `where`:
        the request is served at once (a list sees the store as it is now), the answer is
        sent once the returned Hold is released. Once: later requests are not held."""
        hold = Hold(verb, resource, where)
        self.holds.append(hold)
        return hold

    async def hold_answer(self, verb: str, resource: str, query: Mapping[str, str]) -> None:
        """Wait for the release of the first hold matching this request, if any."""
        for hold in self.holds:
            if hold.verb == verb and hold.resource == resource and hold.where(query):
                self.holds.remove(hold)
                hold.reached.set()
                await hold.released.wait()
                return

    def clear(self) -> None:
        """Remove delays and failure rules; release held answers."""
        self.delay_seconds = 0.0
        self.rules.clear()
        for hold in self.holds:
            hold.release()
        self.holds.clear()

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
