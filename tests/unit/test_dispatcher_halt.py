"""A halted execution (maxFailures) resumed: running pods are awaited, nothing new starts."""

from __future__ import annotations

import asyncio

from bjc.engine.dispatcher import Dispatcher, DispatchPlan
from bjc.kube.client import KubeClient
from bjc.reports.execution import Attempt, JobStatus

from .test_execution import new_execution


def no_pods(*_: object) -> dict:
    raise AssertionError("a halted execution must not render a pod")


async def test_a_resumed_halted_execution_waits_for_running_pods_and_starts_none(tmp_path):
    ex, _ = await new_execution(tmp_path, nodes=("running", "retrying", "waiting"))
    ex.pod_created("running", "pod-running")
    ex.nodes["retrying"].attempts.append(Attempt(pod="pod-retrying", reason="pod failed"))
    ex.halt("maxFailures reached")
    kube = KubeClient.from_url("http://127.0.0.1:9")  # never called: no pod is created
    dispatcher = Dispatcher(kube, "jobs", finish=lambda e, n, s, r="": e.finish(n, s, r))
    run = asyncio.create_task(dispatcher.run(ex, DispatchPlan(pool_size=2, render=no_pods)))
    await asyncio.sleep(0.05)
    assert not run.done()  # the running pod is awaited
    ex.finish("running", JobStatus.SUCCEEDED)
    async with asyncio.timeout(5):
        await run
    assert ex.nodes["running"].status is JobStatus.SUCCEEDED
    assert (ex.nodes["retrying"].status, ex.nodes["retrying"].reason) == (
        JobStatus.FAILED,
        "pod failed",
    )
    assert ex.nodes["waiting"].status is JobStatus.ABORTED
    assert ex.nodes["waiting"].reason == "not dispatched: maxFailures reached"
    await kube.close()
