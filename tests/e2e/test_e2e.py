"""bjc against a real kube-apiserver: the shipped manifests, their RBAC, one execution,
and a leader failover between two controller processes.

kubectl applies `manifests/base` into a fresh namespace; the Deployment never runs
(no scheduler, no kubelet), so `bjc run` runs here as a process with a kubeconfig
that authenticates as the manifests' `bjc` ServiceAccount, and `bjc.sim.NodeAgent`
plays the kubelet for a few Node objects. What the sim cannot prove is checked
here: the apiserver accepts what bjc writes (pods, status-less Lease updates,
events.k8s.io/v1 Events) under exactly the RBAC the manifests grant.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bjc.config.podspec import EXECUTION_LABEL, OWNER_LABEL
from bjc.kube.client import Credentials, KubeClient
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, NodeAgent, RunningPod
from tests.report_files import execution_dirs, state

from .conftest import ApiServer, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bjc-e2e"
NODES = ["e2e-node-1", "e2e-node-2", "e2e-node-3"]
CONTROLLER_POD = "bjc-7c9d8f-e2e01"  # HOSTNAME: a pod owned by ReplicaSet → Deployment bjc
BOUND = 120  # seconds: a hang bound, not a performance expectation
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def admin_client(api: ApiServer) -> KubeClient:
    return KubeClient(Credentials(server=api.url, insecure=True, token=api.token))


async def post_result_and_event(pod: RunningPod) -> int:
    """What the manifests' example job posts, plus one event through the callback."""
    async with aiohttp.ClientSession() as http:
        body = {"failed_checks": [{"value": 0, "labels": {"check": "example"}}]}
        async with http.post(pod.env["CALLBACK_SERVICE_RESULT_URL"], json=body) as resp:
            assert resp.status == 200, await resp.text()
        event = {"reason": "E2ECheck", "message": "checked node %s", "args": [pod.node]}
        async with http.post(pod.env["CALLBACK_SERVICE_EVENT_URL"], json=event) as resp:
            assert resp.status in (200, 201), await resp.text()
    return 0


def apply_manifests(api: ApiServer, tmp: Path) -> None:
    """`kubectl apply -k` of manifests/base through an overlay that only sets the namespace."""
    api.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            # no controller-manager creates it; job pods run as `default`
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "default", "namespace": NAMESPACE}},
        ]),
    )  # fmt: skip
    overlay = tmp / "overlay"
    overlay.mkdir()
    base = os.path.relpath(ROOT / "manifests" / "base", overlay)  # kustomize wants relative
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACE,
                "resources": [base],
            }
        )
    )
    api.kubectl("apply", "-k", str(overlay))


def override_config_map(
    api: ApiServer, ports: dict[str, int], target: str = "bjc", run_on_startup: bool = True
) -> dict[str, Any]:
    """The shipped ConfigMap, written as `target`, with loopback ports and (by default)
    an immediate start-up run. `name:` is kept, so every copy shares one Lease."""
    cm = yaml.safe_load(api.kubectl("get", "configmap", "bjc", "-n", NAMESPACE, "-o", "yaml"))
    config = yaml.safe_load(cm["data"]["config.yaml"])
    config.update(
        runOnStartup=run_on_startup,
        startupDelay="1s",
        callbackServiceName="",
        callbackServicePort=ports["callback"],
        fileServerPort=ports["files"],
        healthProbePort=ports["health"],
    )
    config["metrics"]["port"] = ports["metrics"]
    assert "failed_checks" in config["metrics"]["gauges"]  # what post_result_and_event posts
    cm["data"]["config.yaml"] = yaml.safe_dump(config)
    cm["metadata"]["name"] = target
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "annotations"):
        cm["metadata"].pop(key, None)
    api.kubectl("apply", "-f", "-", input=yaml.safe_dump(cm))
    return config


def lease_path(config: dict[str, Any]) -> str:
    """The Lease every controller with this config's `name:` elects its leader on."""
    return (
        f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/"
        f"{config['name']}-leader-election"
    )


