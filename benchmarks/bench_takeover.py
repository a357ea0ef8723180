"""Takeover time: from the leader's death (or SIGTERM) to the next leader dispatching again.

Two `bjc run` processes against one `bjc sim` process share a report directory
holding a history of EXECUTIONS executions x NODES nodes (written with bjc's own
Execution and ReportStore, a result file for every finished node), the newest one
unfinished with most of its nodes pending. Each controller runs "in" a pod of its
own ReplicaSet, so the job pods it creates carry that ReplicaSet as their owner:
that is how a job pod is attributed to the controller that created it.

1. `a` starts, loads the history, takes the Lease and resumes the newest execution
   (creating job pods); `b` starts and becomes a Ready standby (history pre-loaded:
   its /readyz answers 200; `standby_load_s` is how long that took).
2. `kill -9` of the leader; `kill_takeover_s` is the time until the first job pod
   created by the new leader appears in a pod watch (target: lease duration + 2 s).
3. A restarted `a` becomes the Ready standby; SIGTERM to the leader;
   `sigterm_takeover_s`, measured the same way (target: < 3 s). `*_lease_taken_s`:
   until the Lease showed the new holder (the rest is reload, resume and dispatch).

`bjc run`'s Lease timings are 15 s / 10 s / 2 s (duration / renew deadline / retry).
Run: `python -m benchmarks.bench_takeover [rounds N]`; `run()` returns the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec

import bjc.reports.execution
import bjc.reports.store
from benchmarks import scaled, smoke
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
from bjc.config.podspec import job_pod_name
from bjc.kube.client import KubeClient
from bjc.kube.objects import ObjectMeta, Pod
from bjc.reports.execution import Execution, JobStatus
from bjc.reports.store import ReportStore

# the history is kept here between runs (about 600 MB on disk)
CACHE = Path(os.environ.get("BJC_BENCH_CACHE", Path.home() / ".cache" / "bjc-bench"))
NODES = scaled(5000, 300)
EXECUTIONS = scaled(30, 3)
FINISHED_IN_NEWEST = scaled(1000, 50)  # the rest of the newest execution is pending
POD_SECONDS = 1.0  # how long a simulated job pod runs
POOL = 10
LEASE_DURATION_S = 15.0  # what `bjc run` uses
RETRY_S = 2.0
TARGET_KILL_S = LEASE_DURATION_S + 2.0
TARGET_SIGTERM_S = 3.0
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
BOUND_S = 120.0  # a hang bound for every wait, not an expectation

RESULT = msgspec.json.encode({"check": [{"value": 1.0, "labels": {"kind": "disk"}}]})


def _eid(k: int) -> str:
    return f"2026010100{k:02d}"


async def write_history(root: Path, nodes: list[str], executions: range) -> None:
    """Those of the EXECUTIONS executions as bjc leaves them; the newest unfinished."""
    store = ReportStore(root)
    for k in executions:
        eid = _eid(k)
        newest = k == EXECUTIONS - 1
        await store.create_execution(eid)
        execution = Execution.new(eid, nodes, store)
        finished = nodes[:FINISHED_IN_NEWEST] if newest else nodes
        await asyncio.gather(*(store.write_result(eid, n, RESULT) for n in finished))
        for node in finished:
            execution.pod_created(node, job_pod_name("bench", node, eid))
            execution.finish(node, JobStatus.SUCCEEDED)
            execution.result_received(node)
        if not newest:
            execution.close()
        execution.save_snapshot()
        await execution.flushed()


class _LeaseSpec(msgspec.Struct, rename="camel"):
    holder_identity: str = ""


class _Lease(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _LeaseSpec = msgspec.field(default_factory=_LeaseSpec)


class ClusterLog:
    """What this process saw happen, and when (monotonic): job pods ADDED, by owner
    uid, and the Lease changing hands, by holder identity."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, str]] = []  # (time, "pod:<owner uid>" | "lease:<holder>")
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        pods = self._watch(f"/api/v1/namespaces/{NS}/pods", Pod, self._pod)
        leases = self._watch(LEASES, _Lease, self._lease)
        await asyncio.gather(pods, leases)

    def _pod(self, kind: str, pod: Pod) -> str | None:
        refs = pod.metadata.owner_references
        if kind == "ADDED" and "-job-" in pod.metadata.name and refs:
            return f"pod:{refs[0].uid}"
        return None

    def _lease(self, kind: str, lease: _Lease) -> str | None:
        if kind == "DELETED" or lease.metadata.name != "bench-leader-election":
            return None
        return f"lease:{lease.spec.holder_identity}"

    async def _watch(self, path: str, type: Any, what: Callable[[str, Any], str | None]) -> None:
        async with KubeClient.from_url(self.url) as kube:
            _, rv = await kube.list(path, type)
            while True:
                async for ev in kube.watch(path, type, resource_version=rv):
                    rv = ev.object.metadata.resource_version or rv
                    event = what(ev.type, ev.object)
                    if event is not None:
                        self.seen.append((time.monotonic(), event))
                        async with self._changed:
                            self._changed.notify_all()

    async def first_after(self, since: float, event: str) -> float:
        """When `event` was first seen after monotonic time `since`."""

        def found() -> float | None:
            return next((t for t, e in self.seen if t > since and e == event), None)

        async with asyncio.timeout(BOUND_S), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        seen = found()
        assert seen is not None
        return seen


