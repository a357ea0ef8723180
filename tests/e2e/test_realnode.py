"""The image users deploy, run by a real kubelet: the README's deployment, for real.

A real node (tests/e2e/realnode/node.py: containerd, kubelet, kube-proxy) joins a
real control plane, the images built from `Dockerfile` and
`examples/job-image/Dockerfile` (realnode/build_images.sh, run by `nox -s e2e`) are
loaded into its containerd, and `kubectl apply -k` deploys the shipped example
overlay through a test overlay that changes only what a machine without a registry
needs (realnode/overlay: never pull; the example job image, held on request). Then,
as a user would: both replicas Ready through the kubelet's own probes, the security
context as the kubelet enforces it, an execution whose job pod reports through the
real Service and kube-proxy to the leader, `kubectl logs` of the job pod, `kubectl
rollout restart` and deleting the leader pod during an execution with nothing lost,
and `kubectl delete -k` leaving nothing. The controller authenticates with the
ServiceAccount token the kubelet projects (in-cluster configuration).

Marked `realnode` (`nox -s e2e -- -m realnode` runs just these). Where a node cannot
start (no root, no overlayfs, the Debian packages missing) they are skipped saying
why, and fail under `CI=true`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bjc.config.podspec import EXECUTION_LABEL, OWNER_LABEL
from bjc.kube.client import Credentials, KubeClient
from bjc.reports.execution import JobStatus
from tests.conftest import unavailable
from tests.integration.test_kubectl_plugin import same_but_running_durations

from .binaries import NODE, Binaries, image_archives
from .controlplane import ControlPlane, settle
from .deployment import BOUND, NAMESPACE, PODS, Deployment, create_reports_volume
from .realnode.node import (
    NODE_NAME,
    POD_RANGE,
    SERVICE_RANGE,
    RealNode,
    machine_address,
    why_not_here,
)

pytestmark = [pytest.mark.e2e, pytest.mark.realnode, pytest.mark.asyncio(loop_scope="module")]

HERE = Path(__file__).resolve().parent
OVERLAY = HERE / "realnode" / "overlay"  # the shipped example overlay, images local
HOLD = Path("/run/bjc-e2e-hold")  # the overlay's job pods wait while HOLD/hold exists
IMAGE = "ghcr.io/bjc-project/bjc:0.1.0"  # what the shipped manifests run
ARCHIVES = ("pause.tar", "bjc.tar", "job.tar")


@pytest.fixture(scope="module")
def node_plane(binaries: Binaries) -> Iterator[ControlPlane]:
    """A control plane of its own, on the machine's address with a routable
    Service range: containers reach it through the `kubernetes` Service."""
    why = why_not_here()
    if why:
        unavailable(why)
    missing = binaries.missing(NODE)
    if missing:
        unavailable(f"not built: {', '.join(missing)} (build_binaries.sh node)")
    archives = [image_archives() / name for name in ARCHIVES]
    if not all(a.is_file() for a in archives):
        unavailable(
            f"no images in {image_archives()} (realnode/build_images.sh, run by nox -s e2e)"
        )
    address = machine_address()
    assert address is not None
    plane = ControlPlane(binaries, address=address, service_range=SERVICE_RANGE)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


class OnTheNode(Deployment):
    node: RealNode

    def diagnosis(self) -> str:
        """The controller containers' logs, then the node's, the pods and the control plane's."""
        out = []
        for pod in self.plane.run_kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "name"
        ).stdout.split():
            logs = self.plane.run_kubectl("logs", pod, "-n", NAMESPACE, "--tail=20")
            out.append(f"--- {pod}:\n{logs.stdout}{logs.stderr}")
        return "\n".join([*out, self.node.logs(), super().diagnosis()])

    async def job_pods(self, execution: str) -> list[dict[str, Any]]:
        params = {"labelSelector": f"{OWNER_LABEL}=node-check,{EXECUTION_LABEL}={execution}"}
        return (await self.kube.get(PODS, dict, params=params))["items"]

    async def exec(self, pod: str, *argv: str) -> str:
        return await self.kubectl("exec", pod, "-n", NAMESPACE, "--", *argv)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed(
    node_plane: ControlPlane, binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OnTheNode]:
    reports = tmp_path_factory.mktemp("realnode") / "reports"
    # a hostPath volume takes no fsGroup: its admin makes it writable for the pods' group
    reports.mkdir()
    shutil.chown(reports, group=10001)
    reports.chmod(0o2775)
    node = RealNode(
        node_plane,
        binaries["kubelet"],
        binaries["kube-proxy"],
        [image_archives() / name for name in ARCHIVES],
    )
    await asyncio.to_thread(node.start)
    creds = Credentials(server=node_plane.url, insecure=True, token=node_plane.token)
    try:
        async with KubeClient(creds) as kube:
            await asyncio.wait_for(settle(kube, "/api/v1/nodes", _node_ready), 180)
            await create_reports_volume(kube, reports)
            deployment = OnTheNode(node_plane, kube, reports, [NODE_NAME])
            deployment.node = node
            await deployment.kubectl("apply", "-k", str(OVERLAY))
            yield deployment
    finally:
        hold_jobs(False)
        await asyncio.to_thread(node.stop)


