"""Controller benchmarks: watch decoding, makespan against its floor, memory.

- watch_events_per_s: a recorded pod watch stream (realistic job pods moving
  Pending → Running → Succeeded) served over HTTP and consumed by the real
  PodWatcher + controller callback.
- makespan_1000: 1,000 nodes, pool size 10, jobs that finish at once, against a
  `bjc sim` process; the floor is an ideal client doing only the API round trips
  (create, then wait for the watch to show the pod finished) with the same pool.
- idle_rss_mb / rss_5000_nodes_30_exec_mb: a real `bjc run` process against a
  `bjc sim` process, RSS read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from benchmarks import scaled
from benchmarks.processes import (
    NS,
    POD_TEMPLATE,
    config_yaml,
    controller_process,
    credentials,
    free_port,
    ports,
    put_config_map,
    rss_mb,
    sim_process,
    stop,
    wait_ready,
)
from bjc.config.configmap import load_config_map
from bjc.config.podspec import render_pod
from bjc.config.settings import Environment
from bjc.kube.client import ApiError, Credentials, KubeClient
from bjc.kube.objects import Pod
from bjc.reports.execution import ExecutionState, JobStatus, NodeJob


# --------------------------------------------------------------------- watch
def recorded_stream(pods: int) -> bytes:
    loaded = load_config_map({"config.yaml": config_yaml(), "pod-template.yaml": POD_TEMPLATE})
    lines = []
    rv = 1000
    for i in range(pods):
        pod = render_pod(
            loaded.template,
            config=loaded.config,
            namespace=NS,
            node_name=f"node-{i:05d}",
            execution_id="202601010000",
            callback_host="10.0.0.1",
            owner=None,
        )
        pod["metadata"].update(uid=f"uid-{i}", creationTimestamp="2026-01-01T00:00:00Z")
        for phase, kind in (
            ("Pending", "ADDED"),
            ("Running", "MODIFIED"),
            ("Succeeded", "MODIFIED"),
        ):
            rv += 1
            pod["metadata"]["resourceVersion"] = str(rv)
            pod["status"] = {"phase": phase, "startTime": "2026-01-01T00:00:01Z"}
            lines.append(msgspec.json.encode({"type": kind, "object": pod}))
    return b"\n".join(lines) + b"\n"


async def bench_watch(pods: int = 10000) -> float:
    from bjc.engine.controller import Controller
    from bjc.reports.execution import Execution
    from bjc.reports.metrics import Metrics
    from bjc.reports.store import ReportStore

    stream = recorded_stream(pods)
    events = stream.count(b"\n")

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        resp = web.StreamResponse()
        await resp.prepare(request)
        for start in range(0, len(stream), 1 << 20):
            await resp.write(stream[start : start + (1 << 20)])
        return resp

    app = web.Application()
    app.router.add_get(f"/api/v1/namespaces/{NS}/pods", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    tmp = tempfile.mkdtemp()
    loaded = load_config_map({"config.yaml": config_yaml(), "pod-template.yaml": POD_TEMPLATE})
    kube = KubeClient.from_url(f"http://127.0.0.1:{port}")
    ctl = Controller(
        config=loaded.config,
        template=loaded.template,
        namespace=NS,
        kube=kube,
        store=ReportStore(tmp),
        metrics=Metrics(loaded.config),
        callback_host="x",
    )

    class Discard:
        async def write_state(self, eid: str, data: bytes) -> None:
            return None

        async def append_journal(self, eid: str, data: bytes) -> None:
            return None

    execution = Execution.new("202601010000", [f"node-{i:05d}" for i in range(pods)], Discard())
    ctl.executions[execution.id] = execution
    await ctl.watcher.relist()
    start = time.perf_counter()
    with contextlib.suppress(aiohttp.ClientPayloadError):
        async for ev in kube.watch(ctl.watcher.path, Pod, resource_version="1"):
            ctl.watcher.apply(ev.type, ev.object)
    elapsed = time.perf_counter() - start
    done = sum(1 for j in execution.nodes.values() if j.status is JobStatus.SUCCEEDED)
    assert done == pods, f"only {done}/{pods} jobs seen finished"
    await kube.close()
    await runner.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    return events / elapsed


# ------------------------------------------------------------------ makespan
async def floor_makespan(api: str | Credentials, nodes: list[str], pool: int) -> float:
    """An ideal controller: only the API round trips, nothing else."""
    loaded = load_config_map({"config.yaml": config_yaml(), "pod-template.yaml": POD_TEMPLATE})
    path = f"/api/v1/namespaces/{NS}/pods"
    async with KubeClient(credentials(api)) as kube:
        await kube.request("DELETE", path)
        _, rv = await kube.list(path, Pod)
        waiting: dict[str, asyncio.Future[None]] = {}

        def seen(pod: Pod) -> None:
            fut = waiting.get(pod.metadata.name)
            if fut is not None and pod.finished and not fut.done():
                fut.set_result(None)

        async def watch() -> None:
            nonlocal rv
            while True:  # a stream ends after its timeout: resume; after an error, relist
                try:
                    async for ev in kube.watch(path, Pod, resource_version=rv):
                        rv = ev.object.metadata.resource_version or rv
                        seen(ev.object)
                except (ApiError, aiohttp.ClientError, TimeoutError):
                    pods, rv = await kube.list(path, Pod)
                    for pod in pods:
                        seen(pod)

        watcher = asyncio.create_task(watch())
        queue = list(nodes)
        start = time.perf_counter()

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            while queue:
                node = queue.pop()
                pod = render_pod(
                    loaded.template,
                    config=loaded.config,
                    namespace=NS,
                    node_name=node,
                    execution_id="202601010001",
                    callback_host="127.0.0.1",
                    owner=None,
                )
                fut = waiting[pod["metadata"]["name"]] = loop.create_future()
                await kube.create(path, pod)
                await asyncio.wait([fut, watcher], return_when=asyncio.FIRST_COMPLETED)
                if not fut.done():  # the watch died: say why rather than hang
                    raise RuntimeError(f"floor: pod watch ended: {watcher.exception()!r}")

        await asyncio.gather(*(worker() for _ in range(pool)))
        elapsed = time.perf_counter() - start
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await kube.request("DELETE", path)
    return elapsed


async def bjc_makespan(api: str | Credentials, pool: int) -> float:
    from bjc.runtime import Runtime

    tmp = tempfile.mkdtemp()
    env = Environment(
        namespace=NS,
        config_map_name="bench",
        pod_ip="127.0.0.1",
        hostname="bench",
        dev_mode=True,
        report_directory=tmp,
    )
    loaded = load_config_map(
        {"config.yaml": config_yaml(podPoolSize=pool), "pod-template.yaml": POD_TEMPLATE}, env
    )
    cfg = msgspec.structs.replace(
        loaded.config,
        callback_service_port=0,
        health_probe_port=0,
        file_server_port=0,
        metrics=msgspec.structs.replace(loaded.config.metrics, port=0),
    )
    kube = KubeClient(credentials(api))
    runtime = Runtime(
        config=cfg, template=loaded.template, env=env, kube=kube, bind_host="127.0.0.1"
    )
    await runtime.start()
    await runtime.controller.watcher.synced.wait()
    start = time.perf_counter()
    await runtime.controller.trigger("bench")
    await runtime.controller.wait_completed(1)
    elapsed = time.perf_counter() - start
    await runtime.stop()
    await kube.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return elapsed


def bench_makespan(nodes: int = 1000, pool: int = 10, rounds: int = 2) -> dict[str, float]:
    names = [f"node-{i}" for i in range(1, nodes + 1)]
    floors, bjcs = [], []
    with sim_process(nodes) as url:
        asyncio.run(put_config_map(url, config_yaml()))
        for _ in range(rounds):
            floors.append(asyncio.run(floor_makespan(url, names, pool)))
            bjcs.append(asyncio.run(bjc_makespan(url, pool)))
    return {"bjc_s": min(bjcs), "floor_s": min(floors), "ratio": min(bjcs) / min(floors)}


# --------------------------------------------------------------------- memory
def write_history(root: Path, nodes: list[str], executions: int) -> None:
    """A report directory as bjc leaves it after `executions` runs on `nodes`."""
    enc = msgspec.json.Encoder()
    for k in range(executions):
        eid = f"2026010100{k:02d}"
        d = root / eid
        d.mkdir(parents=True)
        jobs = {}
        for node in nodes:
            jobs[node] = NodeJob(
                status=JobStatus.SUCCEEDED,
                pod=f"bench-job-{node}-{eid}",
                created=1.0,
                finished=2.0,
                duration_ms=1000.0,
                result=True,
            )
            (d / f"{node}.json").write_bytes(
                enc.encode({"check": [{"value": 1.0, "labels": {"kind": "disk"}}]})
            )
        state = ExecutionState(id=eid, started=1.0, nodes=jobs, finished=3.0)
        (d / ".bjc-execution.json").write_bytes(enc.encode(state))


async def _wait_metric(port: int, pattern: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    if re.search(pattern, await r.text(), re.M):
                        return
            await asyncio.sleep(1.0)
    raise RuntimeError(f"metric {pattern!r} never appeared")


def bench_idle_rss() -> float:
    with sim_process(3) as url, tempfile.TemporaryDirectory() as tmp:
        placed = ports()
        metrics_port = free_port()
        text = config_yaml(
            reportDirectory=tmp, metrics={"port": metrics_port, "prefix": "bench"}, **placed
        )
        asyncio.run(put_config_map(url, text))
        proc = controller_process(url, Path(tmp))
        try:
            asyncio.run(wait_ready(placed["healthProbePort"], proc))
            time.sleep(scaled(2.0, 0.1))
            return rss_mb(proc.pid)
        finally:
            stop(proc)


def bench_history_rss(nodes: int = 5000, history: int = 30) -> dict[str, float]:
    names = [f"node-{i}" for i in range(1, nodes + 1)]
    with sim_process(nodes) as url, tempfile.TemporaryDirectory() as tmp:
        reports = Path(tmp) / "reports"
        write_history(reports, names, history - 1)
        placed = ports()
        metrics_port = free_port()
        text = config_yaml(
            reportDirectory=str(reports),
            reportHistory=history,
            podPoolSize=50,
            runOnStartup=True,
            startupDelay="100ms",
            metrics={
                "port": metrics_port,
                "prefix": "bench",
                "gauges": {"check": {"help": "check result", "labels": ["kind"]}},
            },
            **placed,
        )
        asyncio.run(put_config_map(url, text))
        proc = controller_process(url, Path(tmp))
        try:
            start = time.perf_counter()
            asyncio.run(wait_ready(placed["healthProbePort"], proc))
            ready = time.perf_counter() - start
            asyncio.run(
                _wait_metric(
                    metrics_port,
                    r'^bjc_execution_progress\{executionID="(?!2026010100)\d+"\} 1(\.0)?$',
                    600,
                )
            )
            return {
                "rss_mb": rss_mb(proc.pid),
                "startup_s": ready,
                "series_hint": nodes * history * 3,
            }
        finally:
            stop(proc)


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["watch_events_per_s"] = asyncio.run(bench_watch(scaled(10000, 200)))
    out["makespan_1000"] = bench_makespan(scaled(1000, 20), scaled(10, 5), scaled(2, 1))
    out["idle_rss_mb"] = bench_idle_rss()
    history = bench_history_rss(scaled(5000, 20), scaled(30, 3))
    out["rss_5000_nodes_30_exec_mb"] = history["rss_mb"]
    out["history_startup_s"] = history["startup_s"]
    return out


if __name__ == "__main__":
    which = sys.argv[1:] or ["all"]
    if "all" in which:
        print(json.dumps(run(), indent=2))
    else:
        fns = {
            "watch": lambda: asyncio.run(bench_watch()),
            "makespan": bench_makespan,
            "idle": bench_idle_rss,
            "history": bench_history_rss,
        }
        print(json.dumps({w: fns[w]() for w in which}, indent=2))
