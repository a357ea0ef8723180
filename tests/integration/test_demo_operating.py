"""`bjc demo` operated as docs/operating.md shows: kubectl annotate, kubectl patch, bjc trigger."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

from bjc.commands.demo import DEMO_CONFIG
from bjc.engine.configwatch import TRIGGER_ANNOTATION, TRIGGERED_EXECUTION_ANNOTATION
from tests.report_files import execution_dirs

ROOT = Path(__file__).resolve().parents[2]
BOUND = 60  # seconds: a hang bound, not a performance expectation
DEMO_NS, DEMO_CM = "bjc-demo", "configmap/bjc-demo"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


async def run(*cmd: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode == 0, (cmd, out, err)
    return out.decode()


async def line_with(stream: asyncio.StreamReader, text: str) -> str:
    async with asyncio.timeout(BOUND):
        while line := (await stream.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the demo ended without printing {text!r}")


async def test_demo_is_triggered_and_reloaded_through_kubectl_and_bjc_trigger(tmp_path):
    kubeconfig, reports = tmp_path / "kubeconfig", tmp_path / "reports"
    # no start-up run and a schedule that never fires: every execution here is a trigger
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({**yaml.safe_load(DEMO_CONFIG), "runOnStartup": False,
                        "cronExpression": "0 0 1 1 *"})
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bjc", "demo", "--nodes", "4", "--config", str(config),
        "--report-dir", str(reports), "--kubeconfig-out", str(kubeconfig),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert demo.stdout is not None and demo.stderr is not None
    try:
        await line_with(demo.stdout, "reload ")  # the announcement's last line
        kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "-n", DEMO_NS]

        await run(*kubectl, "annotate", "--overwrite", DEMO_CM, f"{TRIGGER_ANNOTATION}=t1", env=env)
        jsonpath = TRIGGER_ANNOTATION.replace(".", "\\.").replace("/trigger", "/triggered")
        await run(
            *kubectl, "wait", DEMO_CM, f"--for=jsonpath={{.metadata.annotations.{jsonpath}}}=t1",
            f"--timeout={BOUND}s", env=env,
        )  # fmt: skip
        cm = json.loads(await run(*kubectl, "get", DEMO_CM, "-o", "json", env=env))
        first = cm["metadata"]["annotations"][TRIGGERED_EXECUTION_ANNOTATION]

        changed = yaml.safe_load(cm["data"]["config.yaml"]) | {"podPoolSize": 2}
        patch = json.dumps({"data": {"config.yaml": yaml.safe_dump(changed)}})
        await run(*kubectl, "patch", DEMO_CM, "--type", "merge", "-p", patch, env=env)
        await line_with(demo.stderr, "configuration reloaded: podPoolSize")

        second = await run(
            sys.executable, "-m", "bjc", "trigger", "--kubeconfig", str(kubeconfig),
            "-n", DEMO_NS, "bjc-demo", env=env,
        )  # fmt: skip
        assert second.strip() > first
        await line_with(demo.stderr, f"execution {second.strip()}: 4 nodes, pool size 2")
    finally:
        demo.send_signal(signal.SIGTERM)
        await asyncio.wait_for(demo.wait(), BOUND)
    assert demo.returncode == 0
    assert [d.name for d in execution_dirs(reports)] == [first, second.strip()]
