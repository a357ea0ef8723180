"""One execution: its nodes, each node's job state, and how that state is persisted.

An execution is the unit the Go controller calls a "job run": an id (local time
`yyyyMMddHHmm`, or `yyyyMMddHHmmss` when the minute's id is taken), the nodes chosen
when it started, the ConfigMap trigger value that started it, and per node the job
pod's fate. The state machine here is pure: transitions return whether they happened,
so a node's job ends exactly once however many watch events, relists or timeouts
report it. Every change is written to the execution's report directory (atomic
rename, coalesced so a burst of changes costs one write) so that a restarted or
newly elected controller resumes where the last one stopped.

Each attempt of a node's job (`jobRetries`) has an identity of its own: its number
(0 for the first, N for the pod `...-retry<N>`), carried in its callback URLs, and
with `callbackAuth: token` a token of its own. `stale` says whether callbacks of an
attempt are still accepted (the fence against a pod the controller has given up
on), and `recorded` lets the dispatcher make a new attempt durable before its pod
exists, so whichever replica leads next knows which attempt is current.

Deliberately not here: Kubernetes calls, metrics, HTTP. The controller wires those.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import sys
import time
from collections.abc import Collection, Iterable
from typing import NamedTuple, Protocol

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

    @property
    def given_up(self) -> bool:
        """Ended without success: the controller takes no more callbacks of the attempt."""
        return self in (JobStatus.FAILED, JobStatus.ABORTED)


class Attempt(msgspec.Struct, omit_defaults=True):
    """An earlier attempt of a node's job that failed and was retried (`jobRetries`)."""

    pod: str = ""
    reason: str = ""
    created: float | None = None
    finished: float | None = None
    duration_ms: float | None = None
    token: str = ""  # its callback token (callbackAuth: token): a late callback is told 409


class Stale(NamedTuple):
    """Why callbacks of an attempt are refused: `kind` for the metric, `reason` for the job."""

    kind: str  # "retried", "given_up" or "not_started"
    reason: str


def attempt_name(attempt: int) -> str:
    """How the callback API's answers name an attempt: `the first attempt`, `retry N`."""
    return f"retry {attempt}" if attempt else "the first attempt"


def stale_attempt(node: str, attempt: int, current: int, given_up: str | None) -> Stale | None:
    """The fence: only the node's current attempt may call back, and only until the
    controller gives up on it (`given_up`: why, None while it has not)."""
    if attempt < current:
        why = (
            f"{attempt_name(attempt)} of node {node}'s job was retried; "
            f"{attempt_name(current)} is the current attempt"
        )
        return Stale("retried", why)
    if attempt > current:
        why = (
            f"{attempt_name(attempt)} of node {node}'s job was never started; "
            f"{attempt_name(current)} is the current attempt"
        )
        return Stale("not_started", why)
    if given_up is not None:
        return Stale("given_up", f"the controller gave up on node {node}'s job ({given_up})")
    return None


class NodeJob(msgspec.Struct, omit_defaults=True):
    """The job of one node in one execution (its current attempt, and the earlier ones)."""

    status: JobStatus = JobStatus.PENDING
    pod: str = ""
    token: str = ""  # the current attempt's callback token (callbackAuth: token)
    created: float | None = None  # epoch seconds, when bjc created the pod
    finished: float | None = None
    duration_ms: float | None = None
    result: bool = False  # a result callback arrived (in any attempt)
    reason: str = ""
    attempts: list[Attempt] = msgspec.field(default_factory=list)  # earlier, failed

    @property
    def attempt(self) -> int:
        """The number of the current attempt: 0, or N for the pod `...-retry<N>`."""
        return len(self.attempts)

    @property
    def error(self) -> bool:
        """As in the Go controller: an error unless the pod succeeded and a result arrived."""
        return self.status is not JobStatus.SUCCEEDED or not self.result


