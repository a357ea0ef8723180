"""podPoolSize as a percentage of the selected nodes, against bjc.sim."""

from __future__ import annotations

import asyncio

import pytest

from bjc.reports.execution import JobStatus
from bjc.sim import JobBehaviour, RunningPod

from .harness import LivePodWatch, cluster, post_result
from .test_controller import run_one, scrape


@pytest.mark.parametrize(("share", "pool"), [("30%", 3), ("1%", 1)])
async def test_a_percentage_of_the_selected_nodes_at_least_one(tmp_path, share, pool):
    started, full = 0, asyncio.Event()

    async def job(pod: RunningPod) -> int:
        nonlocal started
        started += 1
        if started == pool:  # the pool is full: all of it runs at once, nothing more
            full.set()
        await full.wait()
        return await post_result(pod)

    async with cluster(tmp_path) as c:
        c.add_nodes(10, labels={"role": "worker"})
        c.add_nodes(5, "other", labels={"role": "infra"})  # not selected: not counted
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(podPoolSize=share, jobNodeSelector={"role": "worker"})
        async with LivePodWatch(c.kube) as watch:
            await run_one(runtime)
        jobs = runtime.controller.current.nodes
        assert len(jobs) == 10
        assert all(j.status is JobStatus.SUCCEEDED for j in jobs.values())
        assert watch.max_live == pool
        series = await scrape(runtime)
        (info,) = [dict(k) for (name, k) in series if name.startswith("com_github_bakito")]
        assert info["poolSize"] == share
