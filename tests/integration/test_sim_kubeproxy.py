"""bjc.sim.kubeproxy against bjc.sim: a loopback ClusterIP reaches a Ready pod it selects."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bjc.kube.client import KubeClient
from bjc.sim import SimCluster
from bjc.sim.kubeproxy import ServiceProxy
from bjc.web import serve

NS = "proxy"
CLUSTER_IP = "127.96.0.10"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def kube(sim: SimCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_url(sim.url) as client:
        yield client


async def backend(name: str, ip: str, port: int) -> web.AppRunner:
    app = web.Application()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text=name)

    app.router.add_get("/", hello)
    return await serve(app, ip, port)


async def pod(kube: KubeClient, name: str, labels: dict[str, str], ip: str, port: int) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": port}]}
            ]
        },
    }
    await kube.create(f"/api/v1/namespaces/{NS}/pods", obj)
    await kube.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status", {"status": {"podIP": ip}})


async def set_ready(kube: KubeClient, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    path = f"/api/v1/namespaces/{NS}/pods/{name}/status"
    await kube.patch(path, {"status": {"conditions": [condition]}})


async def answer(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        return await resp.text()


async def test_cluster_ip_forwards_to_the_ready_selected_pod(sim: SimCluster, kube) -> None:
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    port = free_port("127.0.0.21")
    runners = [
        await backend(name, ip, port)
        for name, ip in [("a", "127.0.0.21"), ("b", "127.0.0.22"), ("other", "127.0.0.23")]
    ]
    service_port = free_port(CLUSTER_IP)
    await kube.create(
        f"/api/v1/namespaces/{NS}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc", "namespace": NS},
            "spec": {
                "clusterIP": CLUSTER_IP,
                "selector": {"app": "x"},
                "ports": [{"port": service_port, "targetPort": "http"}],
            },
        },
    )
    await pod(kube, "a", {"app": "x"}, "127.0.0.21", port)
    await pod(kube, "b", {"app": "x"}, "127.0.0.22", port)
    await pod(kube, "other", {"app": "y"}, "127.0.0.23", port)
    await set_ready(kube, "a", True)
    await set_ready(kube, "b", False)
    await set_ready(kube, "other", True)  # Ready, but not selected

    proxy = ServiceProxy(kube, NS, "svc")
    await proxy.start()
    url = f"http://{CLUSTER_IP}:{service_port}/"
    try:
        await proxy.wait_until(
            lambda: (CLUSTER_IP, service_port) in proxy.listening and len(proxy.pods) == 3
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            assert {await answer(http, url) for _ in range(4)} == {"a"}

            await set_ready(kube, "a", False)
            await set_ready(kube, "b", True)
            await proxy.wait_until(lambda: proxy.pods[(NS, "b")].ready)
            assert {await answer(http, url) for _ in range(4)} == {"b"}

            await set_ready(kube, "b", False)  # no endpoint: refused, as kube-proxy does
            await proxy.wait_until(lambda: not proxy.pods[(NS, "b")].ready)
            with pytest.raises(aiohttp.ClientConnectionError):
                await answer(http, url)

            await kube.delete(f"/api/v1/namespaces/{NS}/services/svc")
            await proxy.wait_until(lambda: not proxy.listening)
    finally:
        await proxy.stop()
        for runner in runners:
            await runner.cleanup()
