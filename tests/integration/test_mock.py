"""`bjc mock` as a subprocess, driven by the example job script (examples/job.sh) and curl."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bjc.terminal import UNSAFE

REPO = Path(__file__).resolve().parents[2]
JOB_SCRIPT = REPO / "examples" / "job.sh"
CURL = "/usr/bin/curl"
MOCK = [sys.executable, "-m", "bjc.commands.mock"]

CONFIG = """\
name: example
cronExpression: "42 3 * * *"
reportDirectory: /var/www
podPoolSize: 2
metrics:
  prefix: foo
  gauges:
    test:
      help: help ...
      labels: [label_a, label_b]
"""


class Mock:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> list[str]:
        """Stop the mock (SIGTERM) and return its stdout lines after the banner."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0
        return out.splitlines()


@contextlib.contextmanager
def running_mock(cwd: Path, config: str = CONFIG) -> Iterator[Mock]:
    """`bjc mock --config <config>` on a free loopback port, working directory `cwd`."""
    path = cwd / "config.yaml"
    path.write_text(config)
    proc = subprocess.Popen(
        [*MOCK, "--host", "127.0.0.1", "--port", "0", "--config", str(path)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("bjc mock: callback API on http://127.0.0.1:"), banner
        url = banner.split()[5].split("/report/")[0]
        yield Mock(proc, url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[Mock]:
    with running_mock(tmp_path) as started:
        yield started


def job_env(base: str, node: str = "node-a", eid: str = "202401011200") -> dict[str, str]:
    report = f"{base}/report/{node}/{eid}"
    return {
        **os.environ,
        "NODE_NAME": node,
        "EXECUTION_ID": eid,
        "CALLBACK_SERVICE_RESULT_URL": f"{report}/result",
        "CALLBACK_SERVICE_FILE_URL": f"{report}/file",
        "CALLBACK_SERVICE_EVENT_URL": f"{report}/event",
    }


def test_example_job_script_against_mock(mock: Mock, tmp_path: Path) -> None:
    run = subprocess.run(
        ["/bin/sh", str(JOB_SCRIPT)], env=job_env(mock.url), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    lines = mock.stop()
    base = "POST /report/node-a/202401011200"
    assert len(lines) == 6, lines
    result, named, disposition, multipart, event, event_args = lines
    assert result.startswith(f"{base}/result 200 file=node-a.json result=")
    assert '"label_a":"AAA2"' in result and "2.554" in result
    summary = "checked on node-a in execution 202401011200\n"  # written by job.sh
    assert named == f"{base}/file 200 file=node-a-summary.txt bytes={len(summary)}"
    assert disposition.startswith(f"{base}/file 200 file=node-a-report.html bytes=")
    assert multipart == f"{base}/file 200 file=node-a-a.log bytes=7 file=node-a-b.log bytes=7"
    assert event == (
        f'{base}/event 200 event type=Normal reason=TestReason action=n/a note="test message"'
    )
    assert event_args == (
        f'{base}/event 200 event type=Warning reason=TestReason action=n/a note="test message: a1"'
    )
    # Nothing stored: the working directory holds only the config.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(
        [CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True, text=True
    )
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_mock_validates_like_the_controller(mock: Mock) -> None:
    base = f"{mock.url}/report/any-node/anything"
    json_header = ["-H", "Content-Type: application/json"]
    assert curl("-X", "POST", *json_header, "-d", "{}", f"{base}/result")[0] == 400
    code, body = curl(
        "-X", "POST", *json_header, "-d", '{"bad-name": [{"value": 1}]}', f"{base}/result"
    )
    assert (code, "invalid metric name" in body) == (400, True)  # prefix of --config applies
    code, body = curl("-X", "POST", "-d", "oops", f"{base}/event")
    assert (code, body.startswith("error decoding event")) == (400, True)
    code, _ = curl("-X", "POST", "--data-binary", "x", f"{base}/file?name=../../etc/passwd")
    assert code == 400
    lines = mock.stop()
    assert [line.split()[2] for line in lines] == ["400", "400", "400", "400"]
    assert 'error="invalid upload' in lines[3]


def test_mock_applies_the_hostile_input_rules(mock: Mock) -> None:
    base = f"{mock.url}/report/node-a/202401011200"
    code, body = curl("-X", "POST", "--data-binary", "x", f"{base}/file?name=container-c.log")
    assert (code, "reserved for bjc" in body) == (400, True)  # pod-log names are bjc's
    many = json.dumps({"test": [{"value": i, "labels": {"label_a": str(i)}} for i in range(1001)]})
    code, body = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", many,
                      f"{base}/result")  # fmt: skip
    assert (code, "maxSeriesPerNode (1000)" in body) == (400, True)
    event = json.dumps({"reason": "R", "message": "%999999999s|%-9999999s", "args": ["a", "b"]})
    assert curl("-X", "POST", "-d", event, f"{base}/event")[0] == 200
    code, body = curl(f"{mock.url}/openapi.json")
    assert (code, json.loads(body)["info"]["title"]) == (200, "bjc callback API")
    lines = mock.stop()
    assert [line.split()[2] for line in lines] == ["400", "400", "200", "200"]
    assert 'note="%!(NOVERB)%!(EXTRA string=a, string=b)"' in lines[2]


def test_mock_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("name: x\ncronExpression: not a cron\n")
    run = subprocess.run(
        [*MOCK, "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert run.returncode == 1
    assert "cronExpression" in run.stderr


def test_mock_prints_control_characters_a_job_sent_as_escapes(mock: Mock) -> None:
    base = f"{mock.url}/report/node-a/202401011200"
    attack = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil"
    event = json.dumps({"reason": "Hostile", "message": attack}, ensure_ascii=False)
    result = json.dumps({"test": [{"value": 1, "labels": {"label_a": attack}}]})
    bodies = [
        (f"{base}/result", result.encode()),
        (f"{base}/event", event.encode()),
        (f"{mock.url}/report/node-%1b%5b2J/202401011200/event", event.encode()),
    ]
    for url, body in bodies:
        request = urllib.request.Request(url, data=body, method="POST")
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=30).close()
    lines = mock.stop()
    assert len(lines) == 3
    assert all(UNSAFE.search(line) is None for line in lines)
    shown = "\\u001b]0;pwned\\u0007\\u001b[2J\\x9b31m\\u202eevil"  # JSON's and visible's
    assert f'"label_a":"{shown}"' in lines[0]
    assert f'note="{shown}"' in lines[1]
    assert lines[2].startswith("POST /report/node-\\x1b[2J/202401011200/event 400")
