"""`bjc status` as a process, reading a file server over HTTP or a report directory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from bjc.commands.status import progress_bar
from bjc.reports.execution import JobStatus
from bjc.reports.store import ReportStore
from bjc.terminal import UNSAFE
from bjc.web import bound_port, serve
from bjc.web.files import make_file_app
from tests.example_history import EID, OLD, write_execution

BOUND = 60  # seconds: a hang bound, not a performance expectation


async def bjc_status(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bjc", "status", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def history(root: Path) -> None:
    """OLD finished, EID running with 6 of 8 nodes finished."""
    store = ReportStore(root)
    old = await write_execution(store, OLD)
    for node in ("busy", "waiting"):
        old.finish(node, JobStatus.SUCCEEDED)
    old.close()
    await old.flushed()
    await write_execution(store, EID)


def check_output(out: str) -> None:
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["EXECUTION", "STATE", "STARTED", "DURATION"]
    assert lines[1].startswith(f"{EID}  running")
    assert lines[2].strip() == progress_bar(6, 8)  # under the running execution
    assert lines[3].startswith(f"{OLD}  finished")
    errors = lines[lines.index(f"execution {EID}: 5 node(s) with errors") + 1 :]
    assert [line.split()[:2] for line in errors] == [
        ["crashed", "failed"], ["deadline", "timed"], ["slow", "timed"], ["gone", "aborted"],
        ["no-result", "succeeded"],
    ]  # fmt: skip
    assert "pod failed: /var is read-only" in errors[0]
    assert "no result arrived" in errors[-1]


async def test_status_from_the_file_server(tmp_path: Path) -> None:
    await history(tmp_path)
    runner = await serve(make_file_app(tmp_path), "127.0.0.1", 0)
    try:
        code, out, err = await bjc_status("--url", f"http://127.0.0.1:{bound_port(runner)}/")
    finally:
        await runner.cleanup()
    assert code == 0, err
    check_output(out)


async def test_status_from_a_report_directory(tmp_path: Path) -> None:
    await history(tmp_path)
    code, out, err = await bjc_status("--report-dir", str(tmp_path))
    assert code == 0, err
    check_output(out)

    code, out, _ = await bjc_status(
        "--report-dir", str(tmp_path), "--execution", OLD, "--nodes", "1"
    )
    assert code == 0
    assert f"execution {OLD}: 7 node(s) with errors" in out  # + 2 without result
    assert "... and 6 more (--nodes N)" in out


async def test_status_says_why_it_cannot_tell(tmp_path: Path, unused_tcp_port: Any) -> None:
    code, _, err = await bjc_status("--report-dir", str(tmp_path / "missing"))
    assert code == 1 and "no such directory" in err

    code, out, err = await bjc_status("--report-dir", str(tmp_path))
    assert code == 0 and out.strip() == "no execution yet"

    await history(tmp_path)
    code, _, err = await bjc_status("--report-dir", str(tmp_path), "--execution", "209901010000")
    assert code == 1 and "execution 209901010000 does not exist" in err

    code, _, err = await bjc_status("--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert code == 1 and "cannot reach" in err

    code, _, err = await bjc_status("--url", "http://x", "--report-dir", str(tmp_path))
    assert code == 2 and "not allowed with argument" in err


def test_progress_bar() -> None:
    assert progress_bar(0, 4, width=8) == "[--------]  0/4 finished (0%)"
    assert progress_bar(3, 4, width=8) == "[######--]  3/4 finished (75%)"
    assert progress_bar(0, 0, width=8) == "[########]  0/0 finished (100%)"


async def test_status_shows_control_characters_of_a_pod_log_as_escapes(tmp_path: Path) -> None:
    """A failed node's last log line retitled, cleared and switched the operator's terminal."""
    await history(tmp_path)
    line = "\x1b]0;pwned\x07\x1b[2J\x1b[?1049h /var is read-only\x9b31m\u202edetaeh"
    await ReportStore(tmp_path).write_log(EID, "crashed", "check", f"starting\n{line}\n".encode())
    runner = await serve(make_file_app(tmp_path), "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}/"
        outputs = [await bjc_status("--url", url), await bjc_status("--report-dir", str(tmp_path))]
    finally:
        await runner.cleanup()
    for code, out, err in outputs:
        assert code == 0, err
        assert UNSAFE.search(out.replace("\n", "")) is None  # no raw control character
        (shown,) = [s for s in out.splitlines() if s.lstrip().startswith("crashed")]
        escaped = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[?1049h /var is read-only\\x9b31m\\u202edetaeh"
        assert shown.endswith(f"pod failed: {escaped}")
