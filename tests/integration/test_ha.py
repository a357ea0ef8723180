"""High availability that loses nothing: who may write, what a 200 promises, who gets callbacks.

Each test is a failure mode found in 0.1.0 with two replicas and `kill -9`:
a standby that appended stale job states to the shared journal, a result
acknowledged before it was recorded, readiness tied to leadership, and a
replica that kept writing after losing its lease.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bjc.kube.client import KubeClient
from bjc.kube.objects import Pod
from bjc.kube.ownpod import LEADER_LABEL
from bjc.reports.store import NotLeading
from bjc.sim import JobBehaviour, RunningPod, SimCluster

from .harness import NAMESPACE, cluster, crash
from .test_failover import LEASE, wait_leader
from .test_run import bjc_run, free_port, store_config_map

BOUND = 60  # seconds: a hang bound, not a performance expectation
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/batch-leader-election"


def report_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the report directory with its size and mtime."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def controller_pod(sim: SimCluster, name: str) -> None:
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bjc"}},
            "spec": {"containers": [{"name": "bjc", "image": "bjc"}]},
        }
    )


def leader_labels(sim: SimCluster, *names: str) -> dict[str, str | None]:
    pods = {p["metadata"]["name"]: p for p in sim.list("pods", NAMESPACE)}
    return {n: (pods[n]["metadata"].get("labels") or {}).get(LEADER_LABEL) for n in names}


async def until_pods(kube: KubeClient, predicate: Callable[[dict[str, Pod]], bool]) -> None:
    """List + watch the namespace's pods until `predicate(pods by name)` holds."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    items, rv = await kube.list(path, Pod)
    pods = {p.metadata.name: p for p in items}
    async with asyncio.timeout(BOUND):
        while not predicate(pods):
            async for ev in kube.watch(path, Pod, resource_version=rv):
                rv = ev.object.metadata.resource_version or rv
                if ev.type == "DELETED":
                    pods.pop(ev.object.metadata.name, None)
                elif ev.type != "BOOKMARK":
                    pods[ev.object.metadata.name] = ev.object
                if predicate(pods):
                    return


def labelled(name: str) -> Callable[[dict[str, Pod]], bool]:
    return lambda pods: name in pods and LEADER_LABEL in pods[name].metadata.labels


async def test_a_standby_writes_nothing_while_jobs_of_a_running_execution_end(tmp_path):
    gate, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def job(pod: RunningPod) -> int:
        started.append(pod.node)
        if len(started) == 4:
            all_started.set()
        await gate.wait()
        return 0  # the pod succeeds; the dead leader never hears of it

    async with cluster(tmp_path) as c:
        c.add_nodes(4)
        await c.start_agent(JobBehaviour(run=job))
        shared = tmp_path / "shared"
        common = dict(dev_mode=False, report_dir=shared, lease_timing=LEASE, podPoolSize=4)
        leader = await c.start_controller(identity="a", **common)
        await wait_leader(leader)
        await leader.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await all_started.wait()
        await leader.controller.current.flushed()
        await crash(leader)
        c.runtimes.remove(leader)
        # someone else holds the Lease for good: "b" stays a standby throughout
        lease = await c.kube.get(LEASE_PATH, dict)
        lease["spec"].update(holderIdentity="elsewhere", leaseDurationSeconds=3600)
        await c.kube.replace(LEASE_PATH, lease)
        before = report_files(shared)
        standby = await c.start_controller(identity="b", **common)
        gate.set()  # the running execution's pods now succeed
        await until_pods(
            c.kube,
            lambda pods: all(
                p.status.phase == "Succeeded" for p in pods.values() if "-job-" in p.metadata.name
            ),
        )
        await asyncio.sleep(1.0)  # a window in which a watching standby would have written
        assert report_files(shared) == before
        assert not standby.leading and standby.supervisor.get("pod-watch") is None
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{standby.ports['health']}/readyz"
            async with http.get(url) as r:
                assert r.status == 200  # a standby is Ready: readiness is health
            eid = max(standby.controller.executions)  # the one it read from disk
            url = f"http://127.0.0.1:{standby.ports['callback']}/report/node-000/{eid}/result"
            async with http.post(url, json={"checks": [{"value": 1.0}]}) as r:
                assert r.status == 503
        assert report_files(shared) == before


async def test_the_leader_label_follows_the_lease(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        controller_pod(c.sim, "a")
        controller_pod(c.sim, "b")
        common = dict(dev_mode=False, report_dir=tmp_path / "shared", lease_timing=LEASE)
        a = await c.start_controller(identity="a", **common)
        b = await c.start_controller(identity="b", **common)
        leader = await wait_leader(a, b)
        standby = b if leader is a else a
        await until_pods(c.kube, labelled(leader.identity))
        assert leader_labels(c.sim, "a", "b") == {leader.identity: "batch", standby.identity: None}

        await crash(leader)  # kill -9: the dead leader's pod keeps its label
        c.runtimes.remove(leader)
        await until_pods(c.kube, labelled(standby.identity))
        assert leader_labels(c.sim, "a", "b") == {leader.identity: None, standby.identity: "batch"}


async def test_a_restarted_ex_leader_drops_its_label_before_anything_else(tmp_path):
    async with cluster(tmp_path) as c:
        controller_pod(c.sim, "a")
        label = {"metadata": {"labels": {LEADER_LABEL: "batch"}}}
        await c.kube.patch(f"/api/v1/namespaces/{NAMESPACE}/pods/a", label)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "batch-leader-election", "namespace": NAMESPACE},
            "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600},
        }
        c.sim.create(lease)
        a = await c.start_controller(identity="a", dev_mode=False, lease_timing=LEASE)
        assert leader_labels(c.sim, "a") == {"a": None}  # start() returned: already gone
        assert not a.leading


