"""Trigger now: the ConfigMap annotation and `bjc trigger`, on bjc.sim and (`plane`) the
real control plane."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bjc.config.podspec import EXECUTION_LABEL
from bjc.engine.configwatch import (
    TRIGGER_ANNOTATION,
    TRIGGERED_ANNOTATION,
    TRIGGERED_EXECUTION_ANNOTATION,
    observe,
)
from bjc.kube.client import KubeClient
from bjc.kube.objects import ConfigMap
from bjc.reports.execution import JobStatus
from bjc.runtime import Runtime
from bjc.sim import JobBehaviour, RunningPod

from .harness import CONFIG_MAP, EVENTS, NAMESPACE, Cluster, Gate, cluster, crash
from .test_failover import LEASE, free_port, post_result_retrying, wait_leader

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


# --- decided once: a leader that dies before answering ---------------------------------


async def set_trigger_by_update(c: Cluster, value: str) -> None:
    """Set the trigger annotation with an update (PUT), not a PATCH (see `refuse_answers`)."""
    config_map = await c.config_map()
    assert config_map is not None
    config_map["metadata"].setdefault("annotations", {})[TRIGGER_ANNOTATION] = value
    await c.kube.replace(CONFIG_MAP, config_map)


def refuse_answers(c: Cluster, runtime: Runtime) -> None:
    """The PATCH that answers a trigger never gets through: on bjc.sim the API answers
    every ConfigMap PATCH 500; on the real control plane, which cannot inject faults,
    the leader's answer waits forever (as if it died before sending it)."""
    if c.plane is None:
        c.sim.faults.fail(1.0, 500, verb="patch", resource="configmaps")
        return

    async def never(annotations: dict[str, str]) -> None:
        await asyncio.Event().wait()

    runtime.config_watch.annotate = never  # type: ignore[method-assign]


def executions_on_disk(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())


@pytest.mark.parametrize("policy", ["Replace", "Forbid"])
async def test_a_leader_killed_before_answering_is_answered_with_its_execution(
    tmp_path, plane, policy
):
    """The leader started the trigger's execution, its job pods run, and it dies before
    its answer reaches the API. The next leader answers that value with that execution:
    no second execution under Replace, no `skipped` under Forbid."""
    released, running = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def job(pod: RunningPod) -> int:
        started.append(pod.name)
        if len(started) == 3:
            running.set()
        await released.wait()
        return await post_result_retrying(pod)

    async with cluster(tmp_path, plane) as c:
        await c.ready_nodes(3)
        await c.start_agent(JobBehaviour(run=job))
        await c.store_config_map(concurrencyPolicy=policy)
        reports = tmp_path / "reports"
        common: dict[str, Any] = dict(
            concurrencyPolicy=policy, callback_port=free_port(), report_dir=reports
        )
        first = await c.start_controller(**common)
        refuse_answers(c, first)
        await set_trigger_by_update(c, "once")
        async with asyncio.timeout(BOUND):
            await running.wait()  # the leader decided, and its job pods exist
        execution = first.controller.current
        assert execution is not None and execution.trigger == "once"
        eid = execution.id
        annotations = (await c.config_map())["metadata"]["annotations"]
        assert TRIGGERED_ANNOTATION not in annotations  # never answered
        await crash(first)
        c.runtimes.remove(first)
        if c.plane is None:
            c.sim.faults.clear()

        second = await c.start_controller(**common)
        assert await answer_to(c.kube, "once") == eid
        released.set()
        async with asyncio.timeout(BOUND):
            await second.controller.wait_completed(1)
        assert list(second.controller.executions) == [eid]
        jobs = second.controller.executions[eid].nodes.values()
        assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
        assert executions_on_disk(reports) == [eid]
        pods = await c.job_pods()
        assert len(pods) == 3 and {p["metadata"]["labels"][EXECUTION_LABEL] for p in pods} == {eid}
        # the Event may be posted by both leaders; it names the one execution
        events = await c.config_map_events()
        assert {e["reason"] for e in events} == {"Triggered"}
        assert all(f"execution {eid} started (trigger once)" in e["note"] for e in events)


async def test_a_skip_decided_by_a_leader_that_died_before_answering_stands(tmp_path, plane):
    """Why a value started nothing is decided once too: the next leader gives the same
    answer, even though it would start an execution for a new value now."""
    async with cluster(tmp_path, plane) as c:
        await c.ready_nodes(1)
        await c.start_agent()
        await c.store_config_map(suspend=True)
        common: dict[str, Any] = dict(report_dir=tmp_path / "reports")
        first = await c.start_controller(suspend=True, **common)
        refuse_answers(c, first)
        await set_trigger_by_update(c, "while-suspended")
        (event,) = await warning_events(c.kube, "TriggerSkipped", 1)  # decided
        assert "suspended" in event["note"]
        await crash(first)
        c.runtimes.remove(first)
        if c.plane is None:
            c.sim.faults.clear()
        await c.store_config_map()  # no longer suspended

        second = await c.start_controller(**common)
        answer = await answer_to(c.kube, "while-suspended")
        assert answer == "skipped: the controller is suspended (suspend: true in config.yaml)"
        assert second.controller.executions == {} and not second.controller.running


