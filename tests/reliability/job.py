"""The job pods' program in the reliability scenarios, and the records it leaves.

Each job pod reports one result through the callback Service, retrying on
connection errors, 5xx and 429 (honouring Retry-After) for a bounded time the way
a job script with `curl --retry` would, and records in
`<records>/<executionID>/<node>` one line `run` when it starts and one final
line: `ack` (the controller answered 200), `refused <code>` (any other 4xx,
final) or `gave-up` (retry budget spent). The
records are the ground truth of what was promised: every `ack` is a result the
controller must still have after any crash or failover, and two `run` lines mean
the node's job ran twice.

It runs in the harness process as the node agent's behaviour (not as a shell
`--job-command`): the harness must be able to SIGKILL a controller the instant a
200 arrives, and 200 concurrent jobs must not cost 200 shells on two cores. Each
request still travels its own TCP connection (no keep-alive), as a curl would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec

from bjc.sim import RunningPod

GAUGE = "checks"
LABELS = {"kind": "rel"}


def result_value(eid: str, node: str) -> float:
    """A value that differs per node and execution, so a stale or misfiled result shows."""
    return float(zlib.crc32(f"{eid}/{node}".encode()) % 100_000 + 1)


def result_body(eid: str, node: str) -> bytes:
    return msgspec.json.encode({GAUGE: [{"value": result_value(eid, node), "labels": LABELS}]})


@dataclass
class Record:
    """What one job pod did for one node in one execution."""

    eid: str
    node: str
    runs: int
    outcome: str  # "ack", "refused <code>", "gave-up" or "" (still running)

    @property
    def acked(self) -> bool:
        return self.outcome == "ack"


def read_records(root: Path) -> list[Record]:
    out = []
    if not root.is_dir():
        return out
    for eid_dir in sorted(root.iterdir()):
        for path in sorted(eid_dir.iterdir()):
            lines = path.read_text().splitlines()
            final = [line for line in lines if line != "run"]
            out.append(
                Record(eid_dir.name, path.name, lines.count("run"), final[-1] if final else "")
            )
    return out


class JobProgram:
    """Callable for `JobBehaviour(run=...)`; `on_ack(eid, node)` is called on every 200."""

    def __init__(
        self,
        records: Path,
        *,
        work: tuple[float, float] = (0.1, 0.5),
        retry_seconds: float = 90.0,
        seed: int = 0,
    ) -> None:
        self.records = records
        self.work = work
        self.retry_seconds = retry_seconds
        self.on_ack: Callable[[str, str], None] | None = None
        self.executions: set[str] = set()
        self.last_start = 0.0  # loop time a job of a new execution first started
        self.acks = 0
        self.changed = asyncio.Event()  # set (and replaced) whenever a job starts or ends
        self._rng = random.Random(seed)
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _record(self, eid: str, node: str, line: str) -> None:
        path = self.records / eid / node
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")
        self.changed.set()
        self.changed = asyncio.Event()

    async def __call__(self, pod: RunningPod) -> int:
        eid, node = pod.env["EXECUTION_ID"], pod.node
        if eid not in self.executions:
            self.executions.add(eid)
            self.last_start = asyncio.get_running_loop().time()
        self._record(eid, node, "run")
        await asyncio.sleep(self._rng.uniform(*self.work))
        outcome = await self._report(pod.env["CALLBACK_SERVICE_RESULT_URL"], eid, node)
        self._record(eid, node, outcome)
        if outcome == "ack":
            self.acks += 1
            if self.on_ack is not None:
                self.on_ack(eid, node)
            return 0
        return 1

    async def _report(self, url: str, eid: str, node: str) -> str:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                timeout=aiohttp.ClientTimeout(total=10),
            )
        body = result_body(eid, node)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        backoff = 0.05
        while True:
            wait = backoff
            try:
                async with self._http.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return "ack"
                    if resp.status < 500 and resp.status != 429:
                        return f"refused {resp.status}"
                    with contextlib.suppress(ValueError):  # a standby's 503, a 429
                        wait = float(resp.headers.get("Retry-After") or wait)
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() + wait > deadline:
                return "gave-up"
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 1.0)
