"""Hot reload: changes to the ConfigMap apply without a restart, on bjc.sim and (`plane`)
the real control plane."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bjc.config.podspec import EXECUTION_LABEL
from bjc.kube.client import KubeClient
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod

from .harness import BASE_CONFIG, EVENTS, POD_TEMPLATE, Cluster, LivePodWatch, cluster
from .test_controller import scrape
from .test_trigger import BOUND


async def config_event(kube: KubeClient, reason: str, seen: int = 0) -> dict[str, Any]:
    """The (seen+1)-th Event with `reason` regarding the ConfigMap, once it exists."""
    found: list[dict[str, Any]] = []

    def note(event: dict[str, Any]) -> None:
        if event.get("reason") == reason and event["regarding"]["kind"] == "ConfigMap":
            found.append(event)

    async with asyncio.timeout(BOUND):
        items, rv = await kube.list(EVENTS, dict)
        for item in items:
            note(item)
        while len(found) <= seen:
            async for ev in kube.watch(EVENTS, dict, resource_version=rv):
                rv = ev.object.get("metadata", {}).get("resourceVersion", rv)
                if ev.type == "ADDED":
                    note(ev.object)
                if len(found) > seen:
                    break
    return found[seen]


async def apps(c: Cluster, execution_id: str) -> set[str]:
    """The `app` labels of an execution's job pods (a real apiserver may still list the
    pods of an earlier execution while they terminate)."""
    pods = await c.job_pods()
    return {
        p["metadata"]["labels"]["app"]
        for p in pods
        if p["metadata"]["labels"][EXECUTION_LABEL] == execution_id
    }


async def report(pod: RunningPod, gate: asyncio.Event | None = None) -> int:
    """A job that reports two gauges, `checks` and `extra` (configured or not)."""
    if gate is not None:
        await gate.wait()
    body = {
        "checks": [{"value": 1.0, "labels": {"kind": "a"}}],
        "extra": [{"value": 7.0, "labels": {"disk": "sda"}}],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(pod.env["CALLBACK_SERVICE_RESULT_URL"], json=body) as resp:
            assert resp.status == 200, await resp.text()
    return 0


EXTRA_GAUGES = {
    **BASE_CONFIG["metrics"]["gauges"],
    "extra": {"help": "added by a reload", "labels": ["disk"]},
}


async def test_a_valid_change_applies_from_the_next_execution(tmp_path, plane):
    gate = asyncio.Event()

    async with cluster(tmp_path, plane) as c:
        behaviour = JobBehaviour(run=lambda pod: report(pod, gate))
        runtime = await c.start_operated(4, behaviour, podPoolSize=1)
        async with LivePodWatch(c.kube) as watch:
            first = (await runtime.controller.trigger("first")).execution_id
            template = POD_TEMPLATE.replace("app: job", "app: job-v2")
            metrics = {**BASE_CONFIG["metrics"], "gauges": EXTRA_GAUGES}
            await c.store_config_map(podPoolSize=3, metrics=metrics, template=template)
            event = await config_event(c.kube, "ConfigReloaded")
            assert event["type"] == "Normal"
            assert "podPoolSize" in event["note"] and "metrics.gauges" in event["note"]
            assert "pod-template.yaml" in event["note"]
            gate.set()
            async with asyncio.timeout(BOUND):
                await runtime.controller.wait_completed(1)
            assert watch.max_live == 1  # the running execution kept its pool size
            assert await apps(c, first) == {"job"}  # and its pod template

            watch.max_live = 0
            second = (await runtime.controller.trigger("second")).execution_id
            async with asyncio.timeout(BOUND):
                await runtime.controller.wait_completed(2)
            assert watch.max_live == 3
        assert await apps(c, second) == {"job-v2"}
        assert all(
            j.status is JobStatus.SUCCEEDED for j in runtime.controller.current.nodes.values()
        )
        series = await scrape(runtime)
        for eid in (first, second):  # stored results of the first execution were replayed
            key = (("disk", "sda"), ("executionID", eid), ("node", "node-000"))
            assert series[("bjc_test_extra", key)] == 7.0
        info = next(labels for (name, labels) in series if name.startswith("com_github_bakito"))
        assert ("poolSize", "3") in info
        assert series[("bjc_config_last_reload_successful", ())] == 1


async def test_an_invalid_change_is_refused_and_the_running_configuration_stays(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(3, podPoolSize=1)
        await c.store_config_map(podPoolSize=0, cronExpression="every day")
        event = await config_event(c.kube, "ConfigRefused")
        assert event["type"] == "Warning"
        assert "podPoolSize: invalid value 0" in event["note"]
        assert "cronExpression" in event["note"]
        series = await scrape(runtime)
        problems = {
            dict(labels)["key"] for (name, labels) in series if name == "bjc_config_problems"
        }
        assert problems == {"podPoolSize", "cronExpression"}
        assert series[("bjc_config_last_reload_successful", ())] == 0
        assert runtime.config.pod_pool_size == 1
        assert runtime.config.cron_expression == BASE_CONFIG["cronExpression"]
        async with LivePodWatch(c.kube) as watch:
            await runtime.controller.trigger("test")
            async with asyncio.timeout(BOUND):
                await runtime.controller.wait_completed(1)
        assert watch.max_live == 1

        await c.store_config_map(podPoolSize=2)  # fixed: applied, problems cleared
        await config_event(c.kube, "ConfigReloaded")
        series = await scrape(runtime)
        assert not [name for (name, _) in series if name == "bjc_config_problems"]
        assert series[("bjc_config_last_reload_successful", ())] == 1
        assert runtime.config.pod_pool_size == 2


async def test_keys_of_servers_and_identity_wait_for_a_restart(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated()
        port = runtime.config.metrics.port
        metrics = {**BASE_CONFIG["metrics"], "port": 19999}
        await c.store_config_map(name="renamed", metrics=metrics, reportHistory=2)
        event = await config_event(c.kube, "ConfigReloaded")
        assert event["type"] == "Warning"
        assert "reportHistory apply from the next execution" in event["note"]
        assert "name, metrics.port apply when the controller restarts" in event["note"]
        assert runtime.config.name == "batch" and runtime.config.metrics.port == port
        assert runtime.config.report_history == 2


async def test_a_new_schedule_takes_over_at_once(tmp_path):
    # bjc.sim only: under Replace, a 1 s schedule aborts executions faster than a loaded
    # real control plane may schedule their pods, so none might ever complete
    async with cluster(tmp_path) as c:
        runtime = await c.start_operated()  # "0 0 1 1 *": never during the test
        await c.store_config_map(cronExpression="@every 1s")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert runtime.cron.interval == 1


async def test_unknown_keys_are_a_warning_event_at_start_and_at_every_reload(tmp_path, plane):
    """A mistyped key starts (the Go controller ignores it) but shows on the ConfigMap."""
    typo = "config.yaml: podPoolsize: unknown key ignored (did you mean 'podPoolSize'?)"
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(1, podPoolsize=2)
        event = await config_event(c.kube, "ConfigWarning")
        assert event["type"] == "Warning"
        assert event["note"] == f"1 warning: {typo}"
        # ignored, as by the Go controller
        assert runtime.config.pod_pool_size == BASE_CONFIG["podPoolSize"] != 2

        await c.store_config_map(podPoolsize=2, concurency="Forbid")
        await config_event(c.kube, "ConfigReloaded")
        event = await config_event(c.kube, "ConfigWarning", seen=1)
        assert typo in event["note"]
        assert (
            "concurency: unknown key ignored (did you mean 'concurrencyPolicy'?)" in event["note"]
        )
        series = await scrape(runtime)
        assert series[("bjc_config_last_reload_successful", ())] == 1  # it applied

        await c.store_config_map(podPoolSize=2)  # fixed: no warning
        await config_event(c.kube, "ConfigReloaded", seen=1)
        await c.store_config_map(podPoolSize=2, jobtimeout="1m")
        await config_event(c.kube, "ConfigReloaded", seen=2)
        event = await config_event(c.kube, "ConfigWarning", seen=2)  # the next one is this
        assert event["note"] == (
            "1 warning: config.yaml: jobtimeout: unknown key ignored (did you mean 'jobTimeout'?)"
        )
        assert runtime.config.pod_pool_size == 2
