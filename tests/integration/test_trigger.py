"""Trigger now: the ConfigMap annotation and `bjc trigger`, on bjc.sim and (`plane`) the
real control plane."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from bjc.engine.configwatch import (
    TRIGGER_ANNOTATION,
    TRIGGERED_ANNOTATION,
    TRIGGERED_EXECUTION_ANNOTATION,
    observe,
)
from bjc.kube.client import KubeClient
from bjc.kube.objects import ConfigMap
from bjc.sim import JobBehaviour

from .harness import NAMESPACE, Cluster, Gate, cluster
from .test_failover import LEASE, wait_leader

BOUND = 120  # seconds: a hang bound (the real control plane too), not a performance expectation
ROOT = Path(__file__).resolve().parents[2]


async def config_map_when(kube: KubeClient, predicate) -> ConfigMap:
    """Watch the ConfigMap `batch` until `predicate(config_map)` holds."""
    async with asyncio.timeout(BOUND):
        async with contextlib.aclosing(observe(kube, NAMESPACE, "batch")) as states:
            async for config_map in states:
                if config_map is not None and predicate(config_map):
                    return config_map
    raise AssertionError("unreachable")


async def answer_to(kube: KubeClient, value: str) -> str:
    """The controller's answer to trigger `value`: an execution id or `skipped: ...`."""
    cm = await config_map_when(
        kube, lambda cm: cm.metadata.annotations.get(TRIGGERED_ANNOTATION) == value
    )
    return cm.metadata.annotations[TRIGGERED_EXECUTION_ANNOTATION]


async def bjc_trigger(c: Cluster, *args: str) -> tuple[int, str, str]:
    kubeconfig = c.write_kubeconfig(c.tmp / "kubeconfig")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "CONFIG_MAP_NAME")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bjc", "trigger", "--kubeconfig", str(kubeconfig),
        "-n", NAMESPACE, *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_annotation_starts_one_execution_answered_on_the_config_map(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(3)
        await c.annotate_config_map({TRIGGER_ANNOTATION: "first"})
        eid = await answer_to(c.kube, "first")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert runtime.controller.current.id == eid
        assert len(runtime.controller.current.nodes) == 3
        (event,) = await c.config_map_events()
        assert event["reason"] == "Triggered" and event["type"] == "Normal"
        assert eid in event["note"] and "first" in event["note"]

        # an answered trigger never runs again: not on restart, not on other changes
        await c.stop_controllers()
        runtime = await c.start_controller()
        await c.annotate_config_map({"unrelated": "change"})
        await config_map_when(c.kube, lambda cm: "unrelated" in cm.metadata.annotations)
        await c.annotate_config_map({TRIGGER_ANNOTATION: "second"})
        second = await answer_to(c.kube, "second")
        assert second > eid
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert sorted(runtime.controller.executions) == [eid, second]


async def test_bjc_trigger_prints_the_execution_id_it_started(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(2)
        code, out, err = await bjc_trigger(c, "batch")
        assert code == 0, err
        eid = out.strip()
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert runtime.controller.current.id == eid
        annotations = (await c.config_map())["metadata"]["annotations"]
        assert annotations[TRIGGERED_ANNOTATION] == annotations[TRIGGER_ANNOTATION]
        assert annotations[TRIGGERED_EXECUTION_ANNOTATION] == eid


async def test_a_trigger_follows_concurrency_policy_forbid(tmp_path, plane):
    gate = Gate()
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(2, JobBehaviour(run=gate.job), concurrencyPolicy="Forbid")
        first = await runtime.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await gate.running.wait()
        code, out, err = await bjc_trigger(c, "batch")
        assert code == 3, (out, err)
        assert "skipped" in err and "Forbid" in err
        gate.opened.set()
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert list(runtime.controller.executions) == [first.execution_id]
        (event,) = await c.config_map_events()
        assert event["reason"] == "TriggerSkipped" and event["type"] == "Warning"


async def test_a_trigger_set_while_no_one_leads_runs_once_on_the_leader(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        await c.ready_nodes(2)
        await c.start_agent()
        await c.store_config_map()
        await c.annotate_config_map({TRIGGER_ANNOTATION: "while-away"})
        common = dict(dev_mode=False, report_dir=tmp_path / "shared", lease_timing=LEASE)
        a = await c.start_controller(identity="a", **common)
        b = await c.start_controller(identity="b", **common)
        leader = await wait_leader(a, b)
        standby = b if leader is a else a
        eid = await answer_to(c.kube, "while-away")
        async with asyncio.timeout(BOUND):
            await leader.controller.wait_completed(1)
        assert list(leader.controller.executions) == [eid]
        assert standby.controller.executions == {} and standby.controller.completed == 0
        assert sorted(p.name for p in (tmp_path / "shared").iterdir() if p.name.isdigit()) == [eid]
        assert len(await c.config_map_events()) == 1


async def test_bjc_trigger_without_a_controller_or_config_map(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        code, _, err = await bjc_trigger(c, "batch")
        assert code == 1 and "not found" in err
        await c.store_config_map()
        code, _, err = await bjc_trigger(c, "--timeout", "0.5", "batch")
        assert code == 4 and "no controller answered" in err
        value = (await c.config_map())["metadata"]["annotations"]
        assert TRIGGER_ANNOTATION in value and TRIGGERED_ANNOTATION not in value


async def test_bjc_trigger_prints_the_answer_with_control_characters_as_escapes(tmp_path, plane):
    """Whoever can annotate the ConfigMap writes the answer: it must not drive the terminal."""
    async with cluster(tmp_path, plane) as c:
        await c.store_config_map()
        hostile = "skipped: \x1b]0;pwned\x07\x1b[2J\u202edeos"
        running = asyncio.ensure_future(bjc_trigger(c, "batch"))
        cm = await config_map_when(c.kube, lambda cm: TRIGGER_ANNOTATION in cm.metadata.annotations)
        value = cm.metadata.annotations[TRIGGER_ANNOTATION]  # answered here, as a controller
        await c.annotate_config_map(
            {TRIGGERED_ANNOTATION: value, TRIGGERED_EXECUTION_ANNOTATION: hostile}
        )
        code, _, err = await running
        assert code == 3
        assert err == "bjc trigger: skipped: \\x1b]0;pwned\\x07\\x1b[2J\\u202edeos\n"
