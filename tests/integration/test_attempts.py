"""Attempts are fenced (jobRetries): each attempt of a node's job calls back as itself,
and a late callback of an attempt the controller gave up on changes nothing.

Against bjc.sim, the late callback and the failover also on the real control plane:
a first attempt that hangs past `jobTimeout` is retried; the retry reports; then the
first attempt, as a pod in its termination grace period would, posts its own result,
file and event, and is told 409. Also: the first attempt's environment is the Go
controller's byte for byte, the fence survives a failover, and a retry is on disk
before its pod exists.
"""

from __future__ import annotations

import asyncio
import errno
import json
from typing import Any

import aiohttp
import pytest

from bjc.client import Client
from bjc.config.podspec import job_pod_name
from bjc.engine.dispatcher import Dispatcher, DispatchPlan
from bjc.reports.execution import Execution, JobStatus
from bjc.reports.store import ReportStore
from bjc.reports.summary import read_execution
from bjc.sim import JobBehaviour, RunningPod
from tests.report_files import state

from .harness import NAMESPACE, PODS, cluster, crash, eventually
from .test_controller import BOUND, run_one, scrape
from .test_failover import free_port, post_result_retrying

RETRIED = {"checks": [{"value": 200.0, "labels": {"kind": "retry"}}]}
LATE = {"checks": [{"value": 999.0, "labels": {"kind": "late"}}]}
EVENT = {"warning": True, "reason": "Late", "message": "from an abandoned attempt"}


def first_attempt(pod: RunningPod) -> bool:
    return "retry=" not in pod.env["CALLBACK_SERVICE_RESULT_URL"]


class Attempts:
    """Jobs whose first attempt hangs (its environment kept, to call back late) and
    whose retry runs `retry`."""

    def __init__(self, retry: Any) -> None:
        self.first_env: dict[str, str] = {}
        self.retry = retry

    async def job(self, pod: RunningPod) -> int:
        if first_attempt(pod):
            self.first_env.update(pod.env)
            await asyncio.Event().wait()  # until jobTimeout ends it
        return int(await self.retry(pod))


async def report_as_a_job(pod: RunningPod) -> int:
    """The retry reports through bjc.client, as `bjc report` does, from its own env."""
    client = Client.from_env(pod.env)
    await asyncio.to_thread(client.report, RETRIED)
    await asyncio.to_thread(client.upload, b"from the retry", "report.txt")
    await asyncio.to_thread(client.event, "Checked", "by %s", ["the retry"])
    return 0


