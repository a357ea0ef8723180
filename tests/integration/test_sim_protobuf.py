"""bjc.sim speaks Kubernetes protobuf over raw HTTP: bodies, answers, watch frames, 415, 406.

(kubectl, an unmodified client-go program, is the other side of this in test_kubectl.py.)
"""

from __future__ import annotations

import struct
from typing import Any

import aiohttp
import pytest

from bjc.sim import SimCluster, kubeproto

PB = "application/vnd.kubernetes.protobuf"
CM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "labels": {"app": "x"}},
    "data": {"a": "b", "empty": ""},
}


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


def frames(stream: bytes) -> list[dict[str, Any]]:
    """The events of a protobuf watch stream: (4-byte length, metav1.WatchEvent)*."""
    event_cls = kubeproto.message_class("v1", "WatchEvent")
    assert event_cls is not None
    out = []
    while stream:
        (n,) = struct.unpack(">I", stream[:4])
        event = event_cls.FromString(stream[4 : 4 + n])
        out.append({"type": event.type, "object": kubeproto.decode(event.object.raw)})
        stream = stream[4 + n :]
    return out


async def test_create_get_list_in_protobuf(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    url = f"{sim.url}/api/v1/namespaces/default/configmaps"
    headers = {"Content-Type": PB, "Accept": f"{PB}, application/json"}
    async with http.post(url, data=kubeproto.encode(CM), headers=headers) as r:
        assert r.status == 201 and r.content_type == PB
        created = kubeproto.decode(await r.read())
    assert created["data"] == CM["data"] and created["metadata"]["uid"]
    assert sim.get("configmaps", "default", "cm") == created  # stored as JSON, same object
    async with http.get(f"{url}/cm") as r:  # a JSON client sees it too
        assert r.content_type == "application/json" and await r.json() == created
    async with http.get(url, headers={"Accept": PB}) as r:
        listed = kubeproto.decode(await r.read())
    assert listed["kind"] == "ConfigMapList" and listed["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["cm"]


async def test_errors_and_discovery_in_protobuf(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{sim.url}/api/v1/namespaces/default/secrets/nope", headers={"Accept": PB}
    ) as r:
        assert r.status == 404 and r.content_type == PB
        status = kubeproto.decode(await r.read())
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'secrets "nope" not found'
    async with http.get(f"{sim.url}/api/v1", headers={"Accept": PB}) as r:
        resources = kubeproto.decode(await r.read())
    names = {res["name"] for res in resources["resources"]}
    assert {"pods", "pods/status", "secrets", "serviceaccounts"} <= names
    pods = next(res for res in resources["resources"] if res["name"] == "pods")
    assert "watch" in pods["verbs"]


async def test_controller_calls_lease_create_and_pod_deletecollection(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    """What a controller-runtime controller sends: a Lease, DeleteOptions in protobuf."""
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "me",
            "leaseDurationSeconds": 15,
            "renewTime": "2025-01-02T03:04:05.678901Z",
        },
    }
    url = f"{sim.url}/apis/coordination.k8s.io/v1/namespaces/default/leases"
    async with http.post(url, data=kubeproto.encode(lease), headers={"Content-Type": PB}) as r:
        assert r.status == 201
    assert sim.get("leases.coordination.k8s.io", "default", "leader")["spec"] == lease["spec"]

    for name in ("a", "b"):
        sim.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"job": name}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }
        )
    options = kubeproto.encode(
        {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
    )
    async with http.delete(
        f"{sim.url}/api/v1/namespaces/default/pods",
        params={"labelSelector": "job=a"},
        data=options,
        headers={"Content-Type": PB, "Accept": PB},
    ) as r:
        assert r.status == 200
        deleted = kubeproto.decode(await r.read())
    assert [p["metadata"]["name"] for p in deleted["items"]] == ["a"]
    assert [p["metadata"]["name"] for p in sim.list("pods", "default")] == ["b"]


async def test_watch_in_protobuf_frames(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    rv = str(sim.store.rv)
    sim.create({**CM, "metadata": {"name": "w", "namespace": "default"}})
    url = f"{sim.url}/api/v1/namespaces/default/configmaps"
    params = {
        "watch": "1",
        "resourceVersion": rv,
        "timeoutSeconds": "1",
        "allowWatchBookmarks": "true",
    }
    async with http.get(url, params=params, headers={"Accept": f"{PB}, application/json"}) as r:
        assert r.headers["Content-Type"] == f"{PB};stream=watch"
        events = frames(await r.read())
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w"
    assert events[-1]["type"] == "BOOKMARK"  # the one before the timeout
    assert events[-1]["object"]["kind"] == "ConfigMap"

    sim.faults.expire_history()
    async with http.get(
        url, params={"watch": "1", "resourceVersion": rv}, headers={"Accept": PB}
    ) as r:
        [error] = frames(await r.read())
    assert error["type"] == "ERROR" and error["object"]["code"] == 410


@pytest.mark.parametrize(
    ("method", "ctype"),
    [
        ("POST", "text/plain"),
        ("POST", "application/cbor"),
        ("PATCH", "application/apply-patch+yaml"),
    ],
)
async def test_unknown_body_media_types_are_415(
    sim: SimCluster, http: aiohttp.ClientSession, method: str, ctype: str
) -> None:
    sim.create({**CM, "metadata": {"name": "cm", "namespace": "default"}})
    path = "/api/v1/namespaces/default/configmaps" + ("/cm" if method == "PATCH" else "")
    async with http.request(
        method, sim.url + path, data=b"{}", headers={"Content-Type": ctype}
    ) as r:
        assert r.status == 415 and r.content_type == "application/json"
        status = await r.json()
    assert status["kind"] == "Status" and status["reason"] == "UnsupportedMediaType"
    assert status["message"].startswith("the body of the request was in an unknown format")


async def test_unacceptable_accept_is_406_before_anything_changes(
    sim: SimCluster, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.url}/api/v1/namespaces/default/configmaps"
    async with http.post(url, json=CM, headers={"Accept": "text/html"}) as r:
        assert r.status == 406
        assert (await r.json())["reason"] == "NotAcceptable"
    assert sim.list("configmaps", "default") == []
    # protobuf is skipped for a kind without a message: the next acceptable type answers
    async with http.get(url, headers={"Accept": f"{PB};as=Table;g=meta.k8s.io;v=v1, */*"}) as r:
        assert r.status == 200 and r.content_type == "application/json"


async def test_malformed_protobuf_body_is_400(sim: SimCluster, http: aiohttp.ClientSession) -> None:
    url = f"{sim.url}/api/v1/namespaces/default/configmaps"
    async with http.post(url, data=b"k8s\x00garbage", headers={"Content-Type": PB}) as r:
        assert r.status == 400
        message = (await r.json())["message"]
    assert message.startswith("the object provided is unrecognized: malformed protobuf body")
    async with http.post(url, data=b'{"kind": "ConfigMap"}', headers={"Content-Type": PB}) as r:
        assert r.status == 400
        assert "expected prefix [107 56 115 0]" in (await r.json())["message"]
    assert sim.list("configmaps", "default") == []
