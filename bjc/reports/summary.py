"""Execution summaries: what an operator asks first, computed from the report directory.

"Did last night's run finish, which nodes failed, and why" is answered by three
things the controller already writes into each execution directory: its state
(snapshot + journal: each node's job status, reason, pod and times), the result
files (`<node>.json`: whether a result arrived, and its values) and the other files
(uploads, pod logs). This module reads them and nothing else, so a standby replica
(same shared volume) shows the same summary as the leader.

- `read_execution(directory)` -> `ExecutionSummary`: counts, timing and one
  `NodeSummary` per node (display status, duration, result, key result values,
  files and logs). Pure and blocking: run it in a thread.
- `SummaryCache`: the async, cached access the file server and `bjc status` use.
  A summary is recomputed only when the execution's signature (mtime and size of
  the directory, state and journal; see `ReportStore.signature`) changes. The index
  keeps only each execution's overview (counts), so a request for it costs one
  stat per execution once they have been read.

The display status is derived from the job state, never stored: `timed_out` is a
failure whose reason says the job ran past `jobTimeout` (bjc's own timeout, or the
kubelet's `DeadlineExceeded` for `activeDeadlineSeconds`), `running` a job whose pod
exists and has not finished, and `unknown` a node known only by its result file (an
execution directory without bjc state: the Go controller's, or DEV_MODE).

Never exposed: the callback tokens in the state file. A `NodeSummary` is built
field by field from the job state, so nothing is copied over by accident.

Deliberately not here: HTTP and HTML (bjc.web.summary), terminal output
(bjc.commands.status), and any write to the report directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bjc.reports import changes as _changes
from bjc.reports import resultlog
from bjc.reports.changes import Changes, Verdicts
from bjc.reports.execution import ExecutionState, JobStatus, NodeJob, decode_state
from bjc.reports.results import result_decoder
from bjc.reports.store import JOURNAL_FILE, LATEST, STATE_FILE, ReportStore, is_execution_id

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
ABORTED = "aborted"
RUNNING = "running"
PENDING = "pending"
UNKNOWN = "unknown"
# Display order: what needs attention first.
STATUSES = (FAILED, TIMED_OUT, ABORTED, UNKNOWN, RUNNING, PENDING, SUCCEEDED)
_RANK = {s: i for i, s in enumerate(STATUSES)}

TIMEOUT_REASONS = ("job did not finish within jobTimeout", "DeadlineExceeded")

# Cost bounds: what one node can make a summary carry.
MAX_VALUES = 10  # result values shown per node; the rest is counted
MAX_FILES = 20  # uploaded files listed per node; the rest is counted
MAX_RESULT_BYTES = 64 * 1024  # larger result files are linked, not parsed
_TAIL_BYTES = 2048  # read from the end of a failed node's pod log
MAX_TAIL_CHARS = 200

_LOG_PREFIX = "container-"
_LOG_SUFFIX = ".log"


class ResultValue(msgspec.Struct):
    """One entry of a result: `<name>{labels} value`."""

    name: str
    value: float
    labels: dict[str, str] = {}


class NodeSummary(msgspec.Struct, omit_defaults=True):
    node: str
    status: str
    error: bool  # finished, and not succeeded or no result (`<prefix>_processing` = 1)
    result: bool  # a result arrived
    reason: str = ""
    pod: str = ""
    created: datetime | None = None  # when bjc created the job pod
    finished: datetime | None = None
    duration_ms: float | None = None
    result_bytes: int | None = None  # size of `<node>.json`
    values: list[ResultValue] = []
    more_values: int = 0  # values not listed (MAX_VALUES); large results are not parsed
    files: list[str] = []  # uploads, as file names in the execution directory
    more_files: int = 0
    logs: list[str] = []  # pod logs, `<node>-container-<container>.log`
    log_tail: str = ""  # of a node with an error: the last line its pod logged


class Counts(msgspec.Struct):
    nodes: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    aborted: int = 0
    running: int = 0
    pending: int = 0
    unknown: int = 0
    results: int = 0  # nodes whose result arrived
    errors: int = 0  # nodes with `error`

    @property
    def finished(self) -> int:
        return self.nodes - self.running - self.pending

    def add(self, node: NodeSummary) -> None:
        self.nodes += 1
        setattr(self, node.status, getattr(self, node.status) + 1)
        self.results += node.result
        self.errors += node.error


class Durations(msgspec.Struct):
    """Job pod run times of the finished nodes, in milliseconds."""

    median_ms: float
    p95_ms: float
    max_ms: float
    slowest: str  # the node that took `max_ms`


class ExecutionOverview(msgspec.Struct, kw_only=True):
    """What the index shows of an execution."""

    id: str
    state: str  # running | finished | unknown (no bjc state in the directory)
    started: datetime | None = None
    finished: datetime | None = None
    duration_s: float | None = None  # finished - started
    counts: Counts


class ExecutionSummary(ExecutionOverview, kw_only=True):
    # against the previous finished execution (see bjc.reports.changes); None: no bjc state
    changes: Changes | None = None
    durations: Durations | None = None
    nodes: list[NodeSummary] = []  # errors first (see STATUSES), then by node name

    def overview(self) -> ExecutionOverview:
        return ExecutionOverview(
            id=self.id,
            state=self.state,
            started=self.started,
            finished=self.finished,
            duration_s=self.duration_s,
            counts=self.counts,
        )


class SummaryIndex(msgspec.Struct):
    latest: str | None
    executions: list[ExecutionOverview]  # newest first


def display_status(job: NodeJob) -> str:
    if job.status is JobStatus.FAILED and job.reason.startswith(TIMEOUT_REASONS):
        return TIMED_OUT
    if job.status is JobStatus.CREATED:
        return RUNNING
    return str(job.status)


def problem(node: NodeSummary) -> str:
    """Why a node counts as an error, in a few words ("" when it does not)."""
    if not node.error:
        return ""
    if node.reason:
        return node.reason
    if node.status == SUCCEEDED:
        return _changes.NO_RESULT
    return _changes.POD_FAILED if node.status == FAILED else node.status.replace("_", " ")


def short_duration(seconds: float) -> str:
    """`850 ms`, `4.2s`, `3m05s`, `2h07m`: what a person reads at a glance."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


