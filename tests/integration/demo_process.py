"""A running `bjc demo` with fixed job outcomes, for tests that look at it from outside.

The jobs are `jobs/fixed_outcomes.sh` through `bjc report`: on 8 nodes, demo-node-002
fails (and logs why), demo-node-004 succeeds without a result, demo-node-005 runs past
`jobTimeout` (15s: ample for the others on a busy machine); the other five report a
result and a file. The demo stays up (the next execution is an hour away) until the
context ends, so Prometheus can scrape it and a browser can read its pages.

Also here: `require`, which skips a test whose outside tool is missing, but fails it
under CI (`CI=true`), whose `.ci/run` installs those tools: CI never skips them.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import pytest

from bjc.commands.demo import DEMO_CONFIG
from tests.integration.bjc_command import path_with_bjc

REPO = Path(__file__).resolve().parents[2]
JOB = Path(__file__).parent / "jobs" / "fixed_outcomes.sh"
NODES = 8
FAILED, NO_RESULT, TIMED_OUT = "demo-node-002", "demo-node-004", "demo-node-005"
PREFIX = "bjc_demo"  # metrics.prefix of the demo's configuration
BOUND = 120.0  # seconds: a hang bound, not a performance expectation

CONFIG = (
    DEMO_CONFIG.replace('"@every 30s"', '"@every 1h"')
    .replace("jobTimeout: 2m", "jobTimeout: 15s")
    .replace("podPoolSize: 5", "podPoolSize: 3")
)
assert all(s in CONFIG for s in ('"@every 1h"', "jobTimeout: 15s", "podPoolSize: 3")), CONFIG


def unavailable(what: str) -> NoReturn:
    """Skip the test for want of `what`; fail it under CI, which installs everything."""
    reason = f"not installed: {what} (.ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require(*tools: str) -> dict[str, str]:
    """The paths of the commands `tools` (see `unavailable` for missing ones)."""
    found = {tool: shutil.which(tool) for tool in tools}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        unavailable(", ".join(missing))
    return {tool: path for tool, path in found.items() if path is not None}


class Lines:
    """The lines of a child's pipe, read by a thread: waiting on them never blocks it."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = BOUND) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"ended before {pattern!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n" + "\n".join(self.seen))


def wait_until(check: Callable[[], object], what: str, timeout: float = BOUND) -> object:
    """For state outside our reach that announces nothing (files, Prometheus' data)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)
    return value


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RunningDemo:
    reports: Path
    files_url: str  # the file server, e.g. http://127.0.0.1:8080
    metrics_address: str  # host:port of /metrics
    execution: str  # the id of its first, finished execution
    log: Lines  # its stderr


@contextmanager
def running_demo(directory: Path) -> Iterator[RunningDemo]:
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    reports = directory / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bjc", "demo", "--nodes", str(NODES), "--config", str(config),
         "--report-dir", str(reports), "--job-command", f"sh {JOB}"],
        cwd=REPO, env={**os.environ, "PATH": path_with_bjc(directory)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, log = Lines(proc.stdout), Lines(proc.stderr)
        files = out.wait_for(r"browse: (http://127\.0\.0\.1:\d+)/").group(1)
        metrics = out.wait_for(r"metrics +http://(127\.0\.0\.1:\d+)/metrics").group(1)
        eid = log.wait_for(r"execution (\d{12}) finished:").group(1)
        # the controller saves a pod's log after the pod ended, off its critical path
        failed_log = reports / eid / f"{FAILED}-container-check.log"
        wait_until(failed_log.exists, f"{failed_log} is saved")
        yield RunningDemo(reports, files, metrics, eid, log)
    finally:
        stop(proc)
