"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, as processes in a scratch directory.

Shared by the e2e fixtures and the real-apiserver benchmark. What it deliberately
leaves out, and what stands in:
- no kubelet: `bjc.sim.NodeAgent` (job pods, and controller pods as local `bjc run`
  processes) or kwok (the benchmark's fake nodes) plays it, or a real kubelet of
  tests/e2e/realnode joins (`address` then is the machine's, so that containers reach
  the apiserver through the `kubernetes` Service, and `service_range` one that pods
  route to the node);
- no kube-proxy: a Service's ClusterIP routes nowhere. The default service range is
  127.96.0.0/16, inside loopback, so nothing a test does with a ClusterIP can leave
  the machine;
- the controller-manager runs every controller; node lifecycle with a grace period
  of an hour, since the agent sends no node heartbeats (it would otherwise taint and
  evict every node after ~50 s). It still lifts the not-ready taint that admission
  puts on every new node once the node reports Ready.
All components authenticate with one static admin token (group system:masters);
bjc itself authenticates as its ServiceAccount under the manifests' RBAC.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bjc.kube.client import KubeClient

from .binaries import Binaries

ADMIN_TOKEN = "bjc-e2e-admin-token"
START_BOUND = 120.0  # seconds: a hang bound for each component's start-up
SERVICE_RANGE = "127.96.0.0/16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class ControlPlane:
    """Start with `start()`, stop with `stop()`; `url`, `kubeconfig` and `kubectl` once started."""

    binaries: Binaries
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bjc-e2e-")))
    controller_manager: bool = True
    scheduler: bool = True
    address: str = "127.0.0.1"  # the apiserver's bind and advertised address
    service_range: str = SERVICE_RANGE
    url: str = ""
    token: str = ADMIN_TOKEN
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _commands: dict[str, tuple[list[str], str]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # --- kubectl and kubeconfigs ---

    def write_kubeconfig(self, path: Path, token: str, namespace: str | None = None) -> Path:
        context: dict[str, str] = {"cluster": "e2e", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "e2e", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": context}],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def run_kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binaries["kubectl"], "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        done = self.run_kubectl(*args, input=input, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def logs(self) -> str:
        """The tail of every component's log, for a failure message."""
        return "\n".join(
            f"--- {name}:\n{tail(self.workdir / f'{name}.log', 15)}" for name, _ in self._procs
        )

    # --- lifecycle ---

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        work = self.workdir
        subprocess.run(
            ["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"],
            check=True,
            capture_output=True,
        )
        (work / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')

        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                self.binaries["etcd"],
                "--name", "e2e",
                "--data-dir", str(work / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"e2e=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
            ],
            f"http://127.0.0.1:{client}/health",
        )  # fmt: skip

        port = free_port()
        self.url = f"https://{self.address}:{port}"
        # the `kubernetes` Endpoints may not hold a loopback address
        endpoints = ["--endpoint-reconciler-type=none"] if self.address == "127.0.0.1" else []
        self._spawn(
            "kube-apiserver",
            [
                self.binaries["kube-apiserver"],
                f"--etcd-servers=http://127.0.0.1:{client}",
                f"--secure-port={port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                *endpoints,
                # `kubectl logs` and `exec` reach a real kubelet by its node IP
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={work / 'certs'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={work / 'sa.key'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                f"--service-cluster-ip-range={self.service_range}",
                "--allow-privileged=true",
            ],
            f"{self.url}/readyz",
        )
        self.write_kubeconfig(self.kubeconfig, ADMIN_TOKEN)
        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        if self.controller_manager:
            kcm = free_port()
            self._spawn(
                "kube-controller-manager",
                [
                    self.binaries["kube-controller-manager"],
                    *common,
                    f"--secure-port={kcm}",
                    f"--cert-dir={work / 'kcm-certs'}",
                    "--controllers=*",
                    "--node-monitor-grace-period=1h",
                    "--use-service-account-credentials=false",
                    f"--service-account-private-key-file={work / 'sa.key'}",
                    f"--root-ca-file={work / 'certs' / 'apiserver.crt'}",
                    "--cluster-name=bjc-e2e",
                ],
                f"https://127.0.0.1:{kcm}/healthz",
            )
        if self.scheduler:
            sched = free_port()
            self._spawn(
                "kube-scheduler",
                [
                    self.binaries["kube-scheduler"],
                    *common,
                    f"--secure-port={sched}",
                    f"--cert-dir={work / 'scheduler-certs'}",
                ],
                f"https://127.0.0.1:{sched}/healthz",
            )

    def restart(self, name: str) -> None:
        """Stop one component (SIGTERM) and start it again as before: every watch on
        the apiserver drops, clients must reconnect (or relist)."""
        (i, proc) = next((i, p) for i, (n, p) in enumerate(self._procs) if n == name)
        terminate(proc)
        del self._procs[i]
        self._spawn(name, *self._commands[name])

    def _spawn(self, name: str, argv: list[str], health: str) -> None:
        self._commands[name] = (argv, health)
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append((name, proc))
        deadline = time.monotonic() + START_BOUND
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{tail(log)}")
            try:
                req = urllib.request.Request(
                    health, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
                ctx = insecure_context() if health.startswith("https") else None
                with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.25)
        raise RuntimeError(
            f"{name}: {health} not ready after {START_BOUND}s ({last}):\n{tail(log)}"
        )

    def stop(self) -> None:
        for _, proc in reversed(self._procs):
            terminate(proc)
        self._procs.clear()
        if os.environ.get("BJC_E2E_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def add_ready_node(kube: KubeClient, name: str, labels: dict[str, str] | None = None) -> None:
    """A Node as a kubelet registers it: Ready, with room for pods (the scheduler checks)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    meta = {"name": name, "labels": labels or {}}
    await kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": meta})
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "bjc.sim.NodeAgent plays the kubelet",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    status = {"conditions": [ready], "capacity": resources, "allocatable": resources}
    await kube.patch(f"/api/v1/nodes/{name}/status", {"status": status})


async def settle(
    kube: KubeClient, path: str, done: Callable[[dict[str, dict[str, Any]]], bool]
) -> None:
    """List and watch `path` until `done(the objects by name)` holds."""
    items, rv = await kube.list(path, dict)
    objects = {o["metadata"]["name"]: o for o in items}
    while not done(objects):
        async for event in kube.watch(path, dict, resource_version=rv):
            meta = event.object["metadata"]
            rv = meta.get("resourceVersion", rv)
            if event.type == "DELETED":
                objects.pop(meta["name"], None)
            elif event.type != "BOOKMARK":
                objects[meta["name"]] = event.object
            if done(objects):
                return
