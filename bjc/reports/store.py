"""The report directory: where results, uploads, pod logs and execution state live.

Layout (the Go controller's)::

    <root>/<executionID>/                     one directory per execution (yyyyMMddHHmm[ss])
    <root>/<executionID>/<node>.json          result JSON, saved verbatim
    <root>/<executionID>/.bjc-results.log     results not yet written as <node>.json
    <root>/<executionID>/<node>-<name>        uploaded files
    <root>/<executionID>/<node>-container-<container>.log   pod logs (savePodLog)
    <root>/<executionID>/.bjc-execution.json  execution state written by the controller
    <root>/latest -> <executionID>            relative symlink to the newest execution
    <root>/.bjc-trigger.json                  the last ConfigMap trigger value decided

Results are acknowledged from a log: `write_result` appends the result to the
execution's results log (`bjc.reports.resultlog`: one write per batch of concurrent
results, on the event loop) and returns once it is written; `write_results_now` does
the same for results the caller batched itself (the result fast path's). The newest result of each
node is then written as `<node>.json` in the background (bjc.reports.materializer
decides when, 5 s later; this module writes the files and empties the log), before
every state snapshot, so an execution is never recorded as finished before its results
are files, and at start-up (`recover_logs`) for what a killed process left in a log.
Until then `read_results` (history, replay), the file server and the summary pages
read a result from the log.

`durability` (`fsync`): with it, an append returns only after `fdatasync` (in a
thread of its own, so a batch never waits behind the materializer's files), and the
materializer syncs each file and the directory before it empties the log; without
it (the default) what returned survives the process being killed, not a power cut
(a SIGKILL cannot lose what the kernel already has).

Every other write goes to a temporary file in the same directory and is then renamed
over the final name, so readers (the file server, a restarted controller) never see
half a file. Blocking disk I/O other than the log append runs off the event loop: the
small writes that a state change waits for (state snapshots, journal lines, the
materializer's files) go through one writer thread that takes whatever is queued as
one batch and settles the whole batch with a single wake-up of the loop; bulk work
(uploads, pruning, reads) uses the default thread pool. A write has returned only once
the file is renamed into place (or the record appended).

Disk faults: a write that fails in the file system (no space, read-only, an I/O
error, ...) raises `WriteFailed`, an OSError with the original errno, message and
path; `WriteFailed.no_space` tells "full" (ENOSPC, EDQUOT) from the rest. A results
log append on a file system with no free block left is refused as ENOSPC although
it might fit in the log's last block: its `<node>.json` could not be written. The store
keeps one bit, `writable`: the first failure clears it and logs one ERROR line (errno
and path, no traceback); the next new file written with data (a result, an upload, a
pod log, a state snapshot) sets it again and logs one WARNING line. `on_writable` is
told both (the runtime sets a gauge). A failed write leaves nothing half-written
behind: its temporary file is removed, a journal append is cut back to where it
started.

Fencing: a store built with `may_write` asks it, in the thread, right before every
write. The runtime passes "this replica holds the Lease and renewed it within the
renew deadline", so a replica that lost its lease stops writing even if its event
loop is stalled, before another replica can lead. A refused write raises NotLeading.

Names coming from job pods (node names, upload names) are checked here, not only in
the HTTP layer: anything that is not one plain path component is refused with
ValueError, and the final path is resolved and checked to be inside the execution
directory as a second line of defence. (The Go controller joined names with
filepath.Clean, so `?name=/../../x` escaped the report directory.)

Who owns a name in an execution directory (`file_owner`): node N owns `N.json` and
every name starting with `N-` (the longest matching node name wins, so node `node-1`
cannot write `node-1-x.json`, the result of node `node-1-x`); the controller owns
hidden names, `latest` and every node's pod-log names `N-container-<container>.log`.
The callback API refuses uploads whose final name the uploading node does not own.

Deliberately not here: deciding which executions exist or are allowed (the
controller), metrics, and any HTTP concerns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import logging
import os
import queue
import re
import shutil
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Container,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from bjc.reports import resultlog
from bjc.reports.materializer import Materializer
from bjc.reports.resultlog import RESULTS_LOG, GroupCommit, encode_record

T = TypeVar("T")

log = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = ".bjc-execution.json"
JOURNAL_FILE = ".bjc-execution.journal"
TRIGGER_FILE = ".bjc-trigger.json"
_TMP_PREFIX = ".bjc-tmp-"
_MAX_COMPONENT_BYTES = 255
# yyyyMMddHHmm, or yyyyMMddHHmmss when the minute's id is taken: ids sort as text in
# time order (an id with seconds after its minute's, before the next minute's).
_EXECUTION_ID = re.compile(r"^\d{12}(\d\d)?$")
#: The owner of the controller's names (see file_owner).
CONTROLLER = "controller"
_POD_LOG_INFIX = "-container-"
# A pod-log name's container part: a DNS label, as Kubernetes requires for container names.
_CONTAINER_LOG = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\.log")
# Upload data is buffered in memory up to this size before it goes to disk; a
# small upload thus costs one worker-thread hop (open, write, close, rename).
_BUFFER_BYTES = 1024 * 1024


# random per process, so controller replicas sharing a volume never pick the same name
_TMP_PROCESS = f"{_TMP_PREFIX}{os.urandom(8).hex()}-"
_tmp_serial = itertools.count()


def _temp_name() -> str:
    return f"{_TMP_PROCESS}{next(_tmp_serial)}"  # next() of a count is atomic


class UploadTooLarge(Exception):
    """An upload grew past the size limit; its partial file has been removed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the maximum size of {limit} bytes")
        self.limit = limit


