"""A real kube-apiserver + etcd on loopback for the end-to-end tests.

The binaries follow the envtest convention: `KUBEBUILDER_ASSETS` names a directory
with `kube-apiserver` and `etcd` (and optionally `kubectl`); otherwise they come
from `~/.cache/bjc-e2e/bin`, built there by `build_binaries.sh` when missing. With
neither, every e2e test is skipped with the reason. Deliberately no
controller-manager, scheduler or kubelet: bjc binds its pods to nodes itself and
`bjc.sim.NodeAgent` plays the kubelet.

These tests only run with `BJC_E2E=1` (set by `nox -s e2e`); the default `pytest`
run does not even collect them.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("BJC_E2E_CACHE", Path.home() / ".cache" / "bjc-e2e"))
ADMIN_TOKEN = "bjc-e2e-admin-token"
START_BOUND = 120.0  # seconds: a hang bound for etcd/apiserver start-up

if os.environ.get("BJC_E2E") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real kube-apiserver (nox -s e2e)")


_ASSETS: tuple[Path | None, str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Find (or build) the binaries before any test runs: a build outlasts test timeouts."""
    global _ASSETS
    if os.environ.get("BJC_E2E") == "1":
        _ASSETS = _asset_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _asset_dir() -> tuple[Path | None, str]:
    """The directory with kube-apiserver and etcd, or None and why not."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        d = Path(assets)
        if (d / "kube-apiserver").is_file() and (d / "etcd").is_file():
            return d, ""
        return None, f"KUBEBUILDER_ASSETS={assets} lacks kube-apiserver or etcd"
    d = CACHE / "bin"
    if not ((d / "kube-apiserver").is_file() and (d / "etcd").is_file()):
        if os.environ.get("BJC_E2E_NO_BUILD") == "1":
            return None, f"{d} lacks kube-apiserver or etcd (see build_binaries.sh's output)"
        if shutil.which("go") is None:
            return None, "no KUBEBUILDER_ASSETS, no cached binaries and no go to build them"
        done = subprocess.run(
            ["bash", str(HERE / "build_binaries.sh")], capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            return None, f"building kube-apiserver/etcd failed:\n{tail}"
    return d, ""


def _kubectl(assets: Path) -> str | None:
    if (assets / "kubectl").is_file():
        return str(assets / "kubectl")
    return shutil.which("kubectl")


@dataclass
class ApiServer:
    """A running control plane: where it is and how to talk to it as admin."""

    url: str
    token: str
    kubeconfig: Path
    kubectl_bin: str
    workdir: Path

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
        self, *args: str, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def kubectl(self, *args: str, input: str | None = None, kubeconfig: Path | None = None) -> str:
        done = self.run_kubectl(*args, input=input, kubeconfig=kubeconfig)
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, **kw: object) -> None:
    deadline = time.monotonic() + START_BOUND
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}:\n{_tail(log)}")
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            with urllib.request.urlopen(req, timeout=5, **kw) as resp:  # type: ignore[arg-type]
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {START_BOUND}s ({last}):\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ApiServer]:
    assets, why = _ASSETS if _ASSETS is not None else _asset_dir()
    if assets is None:
        pytest.skip(f"e2e: no kube-apiserver/etcd: {why}")
    kubectl = _kubectl(assets)
    if kubectl is None:
        pytest.skip("e2e: no kubectl (neither in KUBEBUILDER_ASSETS nor on PATH)")
    if shutil.which("openssl") is None:
        pytest.skip("e2e: no openssl to generate the service-account key")

    work = Path(tempfile.mkdtemp(prefix="bjc-e2e-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            ["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"],
            check=True,
            capture_output=True,
        )
        (work / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')

        client, peer = free_port(), free_port()
        etcd_log = work / "etcd.log"
        etcd = subprocess.Popen(
            [
                str(assets / "etcd"),
                "--name", "e2e",
                "--data-dir", str(work / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"e2e=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
            ],
            stdout=etcd_log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(etcd)
        _wait_http(f"http://127.0.0.1:{client}/health", etcd, etcd_log)

        port = free_port()
        api_log = work / "kube-apiserver.log"
        api = subprocess.Popen(
            [
                str(assets / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{client}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={work / 'certs'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={work / 'sa.key'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--allow-privileged=true",
            ],
            stdout=api_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(api)
        url = f"https://127.0.0.1:{port}"
        _wait_http(f"{url}/readyz", api, api_log, context=_insecure())

        server = ApiServer(
            url=url,
            token=ADMIN_TOKEN,
            kubeconfig=work / "admin.kubeconfig",
            kubectl_bin=kubectl,
            workdir=work,
        )
        server.write_kubeconfig(server.kubeconfig, ADMIN_TOKEN)
        yield server
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if os.environ.get("BJC_E2E_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
