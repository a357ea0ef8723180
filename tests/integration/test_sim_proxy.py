"""bjc.sim.proxy: a Service's ClusterIP forwarded to the ready pods its selector matches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bjc.kube.client import KubeClient
from bjc.sim import SimCluster
from bjc.sim.proxy import ServiceProxy

from .harness import eventually
from .test_run import free_port

CLUSTER_IP = "127.0.0.20"


async def backend(ip: str, name: str) -> tuple[web.AppRunner, int]:
    """An HTTP server on `ip` that answers with its name."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, ip, 0)
    await site.start()
    return runner, runner.addresses[0][1]


def pod(name: str, ip: str, port: int, ready: bool, app: str = "web") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": port}]},
        ]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }  # fmt: skip


@pytest.fixture
async def proxied(sim: SimCluster) -> AsyncIterator[tuple[ServiceProxy, int, KubeClient]]:
    port = free_port()
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "clusterIP": CLUSTER_IP,
                "selector": {"app": "web"},
                "ports": [{"port": port, "targetPort": "http"}],
            },
        }
    )
    runners = []
    for i, name in enumerate(["a", "b", "other"]):
        ip = f"127.0.0.{21 + i}"
        runner, backend_port = await backend(ip, name)
        runners.append(runner)
        app = "other" if name == "other" else "web"
        sim.create(pod(name, ip, backend_port, ready=name != "b", app=app))
    kube = KubeClient.from_url(sim.url)
    proxy = ServiceProxy(kube, "default", "web")
    await proxy.start()
    try:
        yield proxy, port, kube
    finally:
        await proxy.stop()
        await kube.close()
        for runner in runners:
            await runner.cleanup()


async def answers(port: int, count: int = 10) -> set[str]:
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request
    async with aiohttp.ClientSession(connector=connector) as http:
        out = set()
        for _ in range(count):
            async with http.get(f"http://{CLUSTER_IP}:{port}/") as r:
                out.add(await r.text())
        return out


async def set_ready(kube: KubeClient, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": str(ready)}
    await kube.patch(
        f"/api/v1/namespaces/default/pods/{name}/status", {"status": {"conditions": [condition]}}
    )


async def test_only_ready_pods_of_the_selector_get_connections(proxied):
    proxy, port, kube = proxied
    assert await answers(port) == {"a"}  # b is not ready, "other" not selected
    await set_ready(kube, "b", True)
    await set_ready(kube, "a", False)
    await eventually(
        lambda: proxy.pods["b"].ready and not proxy.pods["a"].ready, lambda: asyncio.sleep(0.01)
    )
    assert await answers(port) == {"b"}
    assert proxy.forwarded == 20


async def test_without_a_ready_pod_the_connection_is_refused(proxied):
    proxy, port, kube = proxied
    await set_ready(kube, "a", False)
    await eventually(lambda: not proxy.endpoints("http"), lambda: asyncio.sleep(0.01))
    with pytest.raises(aiohttp.ClientError):
        await answers(port, 1)
    assert proxy.refused >= 1  # aiohttp retries a GET once on a fresh connection's reset


async def test_the_pod_view_survives_watch_cuts_and_compaction(proxied, sim):
    proxy, port, kube = proxied
    for _ in range(3):
        sim.faults.expire_history()
        sim.faults.drop_watches()
        await asyncio.sleep(0.05)
    await set_ready(kube, "b", True)
    await kube.delete("/api/v1/namespaces/default/pods/a")
    await eventually(
        lambda: "a" not in proxy.pods and proxy.pods["b"].ready, lambda: asyncio.sleep(0.01)
    )
    assert await answers(port) == {"b"}


async def test_a_service_without_selector_is_refused(sim):
    sim.create({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "bare", "namespace": "default"},
                "spec": {"ports": [{"port": free_port()}]}})  # fmt: skip
    async with KubeClient.from_url(sim.url) as kube:
        proxy = ServiceProxy(kube, "default", "bare")
        with pytest.raises(ValueError, match="no selector"):
            await proxy.start()
        await proxy.stop()
