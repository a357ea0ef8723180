"""The single-replica overlay on a real control plane: `kubectl apply -k
manifests/overlays/single`, as docs/deployment.md says, on simulated nodes (the
controller pod as a `bjc run` process, as in test_e2e.py). Its ReadWriteOnce claim
binds to a hostPath PersistentVolume. One execution, held in flight while `kubectl
rollout restart` replaces the one pod (`Recreate`: the old pod is gone before the new
one mounts the volume), ends with every node's result recorded; `kubectl delete -k`
then leaves no pod behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from .controlplane import ControlPlane
from .deployment import BOUND, NAMESPACE
from .test_e2e import Deployed, simulated_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "single"
VOLUME = "bjc-reports-single"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def single(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployed]:
    tmp = tmp_path_factory.mktemp("single")
    # what a ReadWriteOnce provisioner would make for the claim
    nodes = simulated_nodes(control_plane, tmp, Deployed, VOLUME, "ReadWriteOnce")
    async with nodes as (result, proxy):
        await result.kubectl("apply", "-k", str(OVERLAY))
        await proxy.start()
        yield result


async def test_the_single_overlay_survives_a_rollout_restart_during_an_execution(
    single: Deployed,
) -> None:
    await single.rollout_status()
    claim = await single.kube.get(
        f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/bjc-reports", dict
    )
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == VOLUME

    before = {s.id for s in single.executions()}
    single.jobs.hold()
    await single.restart_with(runOnStartup=True, startupDelay="1s")
    await single.until("a job pod running", lambda: single.jobs.waiting > 0)
    (pod,) = await single.controller_pods()
    await single.kubectl("rollout", "restart", "deployment/bjc", "-n", NAMESPACE)
    await single.rollout_status()
    (new,) = await single.controller_pods()
    assert new["metadata"]["name"] != pod["metadata"]["name"]
    single.jobs.release()
    await single.all_results(before)


async def test_delete_k_of_the_single_overlay_leaves_no_pods_behind(single: Deployed) -> None:
    await single.kubectl("delete", "deployment", "bjc", "-n", NAMESPACE, "--cascade=background")
    await single.kubectl(
        "wait", "--for=delete", "pods", "--all", "-n", NAMESPACE, f"--timeout={BOUND}s"
    )
    await single.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait")
    assert not (await single.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", dict))["items"]
