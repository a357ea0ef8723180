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
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml
from aiohttp import web

from bjc.config import Environment, load_config_map
from bjc.execution import ExecutionState, JobStatus, NodeJob
from bjc.kube import ApiError, Credentials, KubeClient
from bjc.kubetypes import Pod
from bjc.podspec import render_pod

NS = "bench"
POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: check
      image: busybox:1.36
      command: ["sh", "-c", "echo checking {{ .NodeName }}"]
"""


def config_yaml(**over: Any) -> str:
    cfg = {
        "name": "bench",
        "cronExpression": "0 0 1 1 *",
        "reportDirectory": "/tmp/unused",
        "reportHistory": 30,
        "podPoolSize": 10,
        "metrics": {
            "prefix": "bench",
            "gauges": {"check": {"help": "check result", "labels": ["kind"]}},
        },
        **over,
    }
    return yaml.safe_dump(cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def sim_process(nodes: int, run_seconds: float = 0.0) -> Iterator[str]:
    """A `bjc sim` process (its own core); yields its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bjc",
            "sim",
            "--port",
            "0",
            "--nodes",
            str(nodes),
            "--run-seconds",
            str(run_seconds),
            "--history-size",
            "200000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise RuntimeError(f"bjc sim did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def _creds(api: str | Credentials) -> Credentials:
    """A `bjc sim` URL, or the credentials of a real apiserver (bench_kwok)."""
    return api if isinstance(api, Credentials) else Credentials(server=api)


async def _setup(api: str | Credentials, config_text: str) -> None:
    async with KubeClient(_creds(api)) as kube:
        with contextlib.suppress(Exception):
            await kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        cm = {
            "metadata": {"name": "bench", "namespace": NS},
            "data": {"config.yaml": config_text, "pod-template.yaml": POD_TEMPLATE},
        }
        with contextlib.suppress(Exception):
            await kube.request("DELETE", f"/api/v1/namespaces/{NS}/configmaps/bench")
        await kube.create(f"/api/v1/namespaces/{NS}/configmaps", cm)


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
    from bjc.controller import Controller
    from bjc.execution import Execution
    from bjc.metrics import Metrics
    from bjc.store import ReportStore

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
    async with KubeClient(_creds(api)) as kube:
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
    cfg = loaded.config
    cfg.callback_service_port = cfg.health_probe_port = cfg.file_server_port = 0
    cfg.metrics.port = 0
    kube = KubeClient(_creds(api))
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
        asyncio.run(_setup(url, config_yaml()))
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


def _controller_process(url: str, tmp: Path, config_text: str) -> subprocess.Popen[bytes]:
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sim",
                "clusters": [{"name": "sim", "cluster": {"server": url}}],
                "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim"}}],
                "users": [{"name": "sim", "user": {}}],
            }
        )
    )
    asyncio.run(_setup(url, config_text))
    env = {
        **os.environ,
        "NAMESPACE": NS,
        "CONFIG_MAP_NAME": "bench",
        "KUBECONFIG": str(kubeconfig),
        "HOSTNAME": "bench-controller",
        "POD_IP": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "bjc", "run"], env=env)


def _ports() -> dict[str, Any]:
    return {
        "callbackServicePort": free_port(),
        "healthProbePort": free_port(),
        "fileServerPort": free_port(),
    }


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bjc run exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("bjc run never became ready")


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
        ports = _ports()
        metrics_port = free_port()
        text = config_yaml(
            reportDirectory=tmp, metrics={"port": metrics_port, "prefix": "bench"}, **ports
        )
        proc = _controller_process(url, Path(tmp), text)
        try:
            asyncio.run(_wait_ready(ports["healthProbePort"], proc))
            time.sleep(2.0)
            return rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)


def bench_history_rss(nodes: int = 5000, history: int = 30) -> dict[str, float]:
    names = [f"node-{i}" for i in range(1, nodes + 1)]
    with sim_process(nodes) as url, tempfile.TemporaryDirectory() as tmp:
        reports = Path(tmp) / "reports"
        write_history(reports, names, history - 1)
        ports = _ports()
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
            **ports,
        )
        proc = _controller_process(url, Path(tmp), text)
        try:
            start = time.perf_counter()
            asyncio.run(_wait_ready(ports["healthProbePort"], proc))
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
            proc.terminate()
            proc.wait(15)


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["watch_events_per_s"] = asyncio.run(bench_watch())
    out["makespan_1000"] = bench_makespan()
    out["idle_rss_mb"] = bench_idle_rss()
    history = bench_history_rss()
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
