"""Durable result callbacks: throughput at 50 connections, and latency at a steady 500/s.

The server under test is a real `bjc run` process against a `bjc sim` process, with
a live execution (its job pods keep running) on NODES nodes; every request posts a
10-series result of a configured gauge for the next node in turn, and is answered
only once the result is in the execution's results log (durable against SIGKILL).

- Throughput: wrk (a C load generator: it is not the bottleneck), 50 connections,
  one thread, WRK_SECONDS after a warm-up; requests/s, p99 from wrk's latency
  distribution, and the count of non-2xx answers (must be 0). Without wrk on PATH
  this part is skipped, saying so (`apt-get install wrk`).
- Latency at a steady load: `benchmarks.openloop`, an open-loop generator in its own
  process, STEADY_RATE requests/s on a fixed timetable, latency measured from when
  each request was due (so a stall is not hidden by the client waiting it out).
- Both on uvloop (what `bjc run` uses where installed) and on asyncio's own loop, and
  on uvloop with `durability: fsync` (each answer waits for fdatasync of its batch).
- Where the time goes: `profile()` samples the server with py-spy (all threads,
  without pausing it) during one more wrk run; self and total shares per function.
- The report directory is in the system's temporary directory (BJC_BENCH_DIR
  overrides it: its file system's cost per write is a large part of the result).
- `formats()`: the ways a durable result could be written, alone, in one thread, on
  the same file systems (docs/decisions/results-log.md): a new file renamed over the
  node's result per result (bjc before the results log), rewriting the node's file in
  place, one new file per batch, sqlite in WAL mode with a transaction per batch,
  and the results log (opened per batch, or held open), each with and without sync.

Run: `python -m benchmarks.bench_callbacks [rounds N] [profile] [formats]` (profile,
formats: only that). `python -m benchmarks.bench_callbacks wrk [rounds N] [fsync]
[asyncio]`: only the wrk runs of one server (uvloop unless `asyncio`; `fsync`:
`durability: fsync`), each with the load average when it started: for comparing
commits back to back. Any other argument prints this and exits 2; SIGTERM (e.g. from
`timeout`) stops the servers it started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import scaled
from benchmarks.processes import (
    NS,
    config_yaml,
    controller_process,
    free_port,
    ports,
    put_config_map,
    sim_process,
    stop,
    wait_ready,
)
from bjc.config.podspec import EXECUTION_LABEL
from bjc.kube.client import KubeClient
from bjc.kube.objects import Pod
from bjc.reports.resultlog import encode_record
from bjc.reports.store import ReportStore

HERE = Path(__file__).parent
NODES = scaled(1000, 20)
CONNECTIONS = scaled(50, 4)
WARMUP_S = scaled(3, 1)
WRK_SECONDS = scaled(10, 1)
STEADY_RATE = scaled(500, 20)
STEADY_SECONDS = scaled(10, 1)
ROUNDS = scaled(2, 1)  # wrk runs on uvloop (asyncio's loop gets one); the best counts, all are kept
PROFILE_SECONDS = scaled(10.0, 1.0)

PAYLOAD = json.dumps(
    {
        "check": [
            {"value": i * 1.5, "labels": {"kind": f"check-{i}", "mount": "/var"}} for i in range(10)
        ]
    }
).encode()


@dataclass
class Live:
    """A `bjc run` process with a running execution whose nodes may post results."""

    url: str  # the callback server
    eid: str
    pid: int
    body: Path


async def _first_execution(sim_url: str) -> str:
    """The execution ID of the first job pod the controller creates (watching pods)."""
    path = f"/api/v1/namespaces/{NS}/pods"
    async with KubeClient.from_url(sim_url) as kube:
        pods, rv = await kube.list(path, Pod)
        for pod in pods:
            if EXECUTION_LABEL in pod.metadata.labels:
                return pod.metadata.labels[EXECUTION_LABEL]
        async for ev in kube.watch(path, Pod, resource_version=rv):
            if ev.type == "ADDED" and EXECUTION_LABEL in ev.object.metadata.labels:
                return ev.object.metadata.labels[EXECUTION_LABEL]
    raise RuntimeError("the pod watch ended before a job pod appeared")


@contextlib.contextmanager
def live_controller(*, uvloop: bool, durability: str = "kill") -> Iterator[Live]:
    # job pods run for an hour: the execution stays live, its callbacks accepted
    with (
        sim_process(NODES, run_seconds=3600) as sim,
        tempfile.TemporaryDirectory(dir=os.environ.get("BJC_BENCH_DIR")) as tmp,
    ):
        placed = ports()
        text = config_yaml(
            reportDirectory=str(Path(tmp) / "reports"),
            runOnStartup=True,
            startupDelay="100ms",
            durability=durability,
            metrics={
                "port": free_port(),
                "prefix": "bench",
                "gauges": {"check": {"help": "check result", "labels": ["kind", "mount"]}},
            },
            **placed,
        )
        asyncio.run(put_config_map(sim, text))
        body = Path(tmp) / "result.json"
        body.write_bytes(PAYLOAD)
        proc = controller_process(sim, Path(tmp), uvloop=uvloop)
        try:
            asyncio.run(wait_ready(placed["healthProbePort"], proc))
            eid = asyncio.run(asyncio.wait_for(_first_execution(sim), 60))
            yield Live(f"http://127.0.0.1:{placed['callbackServicePort']}", eid, proc.pid, body)
        finally:
            stop(proc)


# ------------------------------------------------------------------------ wrk
def wrk_path() -> str | None:
    return shutil.which("wrk")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each thread of `pid`, summed by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[name] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return dict(out)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def wrk(live: Live, seconds: float) -> dict[str, float]:
    """One wrk run; requests/s and latency quantiles in ms."""
    wrk_bin = wrk_path()
    assert wrk_bin is not None
    load = os.getloadavg()[0]
    cpu_before = thread_cpu_s(live.pid)
    env = {
        **os.environ,
        "BJC_EID": live.eid,
        "BJC_NODES": str(NODES),
        "BJC_BODY": str(live.body),
    }
    command = [wrk_bin, "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--timeout", "10s"]
    command += ["-s", str(HERE / "callbacks.lua"), live.url]
    out = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^BJC-RESULT (.*)$", out, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    r = json.loads(match.group(1))
    cpu_after = thread_cpu_s(live.pid)
    # the server's CPU time per request, by thread (the loop's is "python")
    cpu_us = {
        name: round(1e6 * (cpu_after[name] - cpu_before.get(name, 0.0)) / max(r["requests"], 1))
        for name in cpu_after
    }
    total = sum(cpu_after.values()) - sum(cpu_before.values())
    return {
        "load": round(load, 2),
        "server_cpu_us_total": round(1e6 * total / max(r["requests"], 1)),
        "server_cpu_us_per_request": cpu_us,
        "server_rss_mb": _rss_mb(live.pid),
        "per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "requests": float(r["requests"]),
        "non_2xx": float(r["non_2xx"]),
        "socket_errors": float(r["socket_errors"]),
    }


# ------------------------------------------------------------------ open loop
def steady(live: Live, rate: float = STEADY_RATE, seconds: float = STEADY_SECONDS) -> dict:
    command = [sys.executable, "-m", "benchmarks.openloop", live.url, "--eid", live.eid]
    command += ["--nodes", str(NODES), "--rate", str(rate), "--duration", str(seconds)]
    command += ["--body", str(live.body)]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    ).stdout
    return dict(json.loads(out))


# -------------------------------------------------------------------- profile
def _py_spy() -> str | None:
    found = shutil.which("py-spy")
    beside = Path(sys.executable).parent / "py-spy"
    return found or (str(beside) if beside.exists() else None)


def summarize_profile(raw: str, top: int = 20) -> dict[str, Any]:
    """Self and total sample shares per function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r" \((.*/)?(site-packages/)?", " (", f) for f in stack.split(";")]
        samples += n
        if frames[0].startswith("thread ("):
            threads[frames[0]] += n
            frames = frames[1:]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / samples, 1)) for f, n in counter.most_common(top)]

    return {
        "samples": samples,
        "threads_pct": share(threads),
        "self_pct": share(own),
        "total_pct": share(total),
    }


