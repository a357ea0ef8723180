"""One execution: its nodes, each node's job state, and how that state is persisted.

An execution is the unit the Go controller calls a "job run": an id (local time
`yyyyMMddHHmm`), the nodes chosen when it started, and per node the job pod's
fate. The state machine here is pure: transitions return whether they happened,
so a node's job ends exactly once however many watch events, relists or timeouts
report it. Every change is written to the execution's report directory (atomic
rename, coalesced so a burst of changes costs one write) so that a restarted or
newly elected controller resumes where the last one stopped (SPEC B).

Deliberately not here: Kubernetes calls, metrics, HTTP. The controller wires those.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # not dispatched yet
    CREATED = "created"  # pod created, not finished
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"  # execution replaced before this node finished

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ABORTED)


class NodeJob(msgspec.Struct, omit_defaults=True):
    """The job of one node in one execution."""

    status: JobStatus = JobStatus.PENDING
    pod: str = ""
    token: str = ""
    created: float | None = None  # epoch seconds, when bjc created the pod
    finished: float | None = None
    duration_ms: float | None = None
    result: bool = False  # a result callback arrived
    reason: str = ""

    @property
    def error(self) -> bool:
        """SPEC A4.6: an error unless the pod succeeded and a result arrived."""
        return self.status is not JobStatus.SUCCEEDED or not self.result


class ExecutionState(msgspec.Struct, omit_defaults=True):
    id: str
    started: float
    nodes: dict[str, NodeJob]
    finished: float | None = None
    pods_started: int = 0

    @property
    def done(self) -> bool:
        return self.finished is not None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionState)


def decode_state(data: bytes) -> ExecutionState:
    state = _decoder.decode(data)
    # node names repeat across the whole history: share one string per node
    state.nodes = {sys.intern(n): j for n, j in state.nodes.items()}
    return state


class Execution:
    """A live execution: the state plus coalesced persistence."""

    def __init__(
        self,
        state: ExecutionState,
        save: Callable[[str, bytes], Awaitable[None]],
    ) -> None:
        self.state = state
        self._save = save
        self._dirty = False
        self._flush_task: asyncio.Task[None] | None = None
        self._finished = {n: asyncio.Event() for n, j in state.nodes.items()}
        for node, job in state.nodes.items():
            if job.status.terminal:
                self._finished[node].set()

    @classmethod
    def new(
        cls,
        execution_id: str,
        nodes: Iterable[str],
        save: Callable[[str, bytes], Awaitable[None]],
        *,
        tokens: bool = False,
    ) -> Execution:
        jobs = {
            sys.intern(n): NodeJob(token=secrets.token_urlsafe(16) if tokens else "")
            for n in nodes
        }
        return cls(ExecutionState(id=execution_id, started=time.time(), nodes=jobs), save)

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def nodes(self) -> dict[str, NodeJob]:
        return self.state.nodes

    def counts(self) -> tuple[int, int]:
        """(finished, total) jobs."""
        total = len(self.state.nodes)
        return sum(1 for j in self.state.nodes.values() if j.status.terminal), total

    # --- transitions -------------------------------------------------------
    def pod_created(self, node: str, pod: str) -> bool:
        job = self.state.nodes[node]
        if job.status is not JobStatus.PENDING:
            return False
        job.status, job.pod, job.created = JobStatus.CREATED, pod, time.time()
        self.state.pods_started += 1
        self.changed()
        return True

    def finish(
        self, node: str, status: JobStatus, reason: str = "", created: float | None = None
    ) -> bool:
        """End a node's job; False when it had already ended (exactly once)."""
        job = self.state.nodes.get(node)
        if job is None or job.status.terminal:
            return False
        now = time.time()
        start = created if created is not None else job.created
        job.status, job.reason, job.finished = status, reason, now
        if start is not None and status is not JobStatus.ABORTED:
            job.duration_ms = round((now - start) * 1000.0, 3)
        self._finished[node].set()
        self.changed()
        return True

    def result_received(self, node: str) -> bool:
        job = self.state.nodes.get(node)
        if job is None or job.result:
            return False
        job.result = True
        self.changed()
        return True

    def abort(self, reason: str) -> list[str]:
        """Close an unfinished execution (concurrencyPolicy Replace)."""
        aborted = [
            n for n in self.state.nodes if self.finish(n, JobStatus.ABORTED, reason)
        ]
        self.close()
        return aborted

    def close(self) -> None:
        if self.state.finished is None:
            self.state.finished = time.time()
            self.changed()

    async def wait_finished(self, node: str) -> None:
        await self._finished[node].wait()

    # --- persistence -------------------------------------------------------
    def changed(self) -> None:
        self._dirty = True
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self._save(self.id, _encoder.encode(self.state))
            except OSError:
                log.exception("cannot persist execution %s", self.id)

    async def flushed(self) -> None:
        """Wait until every change so far is on disk (shutdown, tests)."""
        while self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)