class _Files:
    """The files of one execution directory, grouped by the node that owns them."""

    def __init__(self, directory: Path, nodes: set[str] | None) -> None:
        """Regular files only (no links, no hidden state); `nodes=None`: results decide."""
        with os.scandir(directory) as entries:
            files = {
                e.name: e
                for e in entries
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            }
        # results not yet written as files (the store's results log): newer than a file
        self.logged = resultlog.read(str(directory / resultlog.RESULTS_LOG))
        if nodes is None:  # no bjc state: every `<x>.json` is the result of node x
            nodes = {name[:-5] for name in files if name.endswith(".json")} | set(self.logged)
        self.nodes = nodes
        self.results: dict[str, int] = {}  # node -> size of its result file
        self.uploads: dict[str, list[str]] = collections.defaultdict(list)
        self.logs: dict[str, list[str]] = collections.defaultdict(list)
        for name in sorted(files):
            if name.endswith(".json") and name[:-5] in nodes:
                with contextlib.suppress(FileNotFoundError):  # replaced meanwhile
                    self.results[name[:-5]] = files[name].stat(follow_symlinks=False).st_size
                continue
            node = self._owner(name)
            if node is None:
                continue  # not a node's file (one the Go controller or a person left)
            rest = name[len(node) + 1 :]
            if rest.startswith(_LOG_PREFIX) and rest.endswith(_LOG_SUFFIX):
                self.logs[node].append(name)
            else:
                self.uploads[node].append(name)
        self.results.update((n, len(body)) for n, body in self.logged.items() if n in nodes)

    def _owner(self, name: str) -> str | None:
        """The longest node name that `name` starts with, followed by `-`."""
        end = len(name)
        while (end := name.rfind("-", 0, end)) > 0:
            if name[:end] in self.nodes:
                return name[:end]
        return None


