"""Who owns each task, and what happens when one ends that should not.

Every long-running task of a controller process (pod watch, leader election,
schedule, the leader's start-up, an execution's dispatch) is started through one
`Supervisor`. A task that ends unexpectedly (an exception, or a return from a task
meant to run until cancelled) fails the process: the supervisor logs why and sets
`failed`, `bjc run` then shuts down and exits non-zero so that Kubernetes restarts
it. A process that stays up with a dead watch and a green `/healthz` is the failure
this module exists to rule out (kopf stops the operator when a root task dies;
controller-runtime's manager returns the first runnable's error).

`SideWork` runs fire-and-forget work (pod log fetches) with bounded concurrency
and a bounded backlog, owned by whoever created it.

Deliberately not here: what the tasks do, and signal handling (`bjc.commands.process`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._forever: set[str] = set()
        self.failed = asyncio.Event()
        self.reason = ""
        self.stopping = False

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, forever: bool = True) -> None:
        """Start `coro` as task `name`; `forever`: a normal return is a failure too."""
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        if forever:
            self._forever.add(name)
        task.add_done_callback(self._done)

    def get(self, name: str) -> asyncio.Task[Any] | None:
        return self._tasks.get(name)

    def _done(self, task: asyncio.Task[Any]) -> None:
        name = task.get_name()
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled() or self.stopping:
            return
        error = task.exception()
        if error is not None:
            log.error("task %s crashed", name, exc_info=error)
            self.fail(f"task {name} crashed: {error!r}")
        elif name in self._forever:
            self.fail(f"task {name} ended unexpectedly")

    def fail(self, reason: str) -> None:
        """The process can no longer do its job: make `bjc run` exit non-zero."""
        if not self.failed.is_set():
            log.error("%s; the process exits so that it is restarted", reason)
            self.reason = reason
            self.failed.set()

    async def cancel(self, *names: str) -> None:
        """Cancel these tasks and wait until they have ended."""
        tasks = [t for n in names if (t := self._tasks.get(n)) is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def stop(self) -> None:
        """Cancel every task (shutdown); from now on no ending is a failure."""
        self.stopping = True
        await self.cancel(*self._tasks)


class SideWork:
    """Fire-and-forget work with at most `concurrency` running and `backlog` waiting.

    Past the backlog, new work is refused (`submit` returns False and the caller
    logs what it gives up): memory stays bounded whatever a burst of pod ends asks.
    """

    def __init__(self, concurrency: int = 4, backlog: int = 10_000) -> None:
        self._queue: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue(backlog)
        self._concurrency = concurrency
        self._workers: list[asyncio.Task[None]] = []

    def submit(self, work: Callable[[], Awaitable[Any]]) -> bool:
        try:
            self._queue.put_nowait(work)
        except asyncio.QueueFull:
            return False
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"side-work-{i}")
                for i in range(self._concurrency)
            ]
        return True

    async def _work(self) -> None:
        while True:
            work = await self._queue.get()
            try:
                await work()
            except Exception:
                log.exception("side work failed")
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until everything submitted so far has run."""
        await self._queue.join()

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers)
        self._workers = []
