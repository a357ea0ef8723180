"""savePodLog: container logs are fetched with `limitBytes` and streamed to disk, against bjc.sim.

The controller keeps at most `maxPodLogSize` bytes of each container's log, asks the
API for no more (`limitBytes`, which bjc.sim honours as an apiserver does), and never
holds a whole log in memory: a `bjc run` process saving 100 MiB of a 128 MiB log,
and then serving the summary with its last line, stays within a few MB of its
resident size before.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest

from bjc.engine.configwatch import TRIGGER_ANNOTATION
from bjc.kube.client import KubeClient
from bjc.sim import JobBehaviour, RunningPod, SimCluster
from tests.reliability.procfs import peak_rss_kb

from .harness import NAMESPACE, cluster
from .test_controller import run_one
from .test_run import BOUND, bjc_run, free_port, store_config_map

MiB = 1024 * 1024


def exit_line(node: str, code: int) -> bytes:
    """What the sim's node agent appends to a container's log."""
    return f"bjc sim: container main on node {node} exited with {code}\n".encode()


async def test_a_pod_log_is_kept_up_to_max_pod_log_size(tmp_path, caplog) -> None:
    logs = {  # what each job logs before the agent adds its exit line
        "long-000": b"".join(b"line %04d\n" % i for i in range(300)),  # 3,000 bytes
        "exact-000": b"x" * (1024 - len(exit_line("exact-000", 0)) - 1) + b"\n",
        "short-000": b"all good\n",
    }
    asked: list[Mapping[str, str]] = []

    async with cluster(tmp_path) as c:

        async def job(pod: RunningPod) -> int:
            c.sim.set_log(NAMESPACE, pod.name, "main", logs[pod.node])
            return 0

        for name in logs:
            c.add_nodes(1, name.removesuffix("-000"))
        await c.start_agent(JobBehaviour(run=job))
        c.sim.on_request.append(
            lambda verb, resource, query: resource == "pods/log" and asked.append(dict(query))
        )
        runtime = await c.start_controller(savePodLog=True, maxPodLogSize="1Ki")
        with caplog.at_level(logging.INFO, logger="bjc.engine.jobs"):
            await run_one(runtime)
            await runtime.controller.jobs.side_work.drain()
        eid = runtime.controller.current.id
        for node, logged in logs.items():
            full = logged + exit_line(node, 0)
            saved = (runtime.store.root / eid / f"{node}-container-main.log").read_bytes()
            assert saved == full[:1024], node
        assert len(logs["exact-000"] + exit_line("exact-000", 0)) == 1024  # kept whole
    assert sorted(q["limitBytes"] for q in asked) == ["1025"] * 3  # one more tells a cut
    cut = [r.getMessage() for r in caplog.records if "maxPodLogSize" in r.getMessage()]
    assert len(cut) == 1 and "long-000" in cut[0] and "cut at maxPodLogSize (1024 bytes)" in cut[0]


async def wait_for_log(proc: asyncio.subprocess.Process, text: str) -> str:
    """The first line of the process's log (stderr) that contains `text`."""
    assert proc.stderr is not None
    async with asyncio.timeout(BOUND):
        while line := (await proc.stderr.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the process ended without logging {text!r}")


@pytest.mark.timeout(180)
async def test_a_128_mib_pod_log_streams_to_disk_in_bounded_memory(
    sim: SimCluster, tmp_path: Path, start_agent
) -> None:
    """Before: `bjc run` held the whole log (two 30 MB lines took it from 48 to 143 MB)."""
    line = b"y" * (MiB - 1) + b"\n"  # long lines, as in the report

    async def job(pod: RunningPod) -> int:
        sim.set_log(NAMESPACE, pod.name, "main", line * 128)  # made when the job runs
        return 1

    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    sim.add_node("node-1")
    await start_agent(["node-1"], behaviour=JobBehaviour(run=job))
    health, files = free_port(), free_port()
    store_config_map(
        sim, savePodLog=True, maxPodLogSize="100Mi", healthProbePort=health,
        callbackServicePort=free_port(), fileServerPort=files,
        metrics={"port": free_port(), "prefix": "bjc_test"},
    )  # fmt: skip
    proc = await bjc_run(sim, tmp_path, NAMESPACE=NAMESPACE, CONFIG_MAP_NAME="batch")
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(BOUND):
            while True:  # leading and ready: what it holds before any execution
                try:
                    async with http.get(f"http://127.0.0.1:{health}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            before_kb = peak_rss_kb(proc.pid)
            started = time.monotonic()
            async with KubeClient.from_url(sim.url) as kube:
                await kube.patch(
                    f"/api/v1/namespaces/{NAMESPACE}/configmaps/batch",
                    {"metadata": {"annotations": {TRIGGER_ANNOTATION: "big-log"}}},
                )
            # 100 MiB streamed through; logged once the file is in place
            await wait_for_log(proc, "cut at maxPodLogSize (104857600 bytes)")
            saved = tmp_path / "reports" / "latest" / "node-1-container-main.log"
            async with http.get(f"http://127.0.0.1:{files}/summary/latest/summary.json") as r:
                summary = await r.json()
            elapsed = time.monotonic() - started
            after_kb = peak_rss_kb(proc.pid)
        assert saved.stat().st_size == 100 * MiB
        (node,) = summary["nodes"]  # its last line, read from the end of the file
        assert node["status"] == "failed" and node["log_tail"].startswith("yyyy")
        growth_mb = (after_kb - before_kb) / 1024
        logging.getLogger(__name__).info("100 MiB of log: +%.1f MB in %.1f s", growth_mb, elapsed)
        assert growth_mb < 40, f"peak RSS grew by {growth_mb:.0f} MB for 100 MiB of log"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), BOUND)
