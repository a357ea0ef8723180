"""Leadership between controllers, and a controller that dies mid-execution."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod

from .harness import cluster, crash

BOUND = 120  # seconds: a hang bound (the real control plane too), not a performance expectation
LEASE = (2.0, 1.5, 0.2)  # duration, renew deadline, retry period


def leadership_log(runtime, log: list) -> None:
    loop = asyncio.get_running_loop()
    runtime.elector.on_change(lambda leading: log.append((runtime.identity, leading, loop.time())))


async def wait_leader(*runtimes):
    waits = {asyncio.ensure_future(r.elector.wait_leading()): r for r in runtimes}
    async with asyncio.timeout(BOUND):
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[done.pop()]


async def test_only_the_leader_triggers_and_graceful_handover(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(3)
        await c.start_agent()
        shared = tmp_path / "shared-reports"
        common = dict(
            dev_mode=False,
            report_dir=shared,
            lease_timing=LEASE,
            runOnStartup=True,
            startupDelay="100ms",
        )
        a = await c.start_controller(identity="a", **common)
        b = await c.start_controller(identity="b", **common)
        leader = await wait_leader(a, b)
        standby = b if leader is a else a
        async with asyncio.timeout(BOUND):
            await leader.controller.wait_completed(1)
        assert standby.controller.completed == 0 and not standby.controller.running
        assert not standby.leading
        eid = leader.controller.current.id
        # both are Ready (a Deployment can roll); only the leader takes callbacks
        async with aiohttp.ClientSession() as http:
            for runtime in (leader, standby):
                url = f"http://127.0.0.1:{runtime.ports['health']}/readyz"
                async with http.get(url) as r:
                    assert r.status == 200, runtime.identity
            url = f"http://127.0.0.1:{standby.ports['callback']}/report/node-000/{eid}/result"
            async with http.post(url, json={"checks": [{"value": 9.0}]}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert "not the leader" in await r.text()
        assert (shared / eid / "node-000.json").read_bytes() != b'{"checks":[{"value":9.0}]}'

        log: list = []
        leadership_log(standby, log)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await leader.stop()
        c.runtimes.remove(leader)
        await wait_leader(standby)
        handover = log[-1][2] - stopped_at
        assert log[-1][:2] == (standby.identity, True)
        assert handover < 2.0, f"graceful handover took {handover:.2f}s"
        # the new leader read the shared history: the start-up run is not repeated
        async with asyncio.timeout(BOUND):
            await standby.accepting_callbacks.wait()
        assert len(standby.controller.executions) == 1
        assert standby.controller.completed == 0


async def test_crashed_leader_is_replaced_after_the_lease_expires(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        a = await c.start_controller(identity="a", dev_mode=False, lease_timing=LEASE)
        await wait_leader(a)
        b = await c.start_controller(
            identity="b", dev_mode=False, lease_timing=LEASE, report_dir=tmp_path / "b"
        )
        loop = asyncio.get_running_loop()
        await crash(a)
        c.runtimes.remove(a)
        crashed_at = loop.time()
        await wait_leader(b)
        took = loop.time() - crashed_at
        # not before the lease could expire, and within its duration plus a retry
        assert LEASE[0] * 0.9 <= took <= LEASE[0] * 2 + LEASE[2] * 2, took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post_result_retrying(pod: RunningPod) -> int:
    """Report like a job script with `curl --retry`: the controller may be down a while."""
    body = {"checks": [{"value": 2.0, "labels": {"kind": "disk"}}]}
    url = pod.env["CALLBACK_SERVICE_RESULT_URL"]
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.post(url, json=body) as r:
                    if r.status == 200:
                        return 0
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    return 1


async def test_controller_killed_mid_execution_resumes_without_losing_results(
    tmp_path, caplog, plane
):
    crashed, six_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def job(pod: RunningPod) -> int:
        started.append(pod.node)
        if len(started) == 6:
            six_started.set()
        if len(started) > 4:
            await crashed.wait()  # these run on while no controller is up
        return await post_result_retrying(pod)

    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(10)
        await c.start_agent(JobBehaviour(run=job))
        port = free_port()
        reports = tmp_path / "reports"
        # runOnStartup with a delay no test waits for: only its log line shows it was planned
        caplog.set_level(logging.INFO)
        startup = {"runOnStartup": True, "startupDelay": "1h"}
        first = await c.start_controller(
            podPoolSize=3, callback_port=port, report_dir=reports, **startup
        )
        await first.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await six_started.wait()
        assert "start-up execution in 3600s" in caplog.text
        eid = first.controller.current.id
        done_before = [n for n, j in first.controller.current.nodes.items() if j.result]
        assert done_before, "some results should have arrived before the crash"
        await crash(first)
        c.runtimes.remove(first)
        crashed.set()
        caplog.clear()

        second = await c.start_controller(
            podPoolSize=3, callback_port=port, report_dir=reports, **startup
        )
        async with asyncio.timeout(BOUND):
            await second.controller.wait_completed(1)
        # the resumed execution was the start-up run: none is planned after it
        assert "resumed" in caplog.text and "start-up execution" not in caplog.text
        execution = second.controller.executions[eid]
        assert execution.state.done
        assert sorted(execution.nodes) == nodes
        for node, job_state in execution.nodes.items():
            assert job_state.status is JobStatus.SUCCEEDED, (node, job_state)
            assert job_state.result, node
            assert (reports / eid / f"{node}.json").is_file()
        url = f"http://127.0.0.1:{second.ports['metrics']}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            text = await r.text()
        samples = {
            (s.name, s.labels.get("node")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.labels.get("executionID") == eid
        }
        for node in nodes:  # rebuilt from disk for the early ones, live for the rest
            assert samples[("bjc_test_checks", node)] == 2.0, node
            assert samples[("bjc_test_processing", node)] == 0.0, node


async def test_pods_that_vanish_while_no_controller_runs_are_failures(tmp_path):
    gate, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def job(pod: RunningPod) -> int:
        started.append(pod.node)
        if len(started) == 3:
            all_started.set()
        await gate.wait()
        return await post_result_retrying(pod)

    async with cluster(tmp_path) as c:
        c.add_nodes(3)
        await c.start_agent(JobBehaviour(run=job))
        port, reports = free_port(), tmp_path / "reports"
        first = await c.start_controller(podPoolSize=3, callback_port=port, report_dir=reports)
        await first.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await all_started.wait()
        execution = first.controller.current
        await execution.flushed()
        assert all(j.status is JobStatus.CREATED for j in execution.nodes.values())
        eid, vanished = execution.id, execution.nodes["node-000"].pod
        await crash(first)
        c.runtimes.remove(first)
        await c.kube.delete(f"/api/v1/namespaces/jobs/pods/{vanished}")
        gate.set()

        second = await c.start_controller(podPoolSize=3, callback_port=port, report_dir=reports)
        async with asyncio.timeout(BOUND):
            await second.controller.wait_completed(1)
        jobs = second.controller.executions[eid].nodes
        assert jobs["node-000"].status is JobStatus.FAILED
        assert "vanished" in jobs["node-000"].reason
        assert jobs["node-001"].status is JobStatus.SUCCEEDED and jobs["node-001"].result
        assert jobs["node-002"].status is JobStatus.SUCCEEDED and jobs["node-002"].result


async def test_a_standby_takes_a_released_lease_without_waiting_for_its_retry(tmp_path):
    slow = (20.0, 15.0, 10.0)  # a standby retries only every ~10 s
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        common = dict(dev_mode=False, report_dir=tmp_path / "shared", lease_timing=slow)
        a = await c.start_controller(identity="a", **common)
        await wait_leader(a)
        b = await c.start_controller(identity="b", **common)
        await asyncio.sleep(0.5)  # b has made its first attempt and sleeps for ~10 s
        assert not b.leading
        loop = asyncio.get_running_loop()
        released_at = loop.time()
        await a.stop()
        c.runtimes.remove(a)
        await a.kube.close()
        await wait_leader(b)
        # the watch woke it: well inside one retry period (a correctness bound)
        assert loop.time() - released_at < slow[2] / 2
