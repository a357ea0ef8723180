"""Benchmark of bjc's metrics store against a plain aioprometheus Gauge (issue 5 targets).

Why: bjc holds 100,000-300,000 per-execution series on large clusters; the targets are
memory <= 1/6, set time <= 1/5 and render time <= 1/4 of a plain aioprometheus `Gauge`
with the same 100,000 series of 4 labels ({a, b, node, executionID}: 10 executions x
1,000 nodes x 10 series), measured in the same run. Each side runs in a fresh
subprocess so that the RSS delta (VmRSS before/after) is its own.

What it deliberately does not do: assert anything (numbers are reported, docs/benchmarks.md
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import scaled

EXECUTIONS = scaled(10, 2)
NODES = scaled(1000, 20)
SERIES_PER_NODE = scaled(10, 3)  # 10 x 1000 x 10 = 100,000 series
SMALL_EXECUTION_SERIES = scaled(100, 10)
REPEATS = scaled(3, 1)
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


def _rows() -> Iterator[tuple[str, str, dict[str, str], float]]:
    """(executionID, node, {a, b}, value) for every series, the same on both sides.

    A generator: every string and float is a fresh object, as if decoded from a
    callback, so whatever a store keeps of them counts in its RSS delta.
    """
    for execution_id in _execution_ids(EXECUTIONS):
        for n in range(NODES):
            node = f"worker-node-{n:04d}.cluster.example.com"
            for j in range(SERIES_PER_NODE):
                labels = {"a": f"package-{j}", "b": f"version-1.{j % 3}.{n % 7}"}
                yield execution_id, node, labels, float(n * j) + 0.5


def _bjc_metrics() -> Any:
    from bjc.config.settings import Config, GaugeConfig, MetricsConfig
    from bjc.reports.metrics import Metrics

    config = Config(
        name="bench",
        cron_expression="0 * * * *",
        metrics=MetricsConfig(
            prefix=PREFIX, gauges={SUFFIX: GaugeConfig(help="bench", labels=["a", "b"])}
        ),
    )
    metrics = Metrics(config)
    # as the controller does: the newest execution is the current one
    metrics.set_current_execution(_execution_ids(EXECUTIONS)[-1])
    metrics.render()  # warm up the non-series part
    return metrics


def _aio_store() -> tuple[Any, Any]:
    import aioprometheus

    registry = aioprometheus.Registry()
    return registry, aioprometheus.Gauge(f"{PREFIX}_{SUFFIX}", "bench", registry=registry)


def _memory_bjc() -> dict[str, Any]:
    """RSS delta of building the store from fresh objects, then after one scrape."""
    metrics = _bjc_metrics()
    gc.collect()
    rss0 = _rss_mb()
    for execution_id, node, labels, value in _rows():
        metrics.set_result(execution_id, node, SUFFIX, labels, value)
    gc.collect()
    rss_set = _rss_mb()
    body, _ = metrics.render()
    size = len(body)
    del body
    gc.collect()
    return {"mb": _rss_mb() - rss0, "mb_before_render": rss_set - rss0, "body_bytes": size}


def _memory_aioprometheus() -> dict[str, Any]:
    import aioprometheus

    registry, gauge = _aio_store()
    gc.collect()
    rss0 = _rss_mb()
    for execution_id, node, labels, value in _rows():
        gauge.set({**labels, "node": node, "executionID": execution_id}, value)
    gc.collect()
    rss_set = _rss_mb()
    body, _headers = aioprometheus.render(registry, [])
    size = len(body)
    del body
    gc.collect()
    return {"mb": _rss_mb() - rss0, "mb_before_render": rss_set - rss0, "body_bytes": size}


def _timing() -> dict[str, Any]:
    """Both sides in one process, repetitions interleaved (the machine is shared:
    interleaving keeps load changes from favouring one side); best of REPEATS."""
    import aioprometheus
    import orjson

    rows = list(_rows())
    # aioprometheus from the same rows, building the label dict per series as a caller
    # of Gauge.set must; also with the dicts prebuilt (its most favourable case)
    prebuilt = [
        ({**labels, "node": node, "executionID": execution_id}, value)
        for execution_id, node, labels, value in rows
    ]
    t: dict[str, list[float]] = {
        k: [] for k in ("bjc_set", "bjc_render", "aio_set", "aio_prebuilt", "aio_render")
    }
    for _ in range(REPEATS):
        metrics = _bjc_metrics()
        set_result = metrics.set_result
        gc.collect()
        t0 = time.perf_counter()
        for execution_id, node, labels, value in rows:
            set_result(execution_id, node, SUFFIX, labels, value)
        t["bjc_set"].append(time.perf_counter() - t0)
        assert metrics.series_count() == len(rows)
        t0 = time.perf_counter()
        metrics.render()  # the first scrape: every block is formatted, 9 of 10 frozen
        t["bjc_render"].append(time.perf_counter() - t0)
        del metrics

        registry, gauge = _aio_store()
        gauge_set = gauge.set
        gc.collect()
        t0 = time.perf_counter()
        for execution_id, node, labels, value in rows:
            gauge_set({**labels, "node": node, "executionID": execution_id}, value)
        t["aio_set"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        aioprometheus.render(registry, [])
        t["aio_render"].append(time.perf_counter() - t0)
        del registry, gauge

        registry, gauge = _aio_store()
        gauge_set = gauge.set
        gc.collect()
        t0 = time.perf_counter()
        for full_labels, value in prebuilt:
            gauge_set(full_labels, value)
        t["aio_prebuilt"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in t.items()}

    # pruning one execution: aioprometheus has no index, so every key is decoded
    current = rows[-1][0]
    t0 = time.perf_counter()
    for key in [k for k in gauge.values if orjson.loads(k)["executionID"] == current]:
        del gauge.values[key]
    aio_prune_s = time.perf_counter() - t0
    del registry, gauge, prebuilt

    # bjc after the first scrape: cached scrapes, a scrape while the current execution
    # (10,000 series) receives results, a late write into a frozen execution, pruning
    metrics = _bjc_metrics()
    set_result = metrics.set_result
    for execution_id, node, labels, value in rows:
        set_result(execution_id, node, SUFFIX, labels, value)
    metrics.render()
    cached = []
    for _ in range(3):
        t0 = time.perf_counter()
        metrics.render()
        cached.append(time.perf_counter() - t0)
    for execution_id, node, labels, value in rows[-NODES * SERIES_PER_NODE :]:
        set_result(execution_id, node, SUFFIX, labels, value + 1)
    t0 = time.perf_counter()
    metrics.render()
    render_one_dirty_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    set_result(rows[0][0], "late-node", SUFFIX, {"a": "x", "b": "y"}, 1.0)
    thaw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.remove_execution(current)
    prune_s = time.perf_counter() - t0
    small = "209912312359"
    for _, node, labels, value in rows[:SMALL_EXECUTION_SERIES]:
        set_result(small, node, SUFFIX, labels, value)
    t0 = time.perf_counter()
    metrics.remove_execution(small)
    prune_small_s = time.perf_counter() - t0
    assert metrics.series_count() == len(rows) - NODES * SERIES_PER_NODE + 1

    return {
        **best,
        "bjc_render_cached": min(cached),
        "bjc_render_one_dirty": render_one_dirty_s,
        "bjc_thaw": thaw_s,
        "bjc_prune": prune_s,
        "bjc_prune_small": prune_small_s,
        "aio_prune": aio_prune_s,
    }


CHILDREN = {
    "memory-bjc": _memory_bjc,
    "memory-aioprometheus": _memory_aioprometheus,
    "timing": _timing,
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
    """Memory of each side in a fresh subprocess, timing of both in a third one."""
    ours = _run_child("memory-bjc")
    theirs = _run_child("memory-aioprometheus")
    t = _run_child("timing")
    m = {
        "series": EXECUTIONS * NODES * SERIES_PER_NODE,
        "bjc_mb": round(ours["mb"], 1),
        "aioprometheus_mb": round(theirs["mb"], 1),
        "bjc_set_s": round(t["bjc_set"], 4),
        "aioprometheus_set_s": round(t["aio_set"], 4),
        "bjc_render_s": round(t["bjc_render"], 4),
        "aioprometheus_render_s": round(t["aio_render"], 4),
        "aioprometheus_set_prebuilt_dicts_s": round(t["aio_prebuilt"], 4),
        "bjc_render_cached_s": round(t["bjc_render_cached"], 4),
        "bjc_render_one_dirty_s": round(t["bjc_render_one_dirty"], 4),
        "bjc_thaw_10k_s": round(t["bjc_thaw"], 4),
        "bjc_mb_before_render": round(ours["mb_before_render"], 1),
        "aioprometheus_mb_before_render": round(theirs["mb_before_render"], 1),
        "bjc_body_bytes": ours["body_bytes"],
        "aioprometheus_body_bytes": theirs["body_bytes"],
    }
    m["memory_ratio"] = _ratio(m["bjc_mb"], m["aioprometheus_mb"])
    m["set_ratio"] = _ratio(m["bjc_set_s"], m["aioprometheus_set_s"])
    m["render_ratio"] = _ratio(m["bjc_render_s"], m["aioprometheus_render_s"])
    m["targets_met"] = (
        m["bjc_mb"] <= m["aioprometheus_mb"] / 6
        and m["bjc_set_s"] <= m["aioprometheus_set_s"] / 5
        and m["bjc_render_s"] <= m["aioprometheus_render_s"] / 4
    )
    return {
        "metrics_100k": m,
        "metrics_prune_s": round(t["bjc_prune"], 5),
        "metrics_prune_small_s": round(t["bjc_prune_small"], 6),
        "aioprometheus_prune_s": round(t["aio_prune"], 4),
    }


def _ratio(ours: float, theirs: float) -> float | None:
    """ours / theirs; None when theirs rounds to 0 (only at smoke size)."""
    return round(ours / theirs, 3) if theirs else None


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--child":
        print(json.dumps(CHILDREN[argv[1]]()))
        return 0
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
