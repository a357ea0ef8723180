"""Leader election against bjc.sim over HTTP: client-go Lease fields, one leader,
graceful and crash handover, stepping down on apiserver errors, 409 races.

Timings here are correctness bounds (a released lease is taken before it could
have expired; a crashed leader's lease is not taken before it expired), never
performance asserts; handover times are printed for the benchmark notes.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bjc.kube.client import KubeClient
from bjc.kube.leader import LeaderElector
from bjc.kube.objects import micro_time

NS = "default"
NAME = "bjc"
LEASE = "bjc-leader-election"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
TIMING = {"lease_duration": 2.0, "renew_deadline": 1.0, "retry_period": 0.2}
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 15.0  # only against hangs; every wait below finishes far earlier


def parse_micro(value: str) -> datetime:
    assert MICRO.match(value), f"not a UTC MicroTime: {value!r}"
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class Contender:
    """One elector in its own task with its own client, recording every change."""

    def __init__(self, url: str, identity: str, **timing: float) -> None:
        self.identity = identity
        self.kube = KubeClient.from_url(url)
        self.elector = LeaderElector(self.kube, NS, NAME, identity, **(timing or TIMING))
        self.changes: list[tuple[float, bool]] = []
        self.lost = asyncio.Event()
        self.elector.on_change(self._record)
        self.task: asyncio.Task[None] | None = None

    def _record(self, leading: bool) -> None:
        self.changes.append((time.monotonic(), leading))
        if not leading:
            self.lost.set()

    def start(self) -> Contender:
        self.task = asyncio.create_task(self.elector.run(), name=f"elector-{self.identity}")
        return self

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.task is not None:
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await self.kube.close()

    def gained_at(self) -> float:
        return next(t for t, leading in self.changes if leading)

    def lost_at(self) -> float:
        return next(t for t, leading in self.changes if not leading)


@pytest.fixture
async def contenders(sim: Any) -> AsyncIterator[Callable[..., Contender]]:
    """Makes contenders against the sim; owns their tasks and cancels them at the end."""
    made: list[Contender] = []

    def make(identity: str, **timing: float) -> Contender:
        c = Contender(sim.url, identity, **timing)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop()


@pytest.fixture
async def kube(sim: Any) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_url(sim.url) as client:
        yield client


async def read_lease(kube: KubeClient) -> dict[str, Any]:
    return await kube.get(f"{LEASES}/{LEASE}", dict)


async def wait_lease(kube: KubeClient, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first state of the Lease (now or later, via a watch) that satisfies pred."""
    params = {"fieldSelector": f"metadata.name={LEASE}"}
    async with asyncio.timeout(HANG_GUARD):
        while True:
            items, rv = await kube.list(LEASES, dict, params)
            for item in items:
                if pred(item):
                    return item
            async for ev in kube.watch(LEASES, dict, resource_version=rv, params=params):
                if ev.type in ("ADDED", "MODIFIED") and pred(ev.object):
                    return ev.object


async def first_leader(*cs: Contender) -> Contender:
    waits = {asyncio.create_task(c.elector.wait_leading()): c for c in cs}
    try:
        done, _ = await asyncio.wait(waits, timeout=HANG_GUARD, return_when="FIRST_COMPLETED")
    finally:
        for t in waits:
            t.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    assert done, "nobody acquired the lease"
    return waits[next(iter(done))]


async def renewals(kube: KubeClient, holder: str, count: int) -> dict[str, Any]:
    """Wait until `holder` has renewed the lease `count` more times."""
    obj = await read_lease(kube)
    for _ in range(count):
        seen = obj["spec"]["renewTime"]

        def renewed(o: dict[str, Any], seen: str = seen) -> bool:
            return o["spec"]["renewTime"] != seen

        obj = await wait_lease(kube, renewed)
        assert obj["spec"]["holderIdentity"] == holder
    return obj


