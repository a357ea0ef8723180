"""bjc deployed as users deploy it, on a real control plane.

`kubectl apply -k manifests/overlays/example`, exactly as the README says: the
controller-manager's Deployment and ReplicaSet controllers make the two controller
pods, the scheduler places them, and `bjc.sim.NodeAgent` plays the kubelet: the
controller pods run as `bjc run` processes (`bjc.sim.ProcessPods`: own loopback
IP, ServiceAccount token, probes, restarts), the job pods as simulated jobs that
post a result and an event to their callback URLs. The example overlay's
ReadWriteMany claim binds to a hostPath PersistentVolume, the one directory both
replicas share. Then the operations a user runs: `kubectl rollout status`,
`kubectl rollout restart` during an execution, deleting the leader pod, a crashed
leader process, and `kubectl delete -k`.

The tests run in file order and share the deployment (module fixtures); each one
that needs an execution starts one the way a user would: change the ConfigMap
(`runOnStartup: true`) and `kubectl rollout restart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio

from bjc.config.podspec import EXECUTION_LABEL, OWNER_LABEL
from bjc.kube.client import Credentials, KubeClient
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, NodeAgent, ProcessPods, RunningPod
from bjc.sim.proxy import ServiceProxy

from .controlplane import ControlPlane, add_ready_node
from .deployment import BOUND, NAMESPACE, PODS, Deployment, create_reports_volume

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "manifests" / "overlays" / "example"
NODES = ["e2e-node-1", "e2e-node-2", "e2e-node-3"]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Jobs:
    """What every job pod does: post a result and an event to its callback URLs.

    `hold()` keeps the jobs that start from posting until `release()`, so a test
    can act while an execution is in flight. A job retries refused connections and
    503s for up to RETRY_FOR seconds, as a job must to ride out a failover (the
    Service has no endpoint, or reaches a standby, for a few seconds); any other
    failure fails the job (exit 1).
    """

    RETRY_FOR = 60.0

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.waiting = 0
        self.failures: list[str] = []  # why a job's callback failed, for failure messages
        self.failing: set[str] = set()  # nodes whose check fails: exit 1, nothing posted

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def run(self, pod: RunningPod) -> int:
        self.waiting += 1
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1
        if pod.node in self.failing:
            return 1
        result = {"failed_checks": [{"value": 0, "labels": {"check": "example"}}]}
        event = {"reason": "E2ECheck", "message": "checked node %s", "args": [pod.node]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for url, body in [
                (pod.env["CALLBACK_SERVICE_RESULT_URL"], result),
                (pod.env["CALLBACK_SERVICE_EVENT_URL"], event),
            ]:
                failure = await self._post(http, url, body)
                if failure:
                    self.failures.append(f"{pod.name}: {failure}")
                    return 1
        return 0

    async def _post(self, http: aiohttp.ClientSession, url: str, body: object) -> str:
        """ "" on success, else why not."""
        deadline = asyncio.get_running_loop().time() + self.RETRY_FOR
        while True:
            try:
                async with http.post(url, json=body) as r:
                    if r.status in (200, 201):
                        return ""
                    failure = f"{url}: {r.status} {await r.text()}"
                    if r.status != 503:
                        return failure
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                failure = f"{url}: {e!r}"
            if asyncio.get_running_loop().time() > deadline:
                return failure
            await asyncio.sleep(0.5)


D = TypeVar("D", bound="Deployed")


class Deployed(Deployment):
    """The deployment on simulated nodes: the agent runs its pods."""

    def __init__(
        self, plane: ControlPlane, kube: KubeClient, reports: Path, agent: NodeAgent,
        processes: ProcessPods, jobs: Jobs,
    ) -> None:  # fmt: skip
        super().__init__(plane, kube, reports, NODES)
        self.agent, self.processes, self.jobs = agent, processes, jobs

    def diagnosis(self) -> str:
        """The controller processes' logs, then the pods and the control plane's."""
        out = []
        for log in sorted(self.processes.work_dir.glob("*/*.log")):
            text = log.read_text(errors="replace").splitlines()[-20:]
            out.append(f"--- {log.parent.name}/{log.name}:\n" + "\n".join(text))
        failures = "job callbacks that failed: " + "; ".join(self.jobs.failures)
        return "\n".join([failures, *out, super().diagnosis()])


@contextlib.asynccontextmanager
async def simulated_nodes(
    plane: ControlPlane,
    tmp: Path,
    deployed: type[D],
    volume: str = "bjc-reports",
    access: str = "ReadWriteMany",
) -> AsyncIterator[tuple[D, ServiceProxy]]:
    """NODES as the agent plays them, a hostPath volume for the claim, and the Service
    stand-in (no kube-proxy: callbacks go through it; start it once the Service exists):
    what each deployment on simulated nodes starts from. The cluster outlives the
    module: the nodes and the volume go at the end."""
    reports = tmp / "reports"
    reports.mkdir()
    creds = Credentials(server=plane.url, insecure=True, token=plane.token)
    jobs = Jobs()
    processes = ProcessPods(tmp / "pods")
    async with KubeClient(creds) as kube:
        for name in NODES:
            await add_ready_node(kube, name)
        await create_reports_volume(kube, reports, volume, access)
        agent = NodeAgent(
            plane.url,
            NODES,
            behaviour=JobBehaviour(run=jobs.run),
            headers={"Authorization": f"Bearer {plane.token}"},
            ssl=False,
            processes=processes,
        )
        await agent.start()
        proxy = ServiceProxy(kube, NAMESPACE, "bjc")
        try:
            await asyncio.wait_for(agent.synced.wait(), BOUND)
            yield deployed(plane, kube, reports, agent, processes, jobs), proxy
        finally:
            jobs.release()
            await agent.stop()
            await proxy.stop()
            for name in NODES:
                await kube.delete(f"/api/v1/nodes/{name}")
            await kube.delete(f"/api/v1/persistentvolumes/{volume}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deployed")
    async with simulated_nodes(control_plane, tmp, Deployed) as (result, proxy):
        await result.kubectl("apply", "-k", str(OVERLAY))
        await proxy.start()
        yield result


async def test_manifests_rbac_allow_what_bjc_needs_and_no_more(deployed: Deployed) -> None:
    sa = f"system:serviceaccount:{NAMESPACE}:bjc"

    def can_i(verb: str, resource: str) -> str:
        resource, _, sub = resource.partition("/")  # `pods/status` would name a pod "status"
        args = ["auth", "can-i", verb, resource, "-n", NAMESPACE, "--as", sa]
        return deployed.plane.run_kubectl(*args, f"--subresource={sub}").stdout.strip()

    for verb, resource in [
        ("create", "pods"),
        ("watch", "pods"),
        ("get", "pods/log"),
        ("create", "events.events.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("list", "nodes"),
    ]:
        assert can_i(verb, resource) == "yes", (verb, resource)
    for verb, resource in [("get", "secrets"), ("update", "nodes"), ("patch", "pods/status")]:
        assert can_i(verb, resource) == "no", (verb, resource)


async def test_rollout_status_completes(deployed: Deployed) -> None:
    await deployed.rollout_status()
    pods = await deployed.controller_pods()
    assert len(pods) == 2
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.") for ip in ips)
    for pod in pods:
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", pod["status"]
        assert pod["spec"]["nodeName"] in NODES  # placed by the scheduler
    claim = await deployed.kube.get(
        f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/bjc-reports", dict
    )
    assert claim["status"]["phase"] == "Bound"
    assert (await deployed.leader())["holderIdentity"] in {p["metadata"]["name"] for p in pods}


async def test_execution_under_the_deployment(deployed: Deployed) -> None:
    before = {s.id for s in deployed.executions()}
    await deployed.restart_with(runOnStartup=True, startupDelay="1s")
    done = await deployed.until("an execution on every node", lambda: deployed.finished(before))
    assert {n: j.status for n, j in done.nodes.items()} == dict.fromkeys(NODES, JobStatus.SUCCEEDED)
    assert all(j.result for j in done.nodes.values())

    deployment = await deployed.kube.get(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/bjc", dict
    )
    params = {"labelSelector": f"{OWNER_LABEL}=node-check,{EXECUTION_LABEL}={done.id}"}
    jobs = (await deployed.kube.get(PODS, dict, params=params))["items"]
    assert sorted(p["spec"]["nodeName"] for p in jobs) == NODES
    for pod in jobs:
        assert pod["status"]["phase"] == "Succeeded"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("Deployment", deployment["metadata"]["uid"])

    # the Lease, as client-go writes it, held by a pod of the Deployment (once the
    # rollout's last old pod, which may have led and released it, is gone)
    holder = await deployed.until("one of the two pods leading", deployed.settled)
    spec = await deployed.leader()
    assert spec["holderIdentity"] == holder
    assert isinstance(spec["leaseDurationSeconds"], int) and spec["leaseDurationSeconds"] > 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])

    # the events the jobs sent through the callback, regarding their pods
    events = await deployed.kube.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict)
    by_pod = {p["metadata"]["name"]: p for p in jobs}
    ours = [
        e
        for e in events["items"]
        if e.get("reason") == "E2ECheck" and e["regarding"]["name"] in by_pod
    ]
    assert len(ours) == len(NODES)
    for event in ours:
        pod = by_pod[event["regarding"]["name"]]
        assert (event["regarding"]["kind"], event["regarding"]["uid"]) == (
            "Pod",
            pod["metadata"]["uid"],
        )
        assert event["note"] == f"checked node {pod['spec']['nodeName']}"


async def start_held_execution(deployed: Deployed, **config: Any) -> set[str]:
    """Restart with runOnStartup, so an execution starts whose first job is held, and
    wait until the old pods are gone (`rollout status` returns while they terminate)."""
    before = {s.id for s in deployed.executions()}
    deployed.jobs.hold()
    await deployed.restart_with(runOnStartup=True, startupDelay="1s", **config)
    await deployed.until("a job pod running", lambda: deployed.jobs.waiting > 0)
    await deployed.until("the old pods gone, one of the new ones leading", deployed.settled)
    return before


async def test_rollout_restart_during_an_execution_loses_no_result(deployed: Deployed) -> None:
    before = await start_held_execution(deployed, podPoolSize=1)
    await deployed.kubectl("rollout", "restart", "deployment/bjc", "-n", NAMESPACE)
    await deployed.rollout_status()
    deployed.jobs.release()
    await deployed.all_results(before)


async def test_deleting_the_leader_pod_hands_over(deployed: Deployed) -> None:
    before = await start_held_execution(deployed)
    old = await deployed.leader()
    await deployed.kubectl("delete", "pod", old["holderIdentity"], "-n", NAMESPACE)

    async def handed_over() -> dict[str, Any] | None:
        spec = await deployed.leader()
        return spec if spec.get("holderIdentity") not in ("", old["holderIdentity"]) else None

    new = await deployed.until("another pod leads", handed_over)
    assert new["holderIdentity"] != old["holderIdentity"]
    assert new.get("leaseTransitions", 0) > old.get("leaseTransitions", 0)
    deployed.jobs.release()
    await deployed.all_results(before)
    await deployed.rollout_status()  # the ReplicaSet replaced the deleted pod


async def test_a_crashed_leader_process_is_restarted_and_loses_nothing(deployed: Deployed) -> None:
    before = await start_held_execution(deployed)
    leader = await deployed.settled()
    assert leader is not None
    running = deployed.processes.running[(NAMESPACE, leader)]
    assert running.process is not None
    running.process.kill()
    deployed.jobs.release()
    await deployed.all_results(before)

    async def restarted() -> dict[str, Any] | None:
        pod = await deployed.kube.get(f"{PODS}/{leader}", dict)  # the same pod: restarted in place
        (status,) = pod["status"]["containerStatuses"]
        return status if status["restartCount"] == 1 and status["ready"] else None

    status = await deployed.until("the container restarted", restarted)
    assert status["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL
    await deployed.rollout_status()


CONDITION = "NodeCheckFailed"
WITH_NODE_CONDITIONS = Path(__file__).parent / "node-conditions"  # the overlay + component


async def node_condition(deployed: Deployed, node: str) -> tuple[dict[str, Any] | None, str]:
    """The node's condition CONDITION as `kubectl get node -o jsonpath` shows it (None:
    none), and the node's resourceVersion."""
    query = f'{{.status.conditions[?(@.type=="{CONDITION}")]}}|{{.metadata.resourceVersion}}'
    out = await deployed.kubectl("get", "node", node, "-o", f"jsonpath={query}")
    condition, _, version = out.rpartition("|")
    return (json.loads(condition) if condition else None), version