class ExecutionNotFound(FileNotFoundError):
    """The execution directory does not exist (never created, or pruned)."""


class NotLeading(PermissionError):
    """This replica may not write: it does not hold the Lease (or no longer in time)."""


#: errnos that mean the file system is full (for this user): callbacks get 507
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class WriteFailed(OSError):
    """A write to the report directory failed in the file system: full, read-only, I/O error.

    Built from the original error: same errno, message and path.
    """

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE

    @property
    def code(self) -> str:
        """The errno's symbolic name (`ENOSPC`, `EROFS`, ...)."""
        if self.errno is None:
            return "unknown error"
        return errno.errorcode.get(self.errno, f"errno {self.errno}")


_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class _Writer:
    """One thread running small blocking writes in batches (see the module docstring).

    The thread starts with the first write and ends after a few idle seconds, so a
    store that is not written to holds no thread. The queue is the C-implemented
    SimpleQueue: handing a write over costs the event loop about a microsecond.
    """

    _IDLE_S = 5.0

    def __init__(self, name: str = "bjc-writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards starting and ending the thread
        self._running = False

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, future))
        with self._lock:  # the thread checks for work under this lock before it ends
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
        return await future

    def _next_batch(self) -> list[_Job]:
        """Everything queued (waiting for the first write); [] once idle: the thread ends."""
        try:
            batch = [self._queue.get(timeout=self._IDLE_S)]
        except queue.Empty:
            with self._lock:
                if self._queue.empty():
                    self._running = False
                    return []
            batch = []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        return batch

    def _work(self) -> None:
        while batch := self._next_batch():
            settled: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
            for fn, args, future in batch:
                try:
                    outcome: tuple[Any, ...] = (future, fn(*args), None)
                except BaseException as e:  # handed to the awaiting coroutine
                    outcome = (future, None, e)
                settled.setdefault(future.get_loop(), []).append(outcome)
            for loop, outcomes in settled.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[Any, ...]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the waiter was cancelled
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _write_all(fd: int, data: bytes, path: str | Path) -> None:
    """Write all of `data`; an error names `path` (a write to a descriptor names none)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        if e.filename is None:
            e.filename = os.fspath(path)
        raise


def _sync_directory(path: str) -> None:
    """fsync a directory: the names created or replaced in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_execution_id(name: str) -> bool:
    return bool(_EXECUTION_ID.match(name))


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is one plain path component, else raise ValueError naming the problem.

    Refused: empty, `.`/`..`, any `/` or `\\`, NUL and other control characters, names
    whose percent-decoding contains a separator or is `..` (`%2F`, `%2e%2e`), and names
    longer than a file system allows.
    """
    problem = _name_problem(name) if isinstance(name, str) else "{what} is empty"
    if problem is not None:
        raise ValueError(problem.format(what=what, name=name))
    return name


@functools.lru_cache(maxsize=16384)
def _name_problem(name: str) -> str | None:
    """What is wrong with `name` (a template for check_name), None if nothing.

    Cached: every callback checks its node and execution ID, and these repeat.
    """
    if name == "":
        return "{what} is empty"
    decoded = name
    # Decode repeatedly so that double encoding (`%252F`) cannot hide a separator.
    for _ in range(4):
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    for candidate in {name, decoded}:
        if "/" in candidate or "\\" in candidate:
            return "{what} {name!r} must not contain a path separator"
        if candidate in (".", ".."):
            return "{what} {name!r} is not a file name"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in candidate):
            return "{what} {name!r} must not contain NUL or control characters"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:
        return f"{{what}} is longer than {_MAX_COMPONENT_BYTES} bytes"
    return None


def file_owner(filename: str, nodes: Container[str]) -> str | None:
    """Who owns `filename` in an execution with `nodes`: a node, CONTROLLER, or None.

    Node N owns `N.json` and names starting with `N-`, the longest such N winning; the
    controller owns names starting with `.`, `latest`, and `N-container-<c>.log` of
    every node N (the pod logs of savePodLog). Cost: a set lookup per `-` in the name.
    """
    if filename.startswith(".") or filename == LATEST:
        return CONTROLLER
    start = 0
    while (at := filename.find(_POD_LOG_INFIX, start)) > 0:
        if filename[:at] in nodes and _CONTAINER_LOG.fullmatch(filename, at + len(_POD_LOG_INFIX)):
            return CONTROLLER
        start = at + 1
    if filename.endswith(".json") and filename[:-5] in nodes:
        return filename[:-5]  # nobody longer can own it: a longer N would need `N-`
    at = len(filename)
    while (at := filename.rfind("-", 0, at)) > 0:
        if filename[:at] in nodes:
            return filename[:at]
    return None


class ReportStore:
    """Files of the report directory; async methods run their disk work in threads."""

    def __init__(
        self,
        root: Path | str,
        *,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.may_write = may_write
        self._resolved_dirs: dict[str, str] = {}
        self._writer = _Writer()
        #: False from a failed write until a write puts data in place (module docstring)
        self.writable = True
        #: told each change of `writable` (on the event loop)
        self.on_writable: Callable[[bool], None] = lambda writable: None
        #: `durability: fsync`: appends and files are synced before they count as written
        self.fsync = False
        # synced appends get a thread of their own: never queued behind the materializer
        self._log_writer = _Writer("bjc-log-writer")
        self._log = GroupCommit(
            self._append_sync, self._log_writer.run, lambda: self.fsync, self._logged_now
        )
        self._materializer = Materializer(self._write_logged)
        self._repaired: set[str] = set()  # logs this process checked for a torn tail
        self._log_paths: dict[str, str] = {}
        self._leftovers: dict[str, tuple[dict[str, bytes], int]] = {}  # found by a repair
        self._log_lock = threading.Lock()  # an append vs. emptying the log (two threads)

    # ----------------------------------------------------------------- helpers
    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    async def _writing(
        self,
        run: Callable[..., Awaitable[T]],
        *args: object,
        wrote_data: bool = True,
    ) -> T:
        """`await run(*args)` (e.g. `run(fn, *args)`), a write: file system errors become
        WriteFailed.

        `wrote_data`: whether success wrote data into new space, and so shows the
        directory writable again (on a full file system an empty file or a directory
        can still be created, and an append can fit in a file's last block).
        """
        try:
            result = await run(*args)
        except (NotLeading, FileNotFoundError):
            raise  # not the file system's fault: the lease, a pruned execution
        except OSError as e:
            raise self._failed(e) from None
        if wrote_data:
            self._wrote()
        return result

    def _writing_now(self, fn: Callable[..., T], *args: object, wrote_data: bool = True) -> T:
        """`_writing` of a write that runs on the event loop."""
        try:
            result = fn(*args)
        except (NotLeading, FileNotFoundError):
            raise
        except OSError as e:
            raise self._failed(e) from None
        if wrote_data:
            self._wrote()
        return result

    def _wrote(self) -> None:
        if not self.writable:
            self.writable = True
            log.warning("report directory %s is writable again", self.root)
            self.on_writable(True)

    def _failed(self, error: OSError) -> WriteFailed:
        if isinstance(error, WriteFailed):
            failed = error
        elif error.errno is None:
            failed = WriteFailed(*error.args)
        else:
            failed = WriteFailed(error.errno, error.strerror, error.filename, None, error.filename2)
        if self.writable:
            self.writable = False
            log.error(
                "report directory %s is not writable (%s): %s; results, files and state are "
                "not saved until a write succeeds again",
                self.root,
                failed.code,
                failed,
            )
            self.on_writable(False)
        return failed

    def _check_writable(self) -> None:
        if self.may_write is not None and not self.may_write():
            raise NotLeading("this replica is not the leader: it must not write")

    def execution_dir(self, execution_id: str) -> Path:
        check_name(execution_id, "execution ID")
        return self.root / execution_id

    def _target(self, execution_id: str, filename: str) -> str:
        """The final path of `filename` in execution `execution_id`, checked to stay inside it.

        Besides the name check, the resolved execution directory must be a direct
        child of the resolved root, and an existing final path must not be a symlink
        leading elsewhere (a rename would replace the link, but refuse it anyway).
        Plain strings, not Paths: this runs for every result.
        """
        check_name(filename, "file name")
        resolved_dir = self._resolved_dirs.get(execution_id)
        if resolved_dir is None:
            directory = self.execution_dir(execution_id)
            resolved_dir = str(directory.resolve())
            if os.path.dirname(resolved_dir) != str(self.root.resolve()):
                raise ValueError(f"execution ID {execution_id!r} leaves the report directory")
            if directory.is_dir():  # cache only what exists; pruning removes the entry
                self._resolved_dirs[execution_id] = resolved_dir
        path = os.path.join(resolved_dir, filename)
        if os.path.split(path) != (resolved_dir, filename):
            raise ValueError(f"file name {filename!r} leaves the execution directory")
        if os.path.islink(path) and os.path.dirname(os.path.realpath(path)) != resolved_dir:
            raise ValueError(f"file name {filename!r} is a link out of the execution directory")
        return path

    @staticmethod
    def upload_filename(node: str, name: str) -> str:
        filename = f"{check_name(node, 'node')}-{check_name(name, 'file name')}"
        return check_name(filename, "file name")

    @staticmethod
    @functools.lru_cache(maxsize=16384)  # every result callback asks, twice
    def result_filename(node: str) -> str:
        return check_name(f"{check_name(node, 'node')}.json", "result file name")

    @staticmethod
    def log_filename(node: str, container: str) -> str:
        return f"{check_name(node, 'node')}-container-{check_name(container, 'container')}.log"

    def _write_sync(self, execution_id: str, filename: str, data: bytes, sync: bool = False) -> str:
        path = self._target(execution_id, filename)
        self._check_writable()
        tmp = os.path.join(os.path.dirname(path), _temp_name())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            raise ExecutionNotFound(f"execution {execution_id} does not exist") from None
        try:
            try:
                _write_all(fd, data, path)
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a read-only file system refuses this too
                os.unlink(tmp)
            raise
        return path

    # ------------------------------------------------------------- executions
    def _create_execution_sync(self, execution_id: str, link_latest: bool) -> Path:
        directory = self.execution_dir(execution_id)
        self._check_writable()
        directory.mkdir(parents=True, exist_ok=True)
        if link_latest:
            tmp = self.root / _temp_name()
            os.symlink(execution_id, tmp)  # relative: survives moving/mounting the directory
            try:
                os.replace(tmp, self.root / LATEST)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return directory

    async def create_execution(self, execution_id: str, *, link_latest: bool = True) -> Path:
        """Create `<root>/<execution_id>/` (idempotent) and point `latest` at it atomically."""
        return await self._writing(
            self._run, self._create_execution_sync, execution_id, link_latest, wrote_data=False
        )

    async def ensure_execution(self, execution_id: str) -> Path:
        """Create the directory without touching `latest` (DEV_MODE callbacks)."""
        return await self._writing(
            self._run, self._create_execution_sync, execution_id, False, wrote_data=False
        )

    def _write_trigger_sync(self, data: bytes) -> None:
        self._check_writable()
        tmp = self.root / _temp_name()
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, self.root / TRIGGER_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def write_trigger(self, data: bytes) -> None:
        """Replace `<root>/.bjc-trigger.json` atomically (the last trigger value decided)."""
        await self._writer.run(self._write_trigger_sync, data)

    def _read_trigger_sync(self) -> bytes | None:
        try:
            return (self.root / TRIGGER_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def read_trigger(self) -> bytes | None:
        """`<root>/.bjc-trigger.json`, None when there is none."""
        return await self._run(self._read_trigger_sync)

    def _list_sync(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        ids = [
            e.name for e in entries if is_execution_id(e.name) and e.is_dir(follow_symlinks=False)
        ]
        return sorted(ids)

    async def list_executions(self) -> list[str]:
        """Execution ids present on disk, oldest first (only id-shaped directories)."""
        return await self._run(self._list_sync)

    def latest(self) -> str | None:
        """The execution `latest` points to (a single readlink; cheap enough for the loop)."""
        try:
            return os.readlink(self.root / LATEST)
        except OSError:
            return None

    def _prune_sync(self, keep: int) -> list[str]:
        self._check_writable()
        ids = self._list_sync()
        removed = ids[: max(len(ids) - keep, 0)]
        for execution_id in removed:
            self._resolved_dirs.pop(execution_id, None)
            shutil.rmtree(self.root / execution_id, ignore_errors=True)
        return removed

    async def prune(self, keep: int) -> list[str]:
        """Remove the oldest execution directories beyond `keep` (>= 1); return their ids."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        removed = await self._run(self._prune_sync, keep)
        for execution_id in removed:  # their logged results went with them
            self._materializer.forget(execution_id)
            self._repaired.discard(execution_id)
            self._log_paths.pop(execution_id, None)
        return removed

    # ------------------------------------------------------------------ files
    async def write_result(
        self, execution_id: str, node: str, data: bytes, *, attempt: int = 0
    ) -> None:
        """Save a result body verbatim: on return it is in the execution's results log
        (durable as `durability` says), and it becomes `<node>.json` soon after."""
        self.result_filename(node)  # ValueError before anything is written
        record = encode_record(node, attempt, data)
        note = (node, data, len(record))
        await self._writing(self._log.append, execution_id, record, note, wrote_data=bool(data))

    def write_results_now(
        self, execution_id: str, results: Sequence[tuple[str, int, bytes]]
    ) -> None:
        """`write_result` of several results (node, attempt, body) at once, appended on
        the event loop with one write. The default durability only: with `fsync` the
        append waits for a thread (`write_result`)."""
        if self.fsync:
            raise RuntimeError("write_results_now with durability fsync")
        records, notes = [], []
        for node, attempt, data in results:
            self.result_filename(node)  # ValueError before anything is written
            record = encode_record(node, attempt, data)
            records.append(record)
            notes.append((node, data, len(record)))
        wrote_data = any(data for _, _, data in results)
        self._writing_now(self._log.write_now, execution_id, records, notes, wrote_data=wrote_data)

    def _logged_now(self, execution_id: str, notes: list[Any]) -> None:
        """A batch was appended to the execution's log: its results are pending files."""
        leftovers = self._leftovers.pop(execution_id, None)
        if leftovers is not None:  # a log recover_logs never saw (DEV_MODE, a bare store)
            self._materializer.recovered(execution_id, *leftovers)
        self._materializer.logged(execution_id, notes)

    # ------------------------------------------------------------ results log
    def _log_path(self, execution_id: str) -> str:
        """The checked path of the execution's results log (kept: it is checked per batch
        otherwise, and bjc's own hidden name cannot become a node's link)."""
        path = self._log_paths.get(execution_id)
        if path is None:
            path = self._target(execution_id, RESULTS_LOG)
            if execution_id in self._resolved_dirs:  # the directory exists: keep it
                self._log_paths[execution_id] = path
        return path

    def _append_sync(self, execution_id: str, data: bytes, sync: bool) -> None:
        """Append records to the execution's results log (GroupCommit: one call per batch).

        The log is opened for each batch, not held open: an open writable file would
        keep a read-only remount from succeeding and a pruned execution's space in use.
        """
        path = self._log_path(execution_id)
        self._check_writable()
        with self._log_lock:
            if execution_id not in self._repaired:
                found, size = resultlog.repair(path)  # nothing when there is no log (yet)
                if found:
                    self._leftovers[execution_id] = (found, size)
                self._repaired.add(execution_id)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                raise ExecutionNotFound(f"execution {execution_id} does not exist") from None
            try:
                if os.fstatvfs(fd).f_bavail == 0:  # see the module docstring
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, data, path)
                except OSError:  # no torn record stays in front of the next append
                    try:
                        os.ftruncate(fd, size)
                    except OSError:
                        self._repaired.discard(execution_id)  # check again before the next
                    raise
                if sync:
                    os.fdatasync(fd)
                    if size == 0:  # a new file: its directory entry too
                        _sync_directory(os.path.dirname(path))
            finally:
                os.close(fd)

    async def materialize(self, execution_id: str) -> None:
        """Write the execution's logged results as `<node>.json` now (the newest of each
        node), then empty its log if nothing was appended meanwhile."""
        await self._materializer.materialize(execution_id)

    async def _write_logged(self, execution_id: str, items: dict[str, bytes], count: int) -> bool:
        """The materializer's `write` (ExecutionNotFound when the execution is gone)."""
        write, sync = self._materialize_sync, self.fsync
        return await self._writing(self._writer.run, write, execution_id, items, count, sync)

    def _materialize_sync(
        self, execution_id: str, items: dict[str, bytes], accounted: int, sync: bool
    ) -> bool:
        """Write the files; empty the log if all it holds was in `items` (True if so)."""
        for node, body in items.items():
            self._write_sync(execution_id, self.result_filename(node), body, sync)
        path = self._log_path(execution_id)
        if sync:
            _sync_directory(os.path.dirname(path))
        with self._log_lock:
            try:
                if os.stat(path).st_size != accounted:
                    return False  # appended since, and not yet pending: next round
            except FileNotFoundError:
                return False
            self._check_writable()
            os.truncate(path, 0)
            return True

    async def recover_logs(self, execution_ids: Collection[str]) -> None:
        """At start-up and on becoming leader: cut torn tails off the logs of these
        executions and have what they hold written as files (a killed process's
        results). Does nothing on a replica that may not write."""
        if self.may_write is not None and not self.may_write():
            return
        for execution_id in execution_ids:
            if execution_id in self._repaired:
                continue
            try:
                found = await self._writing(
                    self._run, self._recover_sync, execution_id, wrote_data=False
                )
            except (OSError, ValueError) as e:
                log.warning("execution %s: results log not recovered: %s", execution_id, e)
                continue
            records, size = found
            if records:
                self._materializer.recovered(execution_id, records, size)
        self._materializer.start()

    def _recover_sync(self, execution_id: str) -> tuple[dict[str, bytes], int]:
        path = self._log_path(execution_id)
        with self._log_lock:
            try:
                empty = os.stat(path).st_size == 0
            except FileNotFoundError:
                empty = True
            if not empty:
                self._check_writable()
            found = ({}, 0) if empty else resultlog.repair(path)
            self._repaired.add(execution_id)
            return found

    async def close(self) -> None:
        """Write every logged result as a file (shutdown, while still leading)."""
        await self._materializer.close()

    async def write_log(self, execution_id: str, node: str, container: str, data: bytes) -> str:
        name = self.log_filename(node, container)
        return await self._writing(
            self._run, self._write_sync, execution_id, name, data, wrote_data=bool(data)
        )

    async def write_file(self, execution_id: str, filename: str, data: bytes) -> str:
        """Save `data` as `<root>/<execution_id>/<filename>` (one checked path component)."""
        return await self._writing(
            self._run, self._write_sync, execution_id, filename, data, wrote_data=bool(data)
        )

    def _write_state_sync(self, execution_id: str, data: bytes) -> str:
        path = self._write_sync(execution_id, STATE_FILE, data)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(os.path.dirname(path), JOURNAL_FILE))  # folded in
        return path

    async def write_state(self, execution_id: str, data: bytes) -> str:
        """Replace the execution's state snapshot atomically; its journal is dropped.

        The execution's logged results are written as files first: a snapshot (the
        one saying the execution finished above all) never precedes them.
        """
        await self.materialize(execution_id)
        return await self._writing(self._writer.run, self._write_state_sync, execution_id, data)

    def _append_journal_sync(self, execution_id: str, data: bytes) -> None:
        path = self._target(execution_id, JOURNAL_FILE)
        self._check_writable()
        if not os.path.isdir(os.path.dirname(path)):
            raise ExecutionNotFound(f"execution {execution_id} does not exist")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data, path)
            except OSError:  # e.g. full: no torn line stays in front of the next append
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    async def append_journal(self, execution_id: str, data: bytes) -> None:
        """Append state changes (whole lines) to the execution's journal."""
        # no sign of space: an append can fit in what the file's last block has left
        append = self._append_journal_sync
        await self._writing(self._writer.run, append, execution_id, data, wrote_data=False)

    def _read_state_sync(self, execution_id: str) -> tuple[bytes, bytes | None] | None:
        directory = self.execution_dir(execution_id)
        try:
            snapshot = (directory / STATE_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return snapshot, (directory / JOURNAL_FILE).read_bytes()
        except FileNotFoundError:
            return snapshot, None

    async def read_state(self, execution_id: str) -> tuple[bytes, bytes | None] | None:
        """(snapshot, journal) of an execution, None when it has no state."""
        return await self._run(self._read_state_sync, execution_id)

    def _read_results_sync(self, execution_id: str, nodes: Collection[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        # the log first: a result emptied out of it meanwhile is a file by then
        logged = resultlog.read(self._log_path(execution_id))
        try:
            entries = list(os.scandir(self.execution_dir(execution_id)))
        except FileNotFoundError:
            return out
        for entry in entries:
            node = entry.name.removesuffix(".json")
            if node == entry.name or node not in nodes:
                continue
            try:
                with open(self._target(execution_id, entry.name), "rb") as f:
                    out[node] = f.read()
            except (OSError, ValueError):
                continue  # vanished, or an unsafe link: nothing to restore
        out.update((node, body) for node, body in logged.items() if node in nodes)
        return out

    async def read_results(self, execution_id: str, nodes: Collection[str]) -> dict[str, bytes]:
        """The stored result bodies of those of `nodes` that have one: `<node>.json`, or
        the newest in the results log where there is one.

        The log and the files are the record of which results arrived: a result is
        acknowledged only once it is in the log, so nothing else needs to be written.
        """
        return await self._run(self._read_results_sync, execution_id, nodes)

    def _signature_sync(self, execution_id: str) -> tuple[int, ...]:
        directory = self.execution_dir(execution_id)
        out: list[int] = []
        for path in (
            directory,
            directory / STATE_FILE,
            directory / JOURNAL_FILE,
            directory / RESULTS_LOG,
        ):
            try:
                st = path.stat()
                out += (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                out += (0, 0)
        return tuple(out)

    async def signature(self, execution_id: str) -> tuple[int, ...]:
        """Changes whenever the execution's state, journal, results log or files change.

        A result changes the results log's size, a file written from it (a rename into
        the directory) the directory's mtime; a journal append the journal's size. A new
        leader reloads only the executions whose signature differs from what it loaded
        as a standby.
        """
        return await self._run(self._signature_sync, execution_id)

    @contextlib.asynccontextmanager
    async def upload(
        self, execution_id: str, node: str, name: str, *, max_size: int | None = None
    ) -> AsyncIterator[UploadSink]:
        """Stream an upload to `<node>-<name>`; renamed into place only on success.

        Raises ValueError for an unsafe name before anything is written; the sink's
        `write` raises UploadTooLarge past `max_size`. On any error the temporary
        file is removed and an existing file of that name is left untouched.
        """
        filename = self.upload_filename(node, name)  # ValueError before any disk access
        async with self._stream(execution_id, filename, max_size) as sink:
            yield sink

    @contextlib.asynccontextmanager
    async def pod_log(
        self, execution_id: str, node: str, container: str
    ) -> AsyncIterator[UploadSink]:
        """Stream a container's log to `<node>-container-<container>.log`, as `upload` does."""
        filename = self.log_filename(node, container)
        async with self._stream(execution_id, filename, None) as sink:
            yield sink

    @contextlib.asynccontextmanager
    async def _stream(
        self, execution_id: str, filename: str, max_size: int | None
    ) -> AsyncIterator[UploadSink]:
        path = Path(await self._run(self._target, execution_id, filename))
        sink = UploadSink(self, path, max_size)
        try:
            yield sink
            await sink._commit()
        except BaseException:
            await asyncio.shield(sink._discard())
            raise


class UploadSink:
    """Receives the chunks of one upload (see ReportStore.upload)."""

    def __init__(self, store: ReportStore, path: Path, max_size: int | None) -> None:
        self._store = store
        self.path = path
        self.max_size = max_size
        self.size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._tmp = path.parent / _temp_name()

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise UploadTooLarge(self.max_size)
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _BUFFER_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Move buffered data to the temporary file now (still not visible under its name)."""
        if self._buffered:
            data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
            await self._store._writing(self._store._run, self._flush_sync, data)

    def _open_sync(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                raise ExecutionNotFound(f"{self.path.parent} does not exist") from None

    def _flush_sync(self, data: bytes) -> None:
        self._open_sync()
        assert self._fd is not None
        _write_all(self._fd, data, self.path)

    def _commit_sync(self, data: bytes) -> None:
        self._flush_sync(data)
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._store._check_writable()
        os.replace(self._tmp, self.path)

    async def _commit(self) -> None:
        data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        store = self._store
        await store._writing(store._run, self._commit_sync, data, wrote_data=self.size > 0)

    def _discard_sync(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):  # never created, or a read-only file system
            os.unlink(self._tmp)

    async def _discard(self) -> None:
        self._buffer, self._buffered = [], 0
        await self._store._run(self._discard_sync)
