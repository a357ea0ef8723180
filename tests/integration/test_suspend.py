"""Suspend: the config key and the ConfigMap annotation, on bjc.sim and (`plane`) the
real control plane."""

from __future__ import annotations

import asyncio

from bjc.engine.configwatch import SUSPEND_ANNOTATION, TRIGGER_ANNOTATION
from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour

from .harness import Gate, cluster
from .test_controller import scrape
from .test_trigger import BOUND, answer_to, bjc_trigger


async def test_suspend_in_config_starts_nothing_and_says_why(tmp_path, plane):
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(2, suspend=True)
        outcome = await runtime.controller.trigger("test")
        assert not outcome and "suspend: true in config.yaml" in outcome.skipped
        code, _, err = await bjc_trigger(c, "batch")
        assert code == 3 and "suspended" in err
        assert runtime.controller.executions == {} and await c.job_pods() == []
        assert (await scrape(runtime))[("bjc_suspended", ())] == 1


async def test_the_annotation_suspends_new_executions_and_lets_the_running_one_finish(
    tmp_path, plane
):
    gate = Gate()
    async with cluster(tmp_path, plane) as c:
        runtime = await c.start_operated(3, JobBehaviour(run=gate.job))
        assert (await scrape(runtime))[("bjc_suspended", ())] == 0
        first = await runtime.controller.trigger("test")
        async with asyncio.timeout(BOUND):
            await gate.running.wait()

        await c.annotate_config_map({SUSPEND_ANNOTATION: "true", TRIGGER_ANNOTATION: "one"})
        assert (await answer_to(c.kube, "one")).startswith("skipped: the controller is suspended")
        assert (await scrape(runtime))[("bjc_suspended", ())] == 1
        gate.opened.set()
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        execution = runtime.controller.executions[first.execution_id]
        assert all(j.status is JobStatus.SUCCEEDED for j in execution.nodes.values())
        assert list(runtime.controller.executions) == [first.execution_id]

        await c.annotate_config_map({SUSPEND_ANNOTATION: None, TRIGGER_ANNOTATION: "two"})
        second = await answer_to(c.kube, "two")
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(2)
        assert runtime.controller.current.id == second
        assert (await scrape(runtime))[("bjc_suspended", ())] == 0
