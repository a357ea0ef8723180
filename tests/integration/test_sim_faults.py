"""bjc.sim fault injection: 500/429 with Retry-After, dropped watches, delays, expired history."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kubernetes_asyncio import client, watch

from bjc.sim import SimCluster

NS = "default"


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox"}]},
    }


async def test_429_with_retry_after_for_one_verb_and_resource(sim: SimCluster) -> None:
    sim.faults.fail(1.0, status=429, retry_after=7, verb="list", resource="pods")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/namespaces/{NS}/pods") as r:
            body = await r.json()
            assert r.status == 429 and r.headers["Retry-After"] == "7"
            assert body["reason"] == "TooManyRequests"
            assert body["details"]["retryAfterSeconds"] == 7
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200  # other resources unaffected
        async with http.post(f"{sim.url}/api/v1/namespaces/{NS}/pods", json=pod("ok")) as r:
            assert r.status == 201  # other verbs unaffected
        sim.faults.clear()
        async with http.get(f"{sim.url}/api/v1/namespaces/{NS}/pods") as r:
            assert r.status == 200


async def statuses(sim: SimCluster, n: int) -> list[int]:
    async with aiohttp.ClientSession() as http:
        out = []
        for _ in range(n):
            async with http.get(f"{sim.url}/api/v1/nodes") as r:
                out.append(r.status)
        return out


async def test_500_share_is_deterministic_per_seed() -> None:
    runs = []
    for _ in range(2):
        sim = SimCluster(seed=42)
        await sim.start()
        try:
            sim.faults.fail(0.5, status=500)
            runs.append(await statuses(sim, 40))
        finally:
            await sim.stop()
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


async def test_typed_client_sees_500(sim: SimCluster, kube_api_client) -> None:
    sim.faults.fail(1.0, status=500, verb="get", resource="pods/status")
    sim.create(pod("p"))
    core = client.CoreV1Api(kube_api_client)
    assert (await core.read_namespaced_pod("p", NS)).metadata.name == "p"
    with pytest.raises(client.exceptions.ApiException) as exc:
        await core.read_namespaced_pod_status("p", NS)
    assert exc.value.status == 500


async def test_drop_watches_ends_streams_and_watch_module_reconnects(
    sim: SimCluster, kube_api_client
) -> None:
    core = client.CoreV1Api(kube_api_client)
    rv = (await core.list_namespaced_pod(NS)).metadata.resource_version
    names: list[str] = []
    async with watch.Watch() as w, asyncio.timeout(10):
        # no timeout_seconds: kubernetes_asyncio reconnects from the last resourceVersion
        stream = w.stream(core.list_namespaced_pod, NS, resource_version=rv)
        sim.create(pod("one"))
        async for ev in stream:
            names.append(ev["object"].metadata.name)
            if len(names) == 1:
                assert sim.faults.drop_watches() == 1
                sim.create(pod("two"))
            else:
                break
    assert names == ["one", "two"]

    # a raw stream just ends
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/pods", params={"watch": "true"}) as r:
            sim.create(pod("three"))
            first = json.loads(await r.content.readline())
            assert first["object"]["metadata"]["name"] in ("one", "two", "three")
            sim.faults.drop_watches()
            rest = [line async for line in r.content]
    assert len(rest) <= 2  # whatever was queued, then the end of the stream


async def test_delay_slows_responses(sim: SimCluster) -> None:
    sim.faults.delay(5)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with http.get(
                f"{sim.url}/api/v1/nodes", timeout=aiohttp.ClientTimeout(total=0.1)
            ):
                pass
        sim.faults.delay(0)
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200


async def test_expire_history_makes_old_versions_410(sim: SimCluster) -> None:
    rv = str(sim.store.rv)
    sim.create(pod("p"))
    sim.faults.expire_history()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{sim.url}/api/v1/pods", params={"watch": "1", "resourceVersion": rv}
        ) as r:
            event = json.loads(await r.content.readline())
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


async def test_admin_http_paths(sim: SimCluster) -> None:
    async with aiohttp.ClientSession() as http:
        base = f"{sim.url}/_sim/faults"
        async with http.post(
            f"{base}/fail", json={"share": 1, "status": 429, "retry_after": 2}
        ) as r:
            assert r.status == 200
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
        async with http.post(f"{base}/clear") as r:
            assert r.status == 200
        async with http.get(f"{sim.url}/api/v1/nodes") as r:
            assert r.status == 200
        async with http.post(f"{base}/fail", json={"share": 3}) as r:
            assert r.status == 400
            assert "share must be within 0..1" in (await r.json())["message"]
        async with http.post(f"{base}/drop-watches") as r:
            assert (await r.json()) == {"dropped": 0}
        async with http.post(f"{base}/expire-history") as r:
            assert r.status == 200
        async with http.post(f"{base}/delay", json={"seconds": 0}) as r:
            assert r.status == 200
        async with http.post(f"{base}/nonsense") as r:
            assert r.status == 404


def test_fault_arguments_are_checked() -> None:
    sim = SimCluster()
    with pytest.raises(ValueError, match="status must be 500 or 429"):
        sim.faults.fail(0.1, status=503)
    with pytest.raises(ValueError, match="delay seconds must be >= 0"):
        sim.faults.delay(-1)


async def test_fail_times_is_an_outage_of_n_requests(sim: SimCluster) -> None:
    sim.faults.fail(1.0, status=500, verb="list", resource="nodes", times=2)
    async with aiohttp.ClientSession() as http:
        codes = []
        for _ in range(3):
            async with http.get(f"{sim.url}/api/v1/nodes") as r:
                codes.append(r.status)
    assert codes == [500, 500, 200] and sim.faults.rules == []
    with pytest.raises(ValueError, match="fail times must be >= 1"):
        sim.faults.fail(1.0, times=0)
