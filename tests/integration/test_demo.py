"""`bjc demo` end to end, as a user runs it: a process, its report history, job scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bjc.commands.demo import DEMO_CONFIG
from tests.integration.bjc_command import path_with_bjc
from tests.report_files import execution_dirs, state

ROOT = Path(__file__).resolve().parents[2]
A3_VARS = [
    "EXECUTION_ID",
    "NAMESPACE",
    "NODE_NAME",
    "CALLBACK_SERVICE_NAME",
    "CALLBACK_SERVICE_PORT",
    "CALLBACK_SERVICE_RESULT_URL",
    "CALLBACK_SERVICE_FILE_URL",
    "CALLBACK_SERVICE_EVENT_URL",
]


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bjc", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_runs_two_executions_and_leaves_a_complete_history(tmp_path):
    reports = tmp_path / "reports"
    done = demo("--nodes", "20", "--executions", "2", "--report-dir", str(reports))
    assert done.returncode == 0, done.stderr
    assert "reports" in done.stdout and "metrics" in done.stdout
    dirs = execution_dirs(reports)
    assert len(dirs) == 2
    assert (reports / "latest").resolve() == dirs[-1].resolve()
    for directory in dirs:
        st = state(directory)
        assert st.done and len(st.nodes) == 20
        assert all(j.status in ("succeeded", "failed") for j in st.nodes.values())
        for node, job in st.nodes.items():
            if job.result:
                result = json.loads((directory / f"{node}.json").read_text())
                assert set(result) == {"disk_used_ratio", "failed_checks"}
                assert (directory / f"{node}-report.txt").is_file()
            assert (directory / f"{node}-container-check.log").is_file()  # savePodLog
        assert sum(j.result for j in st.nodes.values()) >= 15  # ~5% of demo jobs crash


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_job_command_gets_the_pod_environment_and_its_curl_calls_work(tmp_path):
    reports, envs = tmp_path / "reports", tmp_path / "envs"
    envs.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        "name: seed\n"
        'cronExpression: "42 3 * * *"\n'
        "podPoolSize: 2\n"
        "reportDirectory: /unused\n"
        "callbackAuth: token\n"
        "metrics:\n"
        "  prefix: foo\n"
        "  gauges:\n"
        "    test:\n"
        "      help: help ...\n"
        "      labels: [label_a, label_b]\n"
    )
    command = f'env > "{envs}/$NODE_NAME.env" && sh {ROOT / "examples/job.sh"}'
    done = demo(
        "--nodes", "3", "--executions", "1", "--config", str(config),
        "--report-dir", str(reports), "--job-command", command,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (directory,) = execution_dirs(reports)
    eid = directory.name
    st = state(directory)
    assert sorted(st.nodes) == ["demo-node-001", "demo-node-002", "demo-node-003"]
    for node, job in st.nodes.items():
        assert job.status == "succeeded" and job.result, (node, job)  # every curl got 2xx
        env = dict(
            line.split("=", 1) for line in (envs / f"{node}.env").read_text().splitlines()
            if "=" in line
        )  # fmt: skip
        assert all(var in env for var in A3_VARS)
        assert env["NODE_NAME"] == node and env["EXECUTION_ID"] == eid
        assert env["NAMESPACE"] == "bjc-demo"
        base = f"http://{env['CALLBACK_SERVICE_NAME']}:{env['CALLBACK_SERVICE_PORT']}"
        for route in ("result", "file", "event"):
            url = env[f"CALLBACK_SERVICE_{route.upper()}_URL"]
            assert url == f"{base}/report/{node}/{eid}/{route}?token={job.token}"
        result = json.loads((directory / f"{node}.json").read_text())
        assert [e["value"] for e in result["test"]] == [1.0, 2.554]
        for name in ("summary.txt", "report.html", "a.log", "b.log"):
            assert (directory / f"{node}-{name}").is_file(), name
        assert node in (directory / f"{node}-summary.txt").read_text()


def test_job_image_script_reports_through_bjc_report(tmp_path):
    """examples/job-image/job.sh as every job pod, `bjc report` with the standard library only."""
    reports = tmp_path / "reports"
    config = tmp_path / "config.yaml"
    config.write_text(DEMO_CONFIG + "callbackAuth: token\n")
    env = {**os.environ, "PATH": path_with_bjc(tmp_path), "DISK_LIMIT_PERCENT": "101"}
    done = demo(
        "--nodes", "3", "--executions", "1", "--config", str(config),
        "--report-dir", str(reports), "--job-command", f"sh {ROOT / 'examples/job-image/job.sh'}",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (directory,) = execution_dirs(reports)
    st = state(directory)
    assert len(st.nodes) == 3
    for node, job in st.nodes.items():
        log = (directory / f"{node}-container-check.log").read_text()  # savePodLog
        assert job.status == "succeeded" and job.result, (node, job, log)
        assert f"checked / on {node} in execution {directory.name}" in log
        assert "refused" not in log  # the event was created too
        result = json.loads((directory / f"{node}.json").read_text())
        assert result["disk_used_ratio"][0]["labels"] == {"mount": "/"}
        assert {e["labels"]["check"]: e["value"] for e in result["failed_checks"]} == {
            "disk": 0,
            "tmp": 0,
        }
        assert "Filesystem" in (directory / f"{node}-df.txt").read_text()
        assert (directory / f"{node}-uname.txt").read_text().strip()
