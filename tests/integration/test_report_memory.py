"""`bjc report` streams its input: peak memory with 128 MiB on stdin or in a file.

Before, `bjc report file -` and `bjc report result FILE|-` read the whole input into
memory (500 MB in, 521 MB resident). Now stdin goes through a temporary file, a file
is sent from disk, and a result over `--max-size` is refused before it is read
further. Each command's peak resident memory (`ru_maxrss`, see `PEAK_RSS`) is
compared with the same command sending 1 KiB. The 128 MiB are
made as they are written to the pipe, 1 MiB at a time.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.bjc_command import REPO
from tests.integration.test_mock import CONFIG, Mock, job_env, running_mock

MiB = 1024 * 1024
BIG = 128 * MiB
SLACK_MB = 20  # what streaming may add: buffers of a few MiB, nowhere near the input


@dataclass
class Measured:
    code: int
    out: str
    err: str
    peak_mb: float


#: Runs the command given after it and writes its peak RSS (KiB) to the file named first.
#: A child's `ru_maxrss` starts at its parent's peak when it was spawned (Linux keeps
#: the larger), so the command is spawned by this small fresh interpreter, not by the
#: test process, whose own peak would otherwise hide the command's.
PEAK_RSS = """\
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def bjc_report(env: dict[str, str], *args: str, feed: int = 0) -> Measured:
    """`bjc report ARGS` with `feed` bytes on its stdin; its own peak RSS."""
    peak = Path(env["TMPDIR"]).parent / "peak-rss"
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", PEAK_RSS, str(peak),
         sys.executable, "-m", "bjc", "report", *args],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    outputs: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=name, s=stream: outputs.__setitem__(n, s.read()))
        for name, stream in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    chunk = b"x" * (MiB - 1) + b"\n"
    with contextlib.suppress(BrokenPipeError):  # a refusal stops reading: so be it
        for _ in range(feed // MiB):
            proc.stdin.write(chunk)
        proc.stdin.write(chunk[: feed % MiB])
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    code = proc.wait(60)
    for reader in readers:
        reader.join(60)
    return Measured(
        code, outputs["out"].decode(), outputs["err"].decode(), int(peak.read_text()) / 1024
    )


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[Mock]:
    """A mock that takes uploads of up to 1 GiB (it counts them and keeps nothing)."""
    with running_mock(tmp_path, CONFIG + "maxUploadSize: 1Gi\n") as started:
        yield started


@pytest.fixture
def env(mock: Mock, tmp_path: Path) -> dict[str, str]:
    spool = tmp_path / "tmp"
    spool.mkdir()
    return {**job_env(mock.url), "PYTHONPATH": str(REPO), "TMPDIR": str(spool)}


@pytest.mark.timeout(300)
def test_stdin_of_128_mib_is_uploaded_in_bounded_memory(mock: Mock, env: dict[str, str]) -> None:
    small = bjc_report(env, "file", "-", "--name", "small.txt", feed=1024)
    big = bjc_report(env, "file", "-", "--name", "big.txt", feed=BIG)
    assert (small.code, big.code) == (0, 0), big.err
    assert big.out == "node-a-big.txt\n"
    assert mock.stop()[1].endswith(f"200 file=node-a-big.txt bytes={BIG}")  # all of it
    assert big.peak_mb < small.peak_mb + SLACK_MB, (small.peak_mb, big.peak_mb)


@pytest.mark.timeout(300)
def test_a_result_is_refused_past_max_size_without_reading_it_all(
    mock: Mock, env: dict[str, str], tmp_path: Path
) -> None:
    small = bjc_report(env, "result", "-", feed=1024)
    piped = bjc_report(env, "result", "-", feed=BIG)  # over the default 64Mi
    sparse = tmp_path / "result.json"  # 128 MiB on disk, without writing them
    with sparse.open("wb") as f:
        f.truncate(BIG)
    from_file = bjc_report(env, "result", str(sparse))
    for refused in (piped, from_file):
        assert refused.code == 2  # usage: nothing was sent
        assert "result larger than 67108864 bytes (--max-size): not sent" in refused.err
        assert refused.peak_mb < small.peak_mb + SLACK_MB, (small.peak_mb, refused.peak_mb)
    assert small.code == 3  # 1 KiB of "x" reached the mock, which refused it: not JSON
    # with a higher bound, the result streams to the controller, which decides (here: 400)
    sent = bjc_report(env, "result", "-", "--max-size", "1Gi", feed=BIG)
    assert sent.code == 3 and "400 error decoding result" in sent.err
    assert sent.peak_mb < small.peak_mb + SLACK_MB, (small.peak_mb, sent.peak_mb)
    assert [line.split()[2] for line in mock.stop()] == ["400", "400"]