async def readyz_status(http: aiohttp.ClientSession, port: int) -> int | None:
    """The status of a controller's /readyz, or None when nothing answers."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def create_controller_pod(kube: KubeClient) -> dict[str, Any]:
    """What the Deployment would have made: a ReplicaSet and a pod, so bjc finds its owner."""
    apps = f"/apis/apps/v1/namespaces/{NAMESPACE}"
    deployment = await kube.get(f"{apps}/deployments/bjc", dict)
    rs = await kube.create(
        f"{apps}/replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "bjc-7c9d8f",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "bjc",
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "replicas": 0,
                "selector": deployment["spec"]["selector"],
                "template": deployment["spec"]["template"],
            },
        },
    )
    await kube.create(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": CONTROLLER_POD,
                "labels": deployment["spec"]["template"]["metadata"]["labels"],
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": rs["metadata"]["name"],
                        "uid": rs["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "serviceAccountName": "bjc",
                "containers": [{"name": "bjc", "image": "ghcr.io/bjc-project/bjc:0.1.0"}],
            },
        },
    )
    return deployment


async def create_ready_nodes(kube: KubeClient) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in NODES:
        await kube.create(
            "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        )
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "bjc e2e: NodeAgent plays the kubelet",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        await kube.patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": [ready]}})


def completed_state(reports: Path):
    """The first execution's state once every node finished, else None."""
    dirs = execution_dirs(reports)
    if not dirs or not (dirs[0] / ".bjc-execution.json").exists():
        return None
    try:
        s = state(dirs[0])
    except Exception:  # caught mid-write: look again
        return None
    if set(s.nodes) == set(NODES) and all(j.status.terminal and j.result for j in s.nodes.values()):
        return s
    return None


class ControllerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def start_controller(
    api: ApiServer,
    tmp: Path,
    reports: Path,
    config_map: str = "bjc",
    hostname: str = CONTROLLER_POD,
) -> ControllerProcess:
    token = api.kubectl("create", "token", "bjc", "-n", NAMESPACE, "--duration", "1h").strip()
    kubeconfig = api.write_kubeconfig(tmp / f"{hostname}.kubeconfig", token, NAMESPACE)
    drop = ("NAMESPACE", "CONFIG_MAP_NAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(
        KUBECONFIG=str(kubeconfig),
        NAMESPACE=NAMESPACE,
        CONFIG_MAP_NAME=config_map,
        HOSTNAME=hostname,
        POD_IP="127.0.0.1",
        REPORT_DIRECTORY=str(reports),
    )
    log = tmp / f"{hostname}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bjc", "run",
            cwd=ROOT, env=environ, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return ControllerProcess(proc, log)


async def stop_controller(controller: ControllerProcess) -> int:
    """SIGTERM and the exit code, bounded by BOUND."""
    controller.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(controller.proc.wait(), BOUND)


@pytest.fixture
async def agent(apiserver: ApiServer) -> AsyncIterator[NodeAgent]:
    node_agent = NodeAgent(
        apiserver.url,
        NODES,
        behaviour=JobBehaviour(run=post_result_and_event),
        namespace=NAMESPACE,
        headers={"Authorization": f"Bearer {apiserver.token}"},
        ssl=False,
    )
    await node_agent.start()
    try:
        yield node_agent
    finally:
        await node_agent.stop()


async def test_manifests_rbac_allow_what_bjc_needs_and_no_more(apiserver: ApiServer, tmp_path):
    """Runs first (file order): it sets up the namespace the next test uses."""
    apply_manifests(apiserver, tmp_path)
    sa = f"system:serviceaccount:{NAMESPACE}:bjc"

    def can_i(verb: str, resource: str) -> str:
        args = ("auth", "can-i", verb, resource, "-n", NAMESPACE, "--as", sa)
        return apiserver.run_kubectl(*args).stdout.strip()

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


async def test_execution_on_real_apiserver_under_manifest_rbac(
    apiserver: ApiServer, agent: NodeAgent, tmp_path
) -> None:
    if not apiserver.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found").strip():
        apply_manifests(apiserver, tmp_path)  # run alone (-k)
    ports = {k: free_port() for k in ("callback", "files", "health", "metrics")}
    config = override_config_map(apiserver, ports)
    reports = tmp_path / "reports"
    async with admin_client(apiserver) as kube:
        deployment = await create_controller_pod(kube)
        await create_ready_nodes(kube)
        await asyncio.wait_for(agent.synced.wait(), BOUND)

        controller = await start_controller(apiserver, tmp_path, reports)
        stopped = False
        try:
            async with asyncio.timeout(BOUND):
                while (done := completed_state(reports)) is None:
                    assert controller.proc.returncode is None, controller.output()
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"execution did not complete:\n{controller.output()[-5000:]}")
        try:
            assert all(j.status == JobStatus.SUCCEEDED for j in done.nodes.values())

            # job pods: one per node, labelled and owned by the Deployment
            pods = await kube.get(
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                dict,
                params={"labelSelector": f"{OWNER_LABEL}={config['name']}"},
            )
            jobs = pods["items"]
            assert sorted(p["spec"]["nodeName"] for p in jobs) == NODES
            for pod in jobs:
                labels = pod["metadata"]["labels"]
                assert labels[EXECUTION_LABEL] == done.id
                assert pod["status"]["phase"] == "Succeeded"
                (owner,) = pod["metadata"]["ownerReferences"]
                assert (owner["kind"], owner["uid"]) == (
                    "Deployment",
                    deployment["metadata"]["uid"],
                )

            # the Lease, as client-go writes it
            lease = await kube.get(lease_path(config), dict)
            spec = lease["spec"]
            assert spec["holderIdentity"] == CONTROLLER_POD
            assert (
                isinstance(spec["leaseDurationSeconds"], int) and spec["leaseDurationSeconds"] > 0
            )
            assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
            assert spec.get("leaseTransitions", 0) >= 0

            # the events the jobs sent through the callback, regarding their pods
            events = await kube.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict)
            ours = [e for e in events["items"] if e.get("reason") == "E2ECheck"]
            by_pod = {p["metadata"]["name"]: p for p in jobs}
            assert len(ours) == len(NODES)
            for event in ours:
                regarding = event["regarding"]
                pod = by_pod[regarding["name"]]
                assert regarding["kind"] == "Pod"
                assert regarding["uid"] == pod["metadata"]["uid"]
                assert event["note"] == f"checked node {pod['spec']['nodeName']}"
                assert event["type"] == "Normal"

            # SIGTERM: exit 0 and hand the Lease back
            rc = await stop_controller(controller)
            stopped = True
            assert rc == 0, controller.output()[-5000:]
            lease = await kube.get(lease_path(config), dict)
            assert lease["spec"].get("holderIdentity", "") == "", lease["spec"]
        finally:
            if not stopped and controller.proc.returncode is None:
                controller.proc.kill()
                await controller.proc.wait()


