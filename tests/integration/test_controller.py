"""The controller against bjc.sim: executions, node selection, failures, policies."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bjc.config.podspec import EXECUTION_LABEL, OWNER_LABEL
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod

from .harness import NAMESPACE, LivePodWatch, cluster, post_result

BOUND = 120  # seconds: a hang bound (the real control plane too), not a performance expectation


async def run_one(runtime, count: int = 1) -> None:
    async with asyncio.timeout(BOUND):
        await runtime.controller.trigger("test")
        await runtime.controller.wait_completed(count)


async def scrape(runtime) -> dict[tuple[str, tuple], float]:
    url = f"http://127.0.0.1:{runtime.ports['metrics']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_full_execution_respects_pool_size(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(50)
        await c.start_agent(JobBehaviour(run_seconds=0.02, run=post_result))
        runtime = await c.start_controller(podPoolSize=5)
        async with LivePodWatch(c.kube) as watch:
            await run_one(runtime)
        execution = runtime.controller.current
        assert execution is not None
        assert sorted(execution.nodes) == nodes
        assert all(j.status is JobStatus.SUCCEEDED and j.result for j in execution.nodes.values())
        assert 1 <= watch.max_live <= 5
        assert execution.state.pods_started == 50
        # report layout as the Go controller lays it out: one result per node, latest, state
        root = runtime.store.root
        assert (root / "latest").resolve() == (root / execution.id).resolve()
        results = sorted(p.name for p in (root / execution.id).glob("node-*.json"))
        assert results == sorted(f"{n}.json" for n in nodes)
        metrics = await scrape(runtime)
        assert metrics[("bjc_test_pods", ())] == 50
        assert metrics[("bjc_test_current_execution_id", ())] == float(execution.id)
        for n in nodes:
            key = (("executionID", execution.id), ("node", n))
            assert metrics[("bjc_test_processing", key)] == 0
            assert metrics[("bjc_test_duration", key)] > 0
            assert metrics[("bjc_test_checks", tuple(sorted((*key, ("kind", n)))))] == 1.0


async def test_node_selection(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(2, "pick", labels={"role": "worker"})
        c.add_nodes(1, "other", labels={"role": "infra"})
        c.add_nodes(1, "notready", labels={"role": "worker"}, ready=False)
        c.add_nodes(1, "cordoned", labels={"role": "worker"}, unschedulable=True)
        await c.start_agent()
        runtime = await c.start_controller(jobNodeSelector={"role": "worker"})
        await run_one(runtime)
        assert sorted(runtime.controller.current.nodes) == ["pick-000", "pick-001"]
        await c.stop_controllers()

        runtime = await c.start_controller(
            jobNodeSelector={"role": "worker"},
            runOnUnscheduledNodes=True,
            report_dir=tmp_path / "second",
        )
        await run_one(runtime)
        assert sorted(runtime.controller.current.nodes) == ["cordoned-000", "pick-000", "pick-001"]


async def test_earlier_job_pods_are_deleted(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(3)
        await c.start_agent()
        runtime = await c.start_controller()
        await run_one(runtime)
        first = runtime.controller.current.id
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in await c.job_pods()} == {first}
        await run_one(runtime, 2)
        second = runtime.controller.current.id
        assert second != first
        pods = await c.job_pods()
        assert len(pods) == 3
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in pods} == {second}
        assert all(p["metadata"]["labels"][OWNER_LABEL] == "batch" for p in pods)


async def test_failures_are_recorded_per_node(tmp_path, plane):
    """Failed pod, pod that never reports, pod deleted mid-run."""
    deleted = asyncio.Event()

    async def wait_for_deletion(pod: RunningPod) -> int:
        deleted.set()
        await asyncio.sleep(3600)  # the pod is deleted under us; the agent stops it
        return 0

    async with cluster(tmp_path, plane) as c:
        for kind in ("ok", "crash", "silent", "deleted"):
            await c.ready_nodes(1, kind)
        behaviour = JobBehaviour(
            run=post_result,
            per_node={
                "crash-000": JobBehaviour(exit_code=1),
                "silent-000": JobBehaviour(exit_code=0),
                "deleted-000": JobBehaviour(run=wait_for_deletion),
            },
        )
        await c.start_agent(behaviour)
        runtime = await c.start_controller()
        async with asyncio.timeout(BOUND):
            await runtime.controller.trigger("test")
            await deleted.wait()
            eid = runtime.controller.current.id
            pod = runtime.controller.current.nodes["deleted-000"].pod
            await c.kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")
            await runtime.controller.wait_completed(1)
        jobs = runtime.controller.executions[eid].nodes
        assert jobs["ok-000"].status is JobStatus.SUCCEEDED and not jobs["ok-000"].error
        assert jobs["crash-000"].status is JobStatus.FAILED
        assert "container main exited 1 (Error)" in jobs["crash-000"].reason
        assert jobs["silent-000"].status is JobStatus.SUCCEEDED and jobs["silent-000"].error
        assert jobs["deleted-000"].status is JobStatus.FAILED
        assert "deleted" in jobs["deleted-000"].reason
        metrics = await scrape(runtime)
        for node, error in [("ok-000", 0), ("crash-000", 1), ("silent-000", 1),
                            ("deleted-000", 1)]:  # fmt: skip
            key = (("executionID", eid), ("node", node))
            assert metrics[("bjc_test_processing", key)] == error, node


async def test_a_pod_stuck_pending_times_out(tmp_path, plane):
    """The only node's pod never starts: jobTimeout fails it and deletes the pod.

    A test of its own: a 1 s jobTimeout beside pods that must start would race the
    scheduler and the agent on a loaded machine."""
    async with cluster(tmp_path, plane) as c:
        await c.ready_nodes(1, "stuck")
        await c.start_agent(JobBehaviour(stay_pending=True))
        runtime = await c.start_controller(jobTimeout="1s")
        await run_one(runtime)
        eid = runtime.controller.current.id
        job = runtime.controller.executions[eid].nodes["stuck-000"]
        assert job.status is JobStatus.FAILED
        assert "jobTimeout" in job.reason
        stuck = f"/api/v1/namespaces/{NAMESPACE}/pods/{job.pod}"
        pod = await c.kube.get_or_none(stuck, dict)  # deleted (a real apiserver: gracefully)
        assert pod is None or pod["metadata"].get("deletionTimestamp"), pod
        metrics = await scrape(runtime)
        key = (("executionID", eid), ("node", "stuck-000"))
        assert metrics[("bjc_test_processing", key)] == 1
        state = json.loads((runtime.store.root / eid / ".bjc-execution.json").read_text())
        assert state["nodes"]["stuck-000"]["status"] == "failed"


async def test_pods_get_active_deadline_from_job_timeout(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        runtime = await c.start_controller(jobTimeout="90s")
        await run_one(runtime)
        (pod,) = await c.job_pods()
        assert pod["spec"]["activeDeadlineSeconds"] == 90


async def _slow_execution(c, **overrides):
    """An execution whose first two jobs (pool size 2) run until `gate` opens."""
    gate, running = asyncio.Event(), asyncio.Event()
    started = []

    async def blocked(pod: RunningPod) -> int:
        started.append(pod.name)
        if len(started) == 2:
            running.set()
        await gate.wait()
        return await post_result(pod)

    c.add_nodes(4)
    await c.start_agent(JobBehaviour(run=blocked))
    runtime = await c.start_controller(podPoolSize=2, **overrides)
    await runtime.controller.trigger("first")
    async with asyncio.timeout(BOUND):
        await running.wait()
    return runtime, gate


async def test_concurrency_policy_replace(tmp_path):
    async with cluster(tmp_path) as c:
        runtime, gate = await _slow_execution(c)
        ctl = runtime.controller
        first = ctl.current
        async with asyncio.timeout(BOUND):
            assert await ctl.trigger("second")
            await asyncio.sleep(0)
            gate.set()
            await ctl.wait_completed(1)
        assert ctl.current is not first
        assert first.state.done
        statuses = {j.status for j in first.nodes.values()}
        assert statuses == {JobStatus.ABORTED}
        assert all(j.status is JobStatus.SUCCEEDED for j in ctl.current.nodes.values())
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in await c.job_pods()} == {
            ctl.current.id
        }


async def test_concurrency_policy_forbid(tmp_path):
    async with cluster(tmp_path) as c:
        runtime, gate = await _slow_execution(c, concurrencyPolicy="Forbid")
        ctl = runtime.controller
        first = ctl.current
        async with asyncio.timeout(BOUND):
            assert not await ctl.trigger("second")
            gate.set()
            await ctl.wait_completed(1)
        assert ctl.current is first and len(ctl.executions) == 1
        assert all(j.status is JobStatus.SUCCEEDED for j in first.nodes.values())
        metrics = await scrape(runtime)
        skipped = [v for (name, _), v in metrics.items() if "skipped" in name]
        assert skipped == [1.0]


@pytest.mark.parametrize("share", [0.5, 1.0])
async def test_pod_create_failures(tmp_path, share):
    async with cluster(tmp_path, seed=3) as c:
        c.add_nodes(6)
        await c.start_agent()
        c.sim.faults.fail(share, status=500, verb="create", resource="pods")
        runtime = await c.start_controller()
        await run_one(runtime)
        jobs = runtime.controller.current.nodes
        failed = [n for n, j in jobs.items() if j.status is JobStatus.FAILED]
        if share == 1.0:
            assert len(failed) == 6
            assert all("pod creation failed" in jobs[n].reason for n in failed)
        else:  # retried with backoff until they went through
            assert failed == []
            assert all(j.result for j in jobs.values())


async def test_watch_drops_and_410_lose_no_finish(tmp_path, plane):
    # bjc.sim drops every watch every 50 ms, every other time with history expired (410 on
    # resume); the real control plane restarts its apiserver twice while the jobs run
    drops, pause, run_seconds = (1000, 0.05, 0.05) if plane is None else (2, 1.0, 2.0)
    async with cluster(tmp_path, plane, history_size=20) as c:
        await c.ready_nodes(30 if plane is None else 12)
        await c.start_agent(JobBehaviour(run_seconds=run_seconds, run=post_result))
        runtime = await c.start_controller(podPoolSize=3)

        async def chaos():
            for i in range(drops):
                await asyncio.sleep(pause)
                await c.drop_watches(expire=bool(i % 2))

        chaos_task = asyncio.create_task(chaos())
        try:
            await run_one(runtime)
        finally:
            if plane is None:
                chaos_task.cancel()
            await asyncio.gather(chaos_task, return_exceptions=True)
        jobs = runtime.controller.current.nodes
        assert all(j.status is JobStatus.SUCCEEDED for j in jobs.values())
        assert runtime.controller.watcher.relists > 1


async def test_second_trigger_in_the_same_minute_gets_its_own_execution(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(2)
        await c.start_agent()
        runtime = await c.start_controller()
        await run_one(runtime)
        await run_one(runtime, 2)
        ids = sorted(runtime.controller.executions)
        assert len(ids) == 2 and ids[0] < ids[1]
        for eid in ids:
            assert sorted(p.name for p in (runtime.store.root / eid).glob("node-*.json")) == [
                "node-000.json",
                "node-001.json",
            ]


async def test_history_is_pruned_with_its_metrics(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        runtime = await c.start_controller(reportHistory=2, dev_mode=False)
        async with asyncio.timeout(BOUND):
            await runtime.elector.wait_leading()
        await run_one(runtime, 1)
        pruned = runtime.controller.current.id
        for i in range(2, 4):
            await run_one(runtime, i)
        ids = sorted(runtime.controller.executions)
        assert len(ids) == 2 and pruned not in ids
        assert sorted(p.name for p in runtime.store.root.iterdir() if p.name.isdigit()) == ids
        metrics = await scrape(runtime)
        seen = {dict(labels).get("executionID") for _, labels in metrics} - {None}
        assert seen == set(ids)
        # callbacks of a pruned execution are refused from then on
        url = f"http://127.0.0.1:{runtime.ports['callback']}/report/node-000/{pruned}/result"
        async with aiohttp.ClientSession() as http:
            body = {"checks": [{"value": 1, "labels": {"kind": "x"}}]}
            async with http.post(url, json=body) as r:
                assert r.status == 406
                assert (await r.text()).startswith("node / execution ID not allowed")


async def test_job_events_become_kubernetes_events_regarding_the_job_pod(tmp_path):
    async def job(pod: RunningPod) -> int:
        event = {"warning": True, "reason": "DiskFull", "message": "disk %s at %d%%",
                 "args": ["/var", "91"]}  # fmt: skip
        async with aiohttp.ClientSession() as http:
            async with http.post(pod.env["CALLBACK_SERVICE_EVENT_URL"], json=event) as r:
                assert r.status == 200, await r.text()
        return await post_result(pod)

    async with cluster(tmp_path) as c:
        c.add_nodes(2)
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(dev_mode=False)
        await run_one(runtime)
        jobs = runtime.controller.current.nodes
        events = c.sim.list("events.events.k8s.io", NAMESPACE)
        assert sorted(e["regarding"]["name"] for e in events) == sorted(
            j.pod for j in jobs.values()
        )
        for event in events:
            pod = c.sim.get("pods", NAMESPACE, event["regarding"]["name"])
            assert event["regarding"]["uid"] == pod["metadata"]["uid"]
            assert event["type"] == "Warning" and event["reason"] == "DiskFull"
            assert event["note"] == "disk /var at 91%"
            assert event["action"] == "n/a" and event["reportingController"] == "batch"
