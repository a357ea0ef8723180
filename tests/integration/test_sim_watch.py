"""bjc.sim watches: replay from a resourceVersion, 410 then relist, selectors, bookmarks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from bjc.sim import SimCluster

NS = "default"


def pod(name: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox"}]},
    }


async def raw_watch(
    sim: SimCluster, params: dict[str, str], path: str = f"/api/v1/namespaces/{NS}/pods"
) -> list[dict]:
    """Read a whole watch stream (it must end: timeoutSeconds or an ERROR)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(sim.url + path, params={"watch": "1", **params}) as r:
            assert r.status == 200
            return [json.loads(line) async for line in r.content if line.strip()]


async def test_watch_replays_from_resource_version(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    sim.create(pod("before"))
    listed = await core.list_namespaced_pod(NS)
    sim.create(pod("a"))
    await core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"x": "1"}}})
    await core.delete_namespaced_pod("a", NS)
    seen: list[tuple[str, str, Any]] = []
    async with watch.Watch() as w:
        async with asyncio.timeout(10):
            async for ev in w.stream(
                core.list_namespaced_pod,
                NS,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=1,
            ):
                seen.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.labels))
    assert seen == [
        ("ADDED", "a", {}),
        ("MODIFIED", "a", {"x": "1"}),
        ("DELETED", "a", {"x": "1"}),
    ]


async def test_watch_without_resource_version_starts_with_state(sim: SimCluster) -> None:
    sim.create(pod("x"))
    events = await raw_watch(sim, {"timeoutSeconds": "1"})
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "x")]


async def test_live_events_reach_open_watch(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    listed = await core.list_namespaced_pod(NS)
    got: list[str] = []
    async with watch.Watch() as w, asyncio.timeout(10):
        stream = w.stream(
            core.list_namespaced_pod, NS, resource_version=listed.metadata.resource_version
        )
        sim.create(pod("live-1"))
        async for ev in stream:
            got.append(ev["object"].metadata.name)
            if len(got) == 1:
                sim.create(pod("live-2"))
            else:
                break
    assert got == ["live-1", "live-2"]


async def test_selector_transitions_become_added_and_deleted(sim: SimCluster) -> None:
    rv = str(sim.store.rv)
    sim.create(pod("t"))
    url = f"{sim.url}/api/v1/namespaces/{NS}/pods/t"
    async with aiohttp.ClientSession() as http:
        hdr = {"Content-Type": "application/merge-patch+json"}
        for labels in ({"app": "x"}, {"app": "x", "more": "1"}, {"app": None}):
            async with http.patch(url, json={"metadata": {"labels": labels}}, headers=hdr) as r:
                assert r.status == 200
    events = await raw_watch(
        sim, {"resourceVersion": rv, "labelSelector": "app=x", "timeoutSeconds": "1"}
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_too_old_resource_version_is_410_then_relist_works() -> None:
    sim = SimCluster(history_size=3)
    await sim.start()
    try:
        sim.create(pod("first"))
        old_rv = str(sim.store.rv)
        for i in range(5):
            sim.create(pod(f"p{i}"))
        events = await raw_watch(sim, {"resourceVersion": old_rv})
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (
            status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
        )
        assert status["message"].startswith("too old resource version")

        cfg = client.Configuration(host=sim.url)
        async with client.ApiClient(cfg) as api:
            core = client.CoreV1Api(api)
            with pytest.raises(ApiException) as exc:
                async with watch.Watch() as w:
                    async for _ in w.stream(
                        core.list_namespaced_pod, NS, resource_version=old_rv, timeout_seconds=5
                    ):
                        pass
            assert exc.value.status == 410
            # relist, then watch from the fresh resourceVersion
            listed = await core.list_namespaced_pod(NS)
            assert len(listed.items) == 6
            sim.create(pod("after"))
            async with watch.Watch() as w:
                names = [
                    ev["object"].metadata.name
                    async for ev in w.stream(
                        core.list_namespaced_pod,
                        NS,
                        resource_version=listed.metadata.resource_version,
                        timeout_seconds=1,
                    )
                ]
            assert names == ["after"]
    finally:
        await sim.stop()


async def test_bookmarks_and_timeout(sim: SimCluster) -> None:
    rv = str(sim.store.rv)
    sim.create(pod("b"))
    events = await raw_watch(
        sim, {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    )
    assert events[0]["type"] == "ADDED"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, "a bookmark is sent at least before the timeout ends the stream"
    assert bookmarks[-1]["object"]["kind"] == "Pod"
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= sim.store.rv
    without = await raw_watch(sim, {"resourceVersion": rv, "timeoutSeconds": "1"})
    assert [e["type"] for e in without] == ["ADDED"]


async def test_send_initial_events_ends_with_annotated_bookmark(sim: SimCluster) -> None:
    sim.create(pod("i"))
    events = await raw_watch(
        sim,
        {
            "sendInitialEvents": "true",
            "allowWatchBookmarks": "true",
            "resourceVersionMatch": "NotOlderThan",
            "timeoutSeconds": "1",
        },
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_other_kinds_and_views(sim: SimCluster) -> None:
    rv = str(sim.store.rv)
    sim.add_node("n1")
    sim.create(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": NS},
            "regarding": {"kind": "Pod", "name": "p"},
            "note": "hi",
            "reason": "R",
        }
    )
    nodes = await raw_watch(sim, {"resourceVersion": rv, "timeoutSeconds": "1"}, "/api/v1/nodes")
    assert [e["object"]["metadata"]["name"] for e in nodes] == ["n1"]
    new = await raw_watch(
        sim,
        {"resourceVersion": rv, "timeoutSeconds": "1"},
        f"/apis/events.k8s.io/v1/namespaces/{NS}/events",
    )
    old = await raw_watch(
        sim, {"resourceVersion": rv, "timeoutSeconds": "1"}, f"/api/v1/namespaces/{NS}/events"
    )
    assert new[0]["object"]["note"] == "hi" and new[0]["object"]["apiVersion"] == "events.k8s.io/v1"
    assert old[0]["object"]["message"] == "hi" and old[0]["object"]["apiVersion"] == "v1"