async def test_leader_failover_between_two_controllers(apiserver: ApiServer, tmp_path) -> None:
    """Two `bjc run` on one Lease and one report directory: SIGTERM hands over in ~1 retry."""
    if not apiserver.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found").strip():
        apply_manifests(apiserver, tmp_path)  # run alone (-k)
    # one ConfigMap each (the ports come from it), one `name:` and so one Lease
    ports = {
        host: {k: free_port() for k in ("callback", "files", "health", "metrics")}
        for host in ("bjc-failover-a", "bjc-failover-b")
    }
    configs = {
        host: override_config_map(apiserver, p, target=host, run_on_startup=False)
        for host, p in ports.items()
    }
    assert len({c["name"] for c in configs.values()}) == 1  # hence one Lease
    path = lease_path(configs["bjc-failover-a"])
    reports = tmp_path / "reports"  # shared, like the Deployment's volume
    controllers: dict[str, ControllerProcess] = {}

    def output(host: str) -> str:
        return f"--- {host}:\n{controllers[host].output()[-3000:]}"

    async def settled(kube: KubeClient, http: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
        """One holds the Lease, and every one is ready (readiness is health, not leadership)."""
        while True:
            for host, c in controllers.items():
                assert c.proc.returncode is None, output(host)
            lease = await kube.get_or_none(path, dict)  # none until the first one acquires
            spec = lease["spec"] if lease else {}
            holder = spec.get("holderIdentity") or ""
            if holder in controllers:
                status = {h: await readyz_status(http, ports[h]["health"]) for h in controllers}
                if all(s == 200 for s in status.values()):
                    return holder, spec
            await asyncio.sleep(0.05)

    async with (
        admin_client(apiserver) as kube,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        try:
            for host in ports:
                controllers[host] = await start_controller(
                    apiserver, tmp_path, reports, config_map=host, hostname=host
                )
            try:
                leader, before = await asyncio.wait_for(settled(kube, http), BOUND)
            except TimeoutError:
                pytest.fail("no single leader:\n" + "\n".join(map(output, controllers)))
            (standby,) = set(controllers) - {leader}

            # SIGTERM the leader: exit 0, and the standby takes over within a retry period
            sent = time.monotonic()
            assert await stop_controller(controllers[leader]) == 0, output(leader)
            exited = time.monotonic() - sent
            del controllers[leader]
            try:
                holder, after = await asyncio.wait_for(settled(kube, http), BOUND)
            except TimeoutError:
                pytest.fail(f"{standby} did not take over:\n{output(standby)}")
            handover = time.monotonic() - sent
            print(
                f"handover {leader} -> {standby}: {handover:.2f}s after SIGTERM "
                f"(the leader exited after {exited:.2f}s)"
            )
            assert holder == standby
            assert handover < 10, handover  # a correctness bound: retry period 2 s, expect ~2 s
            assert after.get("leaseTransitions", 0) == before.get("leaseTransitions", 0) + 1
            assert (
                MICRO_TIME.match(after["acquireTime"])
                and after["acquireTime"] != before["acquireTime"]
            )

            # SIGTERM the second: exit 0 and the Lease released
            assert await stop_controller(controllers[standby]) == 0, output(standby)
            del controllers[standby]
            spec = (await kube.get(path, dict))["spec"]
            assert spec.get("holderIdentity", "") == "", spec
        finally:
            for c in controllers.values():
                if c.proc.returncode is None:
                    c.proc.kill()
                    await c.proc.wait()