def _values(path: Path, size: int, logged: bytes | None = None) -> tuple[list[ResultValue], int]:
    """The first MAX_VALUES values of a result file and how many more it has.

    A file larger than MAX_RESULT_BYTES, or one that is not a bjc result (it is saved
    verbatim), gives no values: it is linked, not summarized.
    """
    if size > MAX_RESULT_BYTES:
        return [], 0
    try:
        result = result_decoder.decode(path.read_bytes() if logged is None else logged)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return [], 0
    values: list[ResultValue] = []
    total = 0
    for name, entries in result.items():
        for entry in entries:
            total += 1
            if len(values) < MAX_VALUES:
                values.append(ResultValue(name, entry.value, entry.labels))
    return values, total - len(values)


def _read_state(directory: Path) -> ExecutionState | None:
    try:
        snapshot = (directory / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        journal: bytes | None = (directory / JOURNAL_FILE).read_bytes()
    except FileNotFoundError:
        journal = None
    try:
        return decode_state(snapshot, journal)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _node_summary(
    node: str, job: NodeJob | None, files: _Files, directory: Path, values: bool
) -> NodeSummary:
    size = files.results.get(node)
    result = size is not None or (job is not None and job.result)
    if job is None:
        summary = NodeSummary(node=node, status=UNKNOWN, error=not result, result=result)
    else:
        summary = NodeSummary(
            node=node,
            status=display_status(job),
            error=job.status.terminal
            and (job.status not in _changes.JUDGED or _changes.failure(job, result) is not None),
            result=result,
            reason=job.reason,
            pod=job.pod,
            created=_time(job.created),
            finished=_time(job.finished),
            duration_ms=job.duration_ms,
        )
    if size is not None:
        summary.result_bytes = size
        if values:
            summary.values, summary.more_values = _values(
                directory / f"{node}.json", size, files.logged.get(node)
            )
    uploads = files.uploads.get(node, [])
    summary.files, summary.more_files = uploads[:MAX_FILES], max(len(uploads) - MAX_FILES, 0)
    summary.logs = files.logs.get(node, [])
    if values and summary.error and summary.logs:
        summary.log_tail = _last_line(directory / summary.logs[0])
    return summary


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (from its last 2 KiB), cut to MAX_TAIL_CHARS."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return ""
    lines = [line.strip() for line in tail.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return (
        last
        if len(last) <= MAX_TAIL_CHARS
        else last[: MAX_TAIL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    )


def _durations(nodes: list[NodeSummary]) -> Durations | None:
    timed = sorted((n.duration_ms, n.node) for n in nodes if n.duration_ms is not None)
    if not timed:
        return None
    ms = [t for t, _ in timed]
    p95 = ms[max(0, math.ceil(0.95 * len(ms)) - 1)]  # nearest rank
    return Durations(
        median_ms=statistics.median(ms), p95_ms=p95, max_ms=ms[-1], slowest=timed[-1][1]
    )


def _sort_key(node: NodeSummary) -> tuple[int, bool, str]:
    return _RANK[node.status], not node.error, node.node


def read_execution(directory: Path, *, values: bool = True) -> ExecutionSummary:
    """The summary of one execution directory (blocking; raises FileNotFoundError).

    `values=False` skips reading result files and logs (the index needs only counts).
    """
    state = _read_state(directory)
    files = _Files(directory, None if state is None else set(state.nodes))
    jobs: dict[str, NodeJob] = {} if state is None else state.nodes
    nodes = [_node_summary(n, jobs.get(n), files, directory, values) for n in files.nodes]
    nodes.sort(key=_sort_key)
    counts = Counts()
    for node in nodes:
        counts.add(node)
    summary = ExecutionSummary(
        id=directory.name, state=UNKNOWN, counts=counts, durations=_durations(nodes), nodes=nodes
    )
    if state is not None:
        summary.state = "finished" if state.done else RUNNING
        summary.started, summary.finished = _time(state.started), _time(state.finished)
        if state.finished is not None:
            summary.duration_s = round(state.finished - state.started, 3)
    return summary


def verdicts(summary: ExecutionSummary) -> Verdicts | None:
    """Which nodes failed and which passed (see bjc.reports.changes); None without bjc state."""
    if summary.state == UNKNOWN:
        return None
    judged = [n for n in summary.nodes if n.status in (SUCCEEDED, FAILED, TIMED_OUT)]
    # kept for every execution (SummaryCache): the names and reasons, which repeat from
    # one execution to the next, are held once (interned)
    return Verdicts(
        id=summary.id,
        nodes=tuple(sys.intern(n.node) for n in summary.nodes),
        failed={sys.intern(n.node): sys.intern(problem(n)) for n in judged if n.error},
        passed=tuple(sys.intern(n.node) for n in judged if not n.error),
    )


FILTERS = (*STATUSES, "error")


def filter_nodes(summary: ExecutionSummary, status: str) -> ExecutionSummary:
    """The summary with only the nodes of one display status, or with an `error`."""
    if status not in FILTERS:
        raise ValueError(f"unknown status {status!r}: use one of {', '.join(FILTERS)}")
    keep = [n for n in summary.nodes if (n.error if status == "error" else n.status == status)]
    return msgspec.structs.replace(summary, nodes=keep)


Signature = tuple[int, ...]


class SummaryCache:
    """Summaries of a report directory, recomputed only when an execution changes.

    Full summaries are kept for the few executions looked at last (a 5,000-node
    summary holds 5,000 node records); the index keeps an overview of every
    execution. Computations run in a thread, one at a time.
    """

    KEEP_FULL = 2  # ~5 MB each at 5,000 nodes

    def __init__(self, root: Path | str) -> None:
        self.store = ReportStore(root)  # used read-only: listing, signatures, latest
        self._full: collections.OrderedDict[str, tuple[Signature, ExecutionSummary]]
        self._full = collections.OrderedDict()
        self._overviews: dict[str, tuple[Signature, ExecutionOverview]] = {}
        self._verdicts: dict[str, tuple[Signature, Verdicts | None]] = {}
        # execution -> (the signatures of the chain before it, the standing after that
        # chain, its last verdicts): what `changes` compares with, for the last few asked
        self._standing_before: dict[
            str, tuple[tuple[tuple[str, Signature], ...], _changes.Standing, Verdicts | None]
        ] = {}
        self._lock = asyncio.Lock()

    def resolve(self, execution_id: str) -> str:
        """`latest` -> the id it points to. ValueError: not an id; FileNotFoundError: none yet."""
        if execution_id == LATEST:
            target = self.store.latest()
            if target is None:
                raise FileNotFoundError("there is no execution yet")
            execution_id = target
        if not is_execution_id(execution_id):
            raise ValueError(f"{execution_id!r} is not an execution id (yyyyMMddHHmm[ss])")
        return execution_id

    async def _signature(self, execution_id: str) -> Signature:
        signature = await self.store.signature(execution_id)
        if signature[:2] == (0, 0):  # the directory itself is missing
            raise FileNotFoundError(f"execution {execution_id} does not exist")
        return signature

    async def execution(self, execution_id: str) -> tuple[ExecutionSummary, Signature]:
        """The summary of execution `execution_id` (or `latest`) and the signature it is valid for.

        Raises ValueError for a malformed id, FileNotFoundError for a missing execution.
        """
        execution_id = self.resolve(execution_id)
        signature = await self._signature(execution_id)
        async with self._lock:
            cached = self._full.get(execution_id)
            if cached is None or cached[0] != signature:
                summary = await asyncio.to_thread(read_execution, self.store.root / execution_id)
                cached = self._full[execution_id] = signature, summary
                self._overviews[execution_id] = signature, summary.overview()
                self._verdicts[execution_id] = signature, verdicts(summary)
            self._full.move_to_end(execution_id)
            while len(self._full) > self.KEEP_FULL:
                self._full.popitem(last=False)
        summary = cached[1]
        summary.changes = await self.changes(
            execution_id, self._verdicts.get(execution_id, (signature, None))[1]
        )
        return summary, signature

    async def _light(self, execution_id: str) -> Signature:
        """Read the execution's overview and verdicts again if it changed; its signature."""
        signature = await self._signature(execution_id)
        if self._fresh(execution_id, signature):
            return signature
        async with self._lock:
            if not self._fresh(execution_id, signature):  # (or another reader did)
                summary = await asyncio.to_thread(
                    read_execution, self.store.root / execution_id, values=False
                )
                self._overviews[execution_id] = signature, summary.overview()
                self._verdicts[execution_id] = signature, verdicts(summary)
        return signature

    def _fresh(self, execution_id: str, signature: Signature) -> bool:
        """Whether the overview and verdicts held for the execution are of `signature`."""
        cached = self._overviews.get(execution_id)
        return cached is not None and cached[0] == signature and execution_id in self._verdicts

    async def _overview(self, execution_id: str) -> ExecutionOverview:
        await self._light(execution_id)
        return self._overviews[execution_id][1]

    async def chain(self, before: str | None = None) -> list[Verdicts]:
        """The verdicts of the finished executions with bjc state before `before`, oldest first."""
        return (await self._chain(before))[0]

    async def _chain(
        self, before: str | None
    ) -> tuple[list[Verdicts], tuple[tuple[str, Signature], ...]]:
        """`chain`, and the signatures of its executions (what it is valid for)."""
        ids = await self.store.list_executions()
        for gone in self._verdicts.keys() - set(ids):
            del self._verdicts[gone]
        out: list[Verdicts] = []
        signatures: list[tuple[str, Signature]] = []
        for execution_id in ids:
            if before is not None and execution_id >= before:
                break
            try:
                signature = await self._light(execution_id)
            except FileNotFoundError:
                continue  # pruned meanwhile
            found = self._verdicts[execution_id][1]
            if found is not None and self._overviews[execution_id][1].state == "finished":
                out.append(found)
                signatures.append((execution_id, signature))
        return out, tuple(signatures)

    async def changes(self, execution_id: str, current: Verdicts | None) -> Changes | None:
        """What execution `execution_id` (judged `current`) changed against the finished ones
        before it; None for an execution without bjc state.

        The standing before it is kept while the executions before it are unchanged: it
        walks the whole history (170 ms for 29 executions of 5,000 nodes), and every view
        of a summary page asks.
        """
        if current is None:
            return None
        chain, signatures = await self._chain(execution_id)
        cached = self._standing_before.get(execution_id)
        if cached is None or cached[0] != signatures:
            steps = _changes.history(chain)
            standing = steps[-1][2] if steps else _changes.EMPTY
            cached = signatures, standing, steps[-1][0] if steps else None
            self._standing_before[execution_id] = cached
            while len(self._standing_before) > self.KEEP_FULL:
                del self._standing_before[next(iter(self._standing_before))]
        _, before, previous = cached
        return _changes.compare(before, _changes.advance(before, current), current, previous)

    async def standings(self) -> list[tuple[Verdicts, Changes, _changes.Standing]]:
        """Every finished execution with bjc state, oldest first: what it changed, and the
        standing after it (the engine's metrics and node conditions)."""
        return _changes.history(await self.chain())

    async def index(self) -> SummaryIndex:
        """Every execution on disk, newest first, with its counts."""
        ids = await self.store.list_executions()
        overviews: list[ExecutionOverview] = []
        for execution_id in reversed(ids):
            try:
                overviews.append(await self._overview(execution_id))
            except FileNotFoundError:
                continue  # pruned meanwhile
        for gone in self._overviews.keys() - set(ids):
            del self._overviews[gone]
        return SummaryIndex(latest=self.store.latest(), executions=overviews)
