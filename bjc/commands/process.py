"""Process-level concerns shared by `bjc run` and `bjc demo`: log format, signals, event
loop, garbage collector.

Kept apart from `bjc.commands.cli` so that the commands can share them without importing
each other, and from the runtime, which never touches process state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from bjc.terminal import json_safe, visible

T = TypeVar("T")


class _HumanFormatter(logging.Formatter):
    """`2024-01-01 12:00:00.123 INFO    bjc.engine.controller: ...` (local time, milliseconds).

    Messages carry text jobs control (node and file names, reasons, log lines): a record
    is one line, its control characters shown as escapes (`bjc.terminal.visible`), so a
    job can neither forge a log line nor send escape sequences to whoever reads the log
    in a terminal. A traceback keeps its line breaks and nothing else.
    """

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _lines(super().formatStack(stack_info))


def _lines(text: str) -> str:
    return "\n".join(visible(line) for line in text.split("\n"))


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; `ts` is RFC 3339 local time with milliseconds.

    JSON escapes C0 controls itself; DEL, C1 controls and bidi overrides are escaped
    too (`bjc.terminal.json_safe`), so the line decodes to exactly what was logged and
    shows no control character in a terminal.
    """

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).astimezone()
        entry = {
            "ts": when.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json_safe(msgspec.json.encode(entry).decode())


def log_formatter(human: bool) -> logging.Formatter:
    """Timestamps carry milliseconds: pod events and callbacks are often that close."""
    return _HumanFormatter() if human else _JsonFormatter()


def setup_logging(human: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(human))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def wait_for_signal(failed: asyncio.Event | None = None) -> bool:
    """Return on SIGTERM or SIGINT (True), or once `failed` is set (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait())]
    if failed is not None:
        waits.append(asyncio.ensure_future(failed.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        return stop.is_set()
    finally:
        for wait in waits:
            wait.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where uvloop is installed, else None: asyncio's own loop.

    uvloop serves the callback API faster (see docs/benchmarks.md); a platform
    without its wheels runs on asyncio's loop, which does everything just as well.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


#: The cyclic garbage collector's thresholds in a controller process (Python's: 700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 100)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the loop of `event_loop_factory` (`bjc run`, `bjc demo`).

    With Python's default thresholds a full collection, which walks every long-lived
    object (the metric series, the kept executions), ran every few thousand result
    callbacks and stalled the loop for tens of milliseconds: at 50 connections the
    callbacks' p99 was 22 - 38 ms, with GC_THRESHOLDS 10 - 15 ms, at the same RSS
    (docs/benchmarks.md). Nearly everything bjc frees goes by reference counting;
    the collector only has to find the rare cycle.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)