def profile(seconds: float = PROFILE_SECONDS, *, uvloop: bool = True) -> dict[str, Any]:
    """py-spy samples the server (all threads, without pausing it) during a wrk run."""
    py_spy = _py_spy()
    if py_spy is None or wrk_path() is None:
        return {"skipped": "needs py-spy (pip install py-spy) and wrk (apt-get install wrk)"}
    with live_controller(uvloop=uvloop) as live, tempfile.TemporaryDirectory() as tmp:
        wrk(live, WARMUP_S)
        raw = Path(tmp) / "profile.txt"
        command = [py_spy, "record", "--pid", str(live.pid), "--duration", str(int(seconds))]
        command += ["--rate", "200", "--nonblocking", "--threads", "--format", "raw"]
        sampler = subprocess.Popen(
            [*command, "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        load = wrk(live, seconds)
        _, err = sampler.communicate(timeout=seconds + 30)
        if sampler.returncode != 0 or not raw.exists():
            return {"skipped": f"py-spy failed: {err.strip()[-300:]}"}
        return {"wrk": load, **summarize_profile(raw.read_text())}


# ------------------------------------------------------------------ the store
async def _store_writes(root: str, writers: int = CONNECTIONS, each: int = scaled(400, 5)) -> dict:
    store = ReportStore(root)
    eid = "202601010000"
    await store.create_execution(eid)

    async def writer(w: int) -> None:
        for i in range(each):
            await store.write_result(eid, f"node-{(w * each + i) % NODES + 1}", PAYLOAD)

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"per_s": round(writers * each / elapsed), "cpu_us": round(1e6 * cpu / (writers * each))}


def store_writes() -> dict[str, Any]:
    """ReportStore.write_result alone, in this process: 50 writers, 20,000 results,
    in the benchmark's report file system and on tmpfs.

    The part of a durable callback that is bjc's own (writer hand-off, name checks,
    temporary file and rename); on tmpfs its CPU per write is nearly all Python.
    """
    out = {}
    for where in (os.environ.get("BJC_BENCH_DIR") or tempfile.gettempdir(), "/dev/shm"):
        if os.path.isdir(where) and filesystem(where) not in out:
            with tempfile.TemporaryDirectory(dir=where) as root:
                out[filesystem(root)] = asyncio.run(_store_writes(root))
    return out


# -------------------------------------------------------------- write formats
FORMAT_RESULTS = scaled(20_000, 200)
FORMAT_BATCH = 10  # results per group commit (wrk at 50 connections: ~5-20)


def _per_result(directory: str, name: str, sync: bool, count: int) -> None:
    nodes = [f"node-{i % NODES}" for i in range(count)]
    batches = [nodes[i : i + FORMAT_BATCH] for i in range(0, len(nodes), FORMAT_BATCH)]
    if name == "rename":  # a temporary file renamed over <node>.json, per result
        for k, node in enumerate(nodes):
            tmp = os.path.join(directory, f".tmp-{k}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, PAYLOAD)
            if sync:
                os.fdatasync(fd)
            os.close(fd)
            os.replace(tmp, os.path.join(directory, f"{node}.json"))
    elif name == "in place":  # <node>.json truncated and rewritten (Go's way), per result
        for node in nodes:
            fd = os.open(
                os.path.join(directory, f"{node}.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            )
            os.write(fd, PAYLOAD)
            if sync:
                os.fdatasync(fd)
            os.close(fd)
    elif name == "file per batch":
        for k, batch in enumerate(batches):
            fd = os.open(
                os.path.join(directory, f"batch-{k}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL
            )
            os.write(fd, b"".join(encode_record(n, 0, PAYLOAD) for n in batch))
            if sync:
                os.fdatasync(fd)
            os.close(fd)
    elif name == "sqlite wal":
        db = sqlite3.connect(os.path.join(directory, "results.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        db.execute("CREATE TABLE r (node TEXT PRIMARY KEY, body BLOB)")
        for batch in batches:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO r VALUES (?, ?)", [(n, PAYLOAD) for n in batch])
            db.execute("COMMIT")
        db.close()
    elif name in ("log", "log, fd held open"):
        path = os.path.join(directory, "results.log")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        held = os.open(path, flags) if name != "log" else None
        for batch in batches:
            fd = held if held is not None else os.open(path, flags)
            os.fstatvfs(fd)  # as the store does (a full file system is refused)
            os.fstat(fd)
            os.write(fd, b"".join(encode_record(n, 0, PAYLOAD) for n in batch))
            if sync:
                os.fdatasync(fd)
            if held is None:
                os.close(fd)
        if held is not None:
            os.close(held)


FORMATS = ("rename", "in place", "file per batch", "sqlite wal", "log", "log, fd held open")


def formats() -> dict[str, Any]:
    """Microseconds (wall, CPU) per result of each way of writing results, per file
    system; `+sync`: the same with fdatasync (sqlite: synchronous=FULL) per write."""
    out: dict[str, Any] = {}
    for where in (os.environ.get("BJC_BENCH_DIR") or tempfile.gettempdir(), "/dev/shm"):
        if not os.path.isdir(where) or filesystem(where) in out:
            continue
        rows: dict[str, Any] = {}
        for name in FORMATS:
            for sync in (False, True):
                count = FORMAT_RESULTS // 10 if sync else FORMAT_RESULTS  # a sync is slow
                with tempfile.TemporaryDirectory(dir=where) as directory:
                    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    _per_result(directory, name, sync, count)
                    wall = time.perf_counter() - started
                    after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                rows[name + (" +sync" if sync else "")] = {
                    "wall_us": round(1e6 * wall / count, 1),
                    "cpu_us": round(1e6 * cpu / count, 1),
                }
        out[filesystem(where)] = rows
    return out


# ------------------------------------------------------------------------ run
def _measure(uvloop: bool, rounds: int, durability: str = "kill") -> dict[str, Any]:
    with live_controller(uvloop=uvloop, durability=durability) as live:
        out: dict[str, Any] = {}
        if wrk_path() is not None:
            wrk(live, WARMUP_S)
            runs = [wrk(live, WRK_SECONDS) for _ in range(rounds)]
            out["wrk_runs"] = runs
            out["wrk"] = max(runs, key=lambda r: r["per_s"])
        else:
            out["steady_warmup"] = steady(live, STEADY_RATE, WARMUP_S)
        out["steady"] = steady(live)
    return out


def wrk_only(rounds: int, *, uvloop: bool, durability: str) -> dict[str, Any]:
    """`rounds` wrk runs against one server, after a warm-up (no open loop, no profile)."""
    if wrk_path() is None:
        return {"skipped": "needs wrk (apt-get install wrk)"}
    with live_controller(uvloop=uvloop, durability=durability) as live:
        wrk(live, WARMUP_S)
        runs = [wrk(live, WRK_SECONDS) for _ in range(rounds)]
    where = os.environ.get("BJC_BENCH_DIR") or tempfile.gettempdir()
    return {"report_filesystem": filesystem(where), "wrk_runs": runs}


def filesystem(path: str) -> str:
    """The type of the file system `path` is on (from /proc/mounts), e.g. ext4, tmpfs."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount, fstype, *_ = line.split()
            if os.path.join(path, "").startswith(os.path.join(mount, "")) and len(mount) > len(
                best
            ):
                best, kind = mount, fstype
    return kind


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    """uvloop (`rounds` wrk runs) and asyncio's loop (one), then a profile."""
    if wrk_path() is None:
        print(
            "bench: wrk is not installed (apt-get install wrk): "
            "the 50-connection throughput rows are skipped",
            file=sys.stderr,
        )
    loops = {
        "uvloop": _measure(True, rounds),
        "asyncio": _measure(False, 1),
        "uvloop, durability fsync": _measure(True, 1, "fsync"),
    }
    where = os.environ.get("BJC_BENCH_DIR") or tempfile.gettempdir()
    detail: dict[str, Any] = {**loops, "report_filesystem": filesystem(where)}
    out: dict[str, Any] = {"callbacks": detail}
    if wrk_path() is not None:
        best = loops["uvloop"]["wrk"]
        out["callbacks_per_s"] = best["per_s"]
        out["callback_p99_ms"] = best["p99_ms"]
        out["callback_non_2xx"] = best["non_2xx"]
        spread = [r["per_s"] for r in loops["uvloop"]["wrk_runs"]]
        detail["uvloop_spread_per_s"] = [min(spread), max(spread)]
        if len(spread) > 1:
            detail["uvloop_stdev_per_s"] = round(statistics.stdev(spread), 1)
    out["callback_steady_p99_ms"] = loops["uvloop"]["steady"]["p99_ms"]
    out["store_writes"] = store_writes()
    out["write_formats"] = formats()
    profiled = profile()
    out["callback_profile"] = {k: v[:12] if isinstance(v, list) else v for k, v in profiled.items()}
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    words = {"rounds", "profile", "formats", "wrk", "fsync", "asyncio"}
    if any(a not in words and not a.isdigit() for a in args):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    # the servers are stopped by `finally` blocks: SIGTERM unwinds them like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rounds = int(args[args.index("rounds") + 1]) if "rounds" in args else ROUNDS
    started = time.perf_counter()
    if "formats" in args:
        result = formats()
    elif "wrk" in args:
        durability = "fsync" if "fsync" in args else "kill"
        result = wrk_only(rounds, uvloop="asyncio" not in args, durability=durability)
    else:
        result = profile() if "profile" in args else run(rounds)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
