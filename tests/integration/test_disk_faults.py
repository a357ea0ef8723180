"""A report directory that stops taking writes: full (ENOSPC) or read-only (EROFS).

The faults are the kernel's own: the report directory is a small tmpfs mounted for the
test, filled until writes fail with ENOSPC, or remounted read-only (EROFS), and freed
or remounted read-write again while the controller keeps running. Mounting needs
CAP_SYS_ADMIN: without it these tests skip, except under CI (`CI=true`), where they
fail instead (CI runs as root, as the real control plane needs).

What they prove: a result or an upload the directory cannot take is answered `507`
(full) or `503` (read-only), with `Retry-After` and the errno in the body, and nothing
of it is kept; the store says so in one ERROR line and the recovery in one WARNING
line, never a traceback per request; `bjc_report_directory_writable` goes 0, then 1;
a pod log that cannot be saved does not stop anything; and after the fault the same
requests succeed without a restart, and every result acknowledged before, during or
after it is there, also for a restarted controller.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from bjc.reports.execution import JobStatus
from bjc.reports.store import JOURNAL_FILE, ReportStore, WriteFailed
from bjc.sim import JobBehaviour, RunningPod
from tests.report_files import state

from .harness import cluster
from .test_controller import BOUND, scrape

EID = "202401011200"
TMPFS_SIZE = "1m"  # room for the state and results of a small execution
FILLER = "filler"  # not an execution id: bjc leaves it alone


class Disk:
    """A tmpfs mounted at `path`, and the faults it can be put into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Write a filler file until the kernel answers ENOSPC, to the last byte."""
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (64 * 1024, 4096, 1):
                chunk = b"\0" * size
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.path / FILLER).unlink()

    def read_only(self) -> None:
        _mount("-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        _mount("-o", "remount,rw", str(self.path))


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "reports"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "bjc-test", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        why = f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


# fault name -> (start it, end it, the answer, the errno's name)
FAULTS: dict[str, tuple[Callable[[Disk], None], Callable[[Disk], None], int, str]] = {
    "full": (Disk.fill, Disk.free, 507, "ENOSPC"),
    "read-only": (Disk.read_only, Disk.read_write, 503, "EROFS"),
}


def result_body(node: str, value: float) -> bytes:
    return json.dumps({"checks": [{"value": value, "labels": {"kind": node}}]}).encode()


async def post(
    http: aiohttp.ClientSession, pod: RunningPod, route: str, body: bytes, **params: str
) -> tuple[int, str, str | None]:
    """What a job pod sends: (status, body, Retry-After)."""
    url = pod.env[f"CALLBACK_SERVICE_{route.upper()}_URL"]
    async with http.post(url, data=body, params=params) as resp:
        return resp.status, await resp.text(), resp.headers.get("Retry-After")


def store_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bjc.reports.store" and r.levelno == level
    ]


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_report_directory_that_stops_taking_writes_refuses_says_so_once_and_recovers(
    tmp_path, disk, caplog, plane, fault
):
    caplog.set_level(logging.DEBUG)
    start_fault, end_fault, status, code = FAULTS[fault]
    pods: dict[str, RunningPod] = {}
    all_running = asyncio.Event()
    ends: dict[str, asyncio.Event] = {}

    async def job(pod: RunningPod) -> int:
        pods[pod.node] = pod
        if len(pods) == len(ends):
            all_running.set()
        await ends[pod.node].wait()
        return 0

    async with cluster(tmp_path, plane) as c:
        # before: acknowledged before the fault; during: refused, then accepted after it;
        # ended: its job ends during the fault (its pod log cannot be saved)
        before, during, ended = await c.ready_nodes(3)
        ends.update({n: asyncio.Event() for n in (before, during, ended)})
        await c.start_agent(JobBehaviour(run=job))
        runtime = await c.start_controller(report_dir=disk.path, savePodLog=True)
        async with asyncio.timeout(BOUND):
            await runtime.controller.trigger("test")
            await all_running.wait()
        execution = runtime.controller.current
        assert execution is not None
        directory = disk.path / execution.id
        acknowledged: dict[str, bytes] = {}

        async with aiohttp.ClientSession() as http, asyncio.timeout(BOUND):
            body = result_body(before, 1.0)
            assert (await post(http, pods[before], "result", body))[0] == 200
            acknowledged[before] = body

            start_fault(disk)
            refused = [
                await post(http, pods[during], "result", result_body(during, 2.0)),
                await post(http, pods[during], "file", b"a report\n", name="report.txt"),
                await post(http, pods[during], "result", result_body(during, 3.0)),
            ]
            strerror = os.strerror(getattr(errno, code))
            reason = f"report directory not writable ({code}: {strerror}); retry later\n"
            assert refused == [(status, reason, "10")] * 3
            ends[ended].set()  # a job ends: its state and pod log meet the fault too
            await execution.wait_finished(ended)
            await runtime.controller.jobs.side_work.drain()
            series = await scrape(runtime)
            assert series[("bjc_report_directory_writable", ())] == 0
            kept = {p.name for p in directory.iterdir()}
            assert f"{during}.json" not in kept and f"{during}-report.txt" not in kept
            assert not [name for name in kept if name.startswith(".bjc-tmp-")]
            if plane is None:  # the simulated cluster serves pod logs
                assert f"{ended}-container-main.log" not in kept
            assert store_lines(caplog, logging.WARNING) == []
            (said,) = store_lines(caplog, logging.ERROR)  # once, for three refusals
            assert f"report directory {disk.path} is not writable ({code})" in said
            assert f"[Errno {getattr(errno, code)}]" in said and str(directory) in said

            end_fault(disk)  # the same requests succeed, without a restart
            body = result_body(during, 3.0)
            assert (await post(http, pods[during], "result", body))[0] == 200
            acknowledged[during] = body
            saved = await post(http, pods[during], "file", b"a report\n", name="report.txt")
            assert saved[:2] == (200, f"{during}-report.txt\n")
            body = result_body(ended, 4.0)  # the ended job's result, sent late
            assert (await post(http, pods[ended], "result", body))[0] == 200
            acknowledged[ended] = body
            series = await scrape(runtime)
            assert series[("bjc_report_directory_writable", ())] == 1
            assert store_lines(caplog, logging.WARNING) == [
                f"report directory {disk.path} is writable again"
            ]
            assert len(store_lines(caplog, logging.ERROR)) == 1
            counted = {
                dict(labels)["route"]: value
                for (name, labels), value in series.items()
                if name == "bjc_callback_requests_total" and dict(labels)["code"] == str(status)
            }
            assert counted == {"result": 2, "file": 1}

        # the state change lost to the fault is written with the next one
        ends[before].set()
        async with asyncio.timeout(BOUND):
            await execution.wait_finished(before)
            await execution.flushed()
        on_disk = state(directory).nodes
        assert on_disk[ended].status is JobStatus.SUCCEEDED
        assert on_disk[before].status is JobStatus.SUCCEEDED
        ends[during].set()
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert not runtime.failed.is_set()  # the process kept running throughout
        assert [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR] == []
        for node, body in acknowledged.items():
            assert (directory / f"{node}.json").read_bytes() == body
        assert (directory / f"{during}-report.txt").read_bytes() == b"a report\n"

        # nothing acknowledged is lost: a restarted controller counts every result
        await c.stop_controllers()
        runtime = await c.start_controller(report_dir=disk.path, savePodLog=True)
        series = await scrape(runtime)
        reported = {
            dict(labels)["node"]: value
            for (name, labels), value in series.items()
            if name == "bjc_test_checks"
        }
        assert reported == {before: 1.0, during: 3.0, ended: 4.0}


async def test_a_journal_append_that_does_not_fit_leaves_the_journal_as_it_was(disk):
    store = ReportStore(disk.path)
    await store.create_execution(EID)
    await store.append_journal(EID, b'{"node": "a"}\n')
    disk.fill()
    with pytest.raises(WriteFailed) as failed:  # larger than the last page has left
        await store.append_journal(EID, b"x" * 64 * 1024 + b"\n")
    assert failed.value.no_space and failed.value.code == "ENOSPC"
    assert (disk.path / EID / JOURNAL_FILE).read_bytes() == b'{"node": "a"}\n'
    assert not store.writable