def hold_jobs(hold: bool) -> None:
    """The overlay's job pods wait while HOLD/hold exists on the node."""
    if hold:
        HOLD.mkdir(exist_ok=True)
        HOLD.joinpath("hold").touch()
    else:
        HOLD.joinpath("hold").unlink(missing_ok=True)


def _node_ready(nodes: dict[str, dict[str, Any]]) -> bool:
    conditions = nodes.get(NODE_NAME, {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def test_both_replicas_ready_through_the_kubelets_probes(deployed: OnTheNode) -> None:
    await deployed.rollout_status()
    pods = await deployed.controller_pods()
    assert len(pods) == 2
    for pod in pods:
        (status,) = pod["status"]["containerStatuses"]
        assert status["image"] == IMAGE and status["ready"] and status["restartCount"] == 0
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["status"]["podIP"].startswith(POD_RANGE.rsplit(".", 2)[0])
    # leading needs the Lease: the ServiceAccount token as the kubelet projects it
    holder = await deployed.until("a replica leads", deployed.settled)
    assert holder in {p["metadata"]["name"] for p in pods}


async def test_the_security_context_is_what_the_kubelet_enforces(deployed: OnTheNode) -> None:
    """docs/security.md: non-root, no privilege escalation, no capabilities, a
    read-only root file system, and the report volume writable."""
    pod = (await deployed.controller_pods())[0]["metadata"]["name"]
    probe = (
        "import json, os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close(); os.unlink(path); return 'yes'\n"
        "    except OSError as e:\n"
        "        return e.strerror\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "    'no_new_privs': status['NoNewPrivs'], 'cap_eff': status['CapEff'],\n"
        "    'root': writable('/probe'), 'reports': writable('/var/www/.probe')}))\n"
    )
    seen = json.loads(await deployed.exec(pod, "python3", "-c", probe))
    assert seen == {
        "uid": 10001,
        "gid": 10001,
        "groups": [10001],  # fsGroup
        "no_new_privs": "1",
        "cap_eff": "0000000000000000",
        "root": "Read-only file system",
        "reports": "yes",
    }


async def test_an_execution_reports_through_the_real_service(deployed: OnTheNode) -> None:
    before = {s.id for s in deployed.executions()}
    await deployed.restart_with(runOnStartup=True, startupDelay="1s")
    done = await deployed.all_results(before)
    # the job's result, and its two files stored as <node>-<name> beside it
    directory = deployed.reports / done.id
    result = json.loads((directory / f"{NODE_NAME}.json").read_text())
    assert {"disk_used_ratio", "failed_checks"} <= set(result)
    assert (directory / f"{NODE_NAME}-df.txt").read_text().startswith("Filesystem")
    assert "Linux" in (directory / f"{NODE_NAME}-uname.txt").read_text()

    (job,) = await deployed.job_pods(done.id)
    assert job["status"]["phase"] == "Succeeded"
    assert job["spec"]["containers"][0]["image"] == "localhost/node-check:e2e"
    # the kubelet's log of the job container, through the apiserver
    logs = await deployed.kubectl("logs", job["metadata"]["name"], "-n", NAMESPACE)
    assert f"checked / on {NODE_NAME} in execution {done.id}" in logs
    # and its event, raised through the callback API
    events = await deployed.kube.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict)
    assert any(
        e["regarding"]["name"] == job["metadata"]["name"] and e["reason"] == "ChecksPassed"
        for e in events["items"]
    )


async def test_kubectl_bjc_status_prints_what_bjc_status_prints(
    deployed: OnTheNode, tmp_path: Path
) -> None:
    """`kubectl bjc status` reads the leader's summaries through the API server's
    service proxy (the Service `bjc`, port 8080): what `bjc status --url` reads from the
    leader's file server directly, at its pod IP."""
    leader = await deployed.until("a replica leads", deployed.settled)
    pod = await deployed.kube.get(f"{PODS}/{leader}", dict)
    direct_url = f"http://{pod['status']['podIP']}:8080"
    kubeconfig = deployed.plane.write_kubeconfig(
        tmp_path / "kubeconfig", deployed.plane.token, namespace=NAMESPACE
    )
    # kubectl finds the plugin (`kubectl-bjc`, installed beside this interpreter) on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    plugin = [deployed.plane.binaries["kubectl"], "bjc", "status"]
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig)}
    via_kubectl, direct = await asyncio.gather(
        asyncio.to_thread(subprocess.run, plugin, capture_output=True, text=True, env=env),
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bjc", "status", "--url", direct_url],
            capture_output=True,
            text=True,
        ),
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert direct.returncode == 0, direct.stderr
    assert "finished" in direct.stdout
    assert same_but_running_durations(via_kubectl.stdout, direct.stdout), (
        via_kubectl.stdout,
        direct.stdout,
    )


