"""`bjc run --extension module:object` as a process against bjc.sim: the example
extension (examples/extension) adds its variables to every job pod of an execution,
and a broken extension stops `bjc run` before it starts, naming the extension."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bjc.config.extensions import Extension
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod, SimCluster

from .harness import NAMESPACE, cluster, post_result
from .test_controller import run_one
from .test_run import BOUND, free_port, store_config_map

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "extension"


async def bjc_run(sim: SimCluster, tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    """`bjc run ARGS` with the example extension importable (as `pip install` would make it)."""
    kubeconfig = tmp_path / "kubeconfig"
    sim.write_kubeconfig(kubeconfig)
    environ = {k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "CONFIG_MAP_NAME")}
    environ.update(
        KUBECONFIG=str(kubeconfig), REPORT_DIRECTORY=str(tmp_path / "reports"),
        NAMESPACE=NAMESPACE, CONFIG_MAP_NAME="batch", POD_IP="127.0.0.1",
        PYTHONPATH=os.pathsep.join([str(REPO), str(EXAMPLE)]),
    )  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bjc", "run", *args,
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_the_example_extension_sets_its_env_on_every_job_pod(sim, tmp_path, start_agent):
    seen: dict[str, dict[str, str]] = {}
    all_seen = asyncio.Event()
    nodes = ["node-1", "node-2", "node-3"]

    async def job(pod: RunningPod) -> int:
        seen[pod.node] = pod.env
        if len(seen) == len(nodes):
            all_seen.set()
        return await post_result(pod)

    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for name in nodes:
        sim.add_node(name)
    await start_agent(nodes, behaviour=JobBehaviour(run=job))
    store_config_map(
        sim, runOnStartup=True, startupDelay="100ms", healthProbePort=free_port(),
        callbackServicePort=free_port(), fileServerPort=free_port(),
        metrics={"port": free_port(), "prefix": "bjc_test"}, custom={"site": "zurich"},
    )  # fmt: skip
    proc = await bjc_run(sim, tmp_path, "--extension", "bjc_site_env:SiteEnv")
    try:
        async with asyncio.timeout(BOUND):
            await all_seen.wait()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), BOUND)
    for node in nodes:
        assert seen[node]["SITE"] == "zurich", err.decode()[-2000:]
        assert seen[node]["JOB_CONTAINER"] == "main"  # the harness template's container
        assert seen[node]["NODE_NAME"] == node


async def test_a_broken_extension_stops_bjc_run_at_start_naming_it(sim, tmp_path):
    for spec, why in [
        ("bjc_site_env:Missing", "AttributeError"),
        ("no_such_package:extend", "ModuleNotFoundError"),
    ]:
        proc = await bjc_run(sim, tmp_path, "--extension", spec)
        out, err = await asyncio.wait_for(proc.communicate(), BOUND)
        assert proc.returncode == 2, (out, err)
        text = err.decode()
        assert text.startswith(f"bjc: extension {spec}: {why}"), text


def fails_on_the_first_node(config, node_name, execution_id, service_ip, container):  # type: ignore[no-untyped-def]
    if node_name == "node-000":
        raise RuntimeError("no site for node-000")
    return {"SITE": "ok"}


async def test_an_extension_that_fails_fails_only_that_nodes_job(tmp_path):
    async with cluster(tmp_path) as c:
        first, second = await c.ready_nodes(2)
        await c.start_agent()
        await c.store_config_map()
        extension = Extension("tests:fails", fails_on_the_first_node)
        runtime = await c.start_controller(extensions=[extension])
        await run_one(runtime)
        nodes = runtime.controller.current.nodes
        assert nodes[first].status is JobStatus.FAILED
        assert nodes[first].reason == "extension tests:fails: RuntimeError: no site for node-000"
        assert nodes[second].status is JobStatus.SUCCEEDED
