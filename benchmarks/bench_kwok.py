"""Makespan on a real control plane: kwok's fake nodes complete the job pods.

The same measurement as bench_controller's makespan, on the e2e control plane
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler; tests/e2e) instead
of `bjc sim`: kwok registers 1,000 and then 5,000 nodes and moves every job pod
bound to them Pending → Running → Succeeded at once. For each size and pool size
(10, 100): the floor, an ideal client with the same pool doing only the creates and
waiting for the completions on a watch, then one execution of bjc (the real
Runtime in this process, DEV_MODE so no Lease; a fresh report directory). Nodes
get no heartbeats (node lifecycle waits an hour), so nothing but the jobs loads
the apiserver. Needs the binaries that tests/e2e/build_binaries.sh builds; without
them it says so and measures nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks import smoke
from benchmarks.bench_controller import NS, bjc_makespan, config_yaml, floor_makespan
from benchmarks.processes import put_config_map
from bjc.kube.client import Credentials, KubeClient
from tests.e2e.binaries import CONTROL_PLANE, locate
from tests.e2e.controlplane import ControlPlane, settle

SIZES = (1000, 5000)
POOLS = (10, 100)


def kwok_config(stages: Path) -> str:
    """kwok's own stages, except that every Running pod completes (not only Jobs')."""
    docs = [yaml.safe_load(p.read_text()) for p in sorted(stages.glob("*.yaml"))]
    for doc in docs:
        if doc["metadata"]["name"] == "pod-complete":
            exprs = doc["spec"]["selector"]["matchExpressions"]
            exprs[:] = [e for e in exprs if "ownerReferences" not in e["key"]]
    options = {"podPlayStageParallelism": 16, "nodePlayStageParallelism": 16}
    docs.append(
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokConfiguration",
            "options": options,
        }
    )
    return yaml.safe_dump_all(docs)


@contextlib.contextmanager
def kwok_process(plane: ControlPlane, kwok: str) -> Any:
    config = plane.workdir / "kwok.yaml"
    config.write_text(kwok_config(Path(kwok).parent / "stages"))
    log = (plane.workdir / "kwok.log").open("wb")
    proc = subprocess.Popen(
        [
            kwok,
            f"--kubeconfig={plane.kubeconfig}",
            f"--config={config}",
            "--manage-all-nodes=true",  # every node of this cluster is kwok's
            "--cidr=127.128.0.0/16",  # pod IPs are only status values; keep them loopback
            "--node-ip=127.0.0.1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def add_ready_nodes(creds: Credentials, first: int, last: int) -> list[str]:
    """Create node-<first..last> and wait until kwok reports all Ready."""
    names = [f"node-{i}" for i in range(first, last + 1)]
    async with KubeClient(creds) as kube:
        queue = list(names)

        async def creator() -> None:
            while queue:
                name = queue.pop()
                node = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name},
                }
                await kube.create("/api/v1/nodes", node)

        await asyncio.gather(*(creator() for _ in range(16)))

        def all_ready(nodes: dict[str, dict[str, Any]]) -> bool:
            conditions = (n.get("status", {}).get("conditions", []) for n in nodes.values())
            ready = sum(
                any(c["type"] == "Ready" and c["status"] == "True" for c in cs) for cs in conditions
            )
            return ready >= last

        await asyncio.wait_for(settle(kube, "/api/v1/nodes", all_ready), 600)
    return [f"node-{i}" for i in range(1, last + 1)]


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    binaries = locate()
    missing = binaries.missing((*CONTROL_PLANE, "kwok"))
    if missing:
        print(
            f"bench: kwok: skipped, not built: {', '.join(missing)} "
            "(bash tests/e2e/build_binaries.sh builds them)",
            file=sys.stderr,
        )
        return {}
    if smoke():  # the test suite does not start a control plane
        kwok_config(Path(binaries["kwok"]).parent / "stages")
        print("bench: kwok: smoke size: the control plane is not started", file=sys.stderr)
        return {}
    out: dict[str, Any] = {}
    plane = ControlPlane(binaries)
    plane.start()
    try:
        creds = Credentials(server=plane.url, insecure=True, token=plane.token)
        with kwok_process(plane, binaries["kwok"]):
            asyncio.run(_create_namespace(creds))
            made = 0
            for size in sizes:
                names = asyncio.run(add_ready_nodes(creds, made + 1, size))
                made = size
                for pool in POOLS:
                    print(f"bench: kwok: {size} nodes, pool {pool}", file=sys.stderr, flush=True)
                    floor = asyncio.run(floor_makespan(creds, names, pool))
                    bjc = asyncio.run(bjc_makespan(creds, pool))
                    out[f"kwok_makespan_{size}_pool_{pool}"] = {
                        "bjc_s": bjc,
                        "floor_s": floor,
                        "ratio": bjc / floor,
                    }
    finally:
        plane.stop()
    return out


async def _create_namespace(creds: Credentials) -> None:
    await put_config_map(creds, config_yaml())
    async with KubeClient(creds) as kube:  # pods need the controller-manager's `default` SA
        await settle(kube, f"/api/v1/namespaces/{NS}/serviceaccounts", lambda sa: "default" in sa)


if __name__ == "__main__":
    import json

    print(json.dumps(run(tuple(map(int, sys.argv[1:])) or SIZES), indent=2))
