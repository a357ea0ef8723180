"""Results that act: what changed, failure streaks, node conditions and taints.

Two nodes fail, then one of them recovers; the changes, streaks and metrics, the
conditions with their transition times and the taint follow, across a restart and a
failover between the executions; the taint's share cap holds when a check fails
everywhere; a controller without the permission to patch nodes says so once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import aiohttp

from bjc.sim import JobBehaviour, RunningPod

from .harness import CONFIG_MAP, EVENTS, Gate, cluster, crash, post_result
from .test_controller import run_one, scrape
from .test_failover import LEASE, wait_leader

CONDITION = "NodeCheckFailed"
TAINT = "bjc.example.com/check-failed"
ACTING = {
    "nodeCondition": {"type": CONDITION},
    "nodeTaint": {"key": TAINT, "effect": "NoSchedule", "maxShare": "50%"},
}


def failing(*nodes: str) -> JobBehaviour:
    broken = JobBehaviour(exit_code=1)
    return JobBehaviour(run=post_result, per_node={n: broken for n in nodes})


def taint_keys(node: dict) -> list[str]:
    """The keys of a node's taints but the control plane's own: a real node lifecycle
    controller puts `node.kubernetes.io/not-ready` on a node until it reports Ready."""
    taints = node.get("spec", {}).get("taints") or []
    return [t["key"] for t in taints if not t["key"].startswith("node.kubernetes.io/")]


def mine(node: dict) -> dict | None:
    """The node's condition of type CONDITION, or None."""
    conditions = node.get("status", {}).get("conditions") or []
    return next((x for x in conditions if x["type"] == CONDITION), None)


async def node_marks(c, nodes: list[str]) -> dict[str, tuple[dict | None, list[str]]]:
    """Per node: its condition of type CONDITION (or None) and the keys of its taints."""
    out = {}
    for name in nodes:
        node = await c.kube.get(f"/api/v1/nodes/{name}", dict)
        conditions = node.get("status", {}).get("conditions") or []
        assert any(x["type"] == "Ready" for x in conditions)  # other conditions untouched
        out[name] = mine(node), taint_keys(node)
    return out


async def wait_node(c, name: str, predicate) -> dict:
    """The node `name` once `predicate` holds for it (a watch of the nodes)."""
    while True:
        items, rv = await c.kube.list("/api/v1/nodes", dict)
        node = next(n for n in items if n["metadata"]["name"] == name)
        if predicate(node):
            return node
        async for event in c.kube.watch("/api/v1/nodes", dict, resource_version=rv):
            if event.type == "BOOKMARK":  # a real apiserver's: no object, only its version
                continue
            if event.object["metadata"]["name"] == name and predicate(event.object):
                return event.object


