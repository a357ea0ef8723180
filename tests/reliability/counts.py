"""Settling a scenario's cluster and counting what it lost: one row of the table.

Settling: faults off, every node cordoned (executions from then on have no job
pods), then wait until a live replica leads, no job pod is pending or running,
and the leader's /metrics show every execution that ran jobs as finished.

Counting, from the outside only:
- acknowledged: `ack` records (the job got a 200);
- lost: acknowledged, yet the result file is missing or differs, or the leader's
  /metrics have `<prefix>_processing` ≠ 0 (counted as an error) or no
  `<prefix>_checks` series with the value sent;
- pods created twice: pod names the sim's commit log shows created more than once;
- nodes run twice: records with more than one `run` line;
- leaked fds: for each live replica, descriptors other than its API connections
  now minus at its first probe answer (smallest of three samples, so a connection
  closing at that instant is not counted). Listening sockets, the event loop's
  own and stdio are all there at the first answer; callback, scrape and probe
  connections are closed by then; API connections are a pool (see procfs). So the
  tolerance is 0. A leaked task that holds no descriptor shows only as memory:
  RSS growth (now minus at the first answer) is reported, not judged, because
  Python's allocator keeps freed memory and the metrics legitimately grow with
  every result;
- peak RSS: the highest VmHWM of any replica, read before every kill and at the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from . import procfs
from .cluster import PREFIX, Cluster, ControllerPod, Stalled
from .job import GAUGE, read_records, result_body, result_value

METRICS_POLL = 0.5  # seconds between scrapes while waiting for executions to finish


@dataclass
class Row:
    scenario: str
    faults: str
    runs: int = 0
    acknowledged: int = 0
    not_acked: int = 0
    lost: int = 0
    pods_twice: int = 0
    runs_twice: int = 0
    leaked_fds: int = 0
    rss_growth_mb: float = 0.0
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.acknowledged > 0
            and self.lost == 0
            and self.pods_twice == 0
            and self.runs_twice == 0
            and self.leaked_fds == 0
            and not self.notes
        )


Samples = dict[tuple[str, str, str], float]  # (metric, node, executionID) → value


async def scrape(http: aiohttp.ClientSession, pod: ControllerPod) -> Samples:
    async with http.get(pod.url("metrics", "/metrics")) as r:
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("node", ""), s.labels.get("executionID", ""))] = s.value
    return out


def unfinished(samples: Samples, executions: set[str]) -> list[str]:
    return sorted(
        eid
        for eid in executions
        if (n := samples.get(("bjc_execution_nodes", "", eid))) is None
        or samples.get(("bjc_execution_finished_nodes", "", eid)) != n
    )


async def settle(cluster: Cluster, http: aiohttp.ClientSession, row: Row) -> Samples:
    """Bring the cluster to rest; the leader's metrics at the end (empty if none)."""
    cluster.sim.faults.clear()
    await cluster.cordon()
    try:
        leader = await cluster.wait_leader()
        budget = cluster.program.retry_seconds + 30
        await cluster.until(lambda: not cluster.job_pods_busy(), budget, "job pods to finish")
    except Stalled as e:
        row.notes.append(f"did not settle: {e}")
        leader = cluster.leader()
        if leader is None:
            return {}
    samples: Samples = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:  # a process shows its state only when asked: poll, bounded
        try:
            samples = await scrape(http, leader)
            unfinished_ids = unfinished(samples, cluster.program.executions)
            if not unfinished_ids:
                return samples
            problem = f"executions never finished: {', '.join(unfinished_ids[:5])}"
        except aiohttp.ClientError as e:  # e.g. restarted a moment ago, not listening yet
            problem = f"leader {leader.name} not scrapable: {e}"
        if loop.time() > deadline:
            row.notes.append(problem)
            return samples
        await asyncio.sleep(METRICS_POLL)


def _lost_because(cluster: Cluster, samples: Samples, eid: str, node: str) -> str:
    path = cluster.reports / eid / f"{node}.json"
    if not path.is_file():
        return "no result file"
    if path.read_bytes() != result_body(eid, node):
        return "result file differs"
    processing = samples.get((f"{PREFIX}_processing", node, eid))
    if processing != 0:
        return f"processing={processing}"
    if samples.get((f"{PREFIX}_{GAUGE}", node, eid)) != result_value(eid, node):
        return "no result series"
    return ""


async def _leaks(pod: ControllerPod) -> tuple[int, float]:
    """(leaked descriptors, RSS growth in MB) of a live replica since its first answer."""
    if pod.baseline is None or pod.proc is None:
        return 0, 0.0
    base_fds, base_rss = pod.baseline
    samples = []
    for _ in range(3):
        fds = pod.descriptors()
        if fds is not None:
            samples.append(fds.other)
        await asyncio.sleep(0.2)
    leaked = max(0, min(samples, default=base_fds.other) - base_fds.other)
    return leaked, (procfs.rss_kb(pod.proc.pid) - base_rss) / 1024


async def count(cluster: Cluster, row: Row, started: float) -> Row:
    """Settle, then fill `row` with the counts (see the module docstring)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        samples = await settle(cluster, http, row)
    records = read_records(cluster.program.records)
    row.runs = len({r.eid for r in records})
    acked = [r for r in records if r.acked]
    row.acknowledged = len(acked)
    row.not_acked = len(records) - len(acked)
    lost = [(r, why) for r in acked if (why := _lost_because(cluster, samples, r.eid, r.node))]
    row.lost = len(lost)
    for r, why in lost[:3]:
        row.notes.append(f"lost {r.eid}/{r.node}: {why}")
    row.pods_twice = sum(1 for n in cluster.pod_creates.values() if n > 1)
    row.runs_twice = sum(1 for r in records if r.runs > 1)
    for pod in cluster.live():
        leaked, growth = await _leaks(pod)
        row.leaked_fds += leaked
        row.rss_growth_mb = max(row.rss_growth_mb, growth)
    for pod in cluster.pods:
        pod.note_memory()
    row.peak_rss_mb = max(p.peak_rss_kb for p in cluster.pods) / 1024 if cluster.pods else 0.0
    row.seconds = time.monotonic() - started
    return row
