"""A Go controller deployment with only its image swapped for bjc, on a real control plane.

What the Go controller's Helm chart renders with its defaults (tests/go_chart.py: its
ConfigMap, Deployment, Service, ServiceAccount, Role, ClusterRole and bindings) is
applied with the bjc image; the only other change is a schedule that never fires
during the test (the chart's `* * * * *` would start executions of its own). The
controller pod runs as a `bjc run` process (`bjc.sim.ProcessPods`: the chart's
container has no args, the image's `run` is its command) under the chart's RBAC, its
reports on the chart's emptyDir; the job pods are simulated. A trigger (`kubectl
annotate`) runs one execution on every node with result, file and event callbacks
through the chart's Service; the metrics and files are served on the chart's ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import yaml

from bjc.engine.configwatch import TRIGGER_ANNOTATION, TRIGGERED_EXECUTION_ANNOTATION
from bjc.kube.client import Credentials, KubeClient
from bjc.sim import JobBehaviour, NodeAgent, ProcessPods, RunningPod
from bjc.sim.containers import BJC_IMAGE
from bjc.sim.proxy import ServiceProxy
from tests import go_chart

from .controlplane import ControlPlane, add_ready_node
from .deployment import BOUND, Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NAMESPACE = "go-chart"
NODES = ["go-node-1", "go-node-2"]


async def job(pod: RunningPod) -> int:
    """What the chart's run.sh does: a result, a file and an event."""
    result = {"my_metric": [{"value": 1, "labels": {"label_a": pod.node, "label_b": "b"}}]}
    event = {"reason": "Test", "message": "a test event"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url, kw in [
            (pod.env["CALLBACK_SERVICE_RESULT_URL"], {"json": result}),
            (pod.env["CALLBACK_SERVICE_FILE_URL"] + "?name=file.txt", {"data": b"a file"}),
            (pod.env["CALLBACK_SERVICE_EVENT_URL"], {"json": event}),
        ]:
            async with http.post(url, **kw) as resp:
                if resp.status != 200:
                    return 1
    return 0


class GoDeployment(Deployment):
    async def controller_pod(self) -> dict:
        params = {"labelSelector": f"name={go_chart.NAME}"}
        pods = await self.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", dict, params=params)
        (pod,) = pods["items"]
        return pod


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def go_deployment(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GoDeployment]:
    tmp = tmp_path_factory.mktemp("gochart")
    creds = Credentials(server=control_plane.url, insecure=True, token=control_plane.token)
    processes = ProcessPods(tmp / "pods")
    # the chart's every-minute schedule, moved out of the way: the test triggers
    objects = list(yaml.safe_load_all(go_chart.manifest(NAMESPACE, f"{BJC_IMAGE}:0.1.0")))
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    every_minute = 'cronExpression: "* * * * *"'
    assert every_minute in config_map["data"]["config.yaml"]
    config_map["data"]["config.yaml"] = config_map["data"]["config.yaml"].replace(
        every_minute, 'cronExpression: "0 0 1 1 *"'
    )
    manifest = yaml.safe_dump_all(objects)
    async with KubeClient(creds) as kube:
        for name in NODES:
            await add_ready_node(kube, name)
        agent = NodeAgent(
            control_plane.url,
            NODES,
            behaviour=JobBehaviour(run=job),
            headers={"Authorization": f"Bearer {control_plane.token}"},
            ssl=False,
            processes=processes,
        )
        await agent.start()
        proxy = ServiceProxy(kube, NAMESPACE, go_chart.NAME)
        deployed = GoDeployment(control_plane, kube, tmp, NODES)  # reports: served, not read
        try:
            await asyncio.wait_for(agent.synced.wait(), BOUND)
            await deployed.kubectl("create", "namespace", NAMESPACE)
            await deployed.kubectl("apply", "-f", "-", input=manifest)
            await proxy.start()
            yield deployed
        finally:
            await agent.stop()
            await proxy.stop()
            await deployed.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
            for name in (f"{go_chart.NAME}-list-nodes",):
                await deployed.kubectl("delete", "clusterrole,clusterrolebinding", name)
            for name in NODES:
                await kube.delete(f"/api/v1/nodes/{name}")


async def test_the_go_charts_deployment_runs_bjc_with_only_the_image_swapped(
    go_deployment: GoDeployment,
) -> None:
    d = go_deployment
    rollout = ["rollout", "status", f"deployment/{go_chart.NAME}", "-n", NAMESPACE]
    await d.kubectl(*rollout, f"--timeout={BOUND}s")
    pod = await d.controller_pod()
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    lease = f"{leases}/{go_chart.NAME}-leader-election"
    await d.until("the pod leads", lambda: _holder(d, lease, name))

    await d.kubectl(
        "annotate", "configmap", go_chart.NAME, "-n", NAMESPACE, f"{TRIGGER_ANNOTATION}=first"
    )

    async def answered() -> str:
        cm = await d.kube.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{go_chart.NAME}", dict)
        return cm["metadata"].get("annotations", {}).get(TRIGGERED_EXECUTION_ANNOTATION, "")

    eid = await d.until("the trigger answered on the ConfigMap", answered)
    async with aiohttp.ClientSession() as http:

        async def all_files() -> bool:
            for node in NODES:
                url = f"http://{ip}:8080/{eid}/{node}-file.txt"
                async with http.get(url) as resp:
                    if resp.status != 200 or await resp.read() != b"a file":
                        return False
            return True

        await d.until("every node's file served", all_files)
        async with http.get(f"http://{ip}:9153/metrics") as resp:
            metrics = await resp.text()
    for node in NODES:
        assert f'label_a="{node}"' in metrics, metrics
    assert "example_job_controller_my_metric" in metrics
    events = await d.kube.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict)
    reasons = [e["reason"] for e in events["items"]]
    assert reasons.count("Test") == len(NODES), reasons
    assert reasons.count("MissingRight") >= 1, reasons  # the leader label, at least


async def _holder(d: Deployment, lease: str, name: str) -> bool:
    got = await d.kube.get_or_none(lease, dict)
    return got is not None and got["spec"].get("holderIdentity") == name
