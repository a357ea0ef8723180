"""Fail fast (maxFailures): a broken job stops the execution early, against bjc.sim."""

from __future__ import annotations

from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour
from tests.report_files import state

from .harness import LivePodWatch, cluster
from .test_controller import run_one, scrape


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
