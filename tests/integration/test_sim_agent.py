"""The simulated kubelet: pods move Pending → Running → Succeeded/Failed over HTTP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from kubernetes_asyncio import client, watch

from bjc.sim import JobBehaviour, RunningPod, SimCluster

NS = "default"


def pod(name: str, node: str = "node-1", env: list[dict] | None = None, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "env": env or []}],
            **spec,
        },
    }


async def phases_until_done(core: client.CoreV1Api, name: str, rv: str) -> list[str]:
    """Phases of pod `name` seen by a watch from `rv`, until it finishes."""
    seen: list[str] = []
    async with watch.Watch() as w, asyncio.timeout(20):
        async for ev in w.stream(
            core.list_namespaced_pod,
            NS,
            field_selector=f"metadata.name={name}",
            resource_version=rv,
        ):
            phase = ev["object"].status.phase
            if not seen or seen[-1] != phase:
                seen.append(phase)
            if phase in ("Succeeded", "Failed"):
                return seen
    raise AssertionError("unreachable")


@pytest.fixture
def core(kube_api_client) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


async def test_builtin_pod_lifecycle(sim_with_agent: SimCluster, core) -> None:
    rv = str(sim_with_agent.store.rv)
    sim_with_agent.create(pod("ok"))
    assert await phases_until_done(core, "ok", rv) == ["Pending", "Running", "Succeeded"]
    done = await core.read_namespaced_pod("ok", NS)
    cs = done.status.container_statuses[0]
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    assert cs.state.running is None and cs.state.waiting is None
    assert done.status.start_time is not None and done.status.pod_ip
    assert {c.type: c.status for c in done.status.conditions}["Ready"] == "False"
    log = await core.read_namespaced_pod_log("ok", NS)
    assert log == "bjc sim: container main on node node-1 exited with 0\n"


async def test_exit_code_and_per_node_behaviour(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("good")
    sim.add_node("bad")
    await start_agent(
        ["good", "bad"],
        behaviour=JobBehaviour(exit_code=0, per_node={"bad": JobBehaviour(exit_code=3)}),
    )
    rv = str(sim.store.rv)
    sim.create(pod("g", node="good"))
    sim.create(pod("b", node="bad"))
    assert (await phases_until_done(core, "b", rv))[-1] == "Failed"
    assert (await phases_until_done(core, "g", rv))[-1] == "Succeeded"
    failed = await core.read_namespaced_pod("b", NS)
    term = failed.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")


async def test_run_callable_gets_env_and_decides_exit(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("node-1")
    calls: list[RunningPod] = []

    async def run(p: RunningPod) -> int:
        calls.append(p)
        return 0 if p.env["MODE"] == "pass" else 1

    await start_agent(["node-1"], behaviour=JobBehaviour(exit_code=9, run=run))
    env = [
        {"name": "MODE", "value": "fail"},
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    rv = str(sim.store.rv)
    sim.create(pod("cb", env=env))
    assert (await phases_until_done(core, "cb", rv))[-1] == "Failed"
    assert calls[0].name == "cb" and calls[0].node == "node-1" and calls[0].namespace == NS
    assert calls[0].env == {"MODE": "fail", "ME": "cb", "NODE": "node-1"}


async def test_stay_pending_pods_are_left_alone(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("stuck")
    sim.add_node("fine")
    await start_agent(
        None, behaviour=JobBehaviour(per_node={"stuck": JobBehaviour(stay_pending=True)})
    )
    rv = str(sim.store.rv)
    sim.create(pod("s", node="stuck"))
    sim.create(pod("f", node="fine"))
    assert (await phases_until_done(core, "f", rv))[-1] == "Succeeded"
    stuck = await core.read_namespaced_pod("s", NS)
    assert stuck.status.phase == "Pending" and stuck.status.start_time is None


async def test_pods_of_other_nodes_are_ignored(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("mine")
    sim.add_node("theirs")
    await start_agent(["mine"])
    rv = str(sim.store.rv)
    sim.create(pod("x", node="theirs"))
    sim.create(pod("y", node="mine"))
    assert (await phases_until_done(core, "y", rv))[-1] == "Succeeded"
    assert sim.get("pods", NS, "x")["status"]["phase"] == "Pending"


async def test_one_watch_serves_all_nodes(sim: SimCluster, start_agent) -> None:
    for i in range(5):
        sim.add_node(f"n{i}")
    await start_agent([f"n{i}" for i in range(5)])
    assert len(sim.store.watchers) == 1


async def test_job_command_env_exit_code_and_log(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("node-1")
    await start_agent(None, job_command='echo "hello $WHO"; echo oops >&2; exit "$CODE"')
    rv = str(sim.store.rv)
    sim.create(pod("cmd", env=[{"name": "WHO", "value": "world"}, {"name": "CODE", "value": "4"}]))
    assert await phases_until_done(core, "cmd", rv) == ["Pending", "Running", "Failed"]
    done = await core.read_namespaced_pod("cmd", NS)
    assert done.status.container_statuses[0].state.terminated.exit_code == 4
    assert await core.read_namespaced_pod_log("cmd", NS) == "hello world\noops\n"


async def test_pod_deleted_while_running_is_stopped(
    sim: SimCluster, start_agent, core, tmp_path: Path
) -> None:
    sim.add_node("node-1")
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    await start_agent(None, job_command=f"echo $$ > {fifo}; exec sleep 60")
    sim.create(pod("long"))
    async with asyncio.timeout(10):
        pid = int(await asyncio.to_thread(fifo.read_text))  # the command is running
    pidfd = os.pidfd_open(pid)
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, exited.set)  # readable once the process has exited
    try:
        await core.delete_namespaced_pod("long", NS)
        async with asyncio.timeout(10):
            await exited.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_builtin_run_is_cancelled_on_delete(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("node-1")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def run(p: RunningPod) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    await start_agent(None, behaviour=JobBehaviour(run=run))
    sim.create(pod("r"))
    async with asyncio.timeout(10):
        await started.wait()
        await core.delete_namespaced_pod("r", NS)
        await cancelled.wait()


async def test_active_deadline_seconds(sim: SimCluster, start_agent, core) -> None:
    sim.add_node("slow")
    await start_agent(["slow"], behaviour=JobBehaviour(run_seconds=60))
    rv = str(sim.store.rv)
    sim.create(pod("late", node="slow", activeDeadlineSeconds=1))
    assert (await phases_until_done(core, "late", rv))[-1] == "Failed"
    late = await core.read_namespaced_pod("late", NS)
    assert late.status.reason == "DeadlineExceeded"


async def test_agent_survives_dropped_watches_410_and_errors(sim: SimCluster, start_agent) -> None:
    sim.store.history_size = 5
    sim.add_node("node-1")
    all_done = asyncio.Event()
    succeeded: set[str] = set()

    def on_commit(change) -> None:
        if change.key == "pods" and change.obj["status"].get("phase") == "Succeeded":
            succeeded.add(change.obj["metadata"]["name"])
            if len(succeeded) == 5:
                all_done.set()

    sim.store.on_commit.append(on_commit)
    await start_agent(None)
    sim.faults.drop_watches()
    sim.faults.expire_history()
    sim.faults.fail(0.5, status=500, resource="pods/status")
    sim.faults.fail(0.3, status=429, retry_after=0, verb="list")
    for i in range(5):
        sim.create(pod(f"x{i}"))
    async with asyncio.timeout(20):
        await all_done.wait()
    assert sim.faults.injected > 0


async def test_status_update_outlasts_an_api_outage_and_the_pod_runs_once(
    sim: SimCluster, start_agent
) -> None:
    """The final status update fails 30 times in a row (the agent used to give up after
    20 and run the pod again) while the agent relists: it keeps retrying, the pod ends
    Succeeded, and it ran once."""
    sim.add_node("node-1")
    runs: list[str] = []
    succeeded = asyncio.Event()

    async def run(p: RunningPod) -> int:
        runs.append(p.name)
        sim.faults.fail(1.0, status=500, verb="patch", resource="pods/status", times=30)
        sim.faults.expire_history()  # the agent's re-watch gets 410: it relists meanwhile
        sim.faults.drop_watches()
        return 0

    def on_commit(change) -> None:
        if change.key == "pods" and change.obj["status"].get("phase") == "Succeeded":
            succeeded.set()

    sim.store.on_commit.append(on_commit)
    await start_agent(["node-1"], behaviour=JobBehaviour(run=run), max_backoff=0.001)
    sim.create(pod("outage"))
    async with asyncio.timeout(20):  # a hang bound, not a timing goal
        await succeeded.wait()
    assert sim.faults.injected == 30 and not sim.faults.rules
    assert runs == ["outage"]
