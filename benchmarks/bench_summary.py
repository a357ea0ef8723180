"""Benchmark of the execution summary pages at 5,000 nodes and 30 executions, over HTTP.

Why: an operator opens the summary of last night's 5,000-node execution, and reloads
it; the index lists 30 such executions. The first view of an execution reads its state,
its directory and 5,000 result files; afterwards, as long as nothing changed, a view
costs a few stat calls (the cache is keyed by the execution's signature), and the index
never reads every node of 30 executions again.

Set-up: a report directory with 29 executions of 5,000 nodes (state only) and a newest
one with a result, an upload and a pod log per node, served by the real file app on
loopback. Measured: the first and repeated GET of the execution page and its JSON, and
of the index. Nothing is asserted (see `nox -s bench`).

Run standalone: `python -m benchmarks.bench_summary` (prints JSON).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from benchmarks import scaled
from bjc.reports.execution import ExecutionState, JobStatus, NodeJob
from bjc.web import bound_port, serve
from bjc.web.files import make_file_app

NODES = scaled(5000, 20)
EXECUTIONS = scaled(30, 3)
REPEATS = scaled(20, 2)


def _state(eid: str, started: float) -> bytes:
    jobs = {}
    for i in range(NODES):
        failed = i % 50 == 0
        jobs[f"node-{i:05d}"] = NodeJob(
            status=JobStatus.FAILED if failed else JobStatus.SUCCEEDED,
            pod=f"check-job-node-{i:05d}-{eid}",
            token="t" * 22,
            created=started + i * 0.01,
            finished=started + i * 0.01 + 3.0,
            duration_ms=3000.0,
            reason="DeadlineExceeded" if failed else "",
        )
    state = ExecutionState(id=eid, started=started, nodes=jobs, finished=started + 120)
    return msgspec.json.encode(state)


def build(root: Path) -> str:
    """The history; returns the newest execution's id."""
    eids = [f"2024010{1 + d // 24}{d % 24:02d}00" for d in range(EXECUTIONS)]
    for n, eid in enumerate(eids):
        directory = root / eid
        directory.mkdir(parents=True)
        (directory / ".bjc-execution.json").write_bytes(_state(eid, 1_704_067_200.0 + n * 3600))
    newest = root / eids[-1]
    result = json.dumps(
        {"disk_used_ratio": [{"value": 0.5, "labels": {"mount": m}} for m in ("/", "/var")]}
    ).encode()
    for i in range(NODES):
        node = f"node-{i:05d}"
        (newest / f"{node}.json").write_bytes(result)
        (newest / f"{node}-report.txt").write_bytes(b"ok\n")
        (newest / f"{node}-container-check.log").write_bytes(b"checking\ndone\n")
    (root / "latest").symlink_to(eids[-1])
    return eids[-1]


async def _timed(http: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    t = time.perf_counter()
    async with http.get(url) as resp:
        body = await resp.read()
        assert resp.status == 200, (url, resp.status)
    return time.perf_counter() - t, len(body)


async def _measure(root: Path, eid: str) -> dict[str, Any]:
    runner = await serve(make_file_app(root), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}/summary"
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(auto_decompress=True) as http:
            for name, url in [
                ("summary_index_30", f"{base}/summary.json"),
                ("summary_page_5000", f"{base}/{eid}/"),
                ("summary_json_5000", f"{base}/{eid}/summary.json"),
            ]:
                first, size = await _timed(http, url)
                again = [(await _timed(http, url))[0] for _ in range(REPEATS)]
                out[f"{name}_first_s"] = round(first, 3)
                out[f"{name}_cached_ms"] = round(statistics.median(again) * 1000, 2)
                out[f"{name}_kb"] = round(size / 1024, 1)
    finally:
        await runner.cleanup()
    return out


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bjc-bench-summary-") as tmp:
        root = Path(tmp)
        eid = build(root)
        return asyncio.run(_measure(root, eid))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
