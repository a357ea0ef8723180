"""bjc deployed with the shipped manifests on a real control plane, as a test drives it.

Shared by the deployment scenarios on simulated nodes (test_e2e.py: controller pods
as `bjc run` processes, job pods simulated) and on the real node (test_realnode.py:
the image on a real kubelet). What a user runs is here once: `kubectl` against the
cluster, `rollout status`, changing config.yaml in the ConfigMap and `rollout
restart`, who holds the Lease; and reading the report directory as an operator
would. What differs (who runs the pods, what to print when a test fails) is the
subclasses'.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bjc.engine.configwatch import TRIGGER_ANNOTATION
from bjc.kube.client import KubeClient
from bjc.reports.execution import ExecutionState, JobStatus
from tests.report_files import execution_dirs, state

from .controlplane import ControlPlane

NAMESPACE = "bjc-system"  # the example overlay's
BOUND = 180  # seconds: a hang bound, not a performance expectation
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/node-check-leader-election"


async def create_reports_volume(
    kube: KubeClient, path: Path, name: str = "bjc-reports", access: str = "ReadWriteMany"
) -> None:
    """The PersistentVolume an overlay's claim binds, as an admin without a provisioner
    provides it: a hostPath, since the test's nodes share one host."""
    spec = {
        "capacity": {"storage": "5Gi"},
        "accessModes": [access],
        "hostPath": {"path": str(path)},
    }
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}}
    await kube.create("/api/v1/persistentvolumes", {**volume, "spec": spec})


@dataclass
class Deployment:
    plane: ControlPlane
    kube: KubeClient
    reports: Path  # the report volume, as the node sees it
    nodes: list[str]  # the nodes every execution runs on

    async def kubectl(self, *args: str, input: str | None = None) -> str:
        """kubectl off the event loop, bounded by BOUND + 60 s."""
        return await asyncio.to_thread(self.plane.kubectl, *args, input=input, timeout=BOUND + 60)

    async def leader(self) -> dict[str, Any]:
        """The Lease's spec (holder = the leading pod's name)."""
        return (await self.kube.get(LEASE, dict))["spec"]

    async def controller_pods(self) -> list[dict[str, Any]]:
        params = {"labelSelector": "app.kubernetes.io/component=controller"}
        return (await self.kube.get(PODS, dict, params=params))["items"]

    async def settled(self) -> str | None:
        """The leading pod's name once exactly the Deployment's two pods run (none
        terminating) and one of them holds the Lease; else None."""
        pods = await self.controller_pods()
        if len(pods) != 2 or any(p["metadata"].get("deletionTimestamp") for p in pods):
            return None
        holder = (await self.leader()).get("holderIdentity")
        return holder if holder in {p["metadata"]["name"] for p in pods} else None

    async def rollout_status(self) -> None:
        try:
            await self.kubectl(
                "rollout", "status", "deployment/bjc", "-n", NAMESPACE, f"--timeout={BOUND}s"
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnosis()}") from None

    async def configure(self, **config: Any) -> None:
        """Change config.yaml in the ConfigMap (a key given None is removed); the running
        controllers reload it."""
        cm = yaml.safe_load(
            await self.kubectl("get", "configmap", "bjc", "-n", NAMESPACE, "-o", "yaml")
        )
        values = yaml.safe_load(cm["data"]["config.yaml"])
        values.update(config)
        values = {k: v for k, v in values.items() if v is not None}
        cm["data"]["config.yaml"] = yaml.safe_dump(values)
        meta = cm["metadata"]
        cm["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
        await self.kubectl("apply", "-f", "-", input=yaml.safe_dump(cm))

    async def restart_with(self, **config: Any) -> None:
        """Change config.yaml in the ConfigMap, `rollout restart` and wait for the rollout."""
        await self.configure(**config)
        await self.kubectl("rollout", "restart", "deployment/bjc", "-n", NAMESPACE)
        await self.rollout_status()

    async def trigger(self, value: str) -> None:
        """Trigger an execution now, as operating.md says: the ConfigMap's annotation."""
        await self.kubectl(
            "annotate", "configmap", "bjc", "-n", NAMESPACE, "--overwrite",
            f"{TRIGGER_ANNOTATION}={value}",
        )  # fmt: skip

    def diagnosis(self) -> str:
        """What to print when a test fails: the pods and the control plane's logs."""
        pods = self.plane.run_kubectl("get", "pods", "-A", "-o", "wide").stdout
        return "\n".join([pods, self.plane.logs()])

    async def until(self, what: str, check: Callable[[], Any], bound: float = BOUND) -> Any:
        """Wait for `check()` (or its awaitable) to be truthy: files on disk and
        processes have nothing to watch."""
        try:
            async with asyncio.timeout(bound):
                while True:
                    found = check()
                    if inspect.isawaitable(found):
                        found = await found
                    if found:
                        return found
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"{what}: not within {bound}s\n{self.diagnosis()}")

    def executions(self) -> list[ExecutionState]:
        out = []
        for d in execution_dirs(self.reports):
            try:
                out.append(state(d))
            except Exception:  # caught mid-write: not there yet
                continue
        return out

    def finished(self, after: set[str]) -> ExecutionState | None:
        """The first execution not in `after` whose jobs all ended on every node, else None."""
        for s in self.executions():
            if s.id not in after and set(s.nodes) == set(self.nodes):
                if all(j.status.terminal for j in s.nodes.values()):
                    return s
        return None

    async def all_results(self, before: set[str]) -> ExecutionState:
        """The next execution after `before`, once finished with every node's result."""
        done = await self.until("the execution finished", lambda: self.finished(before))
        assert {n: j.status for n, j in done.nodes.items()} == dict.fromkeys(
            self.nodes, JobStatus.SUCCEEDED
        ), f"{done}\n{self.diagnosis()}"
        assert all(j.result for j in done.nodes.values())
        return done
