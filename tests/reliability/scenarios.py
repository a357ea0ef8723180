"""The reliability scenarios: what each one does to a running bjc, and how many times.

Every scenario runs `bjc run` replicas against its own fresh Cluster, drives
executions back to back (`@every 1s`, concurrencyPolicy Forbid), injects its
fault `n` times (or for `n` executions), then hands the cluster to counts.count.
Random choices (when to kill, which fault) come from a seeded RNG, so a run is
repeatable up to the operating system's timing. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .cluster import Cluster, ControllerPod, Stalled
from .counts import METRICS_POLL, Row, count, scrape, unfinished

RUN_BOUND = 900.0  # seconds: a hang bound for one scenario's fault loop
NEVER = "0 0 1 1 *"  # a schedule that does not fire during a run: triggers only


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


async def _finished(c: Cluster) -> ControllerPod:
    """Until the leader's /metrics show every execution that ran jobs as finished; the
    leader. (A process shows its state only when asked: polled, bounded.)"""
    await c.until(lambda: not c.job_pods_busy(), 120, "the job pods to finish")
    leader = await c.wait_leader()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with asyncio.timeout(60):
            while True:
                if not unfinished(await scrape(http, leader), c.program.executions):
                    return leader
                await asyncio.sleep(METRICS_POLL)


async def _crash_before_answering(c: Cluster, value: str) -> str:
    """Trigger `value` while the answer PATCH fails; kill -9 the leader once a job pod of
    the execution it started runs, and replace it. The execution's id."""
    leader = await _finished(c)  # no execution runs: concurrencyPolicy lets it start
    c.sim.faults.fail(1.0, 500, verb="patch", resource="configmaps")
    try:
        await c.set_trigger(value)

        def announced() -> list[str]:
            return [t for t in c.event_notes("Triggered") if t.endswith(f"(trigger {value})")]

        await c.until(lambda: bool(announced()), 60, f"trigger {value} to start")
        eid = announced()[0].split()[1]
        await c.until(lambda: eid in c.program.executions, 60, f"job pods of {eid}")
        await leader.kill()
    finally:
        c.sim.faults.clear()
    await leader.remove()
    await c.add_controller()
    await c.until(lambda: c.answer(value) is not None, 120, f"an answer to trigger {value}")
    return eid


def _trigger_crash(policy: str) -> Callable[[Cluster, int], Awaitable[str]]:
    """n trigger values, each started by a leader that dies before its answer is written:
    the next leader must answer the value with that execution, and start no other."""

    async def run(c: Cluster, n: int) -> str:
        started: dict[str, str] = {}  # trigger value -> the execution the killed leader started
        kept = 0  # values the next leader answered with that execution
        for i in range(n):
            value = f"{policy.lower()}-{i}"
            started[value] = eid = await _crash_before_answering(c, value)
            if c.answer(value) == eid:
                kept += 1
            else:
                c.notes.append(f"trigger {value} started {eid}, answered {c.answer(value)!r}")
        on_disk = {p.name for p in c.reports.iterdir() if p.is_dir() and p.name.isdigit()}
        if on_disk != set(started.values()):
            c.notes.append(f"second executions: {sorted(on_disk - set(started.values()))}")
        return (
            f"{n} leaders kill -9ed after the job pods of a trigger's execution ran, its "
            f"answer PATCH failing: {kept} of {n} answered with that execution, "
            f"{len(on_disk)} executions"
        )

    return run


async def _unusable_until_failed(c: Cluster, failures: int) -> None:
    """A regular file where the report directory was, until `failures` ExecutionFailed
    Events exist; then the directory is back."""
    aside = c.reports.with_name(c.reports.name + ".aside")
    c.reports.rename(aside)
    c.reports.write_text("not a directory\n")
    try:
        await c.until(
            lambda: len(c.event_notes("ExecutionFailed")) >= failures,
            60,
            "executions to fail to start",
        )
    finally:
        c.reports.unlink()
        aside.rename(c.reports)


async def _disk_at_start(c: Cluster, n: int) -> str:
    (pod,) = c.pods
    for _ in range(n):
        await c.wait_executions(len(c.program.executions) + 1)
        await c.cordon()  # executions starting now have no jobs: none waits on the disk
        # gone: an execution without jobs started, so the last one with jobs is finished
        await c.until(c.job_pods_gone, 120, "an execution after the last one with jobs")
        await _unusable_until_failed(c, len(c.event_notes("ExecutionFailed")) + 2)
        await c.uncordon()
    await c.wait_executions(len(c.program.executions) + 1)  # the schedule goes on
    notes = c.event_notes("ExecutionFailed")
    failed = {m for t in notes for m in re.findall(r"execution (\d+) could not start", t)}
    on_disk = {p.name for p in c.reports.iterdir()}
    reused = failed & (on_disk | c.program.executions)
    if len(failed) != len(notes) or reused:
        c.notes.append(f"ids given twice: {sorted(reused)} ({len(notes)} failures)")
    if pod.starts != 1 or not pod.alive:
        c.notes.append(f"the controller exited ({pod.starts} starts)")
    return (
        f"report directory unusable {n} times: {len(notes)} failed starts, "
        f"{pod.starts - 1} restarts, {len(reused)} ids reused"
    )


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
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml keys over the defaults


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
        "trigger-crash-replace",
        "two replicas, concurrencyPolicy Replace, no schedule: n trigger values, each "
        "started by a leader whose answer PATCH fails and which is kill -9ed once a job "
        "pod runs; the next leader must answer the value with that execution and start "
        "no second one",
        _trigger_crash("Replace"), full=5, quick=0,
        config={"concurrencyPolicy": "Replace", "cronExpression": NEVER},
    ),
    Scenario(
        "trigger-crash-forbid",
        "as trigger-crash-replace with concurrencyPolicy Forbid: the next leader must "
        "answer with the execution, not `skipped` (it is still running)",
        _trigger_crash("Forbid"), full=5, quick=0, config={"cronExpression": NEVER},
    ),
    Scenario(
        "disk-at-start",
        "one replica, `@every 1s`; n times, once the executions have no jobs (nodes "
        "cordoned), a regular file replaces the report directory until two scheduled "
        "executions failed to start, then the directory is back and the nodes uncordoned: "
        "the process runs on, the schedule goes on, no id is given twice",
        _disk_at_start, full=5, quick=1, replicas=1, work=(0.0, 0.2),
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
        config=scenario.config,
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
        row.notes += cluster.notes
        return await count(cluster, row, started)
