"""The Helm chart on a real control plane, with exactly the commands docs/deployment.md
shows: `helm install` (one replica, a ReadWriteOnce claim, `Recreate`), one execution
with every node's result recorded, `helm upgrade` with a changed schedule picked up
without a restart (hot reload: the `ConfigReloaded` Event), and `helm uninstall`
leaving no pod, Lease or job pod behind. Also: what the chart renders is accepted by
the real apiserver (`kubectl apply --dry-run=server`). Nodes are simulated, the
controller pod a `bjc run` process (as in test_e2e.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import unavailable
from tests.e2e.binaries import helm

from .controlplane import ControlPlane
from .deployment import BOUND, LEASE, NAMESPACE, PODS
from .test_e2e import Deployed, simulated_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
VOLUME = "bjc-reports-helm"
INSTALL = [
    "install", "bjc", "charts/bjc", "-n", NAMESPACE, "--create-namespace",
    "--set", "reports.type=newClaim", "--set", "replicas=1", "--set", "strategy.type=Recreate",
    "--set", "reports.claim.accessModes={ReadWriteOnce}",
]  # fmt: skip
UPGRADE = [
    "upgrade", "bjc", "charts/bjc", "-n", NAMESPACE, "--reuse-values",
    "--set", "config.cronExpression=*/5 * * * *",
]  # fmt: skip
UNINSTALL = ["uninstall", "bjc", "-n", NAMESPACE, "--wait"]


class Helmed(Deployed):
    def helm(self, *args: str) -> str:
        binary = helm()
        if binary is None:
            unavailable("no helm (tests/e2e/build_binaries.sh helm)")
        assert binary is not None
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig)}
        done = subprocess.run(
            [binary, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=BOUND + 60
        )
        assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}\n{self.diagnosis()}"
        return done.stdout

    async def run_helm(self, *args: str) -> str:
        return await asyncio.to_thread(self.helm, *args)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def helmed(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Helmed]:
    tmp = tmp_path_factory.mktemp("helm")
    nodes = simulated_nodes(control_plane, tmp, Helmed, VOLUME, "ReadWriteOnce")
    async with nodes as (result, proxy):
        try:
            await result.run_helm(*INSTALL)
            await proxy.start()
            yield result
        finally:
            claim = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/bjc-reports"
            await result.kube.delete(claim)
            await result.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait")


async def test_helm_install_upgrade_uninstall(helmed: Helmed) -> None:
    await helmed.rollout_status()

    # what the chart renders, every optional object but the prometheus-operator ones
    rendered = await helmed.run_helm(
        "template", "bjc", "charts/bjc", "-n", NAMESPACE, "--set", "grafanaDashboard=true"
    )
    await helmed.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)

    # one execution, every node's result recorded
    before = {s.id for s in helmed.executions()}
    kubeconfig = str(helmed.plane.kubeconfig)
    trigger = [sys.executable, "-m", "bjc", "trigger", "--kubeconfig", kubeconfig]
    done = await asyncio.to_thread(
        subprocess.run, [*trigger, "-n", NAMESPACE, "bjc"], capture_output=True, text=True,
        timeout=BOUND, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    execution = await helmed.all_results(before)
    assert execution.id == done.stdout.strip()

    # a changed schedule, reloaded without a restart
    (pod,) = await helmed.controller_pods()
    await helmed.run_helm(*UPGRADE)

    async def reloaded() -> bool:
        events = await helmed.kube.get(
            f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", dict
        )
        return any(
            e["reason"] == "ConfigReloaded" and "cronExpression" in e.get("note", "")
            for e in events["items"]
        )

    await helmed.until("the new schedule reloaded", reloaded)
    (same,) = await helmed.controller_pods()
    assert same["metadata"]["uid"] == pod["metadata"]["uid"]  # no restart

    # nothing left behind: no pod (controller or job), no Lease
    await helmed.run_helm(*UNINSTALL)
    await helmed.kubectl(
        "wait", "--for=delete", "pods", "--all", "-n", NAMESPACE, f"--timeout={BOUND}s"
    )
    assert not (await helmed.kube.get(PODS, dict))["items"]

    async def no_lease() -> bool:  # garbage-collected with the Deployment, its owner
        return await helmed.kube.get_or_none(LEASE, dict) is None

    await helmed.until("the Lease collected", no_lease)