class ExecutionState(msgspec.Struct, omit_defaults=True):
    id: str
    started: float
    nodes: dict[str, NodeJob]
    finished: float | None = None
    failed: str = ""  # why the execution stopped early (maxFailures); "" when it did not
    # the ConfigMap trigger value that started it ("": the schedule, start-up, a test);
    # written with the first snapshot, before any job pod exists, so that whoever
    # leads next answers that value with this execution and never starts another
    trigger: str = ""

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def pods_started(self) -> int:
        """Job pods created (a job has its pod name once its pod exists)."""
        return sum(1 for j in self.nodes.values() if j.pod)

    def note_results(self, nodes: Collection[str]) -> None:
        """Mark the jobs of `nodes`, whose results are stored, as having reported.

        The results log and the files written from it are the record of a result:
        the callback API answers 200 only once the result is in the log, and nothing
        else is written for it. So a result acknowledged the instant before the
        process died is never lost.
        """
        for node in nodes:
            job = self.nodes.get(node)
            if job is not None:
                job.result = True


class TriggerOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a trigger did: the execution it started, or why it started none (one field set)."""

    execution_id: str = ""
    skipped: str = ""  # a policy (suspend, concurrencyPolicy Forbid) or no free execution id
    failed: str = ""  # its execution could not start (its report directory is not writable)
    replaced: bool = False  # a newer trigger replaced it before its execution started

    def __bool__(self) -> bool:
        return bool(self.execution_id)


class TriggerRecord(msgspec.Struct, omit_defaults=True):
    """The last ConfigMap trigger value decided, and its outcome (the report root's
    `.bjc-trigger.json`): what the next leader answers if this one could not."""

    value: str
    outcome: TriggerOutcome


def encode_trigger_record(record: TriggerRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_trigger_record(data: bytes) -> TriggerRecord:
    return msgspec.json.decode(data, type=TriggerRecord)


class JournalEntry(msgspec.Struct, omit_defaults=True):
    """One line of the journal: a node's new job state."""

    node: str = ""
    job: NodeJob | None = None
    result: bool = False  # written by 0.1.0 for late results; still read


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExecutionState)
_entry_decoder = msgspec.json.Decoder(JournalEntry)

# a journal longer than this many lines per node is folded into a new snapshot
_COMPACT_RATIO = 4


class StateFiles(Protocol):
    """Where an execution's state lives (the report store)."""

    async def write_state(self, execution_id: str, data: bytes) -> object:
        """Atomically replace the snapshot and drop the journal."""

    async def append_journal(self, execution_id: str, data: bytes) -> object: ...


def decode_state(snapshot: bytes, journal: bytes | None = None) -> ExecutionState:
    """The snapshot with the journal applied; a torn last line (crash) is ignored."""
    state = _decoder.decode(snapshot)
    for line in (journal or b"").splitlines():
        try:
            entry = _entry_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("execution %s: unreadable journal line skipped", state.id)
            continue
        if entry.node not in state.nodes:
            continue
        if entry.job is not None:
            state.nodes[entry.node] = entry.job
        if entry.result:
            state.nodes[entry.node].result = True
    # node names repeat across the whole history: share one string per node
    state.nodes = {sys.intern(n): j for n, j in state.nodes.items()}
    return state


