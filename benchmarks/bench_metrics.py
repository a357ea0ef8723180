"""Benchmark of bjc's metrics store against a plain aioprometheus Gauge (issue 5 targets).

Why: bjc holds 100,000-300,000 per-execution series on large clusters; the targets are
memory <= 1/6, set time <= 1/5 and render time <= 1/4 of a plain aioprometheus `Gauge`
with the same 100,000 series of 4 labels ({a, b, node, executionID}: 10 executions x
1,000 nodes x 10 series), measured in the same run. Each side runs in a fresh
subprocess so that the RSS delta (VmRSS before/after) is its own.

What it deliberately does not do: assert anything (numbers are reported, the README
and `nox -s bench` show them), or measure HTTP (see the callback benchmarks).

Run standalone: `python -m benchmarks.bench_metrics` (prints JSON).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXECUTIONS = 10
NODES = 1000
SERIES_PER_NODE = 10  # 10 x 1000 x 10 = 100,000 series
SMALL_EXECUTION_SERIES = 100
PREFIX = "bench"
SUFFIX = "result"

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _execution_ids(count: int) -> list[str]:
    return [f"2024010{1 + i // 24}{i % 24:02d}00" for i in range(count)]


def _data() -> list[tuple[str, str, dict[str, str], float]]:
    """(executionID, node, {a, b}, value) for every series, the same on both sides."""
    rows = []
    for execution_id in _execution_ids(EXECUTIONS):
        for n in range(NODES):
            node = f"worker-node-{n:04d}.cluster.example.com"
            for j in range(SERIES_PER_NODE):
                labels = {"a": f"package-{j}", "b": f"version-1.{j % 3}.{n % 7}"}
                rows.append((execution_id, node, labels, float(n * j) + 0.5))
    return rows


def _child_bjc() -> dict[str, Any]:
    from bjc.config import Config, GaugeConfig, MetricsConfig
    from bjc.metrics import Metrics

    config = Config(
        name="bench",
        cron_expression="0 * * * *",
        metrics=MetricsConfig(
            prefix=PREFIX, gauges={SUFFIX: GaugeConfig(help="bench", labels=["a", "b"])}
        ),
    )
    rows = _data()
    metrics = Metrics(config)
    metrics.render()  # warm up the non-series part
    gc.collect()
    rss0 = _rss_mb()

    set_result = metrics.set_result
    t0 = time.perf_counter()
    for execution_id, node, labels, value in rows:
        set_result(execution_id, node, SUFFIX, labels, value)
    set_s = time.perf_counter() - t0
    assert metrics.series_count() == len(rows)
    gc.collect()
    rss_set = _rss_mb()

    t0 = time.perf_counter()
    body, _ = metrics.render()
    render_cold_s = time.perf_counter() - t0
    size = len(body)
    del body
    gc.collect()
    rss_render = _rss_mb()

    cached = []
    for _ in range(3):
        t0 = time.perf_counter()
        metrics.render()
        cached.append(time.perf_counter() - t0)

    # a scrape while one execution (10,000 series) is receiving results
    last = rows[-1][0]
    for execution_id, node, labels, value in rows[-NODES * SERIES_PER_NODE :]:
        set_result(execution_id, node, SUFFIX, labels, value + 1)
    t0 = time.perf_counter()
    metrics.render()
    render_one_dirty_s = time.perf_counter() - t0

    # pruning: an execution of 10,000 series, then one of 100 (same total store)
    t0 = time.perf_counter()
    metrics.remove_execution(last)
    prune_s = time.perf_counter() - t0
    small = "209912312359"
    for execution_id, node, labels, value in rows[:SMALL_EXECUTION_SERIES]:
        set_result(small, node, SUFFIX, labels, value)
    t0 = time.perf_counter()
    metrics.remove_execution(small)
    prune_small_s = time.perf_counter() - t0
    assert metrics.series_count() == len(rows) - NODES * SERIES_PER_NODE

    return {
        "mb": rss_render - rss0,
        "mb_before_render": rss_set - rss0,
        "set_s": set_s,
        "render_s": render_cold_s,
        "render_cached_s": min(cached),
        "render_one_dirty_s": render_one_dirty_s,
        "prune_s": prune_s,
        "prune_small_s": prune_small_s,
        "body_bytes": size,
    }


def _child_aioprometheus() -> dict[str, Any]:
    import aioprometheus
    import orjson

    rows = [
        (execution_id, {**labels, "node": node, "executionID": execution_id}, value)
        for execution_id, node, labels, value in _data()
    ]
    registry = aioprometheus.Registry()
    gauge = aioprometheus.Gauge(f"{PREFIX}_{SUFFIX}", "bench", registry=registry)
    gc.collect()
    rss0 = _rss_mb()

    gauge_set = gauge.set
    t0 = time.perf_counter()
    for _, labels, value in rows:
        gauge_set(labels, value)
    set_s = time.perf_counter() - t0
    gc.collect()
    rss_set = _rss_mb()

    renders = []
    size = 0
    for _ in range(2):
        t0 = time.perf_counter()
        body, _headers = aioprometheus.render(registry, [])
        renders.append(time.perf_counter() - t0)
        size = len(body)
        del body
        gc.collect()
        if len(renders) == 1:
            rss_render = _rss_mb()

    # pruning one execution: aioprometheus has no index, so every key is decoded
    last = rows[-1][0]
    t0 = time.perf_counter()
    for key in [k for k in gauge.values if orjson.loads(k)["executionID"] == last]:
        del gauge.values[key]
    prune_s = time.perf_counter() - t0

    return {
        "mb": rss_render - rss0,
        "mb_before_render": rss_set - rss0,
        "set_s": set_s,
        "render_s": min(renders),
        "prune_s": prune_s,
        "body_bytes": size,
    }


def _run_child(side: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_metrics", "--child", side],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"metrics benchmark child {side!r} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run() -> dict[str, Any]:
    """Both sides in fresh subprocesses; returns the issue 5 keys plus details."""
    ours = _run_child("bjc")
    theirs = _run_child("aioprometheus")
    m = {
        "series": EXECUTIONS * NODES * SERIES_PER_NODE,
        "bjc_mb": round(ours["mb"], 1),
        "aioprometheus_mb": round(theirs["mb"], 1),
        "bjc_set_s": round(ours["set_s"], 4),
        "aioprometheus_set_s": round(theirs["set_s"], 4),
        "bjc_render_s": round(ours["render_s"], 4),
        "aioprometheus_render_s": round(theirs["render_s"], 4),
        "bjc_render_cached_s": round(ours["render_cached_s"], 5),
        "bjc_render_one_dirty_s": round(ours["render_one_dirty_s"], 4),
        "bjc_mb_before_render": round(ours["mb_before_render"], 1),
        "aioprometheus_mb_before_render": round(theirs["mb_before_render"], 1),
        "bjc_body_bytes": ours["body_bytes"],
        "aioprometheus_body_bytes": theirs["body_bytes"],
    }
    m["memory_ratio"] = round(m["bjc_mb"] / m["aioprometheus_mb"], 3)
    m["set_ratio"] = round(m["bjc_set_s"] / m["aioprometheus_set_s"], 3)
    m["render_ratio"] = round(m["bjc_render_s"] / m["aioprometheus_render_s"], 3)
    m["targets_met"] = (
        m["memory_ratio"] <= 1 / 6 and m["set_ratio"] <= 1 / 5 and m["render_ratio"] <= 1 / 4
    )
    return {
        "metrics_100k": m,
        "metrics_prune_s": round(ours["prune_s"], 5),
        "metrics_prune_small_s": round(ours["prune_small_s"], 6),
        "aioprometheus_prune_s": round(theirs["prune_s"], 4),
    }


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--child":
        child = {"bjc": _child_bjc, "aioprometheus": _child_aioprometheus}[argv[1]]
        print(json.dumps(child()))
        return 0
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