class Replica:
    """One `bjc run` process in pod `name` of ReplicaSet `rs-<name>` (owner uid `uid-<name>`)."""

    def __init__(self, url: str, workdir: Path, name: str, report_dir: Path) -> None:
        self.url, self.name = url, name
        self.uid = f"uid-{name}"
        self.workdir = workdir / name
        self.workdir.mkdir()
        self.placed = ports()
        self.config = config_yaml(
            reportDirectory=str(report_dir),
            reportHistory=EXECUTIONS,
            podPoolSize=POOL,
            metrics={
                "port": free_port(),
                "prefix": "bench",
                "gauges": {"check": {"help": "check result", "labels": ["kind"]}},
            },
            **self.placed,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = (self.workdir / "bjc.log").open("wb")

    async def start(self) -> float:
        """Start and wait until Ready; returns the seconds that took (the history load)."""
        await put_config_map(self.url, self.config, name=self.name)
        async with KubeClient.from_url(self.url) as kube:
            await kube.create(
                f"/api/v1/namespaces/{NS}/pods",
                {
                    "metadata": {
                        "name": self.name,
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": f"rs-{self.name}",
                                "uid": self.uid,
                                "controller": True,
                            }
                        ],
                    },
                    "spec": {"containers": [{"name": "bjc", "image": "bjc"}]},
                },
            )
        started = time.monotonic()
        self.proc = controller_process(
            self.url,
            self.workdir,
            config_map=self.name,
            hostname=self.name,
            log_level=os.environ.get("BJC_BENCH_LOG_LEVEL", "INFO"),
            stderr=self._log,
        )
        await wait_ready(self.placed["healthProbePort"], self.proc, BOUND_S)
        return time.monotonic() - started

    def signal(self, sig: int) -> float:
        """Send `sig`; returns the monotonic time it was sent."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(sig)
        return sent

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self._log.close()


async def _lease_holder(url: str) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/bench-leader-election"
    async with KubeClient.from_url(url) as kube:
        lease = await kube.get(path, dict)
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def _takeovers(url: str, workdir: Path, report_dir: Path, rounds: int) -> dict[str, Any]:
    seen = ClusterLog(url)
    watch = asyncio.create_task(seen.run())
    replicas: list[Replica] = []
    out: dict[str, list[float]] = {"standby_load_s": [], "kill_takeover_s": []}
    out.update(sigterm_takeover_s=[], kill_lease_taken_s=[], sigterm_lease_taken_s=[])
    out["sigterm_lease_released_s"] = []
    try:

        def replica() -> Replica:
            replicas.append(Replica(url, workdir, f"bjc-{len(replicas)}", report_dir))
            return replicas[-1]

        leader = replica()
        out["first_load_s"] = [await leader.start()]
        await seen.first_after(0.0, f"pod:{leader.uid}")  # it leads and dispatches
        for _ in range(rounds):
            for sig, key in [(signal.SIGKILL, "kill"), (signal.SIGTERM, "sigterm")]:
                standby = replica()
                out["standby_load_s"].append(await standby.start())
                # a steady standby: it has watched the leader renew a few times, and
                # the signal falls at a random point of their renew / retry cycles
                await asyncio.sleep(scaled(random.uniform(3 * RETRY_S, 4 * RETRY_S), 0.5))
                if await _lease_holder(url) != leader.name:
                    raise RuntimeError(f"{leader.name} does not hold the Lease")
                sent = leader.signal(sig)
                dispatched = await seen.first_after(sent, f"pod:{standby.uid}")
                leading = await seen.first_after(sent, f"lease:{standby.name}")
                out[f"{key}_lease_taken_s"].append(round(leading - sent, 3))
                if sig == signal.SIGTERM:
                    released = await seen.first_after(sent, "lease:")
                    out["sigterm_lease_released_s"].append(round(released - sent, 3))
                out[f"{key}_takeover_s"].append(round(dispatched - sent, 3))
                leader.close()
                leader = standby
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        for r in replicas:
            r.close()
    return out


def history(nodes: list[str], cache: Path) -> tuple[Path, float]:
    """The report directory to take over, and the seconds it took to (re)write.

    Writing 150,000 result files takes a minute or more on a busy disk, so the
    executions that no controller touches here (all but the newest) are kept
    between runs in `cache`, under a key of the code that writes and reads them
    (the modules themselves: one that moves fails here, not silently); the newest
    is written afresh every run.
    """
    source = b"".join(
        Path(module.__file__ or "").read_bytes()
        for module in (bjc.reports.execution, bjc.reports.store)
    )
    key = hashlib.sha256(source + f"{EXECUTIONS}x{NODES}".encode()).hexdigest()[:12]
    cached = cache / f"takeover-{key}"
    report_dir = cached / "reports"
    complete = cached / "complete"
    started = time.monotonic()
    if complete.exists():
        kept = {_eid(k) for k in range(EXECUTIONS - 1)} | {"latest"}
        for entry in report_dir.iterdir():  # the newest, and anything a run left
            if entry.name not in kept:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        asyncio.run(write_history(report_dir, nodes, range(EXECUTIONS - 1, EXECUTIONS)))
    else:
        for stale in cache.glob("takeover-*"):
            shutil.rmtree(stale)
        asyncio.run(write_history(report_dir, nodes, range(EXECUTIONS)))
        complete.touch()
    return report_dir, time.monotonic() - started


def run(rounds: int = 1) -> dict[str, Any]:
    nodes = [f"node-{i}" for i in range(1, NODES + 1)]
    with (
        tempfile.TemporaryDirectory(prefix="bjc-takeover-") as tmp,
        sim_process(NODES, run_seconds=POD_SECONDS) as url,
    ):
        # at smoke size nothing is kept: the cache of the full-size history stays
        report_dir, written = history(nodes, Path(tmp) / "cache" if smoke() else CACHE)
        times = asyncio.run(_takeovers(url, Path(tmp), report_dir, rounds))
        if os.environ.get("BJC_BENCH_KEEP_LOGS"):
            for log in Path(tmp).glob("*/bjc.log"):
                print(f"--- {log.parent.name}\n{log.read_text()}", file=sys.stderr)
    return {
        "takeover": {
            "history": f"{EXECUTIONS} executions x {NODES} nodes",
            "history_write_s": round(written, 1),
            "runs": times,
            "targets_s": {"kill": TARGET_KILL_S, "sigterm": TARGET_SIGTERM_S},
        },
        # the worst run counts against a target
        "takeover_kill_s": max(times["kill_takeover_s"]),
        "takeover_sigterm_s": max(times["sigterm_takeover_s"]),
        "standby_load_s": max(times["standby_load_s"]),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(run(int(args[args.index("rounds") + 1]) if "rounds" in args else 1), indent=2))