def since(condition: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(condition["lastTransitionTime"].replace("Z", "+00:00"))


async def summary_changes(runtime) -> dict:
    url = f"http://127.0.0.1:{runtime.ports['files']}/summary/latest/summary.json"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return (await resp.json())["changes"]


async def check_first(c, runtime, nodes):
    marks = await node_marks(c, nodes)
    for name in nodes[:2]:
        condition, taints = marks[name]
        assert condition is not None and condition["status"] == "True", name
        assert condition["reason"] == "CheckFailed" and "exited 1" in condition["message"]
        assert taints == [TAINT]
    for name in nodes[2:]:
        condition, taints = marks[name]
        assert condition is not None and condition["status"] == "False"
        assert condition["reason"] == "CheckSucceeded" and taints == []
    changes = await summary_changes(runtime)
    assert [f["node"] for f in changes["newly_failing"]] == nodes[:2]
    series = await scrape(runtime)
    eid = runtime.controller.current.id
    assert series[("bjc_execution_new_failures", (("executionID", eid),))] == 2
    assert series[("bjc_node_failure_streak", (("node", nodes[0]),))] == 1
    assert series[("bjc_node_failure_streak", (("node", nodes[3]),))] == 0
    return marks


async def check_second(c, runtime, nodes, first):
    marks = await node_marks(c, nodes)
    still, _ = marks[nodes[0]]
    recovered, taints = marks[nodes[1]]
    # a status that did not change keeps its transition time, to the second
    assert still["status"] == "True" and still == first[nodes[0]][0]
    assert marks[nodes[0]][1] == [TAINT]
    assert recovered["status"] == "False" and recovered["reason"] == "CheckSucceeded"
    assert since(recovered) >= since(first[nodes[1]][0]) and taints == []
    for name in nodes[2:]:
        assert marks[name] == first[name]
    changes = await summary_changes(runtime)
    assert [(f["node"], f["streak"]) for f in changes["still_failing"]] == [(nodes[0], 2)]
    assert changes["recovered"] == [nodes[1]] and changes["newly_failing"] == []
    series = await scrape(runtime)
    eid = runtime.controller.current.id
    assert series[("bjc_execution_new_failures", (("executionID", eid),))] == 0
    assert series[("bjc_execution_recoveries", (("executionID", eid),))] == 1
    assert series[("bjc_node_failure_streak", (("node", nodes[0]),))] == 2
    assert series[("bjc_node_failure_streak", (("node", nodes[1]),))] == 0


async def test_two_nodes_fail_then_one_recovers(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(4)
        agent = await c.start_agent(failing(*nodes[:2]))
        await c.store_config_map(**ACTING)
        runtime = await c.start_controller(**ACTING)
        await run_one(runtime)
        first = await check_first(c, runtime, nodes)
        before = runtime.controller.marks.patches

        agent.behaviour = failing(nodes[0])
        await run_one(runtime, 2)
        await check_second(c, runtime, nodes, first)
        # only what changed: node 1's condition and its taint
        assert runtime.controller.marks.patches - before == 2


async def test_a_node_shows_its_verdict_as_soon_as_its_job_ends(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(2)
        gate = Gate()  # holds the second node's job: the execution goes on
        broken = JobBehaviour(exit_code=1)
        await c.start_agent(JobBehaviour(run=gate.job, per_node={nodes[0]: broken}))
        await c.store_config_map(**ACTING)
        runtime = await c.start_controller(**ACTING)
        await runtime.controller.trigger("test")
        await gate.running.wait()
        failed = await wait_node(c, nodes[0], lambda n: mine(n) is not None)
        held = await c.kube.get(f"/api/v1/nodes/{nodes[1]}", dict)
        assert not runtime.controller.current.state.done
        condition = mine(failed)
        assert condition["status"] == "True" and "exited 1" in condition["message"]
        failed = await wait_node(c, nodes[0], taint_keys)
        assert taint_keys(failed) == [TAINT]  # 50% of 2 nodes
        assert mine(held) is None and not taint_keys(held)

        gate.opened.set()
        await runtime.controller.wait_completed(1)
        marks = await node_marks(c, nodes)
        assert marks[nodes[0]] == (condition, [TAINT])  # the execution's end agrees
        assert marks[nodes[1]][0]["status"] == "False"
        assert runtime.controller.marks.patches == 3  # nothing sent twice


async def test_a_result_after_the_job_ended_turns_its_condition_false(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(2)
        late: list[asyncio.Task] = []
        judged: list[dict] = []

        async def result_after_exit(pod):
            async def report():  # once bjc has judged the node: no result arrived
                node = await wait_node(c, pod.node, lambda n: mine(n) is not None)
                judged.append(mine(node))
                await post_result(pod)

            late.append(asyncio.create_task(report()))
            return 0

        behaviour = JobBehaviour(run=post_result, per_node={nodes[0]: JobBehaviour()})
        behaviour.per_node[nodes[0]].run = result_after_exit
        await c.start_agent(behaviour)
        acting = {"nodeCondition": {"type": CONDITION}}
        await c.store_config_map(**acting)
        runtime = await c.start_controller(**acting)
        await run_one(runtime)
        await asyncio.gather(*late)
        assert (judged[0]["status"], judged[0]["message"]) == ("True", "no result arrived")
        recovered = await wait_node(c, nodes[0], lambda n: mine(n)["status"] == "False")
        assert mine(recovered)["reason"] == "CheckSucceeded"
        assert since(mine(recovered)) >= since(judged[0])


def _their_list(query) -> bool:
    """bjc.engine.nodemarks's node list (the engine's own carries a labelSelector)."""
    return "labelSelector" not in query


async def test_a_late_result_while_the_execution_ends_keeps_its_verdict(tmp_path):
    """The execution's end reads the directory, then lists the nodes; a result arriving
    in between is newer than what was read: the node shows what the result says."""
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(2)
        quiet: list[RunningPod] = []

        async def exits_without_result(pod):
            quiet.append(pod)
            return 0

        behaviour = JobBehaviour(run=post_result, per_node={nodes[0]: JobBehaviour()})
        behaviour.per_node[nodes[0]].run = exits_without_result
        agent = await c.start_agent(behaviour)
        await c.store_config_map(**ACTING)
        runtime = await c.start_controller(**ACTING)
        await runtime.controller.caught_up()  # its first node list is behind it
        held = c.sim.faults.hold("list", "nodes", _their_list)
        await runtime.controller.trigger("test")
        await held.reached.wait()  # the execution's end: the directory read, the list sent
        marks = await node_marks(c, nodes)
        assert marks[nodes[0]][0]["message"] == "no result arrived"  # as its job ended
        assert marks[nodes[0]][1] == [TAINT]
        await post_result(quiet[0])
        held.release()
        await runtime.controller.wait_completed(1)
        condition, taints = (await node_marks(c, nodes))[nodes[0]]
        assert (condition["status"], condition["reason"], taints) == ("False", "CheckSucceeded", [])

        # the share counts what nodes hold: node 1 failing next finds room at once
        gate = Gate()
        agent.behaviour = JobBehaviour(run=gate.job, per_node={nodes[1]: JobBehaviour(exit_code=1)})
        await runtime.controller.trigger("test")
        await wait_node(c, nodes[1], lambda n: mine(n)["status"] == "True")
        await runtime.controller.marks.work.drain()  # its taint follows its condition
        assert (await node_marks(c, nodes))[nodes[1]][1] == [TAINT]
        gate.opened.set()
        await runtime.controller.wait_completed(2)


async def test_streaks_and_conditions_continue_across_a_restart(tmp_path):
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(4)
        agent = await c.start_agent(failing(*nodes[:2]))
        first_runtime = await c.start_controller(**ACTING)
        await run_one(first_runtime)
        first = await check_first(c, first_runtime, nodes)
        await crash(first_runtime)  # no goodbye: the next one knows only the disk
        c.runtimes.remove(first_runtime)

        agent.behaviour = failing(nodes[0])
        runtime = await c.start_controller(identity="controller-b", **ACTING)
        await run_one(runtime)
        await check_second(c, runtime, nodes, first)


async def test_streaks_and_conditions_continue_across_a_failover(tmp_path):
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(4)
        agent = await c.start_agent(failing(*nodes[:2]))
        kw = {"dev_mode": False, "lease_timing": LEASE, **ACTING}
        a = await c.start_controller(identity="a", **kw)
        await wait_leader(a)
        b = await c.start_controller(identity="b", **kw)  # standby, same report directory
        await a.accepting_callbacks.wait()
        await run_one(a)
        first = await check_first(c, a, nodes)
        await crash(a)
        c.runtimes.remove(a)
        await wait_leader(b)
        await b.accepting_callbacks.wait()
        await b.controller.caught_up()  # acting on the changes runs beside the takeover
        # the new leader shows what it read from the shared directory before running
        series = await scrape(b)
        assert series[("bjc_node_failure_streak", (("node", nodes[0]),))] == 1
        assert b.controller.marks.patches == 0  # the conditions were already right

        agent.behaviour = failing(nodes[0])
        await run_one(b)
        await check_second(c, b, nodes, first)


async def test_a_new_leader_dispatches_while_it_still_acts_on_the_changes(tmp_path):
    """Reading the verdicts of a long history and the node list takes seconds: a new
    leader takes callbacks and starts executions without waiting for that."""
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(2)
        agent = await c.start_agent(failing(nodes[0]))
        first = await c.start_controller(**ACTING)
        await run_one(first)
        await crash(first)
        c.runtimes.remove(first)
        held = c.sim.faults.hold("list", "nodes", _their_list)  # acting on the changes
        runtime = await c.start_controller(identity="controller-b", **ACTING)  # accepting
        catching_up = asyncio.ensure_future(runtime.controller.caught_up())
        await held.reached.wait()
        gate = Gate()
        agent.behaviour = JobBehaviour(run=gate.job)
        await runtime.controller.trigger("test")
        await gate.running.wait()  # a job pod of the new leader runs
        assert not catching_up.done()  # while the node list is still on its way
        gate.opened.set()
        held.release()
        await runtime.controller.caught_up()
        await runtime.controller.wait_completed(1)
        recovered = await wait_node(c, nodes[0], lambda n: mine(n)["status"] == "False")
        assert mine(recovered)["reason"] == "CheckSucceeded"


async def test_the_taint_never_goes_on_more_than_its_share(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        nodes = await c.ready_nodes(10)
        await c.start_agent(JobBehaviour(exit_code=1))  # a check that fails everywhere
        acting = {**ACTING, "nodeTaint": {"key": TAINT}}  # the default share: 10%
        await c.store_config_map(**acting)
        runtime = await c.start_controller(**acting)
        await run_one(runtime)
        marks = await node_marks(c, nodes)
        assert all(condition["status"] == "True" for condition, _ in marks.values())
        tainted = [n for n, (_, taints) in marks.items() if taints]
        assert len(tainted) == 1  # the first whose job failed
        await run_one(runtime, 2)
        marks = await node_marks(c, nodes)
        assert [n for n, (_, taints) in marks.items() if taints] == tainted  # it stays


async def test_without_the_permission_it_says_so_once(tmp_path, caplog):
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(2)
        await c.start_agent(failing(nodes[0]))
        c.sim.faults.fail(1.0, status=403, verb="patch", resource="nodes/status")
        patches: list[str] = []
        c.sim.on_request.append(
            lambda verb, resource, query: (
                patches.append(resource)
                if verb == "patch" and resource.startswith("nodes")
                else None
            )
        )
        await c.store_config_map(nodeCondition={"type": CONDITION})
        logger = logging.getLogger("bjc.engine.nodemarks")
        logger.addHandler(caplog.handler)  # whatever another test did to propagation
        try:
            runtime = await c.start_controller(nodeCondition={"type": CONDITION})
            await run_one(runtime)
            await run_one(runtime, 2)
        finally:
            logger.removeHandler(caplog.handler)
        assert patches == ["nodes/status"]  # the probe, refused; then nothing
        refused = {id(r) for r in caplog.records if "may not patch nodes/status" in r.message}
        assert len(refused) == 1  # (a record reaches caplog once or twice: counted once)
        events, _ = await c.kube.list(EVENTS, dict)
        forbidden = [e for e in events if e["reason"] == "NodePatchForbidden"]
        assert len(forbidden) == 1 and forbidden[0]["type"] == "Warning"
        assert forbidden[0]["regarding"]["name"] == CONFIG_MAP.rsplit("/", 1)[1]
        assert "manifests/components/node-conditions" in forbidden[0]["note"]


async def test_off_by_default_nothing_is_patched(tmp_path):
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(2)
        await c.start_agent(failing(nodes[0]))
        patches: list[str] = []
        c.sim.on_request.append(
            lambda verb, resource, query: patches.append(resource) if verb == "patch" else None
        )
        runtime = await c.start_controller()
        await run_one(runtime)
        assert not [p for p in patches if p.startswith("nodes")]
        marks = await node_marks(c, nodes)
        assert all(condition is None and taints == [] for condition, taints in marks.values())
        series = await scrape(runtime)  # the changes are measured all the same
        assert series[("bjc_node_failure_streak", (("node", nodes[0]),))] == 1


async def test_a_job_controlled_failure_reaches_the_condition_without_control_characters(
    tmp_path,
):
    async with cluster(tmp_path) as c:
        nodes = await c.ready_nodes(1)
        hostile = "\x1b[2J\x1b]0;owned\x07all good\r\nReady: True"
        await c.start_agent(JobBehaviour(exit_code=1, termination_message=hostile))
        acting = {"nodeCondition": {"type": CONDITION}}
        await c.store_config_map(**acting)
        runtime = await c.start_controller(**acting)
        await run_one(runtime)
        condition, _ = (await node_marks(c, nodes))[nodes[0]]
        message = condition["message"]
        assert "\\x1b[2J\\x1b]0;owned\\x07all good\\r\\nReady: True" in message
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in message)
