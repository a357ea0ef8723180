"""`bjc run` as a process: environment, ConfigMap through the API, owner, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from bjc.kube.client import KubeClient
from bjc.kube.objects import Pod
from bjc.sim import JobBehaviour, SimCluster

from .harness import BASE_CONFIG, NAMESPACE, POD_TEMPLATE, post_result

BOUND = 60  # seconds: a hang bound, not a performance expectation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_config_map(sim: SimCluster, **overrides) -> None:
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "batch", "namespace": NAMESPACE},
            "data": {
                "config.yaml": yaml.safe_dump({**BASE_CONFIG, **overrides}),
                "pod-template.yaml": POD_TEMPLATE,
            },
        }
    )


async def bjc_run(sim: SimCluster, tmp_path: Path, **env: str) -> asyncio.subprocess.Process:
    kubeconfig = tmp_path / "kubeconfig"
    sim.write_kubeconfig(kubeconfig)
    environ = {k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "CONFIG_MAP_NAME")}
    environ.update(KUBECONFIG=str(kubeconfig), REPORT_DIRECTORY=str(tmp_path / "reports"))
    environ.update(env)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bjc", "run",
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_missing_environment_is_refused_with_its_name(sim, tmp_path):
    proc = await bjc_run(sim, tmp_path, CONFIG_MAP_NAME="batch")
    _, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode != 0
    assert "NAMESPACE" in err.decode()


async def test_invalid_config_map_refuses_to_start_naming_the_key(sim, tmp_path):
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    store_config_map(sim, podPoolSize=0, cronExpression="every day")
    proc = await bjc_run(sim, tmp_path, NAMESPACE=NAMESPACE, CONFIG_MAP_NAME="batch")
    _, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode == 1
    text = err.decode()
    assert "podPoolSize" in text and "cronExpression" in text


async def test_run_owns_job_pods_leads_and_stops_gracefully_on_sigterm(sim, tmp_path, start_agent):
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    deployment = sim.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bjc", "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": "bjc"}}, "template": {}},
        }
    )
    rs = sim.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "bjc-5d8f", "namespace": NAMESPACE,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "bjc",
                                     "uid": deployment["metadata"]["uid"], "controller": True}],
            },
        }
    )  # fmt: skip
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "bjc-5d8f-x2x9q", "namespace": NAMESPACE,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "bjc-5d8f", "uid": rs["metadata"]["uid"],
                                     "controller": True}],
            },
            "spec": {"containers": [{"name": "bjc", "image": "bjc"}]},
        }
    )  # fmt: skip
    for name in ("node-1", "node-2"):
        sim.add_node(name)
    await start_agent(["node-1", "node-2"], behaviour=JobBehaviour(run=post_result))
    health = free_port()
    store_config_map(
        sim, runOnStartup=True, startupDelay="100ms", healthProbePort=health,
        callbackServicePort=free_port(), fileServerPort=free_port(),
        metrics={"port": free_port(), "prefix": "bjc_test"},
    )  # fmt: skip
    proc = await bjc_run(
        sim, tmp_path, NAMESPACE=NAMESPACE, CONFIG_MAP_NAME="batch",
        HOSTNAME="bjc-5d8f-x2x9q", POD_IP="127.0.0.2", BIND_ADDRESS="127.0.0.2",
    )  # fmt: skip
    try:
        async with asyncio.timeout(BOUND), aiohttp.ClientSession() as http:
            while True:  # the probe is the only outside view of a process
                try:
                    async with http.get(f"http://127.0.0.2:{health}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            with pytest.raises(aiohttp.ClientConnectionError):  # BIND_ADDRESS: that one only
                await http.get(f"http://127.0.0.1:{health}/readyz")
            succeeded: set[str] = set()
            async with KubeClient.from_url(sim.url) as kube:
                path = f"/api/v1/namespaces/{NAMESPACE}/pods"
                async for ev in kube.watch(path, Pod, resource_version="0"):
                    if "-job-" in ev.object.metadata.name and ev.object.status.phase == "Succeeded":
                        succeeded.add(ev.object.metadata.name)
                    if len(succeeded) == 2:
                        break
        jobs = [p for p in sim.list("pods", NAMESPACE) if "job" in p["metadata"]["name"]]
        for pod in jobs:
            (owner,) = pod["metadata"]["ownerReferences"]
            assert owner["kind"] == "Deployment"
            assert owner["uid"] == deployment["metadata"]["uid"]
        lease = sim.get("leases", NAMESPACE, "batch-leader-election")
        assert lease["spec"]["holderIdentity"] == "bjc-5d8f-x2x9q"
        # deleting the Deployment (kubectl delete, helm uninstall) takes the Lease too
        (owner,) = lease["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("Deployment", deployment["metadata"]["uid"])
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode == 0
    lease = sim.get("leases", NAMESPACE, "batch-leader-election")
    assert lease["spec"].get("holderIdentity", "") == ""  # released for a standby