async def test_a_replica_that_loses_its_lease_stops_writing_and_exits(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        a = await c.start_controller(identity="a", dev_mode=False, lease_timing=LEASE)
        await wait_leader(a)
        async with asyncio.timeout(BOUND):
            await a.accepting_callbacks.wait()
        await a.store.create_execution("202601010000")  # a leader may write

        # a stalled event loop: past the renew deadline, nothing is written any more,
        # even before the elector gets to run and step down
        time.sleep(LEASE[1] + 0.1)  # noqa: ASYNC251 - the stall is the point
        with pytest.raises(NotLeading):
            a.store._write_sync("202601010000", "node-x.json", b"{}")

        # another replica takes the lease: this one gives up and asks to be restarted
        lease = await c.kube.get(LEASE_PATH, dict)
        lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=3600)
        await c.kube.replace(LEASE_PATH, lease)
        async with asyncio.timeout(BOUND):
            await a.failed.wait()
        assert "lost the lease" in a.supervisor.reason
        assert not a.serving
        with pytest.raises(NotLeading):
            await a.store.write_result("202601010000", "node-x", b"{}")
        assert not (a.store.root / "202601010000" / "node-x.json").exists()


async def test_graceful_stop_ends_the_pod_watch_before_giving_up_the_lease(tmp_path):
    """Jobs that end during a SIGTERM are the next leader's to record: once the final
    flush has begun, no pod event may change (and try to persist) the state."""
    async with cluster(tmp_path) as c:
        c.add_nodes(2)
        await c.start_agent(JobBehaviour(run_seconds=3600))
        a = await c.start_controller(identity="a", dev_mode=False, lease_timing=LEASE)
        await wait_leader(a)
        await a.controller.trigger("test")
        await until_pods(c.kube, lambda pods: sum("-job-" in n for n in pods) == 2)
        watching_when_stepping_down: list[bool] = []
        a.elector.on_change(
            lambda leading: watching_when_stepping_down.append(
                a.supervisor.get("pod-watch") is not None
            )
        )
        await a.stop()
        c.runtimes.remove(a)
        assert watching_when_stepping_down == [False]


async def test_sigkill_right_after_acknowledged_results_loses_none(sim, tmp_path, start_agent):
    """Each 200 is on disk: a controller killed the instant after still has every result."""
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    nodes = [f"node-{i}" for i in range(8)]
    for name in nodes:
        sim.add_node(name)
    ports = {"callbackServicePort": free_port(), "healthProbePort": free_port()}
    metrics_port = free_port()
    store_config_map(
        sim, runOnStartup=True, startupDelay="100ms", podPoolSize=8, fileServerPort=free_port(),
        metrics={"port": metrics_port, "prefix": "bjc_test",
                 "gauges": {"checks": {"help": "checks", "labels": ["kind"]}}},
        **ports,
    )  # fmt: skip
    acknowledged: set[str] = set()
    procs: list[asyncio.subprocess.Process] = []
    killed = asyncio.Event()

    async def job(pod: RunningPod) -> int:
        body = {"checks": [{"value": 3.0, "labels": {"kind": pod.node}}]}
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.post(pod.env["CALLBACK_SERVICE_RESULT_URL"], json=body) as r:
                        if r.status == 200:
                            acknowledged.add(pod.node)
                            if not killed.is_set():
                                procs[0].kill()  # SIGKILL, the instant after the 200
                                killed.set()
                            return 0
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        return 1

    await start_agent(nodes, behaviour=JobBehaviour(run=job))
    env = dict(NAMESPACE=NAMESPACE, CONFIG_MAP_NAME="batch", DEV_MODE="true")
    procs.append(await bjc_run(sim, tmp_path, **env))
    try:
        async with asyncio.timeout(BOUND):
            await killed.wait()
            await procs[0].wait()
        assert procs[0].returncode == -signal.SIGKILL
        before_restart = set(acknowledged)
        procs.append(await bjc_run(sim, tmp_path, **env))
        async with asyncio.timeout(BOUND), aiohttp.ClientSession() as http:
            while True:  # until every node's job has ended and been recorded
                try:
                    url = f"http://127.0.0.1:{metrics_port}/metrics"
                    async with http.get(url) as r:
                        samples = [
                            s
                            for f in text_string_to_metric_families(await r.text())
                            for s in f.samples
                        ]
                    processing = {
                        s.labels["node"]: s.value
                        for s in samples
                        if s.name == "bjc_test_processing"
                    }
                    if len(processing) == len(nodes):
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        assert before_restart, "some results were acknowledged before the kill"
        checks = {s.labels["node"]: s.value for s in samples if s.name == "bjc_test_checks"}
        for node in acknowledged:
            assert checks.get(node) == 3.0, node
            assert processing[node] == 0.0, node
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), BOUND)


async def probe(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_healthz_fails_while_the_pod_watch_hears_nothing(tmp_path):
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        runtime = await c.start_controller()
        runtime.watch_silence_limit = 0.5
        await runtime.accepting_callbacks.wait()
        port = runtime.ports["health"]
        async with aiohttp.ClientSession() as http:
            assert (await probe(http, port, "/healthz"))[0] == 200
            c.sim.faults.fail(1.0, status=500, resource="pods")  # the API refuses pod reads
            c.sim.faults.drop_watches()
            for _ in range(200):  # a kubelet probing every 50 ms
                status, text = await probe(http, port, "/healthz")
                if status == 500:
                    break
                await asyncio.sleep(0.05)
            assert status == 500 and "[-]pod-watch failed" in text
            c.sim.faults.clear()
            for _ in range(600):  # the watch backs off up to a few seconds between tries
                status, text = await probe(http, port, "/healthz")
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200, text