async def test_bjc_demo_runs_in_the_image_as_its_user(deployed: OnTheNode) -> None:
    """The image's own user can run the demo: it writes ./demo-reports in the
    working directory."""
    name = "bjc-demo"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "demo",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["demo", "--nodes", "3", "--executions", "1"],
                }
            ],
        },
    }
    await deployed.kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", pod)

    def ended(pods: dict[str, dict[str, Any]]) -> bool:
        return pods.get(name, {}).get("status", {}).get("phase") in ("Succeeded", "Failed")

    await asyncio.wait_for(settle(deployed.kube, PODS, ended), BOUND)
    logs = await deployed.kubectl("logs", name, "-n", NAMESPACE)
    done = await deployed.kube.get(f"{PODS}/{name}", dict)
    assert done["status"]["phase"] == "Succeeded", logs
    await deployed.kube.delete(f"{PODS}/{name}")


async def start_held_execution(deployed: OnTheNode) -> set[str]:
    """An execution whose job pod runs but has not reported yet."""
    before = {s.id for s in deployed.executions()}
    hold_jobs(True)
    await deployed.restart_with(runOnStartup=True, startupDelay="1s")

    async def job_running() -> bool:
        for s in deployed.executions():
            if s.id not in before:
                pods = await deployed.job_pods(s.id)
                return any(p["status"].get("phase") == "Running" for p in pods)
        return False

    await deployed.until("the job pod running", job_running)
    await deployed.until("the old pods gone, one of the new ones leading", deployed.settled)
    return before


async def test_rollout_restart_during_an_execution_loses_nothing(deployed: OnTheNode) -> None:
    before = await start_held_execution(deployed)
    await deployed.kubectl("rollout", "restart", "deployment/bjc", "-n", NAMESPACE)
    await deployed.rollout_status()
    hold_jobs(False)
    done = await deployed.all_results(before)
    assert done.nodes[NODE_NAME].status is JobStatus.SUCCEEDED


async def test_deleting_the_leader_pod_during_an_execution_hands_over(
    deployed: OnTheNode,
) -> None:
    before = await start_held_execution(deployed)
    old = await deployed.leader()
    await deployed.kubectl("delete", "pod", old["holderIdentity"], "-n", NAMESPACE)

    async def handed_over() -> dict[str, Any] | None:
        spec = await deployed.leader()
        return spec if spec.get("holderIdentity") not in ("", old["holderIdentity"]) else None

    await deployed.until("another pod leads", handed_over)
    hold_jobs(False)
    await deployed.all_results(before)
    await deployed.rollout_status()  # the ReplicaSet replaced the deleted pod


async def test_delete_k_leaves_nothing_behind(deployed: OnTheNode) -> None:
    """Runs last: `kubectl delete -k` of what was applied; the kubelet stops every
    container of the namespace."""
    await deployed.kubectl("delete", "-k", str(OVERLAY), "--wait", "--timeout=180s")
    assert not (await deployed.kube.get("/api/v1/pods", dict))["items"]
    namespaces = await deployed.kubectl("get", "namespaces", "-o", "name")
    assert f"namespace/{NAMESPACE}" not in namespaces.split()
    await deployed.kube.delete("/api/v1/persistentvolumes/bjc-reports")
