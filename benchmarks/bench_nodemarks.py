"""Cost of node conditions at scale: 5,000 nodes, 10% of them flip between two executions.

Why: with `nodeCondition` on, every execution's end brings each judged node's
condition in line with its verdict. Only the nodes whose verdict changed may cost a
patch; what the others cost is one list of the nodes and a comparison. This measures
both against bjc.sim over HTTP, with the real `NodeMarks` and a report directory on
disk.

Set-up: a simulated cluster of NODES nodes, a report directory with a first finished
execution (the first 10% fail, the others succeed with a result) and a second one in
which 10% of the nodes flip (half of the failing ones recover, as many others fail).
Measured: the patches and the time of `NodeMarks.update()` after the second
execution with `nodeCondition` on, the same without it (the change metrics alone: the
time the conditions add is the difference), and after nothing changed (no patch).
The first update, which sets every node's condition once, is given for scale. Then a
third execution's jobs end one by one (`NodeMarks.job_ended`, as the controller reports
them), 10% of the nodes flipping again: the patches and the time until all are sent,
and the execution's end after it (which should find nothing left to patch). Nothing
is asserted (see `nox -s bench`).

Run standalone: `python -m benchmarks.bench_nodemarks` (prints JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import scaled
from bjc.config.settings import load_config
from bjc.engine.nodemarks import NodeMarks
from bjc.kube.client import Credentials, KubeClient
from bjc.reports.execution import Execution, ExecutionState, JobStatus, NodeJob
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.sim import SimCluster

NODES = scaled(5000, 40)
FLIP = NODES // 10  # nodes whose verdict changes between the two executions
EXECUTIONS = ("202401010100", "202401010200", "202401010300")
RESULT = json.dumps({"check": [{"value": 0, "labels": {}}]}).encode()


def _name(i: int) -> str:
    return f"node-{i:05d}"


def write_execution(root: Path, eid: str, failing: set[int], started: float) -> None:
    """A finished execution: the `failing` nodes' jobs failed, the others succeeded with
    a result."""
    directory = root / eid
    directory.mkdir(parents=True)
    jobs = {}
    for i in range(NODES):
        failed = i in failing
        jobs[_name(i)] = NodeJob(
            status=JobStatus.FAILED if failed else JobStatus.SUCCEEDED,
            pod=f"check-{_name(i)}-{eid}",
            created=started,
            finished=started + 3.0,
            duration_ms=3000.0,
            reason="container check exited 1" if failed else "",
        )
        if not failed:
            (directory / f"{_name(i)}.json").write_bytes(RESULT)
    state = ExecutionState(id=eid, started=started, nodes=jobs, finished=started + 60)
    (directory / ".bjc-execution.json").write_bytes(msgspec.json.encode(state))
    latest = root / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(eid)


async def _timed_update(marks: NodeMarks) -> tuple[float, int]:
    before = marks.patches
    t = time.perf_counter()
    await marks.update()
    return time.perf_counter() - t, marks.patches - before


async def _timed_job_ends(marks: NodeMarks, root: Path, failing: set[int]) -> tuple[float, int]:
    """Every node's job ends (`failing` failed) as the controller reports them, one by
    one: the time until every patch is sent, and how many."""
    nodes = [_name(i) for i in range(NODES)]
    store = ReportStore(root / "memory")  # its journal, apart from the directory marks reads
    await store.ensure_execution(EXECUTIONS[2])
    execution = Execution.new(EXECUTIONS[2], nodes, store, save=False)
    before = marks.patches
    t = time.perf_counter()
    for i in range(NODES):
        node = _name(i)
        execution.pod_created(node, f"check-{node}")
        if i in failing:
            execution.finish(node, JobStatus.FAILED, "container check exited 1")
        else:
            execution.result_received(node)
            execution.finish(node, JobStatus.SUCCEEDED)
        marks.job_ended(execution, node)
    await marks.work.drain()
    return time.perf_counter() - t, marks.patches - before


async def measure(root: Path) -> dict[str, Any]:
    sim = SimCluster(history_size=4 * NODES)
    for i in range(NODES):
        sim.add_node(_name(i))
    await sim.start()
    base = "name: node-check\ncronExpression: '0 3 * * *'\n"
    condition = "nodeCondition: {type: NodeCheckFailed}\n"
    on, _ = load_config(base + condition, report_directory=str(root))
    off, _ = load_config(base, report_directory=str(root))
    try:
        async with KubeClient(Credentials(server=sim.url)) as kube:
            marks = NodeMarks(on, kube, Metrics(on), root)
            plain = NodeMarks(off, kube, Metrics(off), root)
            first = set(range(FLIP))  # 10% fail
            write_execution(root, EXECUTIONS[0], first, 1_704_070_800.0)
            first_s, first_patches = await _timed_update(marks)
            await _timed_update(plain)
            # half of them recover, as many others fail: FLIP nodes flip
            second = set(range(FLIP // 2, FLIP + FLIP // 2))
            write_execution(root, EXECUTIONS[1], second, 1_704_074_400.0)
            flip_s, flip_patches = await _timed_update(marks)
            plain_s, plain_patches = await _timed_update(plain)
            same_s, same_patches = await _timed_update(marks)  # nothing changed since
            # as the jobs of a third execution end: FLIP other nodes flip
            third = set(range(FLIP, 2 * FLIP))
            jobs_s, jobs_patches = await _timed_job_ends(marks, root, third)
            write_execution(root, EXECUTIONS[2], third, 1_704_078_000.0)
            end_s, end_patches = await _timed_update(marks)  # then the execution ends
    finally:
        await sim.stop()
    return {
        "nodes": NODES,
        "flipped": len(first ^ second),
        "first_update_s": round(first_s, 3),
        "first_update_patches": first_patches,
        "flip_update_s": round(flip_s, 3),
        "flip_update_patches": flip_patches,
        "flip_update_without_conditions_s": round(plain_s, 3),
        "flip_update_without_conditions_patches": plain_patches,
        "unchanged_update_s": round(same_s, 3),
        "unchanged_update_patches": same_patches,
        "flipped_at_job_ends": len(second ^ third),
        "job_ends_s": round(jobs_s, 3),
        "job_ends_patches": jobs_patches,
        "update_after_job_ends_s": round(end_s, 3),
        "update_after_job_ends_patches": end_patches,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bjc-bench-marks-") as tmp:
        return {"node_conditions": asyncio.run(measure(Path(tmp)))}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
