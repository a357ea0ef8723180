"""The reliability scenarios: what each one does to a running bjc, and how many times.

Every scenario runs `bjc run` replicas against its own fresh Cluster, drives
executions back to back (`@every 1s`, concurrencyPolicy Forbid), injects its
fault `n` times (or for `n` executions), then hands the cluster to counts.count.
Random choices (when to kill, which fault) come from a seeded RNG, so a run is
repeatable up to the operating system's timing. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .cluster import Cluster, ControllerPod, Stalled
from .counts import Row, count

RUN_BOUND = 900.0  # seconds: a hang bound for one scenario's fault loop


async def _sigkill_random(c: Cluster, n: int) -> str:
    (pod,) = c.pods
    kills = 0
    while len(c.program.executions) < n:
        c.check_progress()
        await asyncio.sleep(c.rng.uniform(0.2, 4.0))
        await pod.kill()
        kills += 1
        await pod.start()
    return f"{kills} SIGKILL at random times"


def _kill_at_ack(pod: ControllerPod, k: int) -> tuple[Callable[[str, str], None], asyncio.Event]:
    """An `on_ack` hook that SIGKILLs `pod` on the k-th 200, and the event it sets then."""
    acks, fired = 0, asyncio.Event()

    def on_ack(eid: str, node: str) -> None:
        nonlocal acks
        acks += 1
        if acks == k:
            pod.kill_now()  # within microseconds of the job reading its 200
            fired.set()

    return on_ack, fired


async def _sigkill_after_acks(c: Cluster, n: int) -> str:
    (pod,) = c.pods
    for _ in range(n):
        k = c.rng.randint(1, 10)
        c.program.on_ack, fired = _kill_at_ack(pod, k)
        try:
            await c.until(fired.is_set, 120, f"{k} acknowledged results")
        finally:
            c.program.on_ack = None
        await pod.kill()  # reaps it
        await pod.start()
    return f"{n} SIGKILL right after the k-th 200 of a burst (k = 1..10)"


async def _under_way(c: Cluster) -> None:
    """Until an execution has job pods running and a result acknowledged since now."""
    acks = c.program.acks
    await c.until(
        lambda: c.program.acks > acks and c.job_pods_busy(),
        120,
        "an execution under way with results acknowledged",
    )


async def _replace_leader_mid_execution(c: Cluster, n: int, sig: int) -> None:
    for _ in range(n):
        leader = await c.wait_leader()
        await _under_way(c)
        await asyncio.sleep(c.rng.uniform(0.0, 1.0))
        await leader.kill(sig)
        await leader.remove()
        await c.add_controller()  # the ReplicaSet replaces the pod: new name, new address
        await c.until(
            lambda old=leader: (new := c.leader()) is not None and new is not old,
            60,
            "a standby to take over",
        )


async def _failover_kill9(c: Cluster, n: int) -> str:
    await _replace_leader_mid_execution(c, n, signal.SIGKILL)
    return f"{n} leader kill -9 mid-execution"


async def _graceful_handover(c: Cluster, n: int) -> str:
    await _replace_leader_mid_execution(c, n, signal.SIGTERM)
    return f"{n} leader SIGTERM mid-execution"


async def _watch_cuts(c: Cluster, n: int) -> str:
    cuts = storms = 0
    while len(c.program.executions) < n:
        c.check_progress()
        await asyncio.sleep(c.rng.uniform(0.3, 1.5))
        if (cuts + storms) % 4 == 3:  # every fourth fault, so short runs have one too
            for _ in range(3):  # history compacted again while clients relist
                c.sim.faults.expire_history()
                c.sim.faults.drop_watches()
                await asyncio.sleep(0.1)
            storms += 1
        else:
            c.sim.faults.drop_watches()
            cuts += 1
    return f"{cuts} watch cuts, {storms} 410 storms"


async def _api_errors(c: Cluster, n: int) -> str:
    c.sim.faults.fail(0.025, 500)
    c.sim.faults.fail(0.025, 429, retry_after=1)
    await c.wait_executions(n)
    return f"5 % of API requests: {c.sim.faults.injected} answered 500/429"


async def _api_outage(c: Cluster, n: int) -> str:
    await _under_way(c)
    c.sim.faults.fail(1.0, 500)
    await asyncio.sleep(30)
    c.sim.faults.clear()
    await c.wait_executions(len(c.program.executions) + n)
    return "one 30 s API outage (every request 500)"


async def _load(c: Cluster, n: int) -> str:
    await c.wait_executions(n)
    return f"{len(c.node_names)} concurrent job clients"


@dataclass(frozen=True)
class Scenario:
    name: str
    checks: str  # what it proves, for the docs
    run: Callable[[Cluster, int], Awaitable[str]]
    full: int  # `n` of `nox -s reliability`
    quick: int  # `n` of the default test run (0: not in it)
    replicas: int = 2
    nodes: int = 6
    pool: int = 3
    work: tuple[float, float] = (0.2, 1.0)


SCENARIOS = [
    Scenario(
        "sigkill-random",
        "one replica SIGKILLed at random times and restarted (same pod) across n executions: "
        "state written before the kill is what the restart resumes from",
        _sigkill_random, full=20, quick=3, replicas=1,
    ),
    Scenario(
        "sigkill-after-acks",
        "20 jobs report at once; the replica is SIGKILLed the instant the k-th 200 arrives, "
        "n times: a 200 must already be durable",
        _sigkill_after_acks, full=10, quick=2, replicas=1, nodes=20, pool=20, work=(0.0, 0.05),
    ),
    Scenario(
        "failover-kill9",
        "two replicas share one report directory; the leader is kill -9ed mid-execution n "
        "times and replaced by a new pod; the standby takes over after the lease expires",
        _failover_kill9, full=10, quick=0,
    ),
    Scenario(
        "graceful-handover",
        "two replicas; the leader gets SIGTERM mid-execution n times (released lease, "
        "standby takes over at once) and is replaced by a new pod",
        _graceful_handover, full=10, quick=1,
    ),
    Scenario(
        "watch-cuts",
        "two replicas across n executions while every watch stream is cut every 0.3-1.5 s, "
        "every fourth time as a 410 storm (history compacted three times in a row)",
        _watch_cuts, full=20, quick=3,
    ),
    Scenario(
        "api-errors",
        "two replicas across n executions while 5 % of all API requests (any client) are "
        "answered 500 or 429 with Retry-After",
        _api_errors, full=20, quick=3,
    ),
    Scenario(
        "api-outage",
        "two replicas; every API request fails for 30 s mid-execution (the leader cannot "
        "renew its lease), then n more executions",
        _api_outage, full=5, quick=0,
    ),
    Scenario(
        "load-5000",
        "one replica, 200 nodes, pool 200: n executions of 200 concurrent job clients "
        "(25 executions = 5,000 results)",
        _load, full=25, quick=0, replicas=1, nodes=200, pool=200, work=(0.0, 0.2),
    ),
]  # fmt: skip

BY_NAME = {s.name: s for s in SCENARIOS}


async def run_scenario(
    scenario: Scenario, n: int, tmp: Path, *, select_leader: bool = True, seed: int = 0
) -> Row:
    """Run one scenario `n` times on a fresh cluster under `tmp`; its row of the table."""
    started = time.monotonic()
    row = Row(scenario.name, "")
    async with Cluster(
        tmp,
        nodes=scenario.nodes,
        pool=scenario.pool,
        seed=seed,
        select_leader=select_leader,
        work=scenario.work,
    ) as cluster:
        for _ in range(scenario.replicas):
            await cluster.add_controller()
        what = "the callback Service to select a ready controller pod" + (
            " (does bjc label its leader pod? --service ready selects by readiness)"
            if select_leader
            else ""
        )
        try:
            await cluster.until(cluster.served, 30, what)
        except Stalled as e:  # nothing can be acknowledged: no point in running faults
            row.notes.append(str(e))
            return row
        try:
            async with asyncio.timeout(RUN_BOUND):
                row.faults = await scenario.run(cluster, n)
        except (Stalled, TimeoutError) as e:
            row.faults = f"stopped early: {e or 'run bound reached'}"
            row.notes.append(f"stalled: {e or 'run bound reached'}")
        return await count(cluster, row, started)
