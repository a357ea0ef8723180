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

BOUND = 20  # seconds: a hang bound, not a performance expectation


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


async def test_full_execution_respects_pool_size(tmp_path):
    async with cluster(tmp_path) as c:
        nodes = c.add_nodes(50)
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
        # the Go controller's report layout: one result per node, latest link, state file
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
        await runtime.stop()
        c.runtimes.clear()

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
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in c.job_pods()} == {first}
        await run_one(runtime, 2)
        second = runtime.controller.current.id
        assert second != first
        pods = c.job_pods()
        assert len(pods) == 3
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in pods} == {second}
        assert all(p["metadata"]["labels"][OWNER_LABEL] == "batch" for p in pods)


async def test_failures_are_recorded_per_node(tmp_path):
    """Failed pod, pod that never reports, pod deleted mid-run, pod stuck Pending."""
    deleted = asyncio.Event()

    async def wait_for_deletion(pod: RunningPod) -> int:
        deleted.set()
        await asyncio.sleep(3600)  # the pod is deleted under us; the agent stops it
        return 0

    async with cluster(tmp_path) as c:
        c.add_nodes(1, "ok")
        c.add_nodes(1, "crash")
        c.add_nodes(1, "silent")
        c.add_nodes(1, "deleted")
        c.add_nodes(1, "stuck")
        behaviour = JobBehaviour(
            run=post_result,
            per_node={
                "crash-000": JobBehaviour(exit_code=1),
                "silent-000": JobBehaviour(exit_code=0),
                "deleted-000": JobBehaviour(run=wait_for_deletion),
                "stuck-000": JobBehaviour(stay_pending=True),
            },
        )
        await c.start_agent(behaviour)
        runtime = await c.start_controller(jobTimeout="1s")
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
        assert jobs["silent-000"].status is JobStatus.SUCCEEDED and jobs["silent-000"].error
        assert jobs["deleted-000"].status is JobStatus.FAILED
        assert "deleted" in jobs["deleted-000"].reason
        assert jobs["stuck-000"].status is JobStatus.FAILED
        assert "jobTimeout" in jobs["stuck-000"].reason
        assert c.sim.get("pods", NAMESPACE, jobs["stuck-000"].pod) is None
        metrics = await scrape(runtime)
        for node, error in [("ok-000", 0), ("crash-000", 1), ("silent-000", 1),
                            ("deleted-000", 1), ("stuck-000", 1)]:  # fmt: skip
            key = (("executionID", eid), ("node", node))
            assert metrics[("bjc_test_processing", key)] == error, node
        state = json.loads((runtime.store.root / eid / ".bjc-execution.json").read_text())
        assert state["nodes"]["stuck-000"]["status"] == "failed"


async def test_pods_get_active_deadline_from_job_timeout(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        runtime = await c.start_controller(jobTimeout="90s")
        await run_one(runtime)
        (pod,) = c.job_pods()
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
        assert {p["metadata"]["labels"][EXECUTION_LABEL] for p in c.job_pods()} == {ctl.current.id}


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


async def test_watch_drops_and_410_lose_no_finish(tmp_path):
    async with cluster(tmp_path, history_size=20) as c:
        c.add_nodes(30)
        await c.start_agent(JobBehaviour(run_seconds=0.05, run=post_result))
        runtime = await c.start_controller(podPoolSize=3)

        async def chaos():  # 2 s of it: relists after 410 back off, up to 10 s apart
            for i in range(40):
                await asyncio.sleep(0.05)
                if i % 2:
                    c.sim.faults.expire_history()  # the resumed watch gets 410: relist
                c.sim.faults.drop_watches()

        chaos_task = asyncio.create_task(chaos())
        try:
            await run_one(runtime)
        finally:
            chaos_task.cancel()
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
        # callbacks of a pruned execution are refused from then on (406, as in the Go controller)
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


async def test_a_node_cannot_overwrite_the_result_of_a_node_named_like_its_upload(tmp_path):
    """Node node-1 uploading `?name=x.json` would write node-1-x.json, the result of
    node node-1-x (and after a restart its metrics): refused, whatever the order."""
    answers: dict[str, tuple[int, str]] = {}

    async def forge(pod: RunningPod) -> int:
        url = pod.env["CALLBACK_SERVICE_FILE_URL"]
        forged = {"checks": [{"value": 666.0, "labels": {"kind": "forged"}}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}?name=x.json", json=forged) as resp:
                answers["x.json"] = (resp.status, await resp.text())
            async with http.post(f"{url}?name=container-main.log", data=b"fake log") as resp:
                answers["log"] = (resp.status, await resp.text())
            async with http.post(f"{url}?name=report.txt", data=b"mine") as resp:
                answers["report.txt"] = (resp.status, await resp.text())
        return await post_result(pod)

    async with cluster(tmp_path) as c:
        c.sim.add_node("node-1")
        c.sim.add_node("node-1-x")
        await c.start_agent(
            JobBehaviour(run=post_result, per_node={"node-1": JobBehaviour(run=forge)})
        )
        runtime = await c.start_controller()
        await run_one(runtime)
        directory = runtime.store.root / runtime.controller.current.id
        assert answers["x.json"][0] == 400
        assert "belongs to node node-1-x" in answers["x.json"][1]
        assert answers["log"][0] == 400 and "reserved" in answers["log"][1]
        assert answers["report.txt"][0] == 200
        own = json.loads((directory / "node-1-x.json").read_bytes())
        assert own == {"checks": [{"value": 1.0, "labels": {"kind": "node-1-x"}}]}
        assert (directory / "node-1-report.txt").read_bytes() == b"mine"
        assert not (directory / "node-1-container-main.log").exists()  # bjc's pod-log name
