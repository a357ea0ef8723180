"""Logged results on their way to `<node>.json`: the results log's in-memory side.

A result is acknowledged once it is in its execution's results log (bjc.reports.store
appends it; bjc.reports.resultlog is the format and the group commit). The report
layout is the Go controller's, one `<node>.json` per node, so every logged result
becomes a file soon after. This module keeps what that needs in memory and decides
when it happens:

- which results are logged but not yet files (`pending`: the newest body of each
  node, so repeated results of a node in between cost one file);
- how many bytes of each log they account for: a log may be emptied only when its size
  is exactly that, i.e. nothing was appended that is not pending yet;
- the rounds: `MATERIALIZE_DELAY_S` (5 s) after the first result logged since the last
  round; after a failed round again with a doubling delay up to 30 s; at once for what
  a killed process left in a log (`recovered`); `materialize` on demand (the store
  calls it before a state snapshot) and `close` at shutdown.

Deliberately not here: the disk. `write(execution_id, bodies, accounted)` (the store's)
writes the files and empties the log when its size is `accounted`, returning whether it
did; it raises FileNotFoundError when the execution is gone (pruned: its results went
with it), PermissionError when this replica may not write (the store's NotLeading: the
log keeps them for the next leader, no round is scheduled again), and another OSError
when the file system failed (logged once by the store; the round is tried again later).
Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

#: How long logged results wait to be written as files (repeated results coalesce).
MATERIALIZE_DELAY_S = 5.0
_RETRY_MAX_S = 30.0

Write = Callable[[str, dict[str, bytes], int], Awaitable[bool]]


class Materializer:
    """Which logged results are not yet files, and the rounds that write them."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending: dict[str, dict[str, bytes]] = {}  # execution -> node -> newest body
        self._accounted: dict[str, int] = {}  # execution -> log bytes `_pending` accounts for
        self._timer: asyncio.TimerHandle | None = None
        self._round: asyncio.Task[None] | None = None
        self._retry = MATERIALIZE_DELAY_S

    def logged(self, execution_id: str, notes: Iterable[tuple[str, bytes, int]]) -> None:
        """Records (node, body, size in the log) were appended: newer than what is pending."""
        pending = self._pending.setdefault(execution_id, {})
        added = 0
        for node, body, size in notes:
            pending[node] = body
            added += size
        self._accounted[execution_id] = self._accounted.get(execution_id, 0) + added
        if self._timer is None and self._round is None:
            self._schedule(MATERIALIZE_DELAY_S)

    def recovered(self, execution_id: str, bodies: Mapping[str, bytes], size: int) -> None:
        """A log this process did not write holds `bodies` in `size` bytes (a killed
        process's results): older than anything logged here since."""
        pending = self._pending.setdefault(execution_id, {})
        for node, body in bodies.items():
            pending.setdefault(node, body)
        self._accounted[execution_id] = self._accounted.get(execution_id, 0) + size

    def start(self) -> None:
        """A round now, unless one is on its way (after `recovered`)."""
        if self._pending and self._timer is None and self._round is None:
            self._schedule(0)

    def forget(self, execution_id: str) -> None:
        """The execution is gone (pruned): its logged results went with it."""
        self._pending.pop(execution_id, None)
        self._accounted.pop(execution_id, None)

    async def materialize(self, execution_id: str) -> None:
        """Write the execution's pending results as files now (the newest of each node);
        its log is emptied if nothing was appended meanwhile."""
        pending = self._pending.get(execution_id)
        if not pending:
            return
        bodies, accounted = dict(pending), self._accounted.get(execution_id, 0)
        try:
            emptied = await self._write(execution_id, bodies, accounted)
        except FileNotFoundError:  # pruned meanwhile: nothing to write any more
            self._pending.pop(execution_id, None)
            return
        if emptied:
            self._accounted[execution_id] -= accounted
        for node, body in bodies.items():
            if pending.get(node) is body:
                del pending[node]
        if not pending and self._pending.get(execution_id) is pending:
            del self._pending[execution_id]

    async def close(self) -> None:
        """Write every pending result as a file (shutdown, while still leading)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._round is not None:
            with contextlib.suppress(Exception):  # what it could not write is still pending
                await asyncio.shield(self._round)
        for execution_id in list(self._pending):
            try:
                await self.materialize(execution_id)
            except OSError as e:  # not leading too; the log keeps them for the next leader
                log.warning("execution %s: results left in its log: %s", execution_id, e)

    def _schedule(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._start_round)

    def _start_round(self) -> None:
        self._timer = None
        self._round = asyncio.get_running_loop().create_task(self._materialize_all())

    async def _materialize_all(self) -> None:
        """One round: every execution's pending results become files."""
        failed = False
        try:
            for execution_id in list(self._pending):
                try:
                    await self.materialize(execution_id)
                except PermissionError:
                    return  # not leading: the process is on its way out; the log keeps them
                except OSError:
                    failed = True  # logged once by the store; tried again
        finally:
            self._round = None
        self._retry = min(self._retry * 2, _RETRY_MAX_S) if failed else MATERIALIZE_DELAY_S
        if self._pending and self._timer is None:
            self._schedule(self._retry)
