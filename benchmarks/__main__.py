"""`nox -s bench` / `python -m benchmarks`: run every benchmark, print a table,
write benchmarks/results.json, and append the callback numbers to their history.

Targets are printed next to the numbers; nothing is asserted here or in the
tests: a slow, shared machine must not turn the test suite red. docs/benchmarks.md
says how each number is measured and what the last runs gave.

`python -m benchmarks --smoke` runs every benchmark at a small size (see
benchmarks/__init__.py) and prints the table, writing nothing: the test suite runs it
so that a benchmark that no longer runs fails CI.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import SMOKE_ENV

# every benchmark, in the order they run: benchmarks/bench_<name>.py
BENCHMARKS = (
    "metrics",
    "controller",
    "callbacks",
    "takeover",
    "sim",
    "summary",
    "nodemarks",
    "kwok",
)

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
HISTORY = HERE / "callback_history.json"
# entries without a "method" measured the callback app in-process with an aiohttp
# client as the load generator: not comparable
CALLBACK_METHOD = "wrk -c50 against bjc run (uvloop) + bjc sim, durable, reports on "


def _row(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
    mark = "" if ok is None else ("met" if ok else "MISSED")
    return f"| {name} | {value} | {target} | {mark} |"


def table(r: dict[str, Any]) -> str:
    m = r["metrics_100k"]
    mk = r["makespan_1000"]
    rows = [
        "| measure | value | target | |",
        "|---|---|---|---|",
        _row(
            "metrics, 100k series: memory bjc / aioprometheus",
            f"{m['bjc_mb']:.1f} MB / {m['aioprometheus_mb']:.1f} MB",
            "≤ 1/6",
            m["bjc_mb"] <= m["aioprometheus_mb"] / 6,
        ),
        _row(
            "metrics, 100k series: set bjc / aioprometheus",
            f"{m['bjc_set_s']:.3f} s / {m['aioprometheus_set_s']:.3f} s",
            "≤ 1/5",
            m["bjc_set_s"] <= m["aioprometheus_set_s"] / 5,
        ),
        _row(
            "metrics, 100k series: render bjc / aioprometheus",
            f"{m['bjc_render_s']:.3f} s / {m['aioprometheus_render_s']:.3f} s",
            "≤ 1/4",
            m["bjc_render_s"] <= m["aioprometheus_render_s"] / 4,
        ),
        _row(
            "pod watch events processed (recorded stream)",
            f"{r['watch_events_per_s']:,.0f} /s",
            "≥ 10,000 /s",
            r["watch_events_per_s"] >= 10_000,
        ),
        _row(
            "`bjc run` RSS, idle", f"{r['idle_rss_mb']:.1f} MB", "≤ 80 MB", r["idle_rss_mb"] <= 80
        ),
        _row(
            "`bjc run` RSS, 5,000 nodes, 30 executions",
            f"{r['rss_5000_nodes_30_exec_mb']:.1f} MB",
            "≤ 150 MB",
            r["rss_5000_nodes_30_exec_mb"] <= 150,
        ),
        _row(
            "makespan, 1,000 nodes, pool 10: bjc / floor",
            f"{mk['bjc_s']:.2f} s / {mk['floor_s']:.2f} s ({mk['bjc_s'] / mk['floor_s']:.2f}x)",
            "≤ 1.2x",
            mk["bjc_s"] <= 1.2 * mk["floor_s"],
        ),
        *_callback_rows(r),
        *_takeover_rows(r),
        _row(
            "summary page, 5,000 nodes: first / cached",
            f"{r['summary_page_5000_first_s']:.2f} s / {r['summary_page_5000_cached_ms']:.1f} ms",
            "cached ≤ 100 ms",
            r["summary_page_5000_cached_ms"] <= 100,
        ),
        _row(
            "summary index, 30 executions of 5,000 nodes: first / cached",
            f"{r['summary_index_30_first_s']:.2f} s / {r['summary_index_30_cached_ms']:.1f} ms",
            "cached ≤ 50 ms",
            r["summary_index_30_cached_ms"] <= 50,
        ),
        *_node_condition_rows(r["node_conditions"]),
        _row("simulator: pod creates", f"{r['sim_creates_per_s']:,.0f} /s"),
        _row("simulator: watch events", f"{r['sim_watch_events_per_s']:,.0f} /s"),
    ]
    kwok = [(k, v) for k, v in r.items() if k.startswith("kwok_makespan_")]
    if not kwok:
        rows.append(_row("makespan on a real apiserver (kwok)", "not measured: binaries not built"))
    for key, v in kwok:
        size, pool = key.removeprefix("kwok_makespan_").split("_pool_")
        rows.append(
            _row(
                f"makespan, real apiserver + kwok, {int(size):,} nodes, pool {pool}: bjc / floor",
                f"{v['bjc_s']:.2f} s / {v['floor_s']:.2f} s ({v['ratio']:.2f}x)",
            )
        )
    return "\n".join(rows)


def _callback_rows(r: dict[str, Any]) -> list[str]:
    c = r["callbacks"]
    fs = c["report_filesystem"]
    rows = []
    targets = {  # req/s at least, p99 under (ms), server CPU per request at most (µs)
        "uvloop": (7000, 25, 100),
        "asyncio": None,
        "uvloop, durability fsync": (3000, None, None),
    }
    for loop, target in targets.items():
        if loop not in c:
            continue
        wrk = c[loop].get("wrk")
        name = f"durable result callbacks, 50 connections (wrk), {loop}, {fs}"
        if wrk is None:
            rows.append(_row(name, "skipped: wrk not installed", "≥ 7,000 /s"))
            continue
        cpu = sum(wrk["server_cpu_us_per_request"].values())
        value = (
            f"{wrk['per_s']:,.0f} req/s, p99 {wrk['p99_ms']:.1f} ms, {cpu:.0f} µs CPU/req, "
            f"RSS {wrk.get('server_rss_mb', 0):.0f} MB, {wrk['non_2xx']:.0f} non-2xx"
        )
        if target is None:
            rows.append(_row(name, value))
            continue
        per_s, p99, cpu_max = target
        ok = wrk["per_s"] >= per_s and wrk["non_2xx"] == 0
        wanted = f"≥ {per_s:,} /s"
        if p99 is not None:
            ok = ok and wrk["p99_ms"] < p99 and cpu <= cpu_max
            wanted += f", p99 < {p99} ms, ≤ {cpu_max} µs CPU"
        rows.append(_row(name, value, wanted + ", 0 non-2xx", ok))
    for fs, w in r["store_writes"].items():
        value = f"{w['per_s']:,.0f} /s, {w['cpu_us']} µs CPU each"
        rows.append(_row(f"store alone: durable result writes (50 writers), {fs}", value))
    for loop in ("uvloop", "asyncio"):
        steady = c[loop]["steady"]
        ok = steady["p99_ms"] < 10 and steady["non_2xx"] == 0 and steady["failures"] == 0
        rows.append(
            _row(
                f"durable result callbacks, open loop 500/s, {loop}: p99",
                f"{steady['p99_ms']:.1f} ms (client lag ≤ {steady['max_send_lag_ms']:.0f} ms)",
                "< 10 ms",
                ok if loop == "uvloop" else None,
            )
        )
    return rows


def _node_condition_rows(n: dict[str, Any]) -> list[str]:
    size = f"{n['nodes']:,} nodes, {n['flipped']:,} flip"
    added = n["flip_update_s"] - n["flip_update_without_conditions_s"]
    return [
        _row(
            f"node conditions, {size}: patches / time added at execution end",
            f"{n['flip_update_patches']:,} / {added:.2f} s "
            f"(load average {n['load_average_1m']:.1f})",
            f"= {n['flipped']:,} patches",
            n["flip_update_patches"] == n["flipped"],
        ),
        _row(
            f"node conditions as jobs end, {n['nodes']:,} nodes, {n['flipped_at_job_ends']:,} "
            "flip: patches / time until sent / patches left at execution end",
            f"{n['job_ends_patches']:,} / {n['job_ends_s']:.2f} s / "
            f"{n['update_after_job_ends_patches']}",
            f"= {n['flipped_at_job_ends']:,} patches / - / 0",
            n["job_ends_patches"] == n["flipped_at_job_ends"]
            and n["update_after_job_ends_patches"] == 0,
        ),
        _row(
            f"node conditions, {n['nodes']:,} nodes: nothing changed / first execution",
            f"{n['unchanged_update_patches']} patches, {n['unchanged_update_s']:.2f} s / "
            f"{n['first_update_patches']:,} patches, {n['first_update_s']:.2f} s",
        ),
    ]


def _takeover_rows(r: dict[str, Any]) -> list[str]:
    bench_takeover = _bench("takeover")
    runs = r["takeover"]["runs"]

    def spread(key: str) -> str:
        return " / ".join(f"{v:.1f}" for v in runs[key]) + " s"

    return [
        _row(
            "takeover after kill -9 of the leader (30 x 5,000 history, lease 15 s)",
            spread("kill_takeover_s"),
            "≤ 17 s",
            r["takeover_kill_s"] <= bench_takeover.TARGET_KILL_S,
        ),
        _row(
            "takeover after SIGTERM of the leader (graceful handover)",
            spread("sigterm_takeover_s"),
            "< 3 s",
            r["takeover_sigterm_s"] < bench_takeover.TARGET_SIGTERM_S,
        ),
        _row("standby: history loaded (Ready), 30 x 5,000", spread("standby_load_s")),
    ]


def _bench(name: str) -> ModuleType:
    # imported when run: the sizes are read at import, after --smoke set them
    return importlib.import_module(f"benchmarks.bench_{name}")


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    if smoke:
        os.environ[SMOKE_ENV] = "1"
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in BENCHMARKS:
        t = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results.update(_bench(name).run())
        print(f"bench: {name} done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    if smoke:  # the numbers mean nothing: the table shows that every key is there
        print(table(results))
        print(f"\nsmoke run of every benchmark in {time.perf_counter() - started:.0f}s")
        return 0
    results["machine"] = {"python": platform.python_version(), "cpus": _cpus()}
    results["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if "callbacks_per_s" in results:  # wrk was there
        history = json.loads(HISTORY.read_text()) if HISTORY.exists() else []
        history.append(
            {
                "at": results["measured_at"],
                "method": CALLBACK_METHOD + results["callbacks"]["report_filesystem"],
                "callbacks_per_s": round(results["callbacks_per_s"], 1),
                "callback_p99_ms": round(results["callback_p99_ms"], 2),
                "steady_500_p99_ms": round(results["callback_steady_p99_ms"], 2),
            }
        )
        HISTORY.write_text(json.dumps(history, indent=2) + "\n")
    print(table(results))
    profiled = results["callback_profile"]
    if "self_pct" in profiled:
        print("\ncallback server under wrk, py-spy: functions by own share of samples")
        for frame, pct in profiled["self_pct"][:8]:
            print(f"  {pct:5.1f} %  {frame}")
    print(f"\nwritten {RESULTS.relative_to(HERE.parent)} in {results['bench_seconds']}s")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