async def post(url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(url, **kw) as resp:
        return resp.status, await resp.text()


async def test_a_late_callback_of_an_abandoned_attempt_is_refused_and_the_retry_kept(
    tmp_path, plane
):
    attempts = Attempts(report_as_a_job)
    async with cluster(tmp_path, plane) as c:
        (node,) = await c.ready_nodes(1)
        await c.start_agent(JobBehaviour(run=attempts.job))
        # the first attempt must be running when it times out: the real control plane
        # takes a few seconds to schedule and start a pod
        timeout = "1s" if c.plane is None else "10s"
        runtime = await c.start_controller(jobRetries=1, jobTimeout=timeout)
        await run_one(runtime)
        execution = runtime.controller.current
        eid, job = execution.id, execution.nodes[node]
        assert job.status is JobStatus.SUCCEEDED and job.result and len(job.attempts) == 1
        assert "jobTimeout" in job.attempts[0].reason or "Deadline" in job.attempts[0].reason

        # the first attempt, still in its grace period, calls back with what it was given
        first = attempts.first_env
        url = first["CALLBACK_SERVICE_FILE_URL"]
        answers = [
            await post(first["CALLBACK_SERVICE_RESULT_URL"], json=LATE),
            await post(f"{url}?name=report.txt", data=b"late"),
            await post(first["CALLBACK_SERVICE_EVENT_URL"], json=EVENT),
        ]
        expected = (
            f"stale attempt: the first attempt of node {node}'s job was retried; "
            "retry 1 is the current attempt\n"
        )
        assert answers == [(409, expected)] * 3

        # the retry's result, file, series and summary stand
        directory = runtime.store.root / eid
        assert json.loads((directory / f"{node}.json").read_bytes()) == RETRIED
        assert (directory / f"{node}-report.txt").read_bytes() == b"from the retry"
        series = await scrape(runtime)
        checks = {
            dict(k)["kind"]: v
            for (name, k), v in series.items()
            if name == "bjc_test_checks" and dict(k)["executionID"] == eid
        }
        assert checks == {"retry": 200.0}
        (summary,) = read_execution(directory).nodes
        assert [(v.labels, v.value) for v in summary.values] == [({"kind": "retry"}, 200.0)]
        assert not summary.error
        for route in ("result", "file", "event"):
            key = ("bjc_stale_callbacks_total", (("reason", "retried"), ("route", route)))
            assert series[key] == 1, route


@pytest.mark.parametrize("retries", [0, 1])
async def test_the_first_attempt_gets_the_go_controllers_environment(tmp_path, retries):
    """jobRetries 0: every URL is the Go controller's `http://%s:%d/report/%s/%s/<route>`;
    with retries, the first attempt's are too and only a retry's carry `?retry=N`."""
    template = """\
apiVersion: v1
kind: Pod
spec:
  initContainers:
    - name: init
      image: busybox
  containers:
    - name: main
      image: busybox
      env:
        - name: MINE
          value: kept
"""
    tries: dict[str, int] = {}

    async def job(pod: RunningPod) -> int:
        tries[pod.node] = tries.get(pod.node, 0) + 1
        return 1 if pod.node == "flaky-000" and tries[pod.node] == 1 else 0

    async with cluster(tmp_path) as c:
        c.add_nodes(1, "ok")
        c.add_nodes(1, "flaky")
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(jobRetries=retries, template=template)
        await run_one(runtime)
        eid, port = runtime.controller.current.id, runtime.ports["callback"]
        pods = {p["metadata"]["name"]: p for p in await c.job_pods()}

        def go_env(node: str) -> list[dict[str, str]]:  # the Go controller's mergeEnv
            url = f"http://127.0.0.1:{port}/report/{node}/{eid}"
            return [
                {"name": "EXECUTION_ID", "value": eid},
                {"name": "NAMESPACE", "value": NAMESPACE},
                {"name": "NODE_NAME", "value": node},
                {"name": "CALLBACK_SERVICE_NAME", "value": "127.0.0.1"},
                {"name": "CALLBACK_SERVICE_PORT", "value": str(port)},
                {"name": "CALLBACK_SERVICE_RESULT_URL", "value": f"{url}/result"},
                {"name": "CALLBACK_SERVICE_FILE_URL", "value": f"{url}/file"},
                {"name": "CALLBACK_SERVICE_EVENT_URL", "value": f"{url}/event"},
            ]

        for node in ("ok-000", "flaky-000"):
            spec = pods[job_pod_name("batch", node, eid)]["spec"]
            assert spec["initContainers"][0]["env"] == go_env(node)
            mine = {"name": "MINE", "value": "kept"}
            assert spec["containers"][0]["env"] == [mine, *go_env(node)]
        retry = pods.get(job_pod_name("batch", "flaky-000", eid, 1))
        if retries == 0:
            assert retry is None and len(pods) == 2
        else:
            assert retry is not None
            marked = [
                {**e, "value": f"{e['value']}?retry=1"} if e["name"].endswith("_URL") else e
                for e in go_env("flaky-000")
            ]
            assert retry["spec"]["initContainers"][0]["env"] == marked


async def test_the_fence_holds_after_a_failover_with_per_attempt_tokens(tmp_path, plane):
    taken_over, retry_running = asyncio.Event(), asyncio.Event()
    retry_env: dict[str, str] = {}

    async def retry(pod: RunningPod) -> int:
        retry_env.update(pod.env)
        retry_running.set()
        await taken_over.wait()
        return await post_result_retrying(pod)  # to whichever controller leads

    attempts = Attempts(retry)
    async with cluster(tmp_path, plane) as c:
        (node,) = await c.ready_nodes(1)
        await c.start_agent(JobBehaviour(run=attempts.job))
        port, reports = free_port(), tmp_path / "reports"
        settings = dict(
            jobRetries=1,
            jobTimeout="1s" if c.plane is None else "10s",  # running when it times out
            callbackAuth="token",
            callback_port=port,
            report_dir=reports,
        )
        first = await c.start_controller(**settings)
        await first.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await retry_running.wait()
        eid = first.controller.current.id
        await crash(first)  # no goodbye: the next controller knows only what is on disk
        c.runtimes.remove(first)

        second = await c.start_controller(**settings)
        stale_url = attempts.first_env["CALLBACK_SERVICE_RESULT_URL"]
        retry_url = retry_env["CALLBACK_SERVICE_RESULT_URL"]
        first_token = stale_url.partition("?token=")[2]
        retry_token = retry_url.partition("&token=")[2]
        assert first_token and retry_token and first_token != retry_token
        base = stale_url.partition("?")[0]
        status, text = await post(stale_url, json=LATE)  # its own, valid, token
        assert (status, text.split(":")[0]) == (409, "stale attempt")
        # a token is the attempt's own: neither attempt can speak as the other
        assert (await post(f"{base}?retry=1&token={first_token}", json=LATE))[0] == 401
        assert (await post(f"{base}?token={retry_token}", json=LATE))[0] == 401
        assert (await post(f"{base}?token=%C3%A9", json=LATE))[0] == 401  # not ASCII

        taken_over.set()
        async with asyncio.timeout(BOUND):
            await second.controller.wait_completed(1)
        job = second.controller.executions[eid].nodes[node]
        assert job.status is JobStatus.SUCCEEDED and job.result
        assert json.loads((reports / eid / f"{node}.json").read_bytes())["checks"][0]["value"] == 2
        series = await scrape(second)
        key = ("bjc_stale_callbacks_total", (("reason", "retried"), ("route", "result")))
        assert series[key] == 1

        # and from the history (a retired execution) after a restart
        await c.stop_controllers()
        third = await c.start_controller(**settings)
        assert (await post(stale_url, json=LATE))[0] == 409
        assert (await post(retry_url, json=RETRIED))[0] == 200
        assert third.controller.executions[eid].done


class FullDisk:
    """The report store, with state writes failing (ENOSPC) while `full`."""

    def __init__(self, store: ReportStore) -> None:
        self.store = store
        self.full = False
        self.refused = 0
        self._wrote = asyncio.Event()

    async def wrote(self) -> None:
        await self._wrote.wait()

    def _done(self) -> None:
        self._wrote.set()
        self._wrote = asyncio.Event()

    async def _write(self, write: Any, execution_id: str, data: bytes) -> None:
        try:
            if self.full:
                self.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            await write(execution_id, data)
        finally:
            self._done()

    async def write_state(self, execution_id: str, data: bytes) -> None:
        await self._write(self.store.write_state, execution_id, data)

    async def append_journal(self, execution_id: str, data: bytes) -> None:
        await self._write(self.store.append_journal, execution_id, data)


async def test_a_retry_is_on_disk_before_its_pod_exists(tmp_path):
    """The decision "retry 1 is current" is durable before retry 1's pod is created:
    while the state cannot be written, no pod; once it can, the pod."""
    eid, node = "202611270101", "node-000"
    store = ReportStore(tmp_path / "reports")
    await store.create_execution(eid)
    disk = FullDisk(store)
    execution = Execution.new(eid, [node], disk, tokens=True)
    execution.job_retries = 1
    job = execution.nodes[node]

    def render(ex: Execution, name: str, _: Any) -> dict[str, Any]:
        pod_name = job_pod_name("batch", name, ex.id, ex.nodes[name].attempt)
        meta = {"name": pod_name, "namespace": NAMESPACE}
        spec = {"nodeName": name, "containers": [{"name": "main", "image": "busybox"}]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    def finish(ex: Execution, name: str, status: JobStatus, reason: str = "") -> None:
        if status is JobStatus.FAILED and ex.may_retry(name):
            ex.retry(name, reason)
        else:
            ex.finish(name, status, reason)

    async def pod_names() -> list[str]:
        pods, _ = await c.kube.list(PODS, dict)
        return sorted(p["metadata"]["name"] for p in pods)

    async with cluster(tmp_path) as c:
        c.add_nodes(1)  # no agent: the pods stay pending, the test ends their jobs
        dispatcher = Dispatcher(c.kube, NAMESPACE, finish=finish)
        plan = DispatchPlan(pool_size=1, render=render, retry_backoff=0.01)
        run = asyncio.create_task(dispatcher.run(execution, plan))
        async with asyncio.timeout(BOUND):
            await eventually(lambda: job.status is JobStatus.CREATED, disk.wrote)
            await execution.recorded()
            first_token = job.token

            disk.full = True
            finish(execution, node, JobStatus.FAILED, "pod failed")  # retry 1 decided
            await eventually(lambda: disk.refused >= 2, disk.wrote)
            # the retry and a second try to record it were refused: still no pod
            assert await pod_names() == [job_pod_name("batch", node, eid)]
            assert job.status is JobStatus.PENDING

            disk.full = False
            await eventually(lambda: job.status is JobStatus.CREATED, disk.wrote)
            on_disk = state(store.root / eid).nodes[node]
            assert [a.token for a in on_disk.attempts] == [first_token]
            assert on_disk.token == job.token != first_token
            assert await pod_names() == [
                job_pod_name("batch", node, eid),
                job_pod_name("batch", node, eid, 1),
            ]
            finish(execution, node, JobStatus.SUCCEEDED)
            await run