class LogSeen(logging.Handler):
    """`seen` is set once a record of `logger` contains `text`."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()
        self.logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> LogSeen:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


async def test_a_trigger_replaced_before_its_execution_started_is_answered_so(tmp_path):
    async with cluster(tmp_path) as c:
        runtime = await c.start_operated(1)  # Replace, the default
        c.sim.faults.fail(1.0, 500, verb="list", resource="nodes")  # no start gets its nodes
        with LogSeen("bjc.engine.controller", "cannot list nodes") as listing:
            await c.annotate_config_map({TRIGGER_ANNOTATION: "early"})
            async with asyncio.timeout(BOUND):
                await listing.seen.wait()  # its execution waits for its nodes
        later = asyncio.create_task(runtime.controller.trigger("schedule"))
        assert await answer_to(c.kube, "early") == "replaced before it started"
        c.sim.faults.clear()
        async with asyncio.timeout(BOUND):
            eid = (await later).execution_id
            await runtime.controller.wait_completed(1)
        assert list(runtime.controller.executions) == [eid]
        assert runtime.controller.executions[eid].trigger == ""  # the schedule's
        assert executions_on_disk(runtime.store.root) == [eid]


async def test_a_trigger_whose_start_a_stopping_leader_cut_short_runs_on_the_next(tmp_path):
    async with cluster(tmp_path) as c:
        await c.start_operated(1)
        c.sim.faults.fail(1.0, 500, verb="list", resource="nodes")  # no start gets its nodes
        with LogSeen("bjc.engine.controller", "cannot list nodes") as listing:
            await c.annotate_config_map({TRIGGER_ANNOTATION: "cut-short"})
            async with asyncio.timeout(BOUND):
                await listing.seen.wait()
        await c.stop_controllers()  # SIGTERM while its execution waits for its nodes
        c.sim.faults.clear()
        annotations = (await c.config_map())["metadata"]["annotations"]
        assert TRIGGERED_ANNOTATION not in annotations  # no decision, no answer
        runtime = await c.start_controller()
        eid = await answer_to(c.kube, "cut-short")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert list(runtime.controller.executions) == [eid]
        assert runtime.controller.executions[eid].trigger == "cut-short"


async def answers_until(kube: KubeClient, last: str) -> set[tuple[str, str]]:
    """Every (trigger value, answer) the ConfigMap shows until `last` is answered."""
    seen: set[tuple[str, str]] = set()
    async with asyncio.timeout(BOUND):
        async with contextlib.aclosing(observe(kube, NAMESPACE, "batch")) as states:
            async for config_map in states:
                annotations = config_map.metadata.annotations if config_map else {}
                value = annotations.get(TRIGGERED_ANNOTATION)
                if value is not None:
                    seen.add((value, annotations[TRIGGERED_EXECUTION_ANNOTATION]))
                if value == last:
                    return seen
    raise AssertionError("unreachable")


async def test_a_burst_of_values_under_replace_gets_one_execution_each(tmp_path, plane):
    """30 values set back to back: each value the leader sees is answered once, with an
    execution of its own (its state names the value) or why it has none."""
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(2, reportHistory=40)  # Replace, the default
        values = [f"burst-{i:02d}" for i in range(30)]
        answers = asyncio.create_task(answers_until(c.kube, values[-1]))
        await asyncio.sleep(0)  # the observer lists before the first value is set
        for value in values:
            await c.annotate_config_map({TRIGGER_ANNOTATION: value})
        seen = await answers
        assert {v for v, _ in seen} <= set(values)
        by_value = {v: [a for w, a in seen if w == v] for v, _ in seen}
        assert all(len(a) == 1 for a in by_value.values()), by_value  # answered once
        started = {a[0]: v for v, a in by_value.items() if a[0].isdigit()}
        assert len(started) == sum(1 for a in by_value.values() if a[0].isdigit())  # distinct
        assert by_value[values[-1]][0] in started
        for eid, value in started.items():
            assert runtime.controller.executions[eid].trigger == value
        # no execution that is not the answer to a value
        assert sorted(runtime.controller.executions) == sorted(started)
        assert executions_on_disk(runtime.store.root) == sorted(started)
        reasons = {a[0] for a in by_value.values() if not a[0].isdigit()}
        assert all(r.startswith("skipped: ") or r == "replaced before it started" for r in reasons)
        notes = [e["note"] for e in await c.config_map_events() if e["reason"] == "Triggered"]
        assert sorted(re.findall(r"execution (\d+) started", " ".join(notes))) == sorted(started)


# --- execution ids --------------------------------------------------------------------------


async def metric(runtime: Runtime, name: str) -> float:
    url = f"http://127.0.0.1:{runtime.ports['metrics']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        text = await r.text()
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == name]  # fmt: skip
    assert len(values) == 1, (name, values)
    return values[0]


async def test_execution_ids_take_seconds_when_the_minute_is_taken_and_never_run_ahead(tmp_path):
    clock = dt.datetime(2026, 12, 5, 8, 47, 30, 250_000)
    async with cluster(tmp_path) as c:
        runtime = await c.start_operated(1, concurrencyPolicy="Forbid")
        runtime.controller.clock = lambda: clock
        ids = []
        for count in (1, 2, 3):
            ids.append((await runtime.controller.trigger("test")).execution_id)
            async with asyncio.timeout(BOUND):
                await runtime.controller.wait_completed(count)
        # the minute's id (the Go layout), then its second, then the next free second
        assert ids == ["202612050847", "20261205084730", "20261205084731"]
        root = runtime.store.root
        assert executions_on_disk(root) == ids
        assert (root / "latest").resolve() == (root / ids[-1]).resolve()
        assert await metric(runtime, "bjc_test_current_execution_id") == pytest.approx(
            202612050847.31, abs=1e-4
        )
        # the clock went back an hour: no id would sort after the newest; skipped, counted
        clock -= dt.timedelta(hours=1)
        await c.annotate_config_map({TRIGGER_ANNOTATION: "clock-went-back"})
        answer = await answer_to(c.kube, "clock-went-back")
        assert answer.startswith("skipped: no free execution id")
        assert await metric(runtime, "bjc_skipped_triggers_total") == 1
        assert executions_on_disk(root) == ids
        # a restarted controller reads them back, in that order
        await c.stop_controllers()
        runtime = await c.start_controller(concurrencyPolicy="Forbid")
        assert list(runtime.controller.executions) == ids
        assert runtime.controller.current is None and runtime.store.latest() == ids[-1]


# --- a report directory that cannot be written at an execution's start ---------------------


def break_report_directory(root: Path) -> Path:
    """A regular file where the report directory was: no execution directory can be
    created in it (as root too, unlike a chmod). Returns where the directory went."""
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    root.write_text("not a directory\n")
    return aside


def repair_report_directory(root: Path, aside: Path) -> None:
    root.unlink()
    aside.rename(root)


async def test_an_execution_whose_directory_cannot_be_created_fails_and_the_controller_runs_on(
    tmp_path, plane
):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(2)
        clock = dt.datetime.now()  # frozen: the failed id and the next are in one second
        runtime.controller.clock = lambda: clock
        before = (await runtime.controller.trigger("test")).execution_id
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        root = runtime.store.root
        aside = break_report_directory(root)

        code, out, err = await bjc_trigger(c, "batch")
        assert code == 5, (out, err)
        found = re.search(r"bjc trigger: failed: execution (\d+) could not start: (.*)", err)
        assert found is not None, err
        failed = found.group(1)
        assert failed > before and "Not a directory" in found.group(2)
        assert not runtime.failed.is_set()  # the process runs on
        events = [e for e in await c.config_map_events() if e["reason"] == "TriggerFailed"]
        assert len(events) == 1 and events[0]["type"] == "Warning"
        assert f"execution {failed} could not start" in events[0]["note"]
        assert await metric(runtime, "bjc_execution_start_failures_total") == 1
        assert failed not in runtime.controller.executions

        repair_report_directory(root, aside)
        code, out, err = await bjc_trigger(c, "batch")
        assert code == 0, err
        after = out.strip()
        assert after > failed  # the failed id is never given again
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(2)
        assert sorted(runtime.controller.executions) == [before, after]
        assert executions_on_disk(root) == [before, after]


async def test_scheduled_executions_that_cannot_start_fail_and_the_schedule_goes_on(
    tmp_path, plane
):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(1, cronExpression="@every 1s", concurrencyPolicy="Forbid")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        root = runtime.store.root
        aside = break_report_directory(root)
        failures = await warning_events(c.kube, "ExecutionFailed", 2)
        failed = [
            re.match(r"execution (\d+) could not start", e["note"]).group(1) for e in failures
        ]
        assert len(set(failed)) == 2 and all("(trigger: schedule)" in e["note"] for e in failures)
        assert not runtime.failed.is_set()
        repair_report_directory(root, aside)
        done = runtime.controller.completed
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(done + 1)
        assert max(runtime.controller.executions) > max(failed)
        assert not set(failed) & set(executions_on_disk(root))


async def warning_events(kube: KubeClient, reason: str, count: int) -> list[dict[str, Any]]:
    """Watch the Events until `count` Warning Events with `reason` exist; those."""
    found: dict[str, dict[str, Any]] = {}

    def note(event: dict[str, Any]) -> None:
        if event.get("reason") == reason and event.get("type") == "Warning":
            found[event["metadata"]["name"]] = event

    async with asyncio.timeout(BOUND):
        events, rv = await kube.list(EVENTS, dict)
        for event in events:
            note(event)
        while len(found) < count:
            async for change in kube.watch(EVENTS, dict, resource_version=rv):
                rv = change.object["metadata"]["resourceVersion"]
                note(change.object)
                if len(found) >= count:
                    break
    return list(found.values())