def concurrent_leaders(*cs: Contender) -> int:
    """The most contenders leading at one time, from their change logs."""
    events = sorted((t, leading) for c in cs for t, leading in c.changes)
    now = most = 0
    for _, leading in events:
        now += 1 if leading else -1
        most = max(most, now)
    return most


async def test_single_elector_writes_a_client_go_lease(
    contenders: Callable[..., Contender], kube: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local time zone far from UTC: a naive-local-time-plus-Z stamp would be off by hours.
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        a = contenders("a").start()
        await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
        assert a.elector.is_leader and a.changes[0][1] is True

        lease = await read_lease(kube)
        assert lease["apiVersion"] == "coordination.k8s.io/v1" and lease["kind"] == "Lease"
        spec = lease["spec"]
        assert spec["holderIdentity"] == "a"
        assert spec["leaseDurationSeconds"] == 2
        assert spec["leaseTransitions"] == 0
        acquired = parse_micro(spec["acquireTime"])
        assert abs(datetime.now(UTC) - acquired) < timedelta(minutes=5)

        renewed = await renewals(kube, "a", 2)
        assert renewed["spec"]["acquireTime"] == spec["acquireTime"]
        assert parse_micro(renewed["spec"]["renewTime"]) > parse_micro(spec["renewTime"])
        assert renewed["spec"]["leaseTransitions"] == 0

        await a.stop()  # cancel → release
        released = (await read_lease(kube))["spec"]
        assert released["holderIdentity"] == ""
        assert released["leaseDurationSeconds"] == 1
        assert released["leaseTransitions"] == 0
        assert parse_micro(released["renewTime"]) >= parse_micro(renewed["spec"]["renewTime"])
        assert a.changes[-1][1] is False and not a.elector.is_leader
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_two_electors_only_one_leads(
    contenders: Callable[..., Contender], kube: KubeClient
) -> None:
    a, b = contenders("a").start(), contenders("b").start()
    leader = await first_leader(a, b)
    standby = b if leader is a else a
    await renewals(kube, leader.identity, 5)
    assert leader.elector.is_leader and not standby.elector.is_leader
    assert standby.changes == []
    assert standby.elector.holder == leader.identity
    assert concurrent_leaders(a, b) == 1


async def test_graceful_release_hands_over_within_a_retry_period(
    contenders: Callable[..., Contender], kube: KubeClient
) -> None:
    a = contenders("a").start()
    await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
    b = contenders("b").start()
    await renewals(kube, "a", 2)  # b has seen a's lease renewed: it is a live standby
    assert not b.elector.is_leader

    released_at = time.monotonic()
    await a.stop()
    await asyncio.wait_for(b.elector.wait_leading(), HANG_GUARD)
    handover = b.gained_at() - released_at
    print(f"\ngraceful handover: {handover * 1000:.0f} ms (retry period 200 ms)")

    assert a.lost_at() < b.gained_at()
    assert concurrent_leaders(a, b) == 1
    spec = (await read_lease(kube))["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    # Correctness, not speed: without the release b could not have taken over
    # before the 2 s lease expired in its eyes.
    assert handover < TIMING["lease_duration"]


CHILD = """
import asyncio, sys
from bjc.kube.client import KubeClient
from bjc.kube.leader import LeaderElector

async def main(url):
    kube = KubeClient.from_url(url)
    e = LeaderElector(kube, "default", "bjc", "doomed",
                      lease_duration=2, renew_deadline=1, retry_period=0.2)
    e.on_change(lambda leading: print("leading" if leading else "standby", flush=True))
    await e.run()

asyncio.run(main(sys.argv[1]))
"""


async def test_crashed_leader_is_replaced_after_the_lease_expires(
    sim: Any, contenders: Callable[..., Contender], kube: KubeClient
) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, sim.url, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), HANG_GUARD)
        assert line.strip() == b"leading"
        b = contenders("b").start()
        await renewals(kube, "doomed", 2)
    finally:
        proc.kill()  # process death: no release, no step-down
        await proc.wait()
    killed_at = time.monotonic()
    last = (await read_lease(kube))["spec"]
    assert last["holderIdentity"] == "doomed"

    await asyncio.wait_for(b.elector.wait_leading(), HANG_GUARD)
    print(f"\ncrash handover: {(b.gained_at() - killed_at) * 1000:.0f} ms after kill (lease 2 s)")
    spec = (await read_lease(kube))["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == last["leaseTransitions"] + 1
    # Safety: b took over only once the dead leader's last renewal was a full
    # lease duration old (same host, so both stamps come from one clock).
    gap = parse_micro(spec["acquireTime"]) - parse_micro(last["renewTime"])
    assert gap >= timedelta(seconds=last["leaseDurationSeconds"])


async def test_apiserver_errors_make_the_leader_step_down_then_recover(
    sim: Any, contenders: Callable[..., Contender], kube: KubeClient
) -> None:
    a = contenders("a").start()
    await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
    before = (await read_lease(kube))["spec"]

    sim.faults.fail(1.0, 500, resource="leases")
    failing_since = time.monotonic()
    await asyncio.wait_for(a.lost.wait(), HANG_GUARD)
    print(f"\nstepped down {(a.lost_at() - failing_since) * 1000:.0f} ms after errors began")
    assert not a.elector.is_leader
    assert [leading for _, leading in a.changes] == [True, False]
    assert sim.faults.injected > 0

    sim.faults.clear()
    await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
    assert [leading for _, leading in a.changes] == [True, False, True]
    spec = (await read_lease(kube))["spec"]
    # Nobody else took the lease, so a still holds the same tenure.
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == before["leaseTransitions"]
    assert spec["acquireTime"] == before["acquireTime"]


async def test_leader_steps_down_at_once_when_another_holder_appears(
    contenders: Callable[..., Contender], kube: KubeClient
) -> None:
    a = contenders("a").start()
    await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
    lease = await read_lease(kube)
    now = micro_time()
    lease["spec"].update(
        holderIdentity="intruder", renewTime=now, acquireTime=now, leaseTransitions=1
    )
    await kube.replace(f"{LEASES}/{LEASE}", lease)

    await asyncio.wait_for(a.lost.wait(), HANG_GUARD)
    assert a.elector.holder == "intruder"
    # The intruder never renews: a takes the lease back once it expired.
    await asyncio.wait_for(a.elector.wait_leading(), HANG_GUARD)
    spec = (await read_lease(kube))["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 2
    assert parse_micro(spec["acquireTime"]) - parse_micro(now) >= timedelta(seconds=2)


@pytest.mark.parametrize("existing", ["absent", "released"])
async def test_racing_writes_conflict_and_one_wins(
    sim: Any, contenders: Callable[..., Contender], kube: KubeClient, existing: str
) -> None:
    if existing == "released":
        now = micro_time()
        await kube.create(
            LEASES,
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": NS},
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 4,
                },
            },
        )
    # Slow answers keep both first reads in flight together: both see the same
    # resourceVersion (or no lease) and both write.
    sim.faults.delay(0.1)
    a, b = contenders("a").start(), contenders("b").start()
    leader = await first_leader(a, b)
    loser = b if leader is a else a
    await renewals(kube, leader.identity, 2)

    assert loser.elector.conflicts == 1 and leader.elector.conflicts == 0
    assert not loser.elector.is_leader and loser.changes == []
    assert concurrent_leaders(a, b) == 1
    spec = (await read_lease(kube))["spec"]
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseTransitions"] == (0 if existing == "absent" else 5)


async def test_bad_timings_are_refused_with_the_parameter_named() -> None:
    kube = KubeClient.from_url("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(kube, NS, NAME, "a", lease_duration=2, renew_deadline=3, retry_period=1)
    with pytest.raises(ValueError, match="retry_period"):
        LeaderElector(kube, NS, NAME, "a", lease_duration=3, renew_deadline=1, retry_period=1)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(kube, NS, NAME, "")
