"""bjc.sim's REST semantics, through kubernetes_asyncio's typed API and raw HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from bjc.sim import SimCluster

NS = "default"


def pod(name: str, node: str = "node-1", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "busybox:1.36"}],
            **spec,
        },
    }


async def test_create_fills_server_fields_and_defaults(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    created = await core.create_namespaced_pod(NS, pod("p1"))
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.generation == 1
    assert int(created.metadata.resource_version) > 0
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"
    assert created.spec.dns_policy == "ClusterFirst"
    assert created.spec.scheduler_name == "default-scheduler"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    got = await core.read_namespaced_pod("p1", NS)
    assert got.metadata.uid == created.metadata.uid


async def test_resource_version_is_global_and_monotonic(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    a = await core.create_namespaced_pod(NS, pod("a"))
    cm = await core.create_namespaced_config_map(
        NS, {"metadata": {"name": "c"}, "data": {"k": "v"}}
    )
    b = await core.create_namespaced_pod(NS, pod("b"))
    rvs = [int(x.metadata.resource_version) for x in (a, cm, b)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    listed = await core.list_namespaced_pod(NS)
    assert int(listed.metadata.resource_version) >= rvs[-1]
    assert [p.metadata.name for p in listed.items] == ["a", "b"]


async def test_errors_are_status_objects(sim: SimCluster) -> None:
    url = f"{sim.url}/api/v1/namespaces/{NS}/pods"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=pod("dup")) as r:
            assert r.status == 201
        async with http.post(url, json=pod("dup")) as r:
            body = await r.json()
            assert r.status == 409
            assert body["kind"] == "Status" and body["status"] == "Failure"
            assert body["reason"] == "AlreadyExists" and body["code"] == 409
            assert body["details"] == {"name": "dup", "kind": "pods"}
        async with http.get(f"{url}/missing") as r:
            body = await r.json()
            assert r.status == 404 and body["reason"] == "NotFound"
            assert body["message"] == 'pods "missing" not found'
        async with http.post(url, json={"metadata": {"name": "nocontainers"}, "spec": {}}) as r:
            body = await r.json()
            assert r.status == 422 and body["reason"] == "Invalid"
            assert body["details"]["causes"][0]["field"] == "spec.containers"
        async with http.post(url, json=pod("Bad_Name")) as r:
            assert r.status == 422
        async with http.get(f"{sim.url}/apis/coordination.k8s.io/v1/namespaces/x/leases/l") as r:
            body = await r.json()
            assert r.status == 404
            assert body["message"] == 'leases.coordination.k8s.io "l" not found'


async def test_typed_client_sees_404_and_409(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod("nope", NS)
    assert exc.value.status == 404
    first = await core.create_namespaced_pod(NS, pod("p"))
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod(NS, pod("p"))
    assert exc.value.status == 409
    # an update carrying a stale resourceVersion conflicts
    first.metadata.labels = {"x": "1"}
    await core.replace_namespaced_pod("p", NS, first)
    first.metadata.labels = {"x": "2"}
    with pytest.raises(ApiException) as exc:
        await core.replace_namespaced_pod("p", NS, first)
    assert exc.value.status == 409
    assert "the object has been modified" in exc.value.body


async def test_generate_name(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    body = pod("")
    body["metadata"] = {"generateName": "job-"}
    a = await core.create_namespaced_pod(NS, body)
    b = await core.create_namespaced_pod(NS, body)
    assert a.metadata.name.startswith("job-") and len(a.metadata.name) == 9
    assert a.metadata.name != b.metadata.name


LABELLED = {
    "p-a": {"app": "x", "tier": "web"},
    "p-b": {"app": "y", "tier": "db"},
    "p-c": {"app": "x"},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=x", ["p-a", "p-c"]),
        ("app==y", ["p-b"]),
        ("app!=x", ["p-b"]),
        ("tier in (web,db)", ["p-a", "p-b"]),
        ("tier notin (web)", ["p-b", "p-c"]),
        ("tier", ["p-a", "p-b"]),
        ("!tier", ["p-c"]),
        ("app=x,tier", ["p-a"]),
        ("app in (x, y),!tier", ["p-c"]),
    ],
)
async def test_label_selectors(sim: SimCluster, kube_api_client, selector: str, expected) -> None:
    for name, labels in LABELLED.items():
        sim.create(pod(name, labels=labels))
    core = client.CoreV1Api(kube_api_client)
    listed = await core.list_namespaced_pod(NS, label_selector=selector)
    assert [p.metadata.name for p in listed.items] == expected


async def test_bad_selectors_are_400(sim: SimCluster) -> None:
    async with aiohttp.ClientSession() as http:
        for params in ({"labelSelector": "a in (b"}, {"fieldSelector": "spec.foo=bar"}):
            async with http.get(f"{sim.url}/api/v1/pods", params=params) as r:
                assert r.status == 400
                assert (await r.json())["reason"] == "BadRequest"


async def test_field_selectors(sim: SimCluster, kube_api_client) -> None:
    sim.create(pod("on-1", node="node-1"))
    sim.create(pod("on-2", node="node-2"))
    other = pod("elsewhere", node="node-1")
    other["metadata"]["namespace"] = "other"
    sim.create(other)
    core = client.CoreV1Api(kube_api_client)
    await core.patch_namespaced_pod_status("on-2", NS, {"status": {"phase": "Running"}})

    async def names(**kw: Any) -> list[str]:
        return [p.metadata.name for p in (await core.list_pod_for_all_namespaces(**kw)).items]

    assert await names(field_selector="spec.nodeName=node-1") == ["on-1", "elsewhere"]
    assert await names(field_selector="spec.nodeName!=node-1") == ["on-2"]
    assert await names(field_selector="status.phase=Running") == ["on-2"]
    assert await names(field_selector="status.phase==Pending,spec.nodeName=node-1") == [
        "on-1",
        "elsewhere",
    ]
    assert await names(field_selector="metadata.name=on-1") == ["on-1"]
    assert await names(field_selector="metadata.namespace=other") == ["elsewhere"]


async def test_status_subresource(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    created = await core.create_namespaced_pod(NS, pod("s"))
    # a plain update cannot change status
    created.status.phase = "Succeeded"
    created.metadata.labels = {"changed": "yes"}
    updated = await core.replace_namespaced_pod("s", NS, created)
    assert updated.status.phase == "Pending"
    assert updated.metadata.labels == {"changed": "yes"}
    # the status subresource changes status only
    updated.status.phase = "Running"
    updated.metadata.labels = {"ignored": "yes"}
    after = await core.replace_namespaced_pod_status("s", NS, updated)
    assert after.status.phase == "Running"
    assert after.metadata.labels == {"changed": "yes"}
    read = await core.read_namespaced_pod_status("s", NS)
    assert read.status.phase == "Running"
    patched = await core.patch_namespaced_pod_status(
        "s", NS, {"status": {"phase": "Failed"}, "spec": {"nodeName": "ignored"}}
    )
    assert patched.status.phase == "Failed" and patched.spec.node_name == "node-1"


async def test_strategic_merge_patch_merges_lists_by_key(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    body = pod("m")
    body["spec"]["containers"].append({"name": "side", "image": "busybox"})
    await core.create_namespaced_pod(NS, body)
    patched = await core.patch_namespaced_pod(
        "m",
        NS,
        {
            "metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "side", "image": "busybox:2"}]},
        },
    )
    assert [(c.name, c.image) for c in patched.spec.containers] == [
        ("main", "busybox:1.36"),
        ("side", "busybox:2"),
    ]
    st = await core.patch_namespaced_pod_status(
        "m", NS, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    st = await core.patch_namespaced_pod_status(
        "m",
        NS,
        {"status": {"conditions": [{"type": "Initialized", "status": "True"}]}},
    )
    assert sorted(c.type for c in st.status.conditions) == ["Initialized", "Ready"]
    removed = await core.patch_namespaced_pod("m", NS, {"metadata": {"labels": {"a": None}}})
    assert not removed.metadata.labels


async def test_merge_and_json_patch(sim: SimCluster, kube_api_client) -> None:
    sim.create(pod("j", labels={"a": "1", "b": "2"}))
    url = f"{sim.url}/api/v1/namespaces/{NS}/pods/j"
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/merge-patch+json"}
        body = {"metadata": {"labels": {"a": None, "c": "3"}}}
        async with http.patch(url, json=body, headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["metadata"]["labels"] == {"b": "2", "c": "3"}
        stale = {"metadata": {"resourceVersion": "1", "labels": {"d": "4"}}}
        async with http.patch(url, json=stale, headers=headers) as r:
            assert r.status == 409
        async with http.patch(url, json={}, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
    core = client.CoreV1Api(kube_api_client)
    patched = await core.patch_namespaced_pod(
        "j",
        NS,
        [
            {"op": "add", "path": "/metadata/labels/e", "value": "5"},
            {"op": "replace", "path": "/metadata/labels/b", "value": "20"},
            {"op": "remove", "path": "/metadata/labels/c"},
            {"op": "test", "path": "/spec/nodeName", "value": "node-1"},
        ],
    )
    assert patched.metadata.labels == {"b": "20", "e": "5"}
    with pytest.raises(ApiException) as exc:
        await core.patch_namespaced_pod("j", NS, [{"op": "remove", "path": "/metadata/nope"}])
    assert exc.value.status == 422


async def test_delete_preconditions_and_collection(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    for i in range(3):
        sim.create(pod(f"d{i}", labels={"grp": "x" if i < 2 else "y"}))
    with pytest.raises(ApiException) as exc:
        await core.delete_namespaced_pod(
            "d0", NS, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="bad"))
        )
    assert exc.value.status == 409
    await core.delete_namespaced_pod("d0", NS, propagation_policy="Background")
    assert sim.get("pods", NS, "d0") is None
    await core.delete_collection_namespaced_pod(NS, label_selector="grp=x")
    assert [p["metadata"]["name"] for p in sim.list("pods", NS)] == ["d2"]
    with pytest.raises(ApiException) as exc:
        await core.delete_namespaced_pod("d0", NS)
    assert exc.value.status == 404


async def test_pod_log_subresource(sim: SimCluster, kube_api_client) -> None:
    core = client.CoreV1Api(kube_api_client)
    body = pod("l")
    body["spec"]["containers"].append({"name": "side", "image": "busybox"})
    sim.create(body)
    sim.set_log(NS, "l", "main", "line1\nline2\n")
    assert await core.read_namespaced_pod_log("l", NS, container="main") == "line1\nline2\n"
    assert await core.read_namespaced_pod_log("l", NS, container="main", tail_lines=1) == "line2\n"
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod_log("l", NS)
    assert exc.value.status == 400 and "choose one of: [main side]" in exc.value.body
    async with aiohttp.ClientSession() as http:
        url = f"{sim.url}/_sim/logs/{NS}/l/side"
        async with http.put(url, data=b"from agent") as r:
            assert r.status == 204
    assert await core.read_namespaced_pod_log("l", NS, container="side") == "from agent"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b", more") as r:  # the agent appends
            assert r.status == 204
    assert await core.read_namespaced_pod_log("l", NS, container="side") == "from agent, more"


async def test_pod_log_limit_bytes_as_the_apiserver_applies_it(
    sim: SimCluster, kube_api_client
) -> None:
    core = client.CoreV1Api(kube_api_client)
    sim.create(pod("l"))
    sim.set_log(NS, "l", "main", "line1\nline2\nline3\n")

    async def read(**options: Any) -> str:
        return await core.read_namespaced_pod_log("l", NS, container="main", **options)

    assert await read(limit_bytes=8) == "line1\nli"  # the first bytes, a line cut short
    assert await read(limit_bytes=100) == "line1\nline2\nline3\n"
    assert await read(tail_lines=2, limit_bytes=8) == "line2\nli"  # tailLines first
    with pytest.raises(ApiException) as exc:
        await read(limit_bytes=0)
    assert exc.value.status == 422 and "limitBytes" in exc.value.body


async def test_nodes_namespaces_services_configmaps(sim: SimCluster, kube_api_client) -> None:
    sim.add_node("n1", labels={"pool": "a"})
    sim.add_node("n2", ready=False, unschedulable=True)
    core = client.CoreV1Api(kube_api_client)
    nodes = await core.list_node(label_selector="pool=a")
    assert [n.metadata.name for n in nodes.items] == ["n1"]
    n2 = await core.read_node("n2")
    assert n2.spec.unschedulable is True
    assert [(c.type, c.status) for c in n2.status.conditions] == [("Ready", "False")]
    cordoned = await core.list_node(field_selector="spec.unschedulable=true")
    assert [n.metadata.name for n in cordoned.items] == ["n2"]
    patched = await core.patch_node("n1", {"metadata": {"labels": {"extra": "1"}}})
    assert patched.metadata.labels["extra"] == "1"
    namespaces = {n.metadata.name for n in (await core.list_namespace()).items}
    assert {"default", "kube-system"} <= namespaces
    await core.create_namespace({"metadata": {"name": "jobs"}})
    assert (await core.read_namespace("jobs")).status.phase == "Active"
    svc = await core.create_namespaced_service(
        NS, {"metadata": {"name": "cb"}, "spec": {"ports": [{"port": 8090}]}}
    )
    assert svc.spec.cluster_ip.startswith("10.96.")
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"a": "b"}})
    assert (await core.read_namespaced_config_map("cfg", NS)).data == {"a": "b"}


async def test_leases(sim: SimCluster, kube_api_client) -> None:
    coord = client.CoordinationV1Api(kube_api_client)
    lease = await coord.create_namespaced_lease(
        NS,
        {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
    )
    lease.spec.holder_identity = "b"
    updated = await coord.replace_namespaced_lease("lock", NS, lease)
    assert updated.spec.holder_identity == "b"
    with pytest.raises(ApiException) as exc:
        await coord.replace_namespaced_lease("lock", NS, lease)  # stale resourceVersion
    assert exc.value.status == 409
    patched = await coord.patch_namespaced_lease("lock", NS, {"spec": {"leaseTransitions": 2}})
    assert patched.spec.lease_transitions == 2 and patched.spec.holder_identity == "b"
    assert len((await coord.list_namespaced_lease(NS)).items) == 1
    await coord.delete_namespaced_lease("lock", NS)
    with pytest.raises(ApiException) as exc:
        await coord.read_namespaced_lease("lock", NS)
    assert exc.value.status == 404


async def test_events_in_both_api_groups(sim: SimCluster, kube_api_client) -> None:
    events = client.EventsV1Api(kube_api_client)
    core = client.CoreV1Api(kube_api_client)
    created = await events.create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "job."},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p", "namespace": NS},
            "reason": "Done",
            "note": "finished 3 checks",
            "type": "Normal",
            "action": "n/a",
            "reportingController": "batch",
            "reportingInstance": "batch-0",
        },
    )
    assert created.note == "finished 3 checks" and created.regarding.name == "p"
    as_core = await core.list_namespaced_event(NS, field_selector="involvedObject.name=p")
    assert [(e.message, e.reason) for e in as_core.items] == [("finished 3 checks", "Done")]
    await core.create_namespaced_event(
        NS,
        {
            "metadata": {"name": "core-ev"},
            "eventTime": "2024-01-01T00:00:01.000000Z",
            "involvedObject": {"kind": "Pod", "name": "q", "namespace": NS},
            "reason": "Seen",
            "message": "hello",
        },
    )
    listed = await events.list_namespaced_event(NS, field_selector="regarding.name=q")
    assert [(e.note, e.metadata.name) for e in listed.items] == [("hello", "core-ev")]
    read = await events.read_namespaced_event(created.metadata.name, NS)
    assert read.reporting_controller == "batch"


async def test_owner_chain_objects(sim: SimCluster, kube_api_client) -> None:
    apps = client.AppsV1Api(kube_api_client)
    dep = await apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": "ctl"},
            "spec": {
                "selector": {"matchLabels": {"app": "ctl"}},
                "template": {
                    "metadata": {"labels": {"app": "ctl"}},
                    "spec": {"containers": [{"name": "c", "image": "bjc"}]},
                },
            },
        },
    )
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ctl", "uid": dep.metadata.uid}
    sim.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "ctl-1", "namespace": NS, "ownerReferences": [owner]},
            "spec": {"selector": {"matchLabels": {"app": "ctl"}}},
        }
    )
    rs = await apps.read_namespaced_replica_set("ctl-1", NS)
    assert rs.metadata.owner_references[0].uid == dep.metadata.uid
    assert (await apps.read_namespaced_deployment("ctl", NS)).metadata.name == "ctl"


async def test_discovery_and_pagination(sim: SimCluster, kube_api_client) -> None:
    version = await client.VersionApi(kube_api_client).get_code()
    assert version.major == "1"
    groups = await client.ApisApi(kube_api_client).get_api_versions()
    assert {"apps", "coordination.k8s.io", "events.k8s.io"} <= {g.name for g in groups.groups}
    resources = await client.CoreV1Api(kube_api_client).get_api_resources()
    by_name = {r.name: r for r in resources.resources}
    assert by_name["pods"].namespaced and not by_name["nodes"].namespaced
    assert "pods/status" in by_name and "pods/log" in by_name
    for i in range(5):
        sim.create(pod(f"page{i}"))
    core = client.CoreV1Api(kube_api_client)
    first = await core.list_namespaced_pod(NS, limit=2)
    second = await core.list_namespaced_pod(NS, limit=2, _continue=first.metadata._continue)
    third = await core.list_namespaced_pod(NS, limit=2, _continue=second.metadata._continue)
    names = [p.metadata.name for r in (first, second, third) for p in r.items]
    assert names == [f"page{i}" for i in range(5)]
    assert not third.metadata._continue


async def test_table_output_for_kubectl(sim: SimCluster) -> None:
    sim.add_node("n1")
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/nodes", headers={"Accept": accept}) as r:
            table = await r.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:2] == ["Name", "Status"]
    assert table["rows"][0]["cells"][:2] == ["n1", "Ready"]


def test_direct_api_rejects_unknown_kinds() -> None:
    sim = SimCluster()
    with pytest.raises(ValueError, match="unsupported apiVersion/kind 'v1'/'PersistentVolume'"):
        sim.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "s"}})
    with pytest.raises(ValueError, match="history_size must be >= 1"):
        SimCluster(history_size=0)
