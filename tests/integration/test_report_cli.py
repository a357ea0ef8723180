"""`bjc report` and the example job image script, as processes against `bjc mock`.

The `bjc` on PATH runs with the standard library only (see bjc_command), as in the
example job image.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bjc.commands.demo import DEMO_CONFIG
from tests.integration.bjc_command import REPO, path_with_bjc
from tests.integration.test_mock import Mock, job_env, running_mock

JOB_SCRIPT = REPO / "examples" / "job-image" / "job.sh"
ROUTES = "/report/node-a/202401011200"


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[Mock]:
    """The mock validating against the demo's gauges, which the example script reports."""
    with running_mock(tmp_path, DEMO_CONFIG) as started:
        yield started


def env_for(mock_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**job_env(mock_url), "PATH": path_with_bjc(tmp_path), **extra}


def bjc_report(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bjc", "report", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def mock_line(line: str) -> tuple[str, str, dict[str, str]]:
    """(path, status, fields) of a mock log line `POST <path> <status> key=value ...`.

    Fields are split at spaces, so only values without spaces come out whole.
    """
    _, path, status, *fields = line.split(" ", 3)
    rest = fields[0] if fields else ""
    if rest.startswith("file=") and " result=" in rest:
        name, result = rest.split(" result=", 1)
        return path, status, {"file": name[5:], "result": result}
    return path, status, dict(f.split("=", 1) for f in rest.split(" ") if "=" in f)


def test_example_job_script_reports_through_bjc_report(mock: Mock, tmp_path: Path) -> None:
    env = env_for(mock.url, tmp_path, CHECK_MOUNTS="/ /tmp")
    healthy = subprocess.run(
        ["/bin/sh", str(JOB_SCRIPT)], env={**env, "DISK_LIMIT_PERCENT": "101"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert healthy.returncode == 0, healthy.stderr
    full = subprocess.run(
        ["/bin/sh", str(JOB_SCRIPT)], env={**env, "DISK_LIMIT_PERCENT": "0"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr
    assert full.stdout.splitlines() == [
        "node-a-df.txt",  # the stored names `bjc report file` prints
        "node-a-uname.txt",
        "checked / /tmp on node-a in execution 202401011200",
    ]
    lines = mock.stop()
    assert len(lines) == 8, lines
    for run, event_type, reason, failed in (
        (lines[:4], "Normal", "ChecksPassed", 0),
        (lines[4:], "Warning", "DiskFull", 1),
    ):
        result, df, uname, event = (mock_line(line) for line in run)
        assert result[:2] == (f"{ROUTES}/result", "200")
        body = json.loads(result[2]["result"])
        assert [e["labels"]["mount"] for e in body["disk_used_ratio"]] == ["/", "/tmp"]
        assert all(0 <= e["value"] <= 1 for e in body["disk_used_ratio"])
        checks = {e["labels"]["check"]: e["value"] for e in body["failed_checks"]}
        assert checks == {"disk": failed, "tmp": 0}
        assert (df[1], df[2]["file"]) == ("200", "node-a-df.txt")
        assert (uname[1], uname[2]["file"]) == ("200", "node-a-uname.txt")
        assert int(uname[2]["bytes"]) > 0
        assert (event[1], event[2]["type"], event[2]["reason"]) == ("200", event_type, reason)
        assert event[2]["action"] == "Checked"
    assert lines[3].endswith('note="node node-a: disks below 101%"')
    assert lines[7].endswith('note="/ /tmp over 0% full"')


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exit_codes_tell_usage_refused_and_unreachable_apart(mock: Mock, tmp_path: Path) -> None:
    env = env_for(mock.url, tmp_path)
    # 3: the server refused (4xx), with its reason; nothing was retried
    refused = bjc_report(env, "event", "lowercase", "a message")
    assert refused.returncode == 3
    assert "400 invalid event: reason 'lowercase' must start with an upper-case letter" in (
        refused.stderr
    )
    not_json = bjc_report(env, "result", "-", stdin="disk is fine")
    assert (not_json.returncode, "400 error decoding result" in not_json.stderr) == (3, True)
    # 2: usage; nothing is sent
    assert bjc_report(env, "event", "OnlyReason").returncode == 2
    assert bjc_report(env, "upload", "x").returncode == 2
    missing = bjc_report(env, "file", str(tmp_path / "nope.txt"))
    assert (missing.returncode, "nope.txt: no such file" in missing.stderr) == (2, True)
    unset = bjc_report({**env, "CALLBACK_SERVICE_RESULT_URL": ""}, "result", "-", stdin="{}")
    assert unset.returncode == 2
    assert "CALLBACK_SERVICE_RESULT_URL is not set" in unset.stderr
    garbage = bjc_report({**env, "CALLBACK_SERVICE_EVENT_URL": "node-a/event"}, "event", "A", "b")
    assert garbage.returncode == 2
    assert "CALLBACK_SERVICE_EVENT_URL: invalid value 'node-a/event'" in garbage.stderr
    # 4: unreachable after the retries; the token stays out of the messages
    gone = f"http://127.0.0.1:{closed_port()}/report/node-a/1/event?token=s3cret"
    unreachable = bjc_report(
        {**env, "CALLBACK_SERVICE_EVENT_URL": gone},
        "event", "Reason", "message", "--retries", "2", "--backoff", "0.01",
    )  # fmt: skip
    assert unreachable.returncode == 4
    assert unreachable.stderr.count("retrying in") == 2
    assert "gave up after 3 attempts: cannot connect" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr and "token=***" in unreachable.stderr
    # only the two refused requests reached the mock
    assert [mock_line(line)[1] for line in mock.stop()] == ["400", "400"]


def test_result_and_files_from_arguments_and_stdin(mock: Mock, tmp_path: Path) -> None:
    env = env_for(mock.url, tmp_path)
    result = tmp_path / "result.json"
    result.write_text('{\n  "failed_checks": [{"value": 2, "labels": {"check": "ntp"}}]\n}\n')
    assert bjc_report(env, "result", str(result)).returncode == 0
    notes = tmp_path / "notes.md"
    notes.write_bytes(b"# notes\n")
    named = bjc_report(env, "file", str(notes), "--name", "renamed notes.md")
    assert (named.returncode, named.stdout) == (0, "node-a-renamed notes.md\n")
    piped = bjc_report(env, "file", "-", "--name", "piped.txt", stdin="from stdin\n")
    assert (piped.returncode, piped.stdout) == (0, "node-a-piped.txt\n")
    event = bjc_report(env, "event", "Found", "%d of %s", "3", "disks", "--type", "Warning")
    assert event.returncode == 0, event.stderr
    lines = mock.stop()
    assert mock_line(lines[0])[2] == {
        "file": "node-a.json",
        "result": '{"failed_checks":[{"value":2,"labels":{"check":"ntp"}}]}',
    }
    assert lines[1].endswith("200 file=node-a-renamed notes.md bytes=8")
    assert lines[2].endswith("200 file=node-a-piped.txt bytes=11")
    assert lines[3].endswith('200 event type=Warning reason=Found action=n/a note="3 of disks"')


def test_bjc_report_loads_nothing_but_the_standard_library(mock: Mock, tmp_path: Path) -> None:
    """Installed packages are available here (no -S), and still none is imported."""
    script = """
import json, sys
before = set(sys.modules)
from bjc.commands.cli import main
code = main(["report", "event", "Loaded", "modules"])
print(json.dumps([code, sorted(set(sys.modules) - before)]))
"""
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**job_env(mock.url), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    code, loaded = json.loads(run.stdout)
    assert code == 0
    ours = {m for m in loaded if m == "bjc" or m.startswith("bjc.")}
    assert ours == {
        "bjc",
        "bjc.commands",
        "bjc.commands.cli",
        "bjc.client",
        "bjc.commands.report_cli",
        "bjc.terminal",
    }
    foreign = [m for m in loaded if m.split(".")[0] not in (*sys.stdlib_module_names, "bjc")]
    assert foreign == []
    assert mock.stop()[0].endswith('200 event type=Normal reason=Loaded action=n/a note="modules"')


def test_a_retrys_marked_urls_reach_the_server_whole(mock: Mock, tmp_path: Path) -> None:
    """A retry's URLs end in `?retry=N` (with tokens `&token=...`): `bjc report` adds
    its own parameters with `&`, so the marker arrives intact (else: 400, exit 3)."""
    env = env_for(mock.url, tmp_path)
    for var in ("CALLBACK_SERVICE_RESULT_URL", "CALLBACK_SERVICE_FILE_URL"):
        env[var] += "?retry=2&token=t0k"
    piped = bjc_report(env, "file", "-", "--name", "after retry.txt", stdin="x")
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "node-a-after retry.txt\n", "")
    assert bjc_report(env, "result", "-", stdin='{"failed_checks": []}').returncode == 0
    lines = mock.stop()
    assert lines[0].endswith("200 file=node-a-after retry.txt bytes=1"), lines
