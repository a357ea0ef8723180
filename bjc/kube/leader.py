"""Leader election on a coordination.k8s.io/v1 Lease, compatible with client-go.

Only the leader triggers executions, and a standby must take over quickly when the
leader goes away. kubernetes_asyncio ships an elector, but it stamps naive local
time with a `Z` suffix (wrong whenever the host is not on UTC), never releases the
lease on shutdown (a standby waits a full lease duration) and does not count
`leaseTransitions`. This module is a small replacement that follows client-go's
`leaderelection` package field for field, so a Go controller, `kubectl` and bjc
read each other's leases the same way:

- Lease `<name>-leader-election` with `holderIdentity`, `leaseDurationSeconds`,
  `acquireTime`/`renewTime` as UTC MicroTime and `leaseTransitions` (incremented
  whenever the holder changes, also when taking over a released lease).
- Optimistic concurrency: every write is a PUT carrying the resourceVersion that
  was just read (409 → another contender won, try again later); an absent lease is
  created (409 AlreadyExists → another contender was faster).
- Expiry is judged on *our* monotonic clock, like client-go: a lease held by
  someone else counts as expired once its record (holder, times, duration,
  transitions) has not changed for `leaseDurationSeconds` since we first saw it.
  The wall-clock timestamps in the record are never compared with our own clock,
  so clock skew between hosts cannot make two electors lead at once.
- The leader renews every `retry_period`; when it has not renewed successfully
  for `renew_deadline` (or sees another holder in the record) it steps down at
  once: `is_leader` turns False and the callbacks run synchronously, before any
  other coroutine can trigger an execution.
- Release on graceful shutdown (client-go's ReleaseOnCancel): `holderIdentity`
  emptied, `leaseDurationSeconds` 1, times set to now.
- A standby also watches the Lease: it sees each renewal when it happens, tries at
  once when the Lease is released, and wakes exactly when a silent holder's lease
  expires in its eyes rather than at its next retry. A graceful handover takes an
  API round trip, a crash one lease duration after the holder's last renewal.

Deliberately not here: deciding what leadership means (the controller reacts to
`on_change`), and the legacy `leaderElectionResourceLock` values (config maps them
all to a Lease).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from bjc.kube.client import ApiError, KubeClient
from bjc.kube.objects import micro_time

log = logging.getLogger(__name__)

LEASE_SUFFIX = "-leader-election"

# What a failed attempt can raise without being a bug in bjc.
_ATTEMPT_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError)


def lease_name(name: str) -> str:
    """The Lease a controller called `name` elects its leader on."""
    return name + LEASE_SUFFIX


def _record(obj: dict[str, Any]) -> tuple[Any, ...]:
    """The part of a Lease client-go compares to decide whether it changed."""
    spec = obj.get("spec") or {}
    return (
        spec.get("holderIdentity") or "",
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions") or 0,
    )


class LeaderElector:
    """Campaigns for, holds and releases one Lease on behalf of `identity`.

    `name` is the controller name; the Lease is `<name>-leader-election` in
    `namespace`. `run()` is meant to be the body of one task owned by the
    controller: cancelling that task steps down and releases the lease.
    """

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.owner: dict[str, Any] | None = None  # the Lease's owner reference, if any
        if not namespace:
            raise ValueError("leader election: namespace must not be empty")
        if not name:
            raise ValueError("leader election: name must not be empty")
        if not identity:
            raise ValueError("leader election: identity must not be empty")
        if retry_period <= 0:
            raise ValueError(f"leader election: retry_period must be > 0, got {retry_period}")
        if not renew_deadline > retry_period:
            raise ValueError(
                f"leader election: renew_deadline ({renew_deadline}) must be greater than "
                f"retry_period ({retry_period})"
            )
        if not lease_duration > renew_deadline:
            raise ValueError(
                f"leader election: lease_duration ({lease_duration}) must be greater than "
                f"renew_deadline ({renew_deadline})"
            )
        self.kube = kube
        self.namespace = namespace
        self.lease_name = lease_name(name)
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        # Others judge expiry by the whole seconds we write; rounding up keeps
        # renew_deadline < what they wait.
        self._duration_s = max(1, math.ceil(lease_duration))
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._path = f"{self._collection}/{self.lease_name}"

        self._leading = False
        self._leading_event = asyncio.Event()
        self._callbacks: list[Callable[[bool], None]] = []
        self._lock = asyncio.Lock()  # one read-modify-write of the Lease at a time
        self._closed = False
        self._wake = asyncio.Event()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0  # loop (monotonic) time the observed record last changed
        self._renewed_at = 0.0  # loop time an attempt that renewed/acquired was started
        # time.monotonic() until which our last renewal keeps others out (see holds_lease)
        self._valid_until = 0.0
        self._lost_to: str | None = None  # holder seen in our place by the last attempt
        self.conflicts = 0  # writes refused with 409: another contender wrote first

    # -- public API -----------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def holds_lease(self) -> bool:
        """Leading, and renewed recently enough that nobody else can lead yet.

        Safe to call from any thread: the report store asks it right before every
        write, so a replica whose event loop stalls past its renew deadline stops
        writing on time even though its elector could not step down yet.
        """
        return self._leading and time.monotonic() < self._valid_until

    @property
    def holder(self) -> str:
        """The holder identity last seen in the Lease ("" if none or not read yet)."""
        return self._observed[0] if self._observed else ""

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(is_leader)` synchronously on every gain and loss."""
        self._callbacks.append(callback)

    async def wait_leading(self) -> None:
        """Return once this elector leads (at once if it already does)."""
        await self._leading_event.wait()

    async def run(self) -> None:
        """Campaign until cancelled (or `release()`d): acquire, renew, lose, regain.

        On cancellation the elector steps down and releases the lease if it holds
        it, then re-raises CancelledError.
        """
        loop = asyncio.get_running_loop()
        releases = asyncio.create_task(self._watch_lease(), name="lease-watch")
        try:
            while not self._closed:
                started = loop.time()
                if self._leading:
                    await self._renew_round(started)
                else:
                    await self._acquire_round(started)
                if self._closed:
                    break
                await self._pause(self._next_wake(started) - loop.time())
        except asyncio.CancelledError:
            self._set_leading(False, "shutting down")
            await self.release()
            raise
        finally:
            releases.cancel()
            await asyncio.wait([releases])
            self._set_leading(False, "elector stopped")

    async def release(self) -> None:
        """Step down, stop campaigning and hand the lease back if we hold it.

        Like client-go's ReleaseOnCancel: holderIdentity "", leaseDurationSeconds 1,
        renewTime/acquireTime now, leaseTransitions unchanged. Bounded by
        renew_deadline; on failure the lease simply expires. Idempotent.
        """
        self._closed = True
        self._wake.set()
        self._set_leading(False, "releasing the lease")
        try:
            async with asyncio.timeout(self.renew_deadline):
                async with self._lock:
                    if self.holder != self.identity:
                        return
                    obj = await self.kube.get_or_none(self._path, dict)
                    if obj is None or _record(obj)[0] != self.identity:
                        return
                    now = micro_time()
                    spec = obj.setdefault("spec", {})
                    spec.update(
                        holderIdentity="",
                        leaseDurationSeconds=1,
                        acquireTime=now,
                        renewTime=now,
                        leaseTransitions=spec.get("leaseTransitions") or 0,
                    )
                    written = await self.kube.replace(self._path, obj)
                    self._observe(written, asyncio.get_running_loop().time())
                    log.info("released lease %s/%s", self.namespace, self.lease_name)
        except _ATTEMPT_ERRORS as e:
            log.warning(
                "could not release lease %s/%s (%s); it expires on its own",
                self.namespace,
                self.lease_name,
                e,
            )

    # -- the loop ---------------------------------------------------------------

    async def _acquire_round(self, started: float) -> None:
        wall = time.monotonic()
        if await self._attempt(started + self.renew_deadline):
            self._renewed(started, wall)
            self._set_leading(True, "acquired the lease")

    async def _renew_round(self, started: float) -> None:
        deadline = self._renewed_at + self.renew_deadline
        wall = time.monotonic()
        if started < deadline and await self._attempt(deadline):
            self._renewed(started, wall)
            return
        loop = asyncio.get_running_loop()
        if self._lost_to is not None:
            self._set_leading(False, f"lease taken by {self._lost_to!r}")
        elif loop.time() >= deadline:
            self._set_leading(False, f"not renewed for {self.renew_deadline}s")

    def _renewed(self, started: float, wall: float) -> None:
        """An attempt begun at loop time `started` (monotonic `wall`) renewed the lease."""
        self._renewed_at = started
        self._valid_until = wall + self.renew_deadline

    def _next_wake(self, started: float) -> float:
        if self._leading:
            # Renew on the retry period, but wake at the renew deadline at the
            # latest so a leader that cannot renew steps down on time.
            return min(started + self.retry_period, self._renewed_at + self.renew_deadline)
        # Standbys spread their attempts a little; always within one retry period,
        # and right at the moment a silent holder's lease expires in our eyes.
        wake = started + self.retry_period * random.uniform(0.8, 1.0)
        if self._observed is not None and self._observed[0]:
            seconds = self._observed[1]
            if isinstance(seconds, int | float) and self._observed_at + seconds > started:
                wake = min(wake, self._observed_at + seconds + 0.01)
        return wake

    async def _pause(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
        if not self._closed:
            self._wake.clear()

    async def _watch_lease(self) -> None:
        """See every change of the Lease as it happens.

        A standby then judges expiry from the moment the holder last renewed, not
        from when its own next poll noticed (up to a retry period later), and it is
        woken the moment the holder releases the Lease: a graceful handover takes
        one API round trip. Expiry itself still needs the timer (a dead holder
        writes nothing), and a broken watch only means falling back to polling:
        errors back off and retry.
        """
        loop = asyncio.get_running_loop()
        params = {"fieldSelector": f"metadata.name={self.lease_name}"}
        while True:
            try:
                _, rv = await self.kube.list(self._collection, dict, params)
                async for event in self.kube.watch(
                    self._collection, dict, resource_version=rv, params=params
                ):
                    if event.type not in ("ADDED", "MODIFIED"):
                        continue
                    self._observe(event.object, loop.time())
                    if not self._leading and not self.holder:
                        self._wake.set()
            except (*_ATTEMPT_ERRORS, ValueError) as e:
                log.debug("lease %s: watch failed: %r", self.lease_name, e)
                await asyncio.sleep(self.retry_period * random.uniform(0.5, 1.0))

    async def _attempt(self, deadline: float) -> bool:
        """One client-go tryAcquireOrRenew, bounded by `deadline` (loop time)."""
        self._lost_to = None
        try:
            async with asyncio.timeout_at(deadline), self._lock:
                if self._closed:
                    return False
                return await self._try_acquire_or_renew()
        except _ATTEMPT_ERRORS as e:
            if isinstance(e, ApiError) and e.status == 409:
                self.conflicts += 1
                log.debug("lease %s: conflict, another contender wrote first", self.lease_name)
            else:
                level = logging.WARNING if self._leading else logging.DEBUG
                log.log(level, "lease %s: attempt failed: %r", self.lease_name, e)
            return False

    async def _try_acquire_or_renew(self) -> bool:
        loop = asyncio.get_running_loop()
        now = micro_time()
        obj = await self.kube.get_or_none(self._path, dict)
        if obj is None:
            created = await self.kube.create(
                self._collection,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.lease_name,
                        "namespace": self.namespace,
                        # garbage-collected with the owner (the controller's Deployment)
                        **({"ownerReferences": [self.owner]} if self.owner else {}),
                    },
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": self._duration_s,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": 0,
                    },
                },
            )
            self._observe(created, loop.time())
            return True

        self._observe(obj, loop.time())
        holder, duration, acquire_time, _, transitions = self._observed or _record(obj)
        ours = holder == self.identity
        if not ours and holder:
            if self._leading:
                self._lost_to = holder
                return False
            seconds = duration if isinstance(duration, int | float) else self._duration_s
            if loop.time() < self._observed_at + seconds:
                return False  # held by someone else and not expired in our eyes
        spec = obj.setdefault("spec", {})
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=self._duration_s,
            acquireTime=acquire_time if ours and acquire_time else now,
            renewTime=now,
            leaseTransitions=transitions if ours else transitions + 1,
        )
        written = await self.kube.replace(self._path, obj)
        self._observe(written, loop.time())
        if not ours:
            log.info(
                "lease %s: taking over from %r (transition %d)",
                self.lease_name,
                holder or "<released>",
                transitions + 1,
            )
        return True

    def _observe(self, obj: dict[str, Any], at: float) -> None:
        record = _record(obj)
        if record != self._observed:
            self._observed = record
            self._observed_at = at

    def _set_leading(self, leading: bool, why: str) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._leading_event.set()
            log.info(
                "leading (%s): lease %s/%s as %s",
                why,
                self.namespace,
                self.lease_name,
                self.identity,
            )
        else:
            self._leading_event.clear()
            log.warning("stopped leading (%s): lease %s/%s", why, self.namespace, self.lease_name)
        for callback in list(self._callbacks):
            try:
                callback(leading)
            except Exception:
                log.exception("leader election callback %r failed", callback)