class Execution:
    """A live execution: the state plus its persistence.

    A change is recorded as one journal line (appended off the event loop,
    coalesced per node while a write is in flight); the full snapshot is written
    with an atomic rename when the execution starts, when it ends and whenever
    the journal grows past a few lines per node. So a change costs O(1), not a
    rewrite of a 5,000-node document. A write that fails (a full or read-only
    report directory) drops nothing: the next change writes the whole snapshot.
    """

    def __init__(self, state: ExecutionState, files: StateFiles) -> None:
        self.state = state
        self._files = files
        self._dirty_nodes: dict[str, None] = {}
        self._snapshot_due = False
        self._journal_lines = 0
        self._unsaved = False  # the last flush failed (logged once until one succeeds)
        self._waiters: dict[str, asyncio.Event] = {}  # only for nodes someone waits on
        self._flush_task: asyncio.Task[None] | None = None  # at most one, draining what is due
        # for `recorded`: changes made, changes whose write has finished (or failed), and
        # the last change up to which everything is on disk
        self._changes = self._attempted = self._durable = 0
        self._wrote = asyncio.Event()  # set (and replaced) after every write
        self.finished_jobs = sum(1 for j in state.nodes.values() if j.status.terminal)
        self.failed_jobs = sum(1 for j in state.nodes.values() if j.status is JobStatus.FAILED)
        # set by whoever dispatches: retries per node (jobRetries), failures that stop
        # the execution (maxFailures resolved to a count; None: no limit)
        self.job_retries = 0
        self.max_failures: int | None = None

    @classmethod
    def new(
        cls,
        execution_id: str,
        nodes: Iterable[str],
        files: StateFiles,
        *,
        tokens: bool = False,
        trigger: str = "",
        save: bool = True,
    ) -> Execution:
        """A new execution; `save`: its first snapshot is written in the background
        (else the caller awaits `write_snapshot`)."""
        jobs = {
            sys.intern(n): NodeJob(token=secrets.token_urlsafe(16) if tokens else "") for n in nodes
        }
        state = ExecutionState(id=execution_id, started=time.time(), nodes=jobs, trigger=trigger)
        execution = cls(state, files)
        if save:
            execution.save_snapshot()
        return execution

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def nodes(self) -> dict[str, NodeJob]:
        return self.state.nodes

    def counts(self) -> tuple[int, int]:
        """(finished, total) jobs."""
        return self.finished_jobs, len(self.state.nodes)

    # --- transitions -------------------------------------------------------
    def pod_created(self, node: str, pod: str, attempt: int = 0) -> bool:
        """The pod of the node's `attempt` exists; False if that attempt is not pending."""
        job = self.state.nodes[node]
        if job.status is not JobStatus.PENDING or len(job.attempts) != attempt:
            return False
        job.status, job.pod, job.created = JobStatus.CREATED, pod, time.time()
        self.changed(node)
        return True

    def finish(
        self, node: str, status: JobStatus, reason: str = "", created: float | None = None
    ) -> bool:
        """End a node's job; False when it had already ended (exactly once)."""
        job = self.state.nodes.get(node)
        if job is None or job.status.terminal:
            return False
        now = time.time()
        start = job.created if job.created is not None else created
        job.status, job.reason, job.finished = status, reason, now
        if start is not None and status is not JobStatus.ABORTED:
            job.duration_ms = round((now - start) * 1000.0, 3)
        waiter = self._waiters.pop(node, None)
        if waiter is not None:
            waiter.set()
        self.finished_jobs += 1
        self.failed_jobs += status is JobStatus.FAILED
        self.changed(node)
        return True

    @property
    def halted(self) -> bool:
        """Stopped early: no new pods, no retries."""
        return bool(self.state.failed)

    def halt(self, reason: str) -> bool:
        """Mark the execution failed for `reason`; False if it already was."""
        if self.state.failed:
            return False
        self.state.failed = reason
        self.save_snapshot()
        return True

    def may_retry(self, node: str) -> bool:
        """A failure of the node's current attempt would be retried."""
        job = self.state.nodes.get(node)
        return (
            job is not None
            and not job.status.terminal
            and not self.halted
            and len(job.attempts) < self.job_retries
        )

    def retry(self, node: str, reason: str, created: float | None = None) -> bool:
        """Record the current attempt as failed and make the node pending again.

        Its result (of any attempt) is kept; the next attempt gets a new token (with
        tokens). Wakes whoever waits for the attempt. The new attempt is current from
        now on: callbacks of the earlier one are refused (`stale`).
        """
        job = self.state.nodes.get(node)
        if job is None or job.status.terminal:
            return False
        now = time.time()
        start = job.created if job.created is not None else created
        duration = None if start is None else round((now - start) * 1000.0, 3)
        job.attempts.append(Attempt(job.pod, reason, start, now, duration, job.token))
        job.status, job.pod, job.created, job.reason = JobStatus.PENDING, "", None, ""
        if job.token:  # each attempt calls back with its own token
            job.token = secrets.token_urlsafe(16)
        waiter = self._waiters.pop(node, None)
        if waiter is not None:
            waiter.set()
        self.changed(node)
        return True

    def result_received(self, node: str) -> bool:
        """Note a result in memory. The results log is the durable record (note_results)."""
        job = self.state.nodes.get(node)
        if job is None or job.result:
            return False
        job.result = True
        return True

    def abort(self, reason: str) -> list[str]:
        """Close an unfinished execution (concurrencyPolicy Replace)."""
        aborted = [n for n in self.state.nodes if self.finish(n, JobStatus.ABORTED, reason)]
        self.close()
        return aborted

    def close(self) -> None:
        if self.state.finished is None:
            self.state.finished = time.time()
            self.save_snapshot()

    async def wait_finished(self, node: str, attempt: int | None = None) -> None:
        """Until the node's job finished, or its `attempt` (default: the current one) failed
        and is to be retried."""
        job = self.state.nodes[node]
        attempt = len(job.attempts) if attempt is None else attempt
        while not job.status.terminal and len(job.attempts) == attempt:
            await self._waiters.setdefault(node, asyncio.Event()).wait()

    # --- what callbacks ask (shared with RetiredExecution) -----------------
    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def pods_started(self) -> int:
        return self.state.pods_started

    @property
    def started(self) -> float:
        return self.state.started

    @property
    def trigger(self) -> str:
        return self.state.trigger

    def has_node(self, node: str) -> bool:
        return node in self.state.nodes

    def token_of(self, node: str, attempt: int | None = None) -> str:
        """The token of the node's `attempt` (default: the current one); "" if none."""
        job = self.state.nodes[node]
        if attempt is None or attempt == job.attempt:
            return job.token
        return job.attempts[attempt].token if 0 <= attempt < job.attempt else ""

    def stale(self, node: str, attempt: int) -> Stale | None:
        """Why callbacks of the node's `attempt` are refused now; None: accepted."""
        job = self.state.nodes[node]
        given_up = f"{job.status}: {job.reason}" if job.status.given_up else None
        return stale_attempt(node, attempt, job.attempt, given_up)

    def retire(self, same_nodes: RetiredExecution | None = None) -> RetiredExecution:
        """The slim form kept for the history once the execution is done."""
        return RetiredExecution(self.state, same_nodes)

    # --- persistence -------------------------------------------------------
    def changed(self, node: str) -> None:
        self._dirty_nodes[node] = None
        self._changes += 1
        self._schedule_flush()

    def save_snapshot(self) -> None:
        self._snapshot_due = True
        self._changes += 1
        self._schedule_flush()

    async def recorded(self) -> None:
        """Until every change made so far is on disk: a decision (a new attempt) is
        durable before its effect (the attempt's pod) starts.

        A write that fails (a full or read-only report directory) is tried again as a
        full snapshot, waiting from 0.5 s doubling to 30 s: the effect waits until
        the state can be written.
        """
        target, delay = self._changes, 0.5
        while self._durable < target:
            if self._attempted >= target:  # the write holding the change failed
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self.save_snapshot()
                target = self._changes
                continue
            await self._wrote.wait()

    async def write_snapshot(self) -> None:
        """Write the whole state now and wait for it; raises OSError if it cannot be written.

        The first snapshot of a new execution goes this way: it is the decision to run
        (with the trigger value), durable before any job pod exists.
        """
        assert self._flush_task is None or self._flush_task.done(), "a flush is under way"
        self._snapshot_due, self._dirty_nodes, self._journal_lines = False, {}, 0
        upto = self._changes
        await self._files.write_state(self.id, _encoder.encode(self.state))
        self._durable = self._attempted = upto

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def flushed(self) -> None:
        """Wait until every change so far is on disk (shutdown, tests)."""
        while self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)

    async def _flush(self) -> None:
        while self._snapshot_due or self._dirty_nodes:
            if self._journal_lines > _COMPACT_RATIO * max(len(self.state.nodes), 1):
                self._snapshot_due = True
            upto, gapless = self._changes, self._durable == self._attempted
            try:
                if self._snapshot_due:
                    self._snapshot_due, self._dirty_nodes = False, {}
                    self._journal_lines = 0
                    await self._files.write_state(self.id, _encoder.encode(self.state))
                    self._durable = upto  # the whole state
                else:
                    nodes, self._dirty_nodes = self._dirty_nodes, {}
                    lines = b"".join(
                        _encoder.encode(JournalEntry(node=n, job=self.state.nodes[n])) + b"\n"
                        for n in nodes
                    )
                    self._journal_lines += len(nodes)
                    await self._files.append_journal(self.id, lines)
                    if gapless:  # else a change before these lines is still lost
                        self._durable = upto
            except OSError as e:  # NotLeading too: the process is on its way out
                # nothing is dropped: the next change writes the whole state again
                self._snapshot_due = True
                if not self._unsaved:  # once until a flush succeeds, not per change
                    log.error("cannot persist execution %s: %s", self.id, e)
                self._unsaved = True
                return
            finally:
                self._attempted = upto
                self._wrote.set()
                self._wrote = asyncio.Event()
        self._unsaved = False


