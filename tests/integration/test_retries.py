"""Retries (jobRetries): failed nodes get new pods within the execution, against bjc.sim."""

from __future__ import annotations

import collections

from bjc.config.podspec import job_pod_name
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod
from tests.report_files import state

from .harness import cluster, post_result
from .test_controller import run_one, scrape


async def test_failed_nodes_are_retried_with_new_pods_and_keep_their_results(tmp_path):
    started: collections.Counter[str] = collections.Counter()

    async def job(pod: RunningPod) -> int:
        started[pod.node] += 1
        if pod.node == "flaky-000" and started[pod.node] == 1:
            await post_result(pod)
            return 1  # reported, then failed: the result must survive the retry
        if pod.node == "flaky-000":
            return 0  # the retry succeeds without reporting again
        if pod.node == "broken-000":
            return 1
        return await post_result(pod)

    async with cluster(tmp_path) as c:
        c.add_nodes(1, "ok")
        c.add_nodes(1, "flaky")
        c.add_nodes(1, "broken")
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(jobRetries=2)
        await run_one(runtime)
        execution = runtime.controller.current
        eid = execution.id
        ok, flaky, broken = (execution.nodes[n] for n in ("ok-000", "flaky-000", "broken-000"))
        assert started == {"ok-000": 1, "flaky-000": 2, "broken-000": 3}

        assert ok.status is JobStatus.SUCCEEDED and ok.attempts == [] and not ok.error
        assert flaky.status is JobStatus.SUCCEEDED and flaky.result and not flaky.error
        assert flaky.pod == job_pod_name("batch", "flaky-000", eid, 1)
        (first,) = flaky.attempts
        assert first.pod == job_pod_name("batch", "flaky-000", eid) and first.reason
        assert broken.status is JobStatus.FAILED and len(broken.attempts) == 2

        pods = sorted(
            p["metadata"]["name"] for p in await c.job_pods() if "broken" in p["metadata"]["name"]
        )
        assert pods == sorted(job_pod_name("batch", "broken-000", eid, a) for a in range(3))
        assert (runtime.store.root / eid / "flaky-000.json").is_file()

        on_disk = state(runtime.store.root / eid).nodes  # the report shows every attempt
        assert len(on_disk["broken-000"].attempts) == 2 and on_disk["ok-000"].attempts == []
        series = await scrape(runtime)
        attempts = {
            dict(k)["node"]: v for (name, k), v in series.items() if name == "bjc_job_attempts"
        }
        assert attempts == {"flaky-000": 2.0, "broken-000": 3.0}
        processing = {
            dict(k)["node"]: v for (name, k), v in series.items() if name == "bjc_test_processing"
        }
        assert processing == {"ok-000": 0.0, "flaky-000": 0.0, "broken-000": 1.0}
        checks = [k for (name, k) in series if name == "bjc_test_checks"]
        assert {dict(k)["node"] for k in checks} == {"ok-000", "flaky-000"}

        # after a restart the attempts are read back, metrics included
        await c.stop_controllers()
        runtime = await c.start_controller(jobRetries=2)
        series = await scrape(runtime)
        assert series[("bjc_job_attempts", (("executionID", eid), ("node", "broken-000")))] == 3


async def test_pods_that_time_out_are_retried_and_deleted(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1, "stuck")
        await c.start_agent(JobBehaviour(stay_pending=True))
        runtime = await c.start_controller(jobRetries=1, jobTimeout="1s")
        await run_one(runtime)
        stuck = runtime.controller.current.nodes["stuck-000"]
        assert stuck.status is JobStatus.FAILED and "jobTimeout" in stuck.reason
        assert [a.reason for a in stuck.attempts] == [stuck.reason]
        assert await c.job_pods() == []  # every timed-out attempt's pod was deleted


async def test_pods_that_cannot_be_created_are_retried(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        runtime = await c.start_controller(jobRetries=1)
        c.sim.faults.fail(1.0, status=500, verb="create", resource="pods")
        await run_one(runtime)
        job = runtime.controller.current.nodes["node-000"]
        assert job.status is JobStatus.FAILED and "pod creation failed" in job.reason
        assert [a.reason for a in job.attempts] == [job.reason]
        assert await c.job_pods() == []
