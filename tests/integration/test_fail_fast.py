"""Fail fast (maxFailures): a broken job stops the execution early, against bjc.sim."""

from __future__ import annotations

import asyncio

import pytest

from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod
from tests.report_files import state

from .harness import LivePodWatch, cluster
from .test_controller import BOUND, run_one, scrape


async def test_a_broken_job_stops_dispatching_after_max_failures(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(20)
        await c.start_agent(JobBehaviour(run_seconds=0.05, exit_code=1))  # e.g. a bad image
        runtime = await c.start_controller(podPoolSize=2, maxFailures=3)
        async with LivePodWatch(c.kube) as watch:
            await run_one(runtime)
        execution = runtime.controller.current
        jobs = execution.nodes.values()
        started = execution.state.pods_started
        assert 3 <= started <= 3 + 2 - 1  # the failures, plus what was running then
        assert len(await c.job_pods()) == started and watch.max_live <= 2
        assert sum(j.status is JobStatus.FAILED for j in jobs) == started
        aborted = [j for j in jobs if j.status is JobStatus.ABORTED]
        assert len(aborted) == 20 - started
        assert all(j.reason.startswith("not dispatched: maxFailures reached") for j in aborted)
        assert execution.state.failed.startswith("maxFailures reached: 3 of 20 nodes failed")
        on_disk = state(runtime.store.root / execution.id)
        assert on_disk.failed == execution.state.failed and on_disk.done
        series = await scrape(runtime)
        assert series[("bjc_execution_failed", (("executionID", execution.id),))] == 1
        assert series[("bjc_execution_progress", (("executionID", execution.id),))] == 1


async def test_a_percentage_of_the_nodes_and_no_retries_once_stopped(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(10)
        await c.start_agent(JobBehaviour(exit_code=1))
        runtime = await c.start_controller(podPoolSize=1, maxFailures="10%", jobRetries=1)
        await run_one(runtime)
        execution = runtime.controller.current
        (failed,) = [j for j in execution.nodes.values() if j.status is JobStatus.FAILED]
        assert len(failed.attempts) == 1  # retried once, then it counted
        assert "(limit 1)" in execution.state.failed
        assert sum(j.status is JobStatus.ABORTED for j in execution.nodes.values()) == 9
        assert len(await c.job_pods()) == 2


async def test_without_max_failures_every_node_runs(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(5)
        await c.start_agent(JobBehaviour(exit_code=1))
        runtime = await c.start_controller(podPoolSize=2)
        await run_one(runtime)
        execution = runtime.controller.current
        assert all(j.status is JobStatus.FAILED for j in execution.nodes.values())
        assert execution.state.failed == ""
        series = await scrape(runtime)
        assert series[("bjc_execution_failed", (("executionID", execution.id),))] == 0


@pytest.mark.parametrize("retries", [0, 1, 2])
async def test_a_broken_job_reaches_exactly_the_documented_pod_bound(tmp_path, retries):
    """At most (maxFailures + podPoolSize - 1) x (jobRetries + 1) pods, and that many
    when it goes worst: whenever a node fails for good, the other pool slots hold nodes
    in their last attempt. The count is exact, so a bound off by one fails here."""
    limit, pool = 2, 2
    bound = (limit + pool - 1) * (retries + 1)
    started: list[str] = []
    holding: dict[str, asyncio.Event] = {}  # pods of last attempts, until released
    changed = asyncio.Condition()
    release_all = False

    async def job(pod: RunningPod) -> int:
        started.append(pod.name)
        if retries and not pod.name.endswith(f"-retry{retries}"):
            return 1  # an attempt with a retry left fails at once
        if not release_all:
            holding[pod.name] = release = asyncio.Event()
            async with changed:
                changed.notify_all()
            await release.wait()
        return 1

    async def release_one() -> None:
        async with changed:
            await changed.wait_for(lambda: len(holding) == pool)  # every slot: last attempt
        holding.pop(next(iter(holding))).set()

    async with cluster(tmp_path) as c:
        c.add_nodes(10)
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(podPoolSize=pool, maxFailures=limit, jobRetries=retries)
        async with asyncio.timeout(BOUND):
            await runtime.controller.trigger("test")
            for _ in range(limit):
                await release_one()  # one node fails for good, a new one takes its slot
            release_all = True  # halted now: the pool - 1 others may end
            for release in holding.values():
                release.set()
            await runtime.controller.wait_completed(1)
        execution = runtime.controller.current
        assert execution.halted
        assert len(started) == len(await c.job_pods()) == bound
        dispatched = [j for j in execution.nodes.values() if j.status is JobStatus.FAILED]
        assert len(dispatched) == limit + pool - 1
        assert all(len(j.attempts) == retries for j in dispatched)