class RetiredExecution:
    """A finished execution of the history, as small as callbacks allow.

    Callbacks for it are still accepted (until it is pruned) and its metrics stay
    exposed, but its per-node job states live only on disk: 30 executions of 5,000
    nodes would otherwise hold 150,000 job objects. What remains is the node set
    (shared with the previous execution when equal, as it usually is), the tokens
    when callbackAuth needs them, and what the attempt fence needs: the earlier
    attempts' tokens of retried nodes and the nodes whose job did not succeed (both
    sparse, or shared with the node set). A late result needs no state write: the
    results log is the record.
    """

    def __init__(
        self,
        state: ExecutionState,
        same_nodes: RetiredExecution | None = None,
    ) -> None:
        self.id = state.id
        self.nodes: frozenset[str]
        nodes: frozenset[str] = frozenset(state.nodes)
        if same_nodes is not None and same_nodes.nodes == nodes:
            nodes = same_nodes.nodes
        self.nodes = nodes
        self.tokens = {n: j.token for n, j in state.nodes.items() if j.token} or None
        # retried nodes: the tokens of their earlier attempts ("" each without tokens)
        self.earlier = {
            n: tuple(a.token for a in j.attempts) for n, j in state.nodes.items() if j.attempts
        } or None
        given_up = frozenset(n for n, j in state.nodes.items() if j.status.given_up)
        self.given_up = nodes if given_up == nodes else given_up or None
        self.pods_started = state.pods_started
        self.started = state.started
        self.trigger = state.trigger

    done = True

    def has_node(self, node: str) -> bool:
        return node in self.nodes

    def _attempt(self, node: str) -> int:
        return len((self.earlier or {}).get(node, ()))

    def token_of(self, node: str, attempt: int | None = None) -> str:
        current = self._attempt(node)
        if attempt is None or attempt == current:
            return (self.tokens or {}).get(node, "")
        return (self.earlier or {})[node][attempt] if 0 <= attempt < current else ""

    def stale(self, node: str, attempt: int) -> Stale | None:
        given_up = "it ended without success" if node in (self.given_up or ()) else None
        return stale_attempt(node, attempt, self._attempt(node), given_up)

    def result_received(self, node: str) -> bool:
        return node in self.nodes

    async def flushed(self) -> None:
        """Nothing is ever pending."""
