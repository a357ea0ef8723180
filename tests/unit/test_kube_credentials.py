"""Credentials for bjc's Kubernetes client: kubeconfig forms, in-cluster, exec plugins."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from aiohttp import web

import bjc.kube
from bjc.kube import KubeClient, KubeConfigError, kubeconfig_credentials, load_credentials
from bjc.kubetypes import Pod


def write_kubeconfig(tmp_path: Path, user: dict, cluster: dict | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "main",
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}
        ],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_user(tmp_path):
    creds = kubeconfig_credentials(str(write_kubeconfig(tmp_path, {"token": "abc"})))
    assert (creds.server, creds.token, creds.namespace) == (
        "https://k8s.example:6443",
        "abc",
        "ns1",
    )


def test_embedded_certificates_are_written_to_files(tmp_path):
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    path = write_kubeconfig(
        tmp_path,
        {"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")},
        {"server": "https://k8s.example:6443", "certificate-authority-data": b64("CA")},
    )
    creds = kubeconfig_credentials(str(path))
    assert Path(creds.cert_file).read_text() == "CERT"
    assert Path(creds.key_file).read_text() == "KEY"
    assert Path(creds.ca_file).read_text() == "CA"


def test_relative_files_are_relative_to_the_kubeconfig(tmp_path):
    path = write_kubeconfig(
        tmp_path,
        {"client-certificate": "certs/c.crt", "client-key": "certs/c.key"},
        {
            "server": "https://x:1",
            "certificate-authority": "certs/ca.crt",
            "insecure-skip-tls-verify": False,
        },
    )
    creds = kubeconfig_credentials(str(path))
    assert creds.cert_file == str(tmp_path / "certs/c.crt")
    assert creds.ca_file == str(tmp_path / "certs/ca.crt")


@pytest.mark.parametrize(
    ("doc_change", "message"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (
            lambda d: d["contexts"][0]["context"].update(cluster="other"),
            "cluster 'other' not found",
        ),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
    ],
)
def test_broken_kubeconfigs_say_what_is_wrong(tmp_path, doc_change, message):
    path = write_kubeconfig(tmp_path, {"token": "t"})
    doc = yaml.safe_load(path.read_text())
    doc_change(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeConfigError, match=message):
        kubeconfig_credentials(str(path))


def test_missing_kubeconfig(tmp_path):
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        kubeconfig_credentials(str(tmp_path / "nope"))


def test_in_cluster_service_account_wins(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("jobs\n")
    monkeypatch.setattr(bjc.kube, "SA_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path, {"token": "other"})))
    creds = load_credentials()
    assert creds.server == "https://10.96.0.1:443"
    assert creds.token_file == str(tmp_path / "token") and creds.namespace == "jobs"


def test_exec_plugins_are_loaded_through_kubernetes_asyncio(tmp_path):
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "from-exec"},
    }
    script = tmp_path / "plugin.sh"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    script.chmod(0o755)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(script)}}
    creds = kubeconfig_credentials(str(write_kubeconfig(tmp_path, user)))
    assert creds.token == "from-exec"
    assert creds.server == "https://k8s.example:6443"


async def test_client_sends_the_credentials(aiohttp_server, tmp_path):
    seen: list[str] = []

    async def pods(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"metadata": {"resourceVersion": "7"}, "items": []})

    app = web.Application()
    app.router.add_get("/api/v1/pods", pods)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    token_file = tmp_path / "token"
    token_file.write_text("rotated-1\n")
    for user, expected in [
        ({"token": "abc"}, "Bearer abc"),
        ({"tokenFile": "token"}, "Bearer rotated-1"),
        (
            {"username": "admin", "password": "pw"},
            "Basic " + base64.b64encode(b"admin:pw").decode(),
        ),
    ]:
        creds = kubeconfig_credentials(str(write_kubeconfig(tmp_path, user, {"server": url})))
        async with KubeClient(creds) as kube:
            items, rv = await kube.list("/api/v1/pods", Pod)
        assert (items, rv) == ([], "7")
        assert seen[-1] == expected
