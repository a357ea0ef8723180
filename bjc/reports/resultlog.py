"""The results log of an execution: the record a result callback is acknowledged from.

Why a log: a result used to be acknowledged once its `<node>.json` was renamed into
place, a new inode (temporary file) per result. That is the whole cost of a callback
on a disk whose inode allocator slows down with recently freed inodes, and a network
round trip per create and rename on the ReadWriteMany volumes HA deployments use. An
append to one file per execution costs neither.

Format (`<execution>/.bjc-results.log`, hidden: the file server never serves it): a
sequence of records, each::

    u32 length of the payload, u32 CRC-32 of the payload        (little endian)
    payload: u8 version (1), u16 node name length, u32 attempt, node name (UTF-8),
             the result body exactly as received

A record is written by one `write` together with the others of its batch; a cut
anywhere (a kill during the write, a full disk) leaves a last record whose length
runs past the end or whose checksum does not match. `scan` stops there: what follows
is the unacknowledged tail, which `repair` cuts off before anything is appended again.

Group commit (`GroupCommit`): results that arrive while a batch is being prepared
(the same event-loop iteration; with fsync, while the previous batch is syncing) are
appended with one write per execution, and every waiter is answered once the batch
is written. Without fsync the write runs on the event loop itself (an append to the
page cache, a few microseconds: cheaper than the hop to a thread and back); with
fsync the write and `fdatasync` run in a thread, one hop per batch.

Deliberately not here: where the log lives and who may write it (the report store),
turning the log into `<node>.json` files (the store's materializer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

RESULTS_LOG = ".bjc-results.log"
_VERSION = 1
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
_HEAD = struct.Struct("<BHI")  # version, node name length, attempt


class Record(NamedTuple):
    node: str
    attempt: int
    body: bytes


def encode_record(node: str, attempt: int, body: bytes) -> bytes:
    """One record, ready to append."""
    name = node.encode()
    payload = b"".join((_HEAD.pack(_VERSION, len(name), attempt), name, body))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan(data: bytes) -> tuple[list[Record], int]:
    """The whole records at the start of `data`, and where they end.

    Stops at the first record that is cut short or does not check (a torn append):
    the bytes from there on were never acknowledged.
    """
    records: list[Record] = []
    view, at, size = memoryview(data), 0, len(data)
    while at + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(view, at)
        start, end = at + _HEADER.size, at + _HEADER.size + length
        if length < _HEAD.size or end > size or zlib.crc32(view[start:end]) != crc:
            break
        version, name_length, attempt = _HEAD.unpack_from(view, start)
        name_end = start + _HEAD.size + name_length
        if version != _VERSION or name_end > end:
            break
        try:
            node = bytes(view[start + _HEAD.size : name_end]).decode()
        except UnicodeDecodeError:
            break
        records.append(Record(node, attempt, bytes(view[name_end:end])))
        at = end
    return records, at


def newest(records: list[Record]) -> dict[str, bytes]:
    """The newest result body of each node (a node's later record replaces its earlier)."""
    return {r.node: r.body for r in records}


def read(path: str) -> dict[str, bytes]:
    """The newest result of each node in the log at `path` ({} when there is none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return newest(scan(data)[0])


def repair(path: str) -> tuple[dict[str, bytes], int]:
    """Cut a torn last record off the log at `path`; its newest result per node, and
    the size of the whole records.

    Run before the first append of a process to a log (and at start-up): a record
    appended behind a torn one could never be read.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError):
        return {}, 0
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        records, end = scan(data)
        if end < size:
            log.warning(
                "results log %s: cut %d bytes of a torn record at its end (never acknowledged)",
                path,
                size - end,
            )
            os.ftruncate(fd, end)
    finally:
        os.close(fd)
    return newest(records), end


_Waiter = tuple[bytes, object, "asyncio.Future[None]"]
_Outcome = tuple[str, list[_Waiter], BaseException | None]


class GroupCommit:
    """Appends records in batches, one write per execution per batch (module docstring).

    `write(key, data, sync)` appends `data` to the log of `key` (an execution id) and,
    with `sync`, waits for fdatasync; `in_thread(fn, *args)` runs a function in a
    thread that does nothing else. `sync()` is read for every batch (hot reload).
    `written(key, notes)` is told, on the event loop, the notes given with the records
    of a batch that was written, before any waiter hears of it.
    """

    def __init__(
        self,
        write: Callable[[str, bytes, bool], None],
        in_thread: Callable[..., Awaitable[object]],
        sync: Callable[[], bool],
        written: Callable[[str, list[object]], None],
    ) -> None:
        self._write = write
        self._in_thread = in_thread
        self._sync = sync
        self._written = written
        self._queued: dict[str, list[_Waiter]] = {}
        self._busy = False  # a batch is queued for the loop, or syncing in the thread
        self._task: asyncio.Task[None] | None = None

    def append(self, key: str, record: bytes, note: object = None) -> asyncio.Future[None]:
        """Done when `record` is written to the log of `key` (with what the write raised).

        A future, not a coroutine: awaited by every result callback, and a coroutine
        around it would cost a frame per result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiting = self._queued.get(key)
        if waiting is None:
            self._queued[key] = [(record, note, future)]
        else:
            waiting.append((record, note, future))
        if not self._busy:
            self._busy = True
            if self._sync():
                self._task = loop.create_task(self._drain_synced())
            else:
                loop.call_soon(self._commit)
        return future

    def write_now(self, key: str, records: list[bytes], notes: list[object]) -> None:
        """Append `records` to the log of `key` now, on the event loop, and tell
        `written` (for callers that batched them already; never with sync)."""
        self._write(key, b"".join(records), False)
        self._written(key, notes)

    def _take(self) -> dict[str, list[_Waiter]]:
        batch, self._queued = self._queued, {}
        return batch

    def _commit(self) -> None:
        """Write what is queued, on the loop (the default durability)."""
        try:
            self._settle(self._write_batch(self._take(), False))
        finally:
            self._busy = False

    async def _drain_synced(self) -> None:
        """Write and fdatasync batches in the log's thread until nothing is queued."""
        try:
            while self._queued:
                batch = self._take()
                outcomes = await self._in_thread(self._write_batch, batch, True)
                self._settle(outcomes)  # type: ignore[arg-type]
        finally:
            self._busy = False

    def _write_batch(self, batch: dict[str, list[_Waiter]], sync: bool) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for key, waiters in batch.items():
            try:
                self._write(key, b"".join(w[0] for w in waiters), sync)
                outcomes.append((key, waiters, None))
            except BaseException as e:  # handed to each waiter
                outcomes.append((key, waiters, e))
        return outcomes

    def _settle(self, outcomes: list[_Outcome]) -> None:
        for key, waiters, error in outcomes:
            if error is None:
                self._written(key, [w[1] for w in waiters])
            for _, _, future in waiters:
                if future.done():  # the waiter was cancelled (the record is written anyway)
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
