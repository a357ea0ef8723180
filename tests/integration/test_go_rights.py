"""bjc under exactly the RBAC rules of the Go controller's Helm chart (tests/go_chart.py).

A team swapping only the image keeps the Go chart's Role and ClusterRole, which grant
fewer rights than bjc's manifests: no single pod delete, no pod patch, no ConfigMap
patch. On bjc.sim the controller's token is bound to those rules (`sim.auth.grant`);
on the real control plane it is a ServiceAccount bound to them by the chart's Role,
ClusterRole and bindings, with a token from the TokenRequest API. Either way bjc must
lead (Lease), run executions with every callback (result, file, event), expose the
metrics, answer ConfigMap triggers (by update instead of patch), delete a timed-out
pod (by a field-selected deletecollection), and report each missing right once (a
warning Event regarding its pod) instead of failing every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import yaml

from bjc.engine.configwatch import TRIGGER_ANNOTATION
from bjc.kube import rights
from bjc.kube.client import Credentials
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod
from tests import go_chart

from .harness import EVENTS, NAMESPACE, PODS, Cluster, cluster, post_result
from .test_controller import BOUND, scrape
from .test_trigger import answer_to

CONTROLLER_POD = "controller-a"  # the harness's identity: the pod the Events regard
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{go_chart.NAME}"


async def job(pod: RunningPod) -> int:
    """Posts a result, a file and an event."""
    await post_result(pod)
    async with aiohttp.ClientSession() as http:
        url = pod.env["CALLBACK_SERVICE_FILE_URL"] + "?name=report.txt"
        async with http.post(url, data=b"from the job") as resp:
            assert resp.status == 200, await resp.text()
        event = {"reason": "GoJob", "message": "checked %s", "args": [pod.node]}
        async with http.post(pod.env["CALLBACK_SERVICE_EVENT_URL"], json=event) as resp:
            assert resp.status == 200, await resp.text()
    return 0


@contextlib.asynccontextmanager
async def go_credentials(c: Cluster) -> AsyncIterator[Credentials]:
    """Credentials that may do exactly what the Go chart's RBAC grants."""
    if c.plane is None:
        token = "go-chart-service-account"
        c.sim.auth.grant(token, go_chart.ROLE_RULES, NAMESPACE)
        c.sim.auth.grant(token, go_chart.CLUSTER_ROLE_RULES)
        yield Credentials(server=c.sim.url, token=token)
        return
    plane = c.plane
    objects = yaml.safe_dump_all(go_chart.rbac(NAMESPACE))
    await asyncio.to_thread(plane.kubectl, "apply", "-f", "-", input=objects)
    try:
        for verb, resource in [("list", "nodes"), ("create", "leases"), ("create", "pods")]:
            await until_allowed(c, verb, resource)
        path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{go_chart.NAME}/token"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        token = (await c.kube.create(path, request))["status"]["token"]
        yield Credentials(server=plane.url, insecure=True, token=token)
    finally:
        await asyncio.to_thread(
            plane.kubectl, "delete", "-f", "-", "--ignore-not-found", input=objects
        )


async def until_allowed(c: Cluster, verb: str, resource: str) -> None:
    """A fresh binding reaches the apiserver's RBAC cache within moments."""
    assert c.plane is not None
    args = ["auth", "can-i", verb, resource, "-n", NAMESPACE, "--as", SERVICE_ACCOUNT]
    async with asyncio.timeout(BOUND):
        while True:  # nothing to watch: the authorizer's cache is not an API object
            if (await asyncio.to_thread(c.plane.run_kubectl, *args)).stdout.strip() == "yes":
                return
            await asyncio.sleep(0.2)


async def test_bjc_works_under_the_go_charts_rbac_and_reports_each_missing_right_once(
    tmp_path, plane
):
    behaviour = JobBehaviour(run=job)
    async with cluster(tmp_path, plane) as c, go_credentials(c) as creds:
        # the controller's own pod, which the MissingRight Events regard (never scheduled)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": CONTROLLER_POD, "namespace": NAMESPACE},
            "spec": {
                "schedulingGates": [{"name": "bjc.test/never"}],
                "containers": [{"name": "bjc", "image": "ghcr.io/bjc-project/bjc"}],
            },
        }
        await c.kube.create(PODS, pod)
        nodes = await c.ready_nodes(2)
        await c.start_agent(behaviour)
        await c.store_config_map(jobTimeout="3s")
        runtime = await c.start_controller(creds=creds, dev_mode=False, jobTimeout="3s")
        async with asyncio.timeout(BOUND):
            await runtime.accepting_callbacks.wait()  # it leads: the Lease is its

        # a trigger, answered on the ConfigMap, runs an execution with every callback
        await c.annotate_config_map({TRIGGER_ANNOTATION: "first"})
        first = await answer_to(c.kube, "first")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        execution = runtime.controller.executions[first]
        assert {n: j.status for n, j in execution.nodes.items()} == dict.fromkeys(
            nodes, JobStatus.SUCCEEDED
        )
        for node in nodes:
            assert (runtime.store.root / first / f"{node}-report.txt").read_bytes() == (
                b"from the job"
            )
        series = await scrape(runtime)
        assert {
            dict(labels)["kind"]
            for (name, labels), _ in series.items()
            if name == "bjc_test_checks" and dict(labels)["executionID"] == first
        } == set(nodes)
        events, _ = await c.kube.list(EVENTS, dict)
        assert sorted(e["regarding"]["name"] for e in events if e["reason"] == "GoJob") == sorted(
            p["metadata"]["name"]
            for p in await c.job_pods()
            if p["metadata"]["name"] != "controller-a"
        )
        lease = await c.kube.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/batch-leader-election",
            dict,
        )
        assert lease["spec"]["holderIdentity"] == CONTROLLER_POD

        # a second trigger: a job past jobTimeout (its pod never starts, so no kubelet
        # deadline ends it first) is failed and its pod deleted
        behaviour.per_node[nodes[0]] = JobBehaviour(stay_pending=True)
        await c.annotate_config_map({TRIGGER_ANNOTATION: "second"})
        second = await answer_to(c.kube, "second")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(2)
        timed_out = runtime.controller.executions[second].nodes[nodes[0]]
        assert timed_out.status is JobStatus.FAILED and "jobTimeout" in timed_out.reason
        hung = [
            p
            for p in await c.job_pods()
            if p["spec"].get("nodeName") == nodes[0] and second in p["metadata"]["name"]
        ]
        assert all(p["metadata"].get("deletionTimestamp") for p in hung), hung

        # each missing right said once, as a warning Event regarding the controller's pod
        assert set(runtime.rights.refused) == {
            rights.LEADER_LABEL,
            rights.DELETE_POD,
            rights.ANNOTATE_CONFIG_MAP,
        }
        events, _ = await c.kube.list(EVENTS, dict)
        missing = [e for e in events if e["reason"] == "MissingRight"]
        assert all(e["regarding"]["name"] == CONTROLLER_POD for e in missing)
        assert all(e["type"] == "Warning" for e in missing)
        assert len(missing) == 3, [e["note"] for e in missing]
        if c.plane is None:  # and each refused call made once, not on every use
            refused = sorted((verb, resource) for verb, resource, _ in c.sim.auth.forbidden)
            assert refused == [("delete", "pods"), ("patch", "configmaps"), ("patch", "pods")]
