"""Real processes for the benchmarks: a `bjc sim` cluster and `bjc run` controllers.

Benchmarks that measure bjc as it is deployed start it as a process, configured the
way a cluster configures it (environment variables, a ConfigMap read through the
API), against a `bjc sim` process on loopback; each process has its own
interpreter, so on 2 cores the simulator does not steal the controller's event loop.

Deliberately not here: what is measured (the bench_* modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from bjc.kube.client import Credentials, KubeClient

NS = "bench"
POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: check
      image: busybox:1.36
      command: ["sh", "-c", "echo checking {{ .NodeName }}"]
"""

# `bjc run` with `import uvloop` failing, as on a platform without uvloop wheels
_WITHOUT_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; from bjc.commands.cli import main; main()"
)


def config_yaml(**over: Any) -> str:
    cfg = {
        "name": "bench",
        "cronExpression": "0 0 1 1 *",
        "reportDirectory": "/tmp/unused",
        "reportHistory": 30,
        "podPoolSize": 10,
        "metrics": {
            "prefix": "bench",
            "gauges": {"check": {"help": "check result", "labels": ["kind"]}},
        },
        **over,
    }
    return yaml.safe_dump(cfg)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, and none handed out before by this process: the kernel
    may give a port just released again, and two servers of one `bjc run` on one port
    make it refuse its configuration."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def ports() -> dict[str, Any]:
    """Fresh ports for the servers a ConfigMap places (metrics: see config_yaml)."""
    return {
        "callbackServicePort": free_port(),
        "healthProbePort": free_port(),
        "fileServerPort": free_port(),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def sim_process(nodes: int, run_seconds: float = 0.0) -> Iterator[str]:
    """A `bjc sim` process (its own core); yields its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bjc",
            "sim",
            "--port",
            "0",
            "--nodes",
            str(nodes),
            "--run-seconds",
            str(run_seconds),
            "--history-size",
            "200000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise RuntimeError(f"bjc sim did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def credentials(api: str | Credentials) -> Credentials:
    """A `bjc sim` URL, or the credentials of a real apiserver (bench_kwok)."""
    return api if isinstance(api, Credentials) else Credentials(server=api)


async def put_config_map(api: str | Credentials, config_text: str, name: str = "bench") -> None:
    """The namespace (once) and ConfigMap `name` holding `config_text` and POD_TEMPLATE."""
    async with KubeClient(credentials(api)) as kube:
        with contextlib.suppress(Exception):
            await kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        cm = {
            "metadata": {"name": name, "namespace": NS},
            "data": {"config.yaml": config_text, "pod-template.yaml": POD_TEMPLATE},
        }
        with contextlib.suppress(Exception):
            await kube.request("DELETE", f"/api/v1/namespaces/{NS}/configmaps/{name}")
        await kube.create(f"/api/v1/namespaces/{NS}/configmaps", cm)


def write_kubeconfig(url: str, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sim",
                "clusters": [{"name": "sim", "cluster": {"server": url}}],
                "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim"}}],
                "users": [{"name": "sim", "user": {}}],
            }
        )
    )
    return path


def controller_process(
    url: str,
    workdir: Path,
    *,
    config_map: str = "bench",
    hostname: str = "bench-controller",
    log_level: str = "WARNING",
    uvloop: bool = True,
    stderr: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """`bjc run` against the sim, configured by ConfigMap `config_map` (put it first)."""
    env = {
        **os.environ,
        "NAMESPACE": NS,
        "CONFIG_MAP_NAME": config_map,
        "KUBECONFIG": str(write_kubeconfig(url, workdir / "kubeconfig")),
        "HOSTNAME": hostname,
        "POD_IP": "127.0.0.1",
        "LOG_LEVEL": log_level,
    }
    command = ["-m", "bjc", "run"] if uvloop else ["-c", _WITHOUT_UVLOOP, "run"]
    return subprocess.Popen([sys.executable, *command], env=env, stderr=stderr)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], limit: float = 120) -> None:
    """Until the controller's /readyz answers 200 (its history is loaded)."""
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bjc run exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("bjc run never became ready")


def stop(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
