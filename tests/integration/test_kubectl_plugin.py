"""`kubectl bjc ...`: the `kubectl-bjc` entry point found by kubectl on PATH, against bjc.sim.

The shim on PATH is what `pip install` makes of pyproject.toml's `kubectl-bjc` script
(it calls `bjc.commands.kubectl:main`). kubectl finds it for `kubectl bjc`; the
plugin reads the current kubeconfig context and its namespace (`ops` here, where the
Service `bjc` is) and reads the controller's summaries through the API server's
service proxy, to the file server the Service's ready pod names.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from bjc.sim import SimCluster
from bjc.web import bound_port, serve
from bjc.web.files import make_file_app

from .test_status import bjc_status, check_output, history

REPO = Path(__file__).resolve().parents[2]
BOUND = 60  # seconds: a hang bound, not a performance expectation
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def plugin_on_path(directory: Path) -> str:
    """A PATH whose first entry has `kubectl-bjc` as pip installs it, running this checkout."""
    bin_dir = directory / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "kubectl-bjc"
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)} "
        '-c "import sys; from bjc.commands.kubectl import main; sys.exit(main())" "$@"\n'
    )
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


async def kubectl(tmp_path: Path, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PATH": plugin_on_path(tmp_path), "KUBECONFIG": str(kubeconfig)}
    env.pop("BJC_URL", None)
    proc = await asyncio.create_subprocess_exec(
        "kubectl", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), BOUND)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def controller_behind_a_service(sim: SimCluster, namespace: str, port: int) -> None:
    """A Service `bjc` and a ready pod it selects, whose `files` port is `port` on 127.0.0.1."""
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bjc", "namespace": namespace},
            "spec": {
                "selector": {"app": "bjc"},
                "ports": [{"name": "files", "port": 8080, "targetPort": "files"}],
            },
        }
    )
    sim.create(  # as its kubelet reports it: ready, at 127.0.0.1
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bjc-0", "namespace": namespace, "labels": {"app": "bjc"}},
            "spec": {
                "containers": [
                    {
                        "name": "bjc",
                        "image": "bjc",
                        "ports": [{"name": "files", "containerPort": port}],
                    }
                ]
            },
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )


def with_namespace(sim: SimCluster, path: Path, namespace: str) -> Path:
    """The sim's kubeconfig, its current context's namespace set to `namespace` (as
    `kubectl config set-context --current --namespace` does)."""
    sim.write_kubeconfig(path)
    doc = yaml.safe_load(path.read_text())
    current = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
    current["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(doc))
    return path


def same_but_running_durations(a: str, b: str) -> bool:
    """The same text, but for the duration so far of a running execution ("1.2s+"),
    which grows between the two runs (and with it a column's width)."""

    def words(text: str) -> list[list[str]]:
        return [re.sub(r"[\d.]+ ?[a-z]*\+", "+", line).split() for line in text.splitlines()]

    return words(a) == words(b)


async def test_kubectl_bjc_status_prints_what_bjc_status_prints(sim: SimCluster, tmp_path: Path):
    reports = tmp_path / "reports"
    await history(reports)
    runner = await serve(make_file_app(reports), "127.0.0.1", 0)
    try:
        port = bound_port(runner)
        controller_behind_a_service(sim, "ops", port)
        kubeconfig = with_namespace(sim, tmp_path / "kubeconfig", "ops")
        code, out, err = await kubectl(tmp_path, kubeconfig, "bjc", "status")
        assert code == 0, err
        direct = await bjc_status("--url", f"http://127.0.0.1:{port}")
        code, _, err = await kubectl(tmp_path, kubeconfig, "bjc", "status", "-n", "default")
    finally:
        await runner.cleanup()
    check_output(out)
    assert direct[0] == 0 and same_but_running_durations(direct[1], out), "\n".join(
        difflib.unified_diff(direct[1].splitlines(), out.splitlines())
    )
    assert code == 1 and 'services "bjc" not found' in err, err
