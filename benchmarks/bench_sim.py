"""Throughput of bjc.sim: pod creates/s, watch events/s, and a 5,000-node scenario.

Numbers, not assertions: `python -m benchmarks.bench_sim` prints the dict that
`run()` returns. Everything goes over real HTTP on loopback, like the controller.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from benchmarks import scaled
from bjc.sim import JobBehaviour, NodeAgent, SimCluster

NS = "default"


def _pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "busybox:1.36", "env": [{"name": "N", "value": name}]}
            ],
        },
    }


async def _create_pods(url: str, names: list[tuple[str, str]], concurrency: int) -> float:
    queue = list(reversed(names))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while queue:
                name, node = queue.pop()
                async with http.post(
                    f"{url}/api/v1/namespaces/{NS}/pods", json=_pod(name, node)
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"create {name}: HTTP {r.status}")
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def _creates_per_s(n: int = 3000, concurrency: int = 16) -> float:
    sim = SimCluster()
    await sim.start()
    try:
        elapsed = await _create_pods(sim.url, [(f"c{i}", "node-1") for i in range(n)], concurrency)
        return n / elapsed
    finally:
        await sim.stop()


async def _watch_events_per_s(n: int = 20000) -> float:
    """Events delivered to a watcher replaying a backlog of `n` changes, then live ones."""
    sim = SimCluster(history_size=n * 2)
    await sim.start()
    try:
        rv = str(sim.store.rv)
        for i in range(n):
            sim.create(_pod(f"w{i}", "node-1"))
        received = 0
        async with aiohttp.ClientSession(read_bufsize=1 << 20) as http:
            start = time.perf_counter()
            params = {"watch": "1", "resourceVersion": rv}
            async with http.get(f"{sim.url}/api/v1/namespaces/{NS}/pods", params=params) as r:
                async for line in r.content:
                    json.loads(line)
                    received += 1
                    if received == n:
                        break
            return received / (time.perf_counter() - start)
    finally:
        await sim.stop()


async def _scenario_5000(nodes: int = 5000, pods: int = 5000) -> dict[str, Any]:
    sim = SimCluster(history_size=50000)
    t0 = time.perf_counter()
    for i in range(nodes):
        sim.add_node(f"node-{i:05d}", labels={"pool": "bench"})
    await sim.start()
    agent = NodeAgent(sim.url, None, behaviour=JobBehaviour())
    await agent.start()
    try:
        await agent.synced.wait()
        async with aiohttp.ClientSession() as http:
            t = time.perf_counter()
            async with http.get(
                f"{sim.url}/api/v1/nodes", params={"labelSelector": "pool=bench"}
            ) as r:
                listed = len((await r.json())["items"])
            list_nodes_s = time.perf_counter() - t
        done = asyncio.Event()
        finished = 0

        def count(change: Any) -> None:
            nonlocal finished
            if change.key == "pods" and change.type == "MODIFIED":
                phase = change.obj.get("status", {}).get("phase")
                if phase == "Succeeded" and change.old.get("status", {}).get("phase") != phase:
                    finished += 1
                    if finished == pods:
                        done.set()

        sim.store.on_commit.append(count)
        t = time.perf_counter()
        create_s = await _create_pods(
            sim.url, [(f"job-{i:05d}", f"node-{i % nodes:05d}") for i in range(pods)], 16
        )
        await asyncio.wait_for(done.wait(), timeout=90)
        all_done_s = time.perf_counter() - t
        async with aiohttp.ClientSession() as http:
            t = time.perf_counter()
            async with http.get(f"{sim.url}/api/v1/pods") as r:
                pod_count = len((await r.json())["items"])
            list_pods_s = time.perf_counter() - t
            t = time.perf_counter()
            params = {"fieldSelector": "spec.nodeName=node-00042"}
            async with http.get(f"{sim.url}/api/v1/pods", params=params) as r:
                await r.read()
            selected_list_s = time.perf_counter() - t
        return {
            "nodes": listed,
            "pods": pod_count,
            "list_nodes_ms": round(list_nodes_s * 1000, 1),
            "list_pods_ms": round(list_pods_s * 1000, 1),
            "field_selected_list_ms": round(selected_list_s * 1000, 1),
            "creates_per_s": round(pods / create_s, 1),
            "all_pods_succeeded_s": round(all_done_s, 2),
            "total_s": round(time.perf_counter() - t0, 2),
        }
    finally:
        await agent.stop()
        await sim.stop()


async def _run() -> dict[str, Any]:
    return {
        "sim_creates_per_s": round(await _creates_per_s(scaled(3000, 50)), 1),
        "sim_watch_events_per_s": round(await _watch_events_per_s(scaled(20000, 200)), 1),
        "sim_5000": await _scenario_5000(scaled(5000, 20), scaled(5000, 20)),
    }


def run() -> dict[str, Any]:
    return asyncio.run(_run())


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