async def test_node_conditions_refused_without_the_component_then_set_with_it(
    deployed: Deployed,
) -> None:
    """nodeCondition under the example overlay's RBAC: refused, reported once, nothing
    patched; with the component manifests/components/node-conditions and a restart,
    each node's condition is set. Teardown: the feature off, the component's RBAC and
    the conditions removed, every node's check succeeding again."""
    forbidden_before = await forbidden_events(deployed)
    nodes_before = {n: await node_condition(deployed, n) for n in NODES}
    assert all(condition is None for condition, _ in nodes_before.values())
    try:
        # the feature on (a reload: no restart), two executions through the trigger
        await deployed.configure(nodeCondition={"type": CONDITION})
        for value in ("conditions-refused-1", "conditions-refused-2"):
            before = {s.id for s in deployed.executions()}
            await deployed.trigger(value)
            await deployed.all_results(before)
        (event,) = [e for e in await forbidden_events(deployed) if e not in forbidden_before]
        assert event["type"] == "Warning" and event["regarding"]["kind"] == "ConfigMap"
        assert event["regarding"]["name"] == "bjc"
        assert "manifests/components/node-conditions" in event["note"]
        # nothing patched: the nodes did not change at all (no resourceVersion moved)
        assert {n: await node_condition(deployed, n) for n in NODES} == nodes_before

        # with the component, once the controllers restart; one node's check fails
        await deployed.kubectl("apply", "-k", str(WITH_NODE_CONDITIONS))
        deployed.jobs.failing = {NODES[0]}
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        before = {s.id for s in deployed.executions()}
        await deployed.restart_with(nodeCondition={"type": CONDITION}, runOnStartup=True)
        done = await deployed.until("an execution on every node", lambda: deployed.finished(before))
        assert done.nodes[NODES[0]].status is JobStatus.FAILED

        async def conditions_set() -> dict[str, dict[str, Any]] | None:
            found = {n: (await node_condition(deployed, n))[0] for n in NODES}
            first = found[NODES[0]]
            return found if all(found.values()) and first and first["status"] == "True" else None

        found = await deployed.until("the failed node's condition", conditions_set)
        for node, condition in found.items():
            assert condition is not None, node
            since = dt.datetime.fromisoformat(condition["lastTransitionTime"])
            assert start <= since <= dt.datetime.now(dt.UTC), condition
            if node == NODES[0]:
                assert condition["status"] == "True" and condition["reason"] == "CheckFailed"
                assert condition["message"], condition
            else:
                assert condition["status"] == "False" and condition["reason"] == "CheckSucceeded"
                assert condition["message"] == "the node's check job succeeded"
        assert not [e for e in await forbidden_events(deployed) if e not in forbidden_before][1:]
    finally:
        deployed.jobs.failing = set()
        await deployed.configure(nodeCondition=None)
        await deployed.kubectl(
            "delete", "clusterrolebinding,clusterrole", "bjc-node-conditions", "--ignore-not-found"
        )
        remove = {"status": {"conditions": [{"type": CONDITION, "$patch": "delete"}]}}
        for node in NODES:
            await deployed.kube.patch(f"/api/v1/nodes/{node}/status", remove, "strategic")
    assert all([(await node_condition(deployed, n))[0] is None for n in NODES])


async def forbidden_events(deployed: Deployed) -> list[dict[str, Any]]:
    events = await deployed.kube.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict)
    return [e for e in events["items"] if e.get("reason") == "NodePatchForbidden"]


async def test_delete_k_leaves_no_pods_behind(deployed: Deployed) -> None:
    """Runs last. The Deployment's deletion takes its ReplicaSets, their pods and the
    job pods with it (owner references); `delete -k` then removes everything else."""
    await deployed.kubectl("delete", "deployment", "bjc", "-n", NAMESPACE, "--cascade=background")
    await deployed.kubectl(
        "wait", "--for=delete", "pods", "--all", "-n", NAMESPACE, f"--timeout={BOUND}s"
    )
    await deployed.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait")
    assert not (await deployed.kube.get("/api/v1/pods", dict))["items"]
    namespaces = await deployed.kubectl("get", "namespaces", "-o", "name")
    assert f"namespace/{NAMESPACE}" not in namespaces.split()
