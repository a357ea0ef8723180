"""kubectl against a `bjc sim` process: get, get -w, create -f, logs, delete, and the
everyday verbs on the built-in kinds, which kubectl (client-go) sends as protobuf."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
REPO = Path(__file__).resolve().parents[2]

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  nodeName: node-1
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    env:
    - {name: GREETING, value: howdy}
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
"""


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("kubectl") / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bjc.sim",
            "--port",
            "0",
            "--nodes",
            "2",
            "--node-labels",
            "pool=sim",
            "--kubeconfig-out",
            str(path),
            "--job-command",
            'echo "$GREETING from $NODE_NAME"',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("bjc sim: serving http://127.0.0.1:"), lines
        yield path
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "bjc sim: stopped" in out


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        [KUBECTL or "kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_get_nodes(kubeconfig: Path) -> None:
    out = kubectl(kubeconfig, "get", "nodes", "-l", "pool=sim")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:2] == ["NAME", "STATUS"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("node-1", "Ready"), ("node-2", "Ready")]


def test_create_watch_logs_delete(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)
    watcher = subprocess.Popen(
        [KUBECTL or "kubectl", "--kubeconfig", str(kubeconfig), "get", "pods", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "pod/hello created" in kubectl(kubeconfig, "create", "-f", str(manifest))
        assert watcher.stdout is not None
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while time.monotonic() < deadline:  # bounded: the pod completes within a second or two
            line = watcher.stdout.readline()
            seen.append(line)
            if "Completed" in line:
                break
        assert any(line.startswith("hello") and "Completed" in line for line in seen), seen
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    phase = kubectl(kubeconfig, "get", "pod", "hello", "-o", "jsonpath={.status.phase}")
    assert phase == "Succeeded"
    assert kubectl(kubeconfig, "logs", "hello") == "howdy from node-1\n"
    assert 'pod "hello" deleted' in kubectl(kubeconfig, "delete", "pod", "hello")
    assert (
        "No resources found"
        in subprocess.run(
            [KUBECTL or "kubectl", "--kubeconfig", str(kubeconfig), "get", "pods"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stderr
    )


APPLIED = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: applied, namespace: verbs}
data: {k: VALUE}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: verbs}
stringData: {token: VALUE}
"""


def test_everyday_verbs_on_builtin_kinds(kubeconfig: Path, tmp_path: Path) -> None:
    def k(*args: str) -> str:
        return kubectl(kubeconfig, *args)

    ns = ("-n", "verbs")
    assert k("create", "namespace", "verbs") == "namespace/verbs created\n"
    assert k("create", "configmap", "cm", "--from-literal=greeting=hi", *ns) == (
        "configmap/cm created\n"
    )
    assert k("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", *ns) == (
        "deployment.apps/web created\n"
    )
    assert k("create", "secret", "generic", "s", "--from-literal=password=hunter2", *ns) == (
        "secret/s created\n"
    )
    assert k("create", "serviceaccount", "robot", *ns) == "serviceaccount/robot created\n"

    assert k("get", "namespace", "verbs", "-o", "jsonpath={.status.phase}") == "Active"
    assert k("get", "cm", "cm", *ns, "-o", "jsonpath={.data.greeting}") == "hi"
    spec = "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
    assert k("get", "deployment", "web", *ns, "-o", spec) == "2 nginx:1.27"
    secret = k("get", "secret", "s", *ns, "-o", "jsonpath={.type} {.data.password}").split()
    assert secret[0] == "Opaque" and base64.b64decode(secret[1]) == b"hunter2"
    assert sorted(k("get", "cm,deployment,secret,sa", *ns, "-o", "name").split()) == [
        "configmap/cm",
        "deployment.apps/web",
        "secret/s",
        "serviceaccount/robot",
    ]

    assert k("label", "cm", "cm", "tier=web", *ns) == "configmap/cm labeled\n"
    assert k("annotate", "deployment", "web", "note=hello", *ns) == (
        "deployment.apps/web annotated\n"
    )
    assert k("get", "cm", "-l", "tier=web", *ns, "-o", "name") == "configmap/cm\n"
    described = k("describe", "deployment", "web", *ns)
    assert "note: hello" in described and "Replicas:           2 desired" in described
    assert "password:  7 bytes" in k("describe", "secret", "s", *ns)
    assert "Name:                robot" in k("describe", "serviceaccount", "robot", *ns)
    assert "Status:       Active" in k("describe", "namespace", "verbs")

    manifest = tmp_path / "applied.yaml"
    manifest.write_text(APPLIED.replace("VALUE", "one"))
    assert k("apply", "-f", str(manifest)).split("\n")[:2] == [
        "configmap/applied created",
        "secret/token created",
    ]
    manifest.write_text(APPLIED.replace("VALUE", "two"))
    assert "configmap/applied configured" in k("apply", "-f", str(manifest))
    assert k("get", "cm", "applied", *ns, "-o", "jsonpath={.data.k}") == "two"
    token = k("get", "secret", "token", *ns, "-o", "jsonpath={.data.token}")
    assert base64.b64decode(token) == b"two"  # stringData is merged into data

    assert k("delete", "deployment", "web", *ns) == 'deployment.apps "web" deleted\n'
    assert k("delete", "cm,secret,sa", "--all", *ns).splitlines() == [
        'configmap "applied" deleted',
        'configmap "cm" deleted',
        'secret "s" deleted',
        'secret "token" deleted',
        'serviceaccount "robot" deleted',
    ]
    assert k("delete", "namespace", "verbs") == 'namespace "verbs" deleted\n'
    gone = subprocess.run(
        [KUBECTL or "kubectl", "--kubeconfig", str(kubeconfig), "get", "namespace", "verbs"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 1 and 'namespaces "verbs" not found' in gone.stderr
