"""Credentials for bjc's Kubernetes client: kubeconfig forms and merging, in-cluster,
exec plugins and auth providers (renewed before expiry and after a 401)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import sys
from pathlib import Path

import pytest
import trustme
import yaml
from aiohttp import web

import bjc.kube.client
from bjc.kube.client import (
    ApiError,
    KubeClient,
    KubeConfigError,
    kubeconfig_credentials,
    load_credentials,
)
from bjc.kube.objects import Pod
from tests.exec_plugin import V1BETA1, ExecPluginScript

PODS = "/api/v1/pods"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


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
    monkeypatch.setattr(bjc.kube.client, "SA_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path, {"token": "other"})))
    creds = load_credentials()
    assert creds.server == "https://10.96.0.1:443"
    assert creds.token_file == str(tmp_path / "token") and creds.namespace == "jobs"


def write_doc(path: Path, doc: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path, monkeypatch):
    first = write_doc(
        tmp_path / "a" / "config",
        {
            "clusters": [
                {
                    "name": "c1",
                    "cluster": {"server": "https://one:1", "certificate-authority": "ca.crt"},
                }
            ],
            "users": [{"name": "u1", "user": {"token": "t1"}}],
            "contexts": [{"name": "ctx1", "context": {"cluster": "c1", "user": "u1"}}],
        },
    )
    second = write_doc(
        tmp_path / "b" / "config",
        {
            "current-context": "ctx2",
            "clusters": [
                {"name": "c1", "cluster": {"server": "https://ignored:1"}},
                {
                    "name": "c2",
                    "cluster": {"server": "https://two:2", "certificate-authority": "ca.crt"},
                },
            ],
            "users": [
                {"name": "u1", "user": {"token": "ignored"}},
                {
                    "name": "u2",
                    "user": {"client-certificate": "certs/u.crt", "client-key": "/abs/u.key"},
                },
            ],
            "contexts": [
                {"name": "ctx1", "context": {"cluster": "c2", "user": "u2"}},
                {"name": "ctx2", "context": {"cluster": "c2", "user": "u2", "namespace": "ns2"}},
            ],
        },
    )
    third = write_doc(tmp_path / "c" / "config", {"current-context": "ctx1"})
    missing = str(tmp_path / "missing")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([first, missing, second, first, third]))

    # current-context from the first file that sets it; paths relative to their own file
    creds = kubeconfig_credentials()
    assert (creds.server, creds.namespace) == ("https://two:2", "ns2")
    assert creds.ca_file == str(tmp_path / "b" / "ca.crt")
    assert (creds.cert_file, creds.key_file) == (str(tmp_path / "b" / "certs/u.crt"), "/abs/u.key")
    # per name, the first file wins, whole entries (never merged field by field)
    creds = kubeconfig_credentials(context="ctx1")
    assert (creds.server, creds.token) == ("https://one:1", "t1")
    assert creds.ca_file == str(tmp_path / "a" / "ca.crt")


def test_kubeconfig_list_without_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([f"{tmp_path}/x", f"{tmp_path}/y"]))
    with pytest.raises(KubeConfigError, match=r"cannot read kubeconfig .*/x:.*/y: no such file"):
        load_credentials()


class Apiserver:
    """A real HTTP(S) server for /api/v1/pods that records who called and refuses
    the tokens (or client certificate common names) in `refused` with 401."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.refused: set[str] = set()
        self.url = ""

    async def pods(self, request: web.Request) -> web.Response:
        who = request.headers.get("Authorization", "")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            who = dict(x[0] for x in peer["subject"])["commonName"]
        self.seen.append(f"{request.method} {who}")
        if who.removeprefix("Bearer ") in self.refused or "*" in self.refused:
            return web.json_response(
                {"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401
            )
        if request.method == "POST":
            return web.json_response(await request.json(), status=201)
        return web.json_response({"metadata": {"resourceVersion": "7"}, "items": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", PODS, self.pods)
        return app


@pytest.fixture
async def api(aiohttp_server) -> Apiserver:
    server = Apiserver()
    server.url = str((await aiohttp_server(server.app())).make_url("")).rstrip("/")
    return server


async def test_client_sends_the_credentials(api, tmp_path):
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
        creds = kubeconfig_credentials(str(write_kubeconfig(tmp_path, user, {"server": api.url})))
        async with KubeClient(creds) as kube:
            items, rv = await kube.list(PODS, Pod)
        assert (items, rv) == ([], "7")
        assert api.seen[-1] == f"GET {expected}"


async def test_a_401_rereads_the_token_file(api, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("sa-1\n")
    creds = kubeconfig_credentials(
        str(write_kubeconfig(tmp_path, {"tokenFile": "token"}, {"server": api.url}))
    )
    async with KubeClient(creds) as kube:
        await kube.list(PODS, Pod)
        token_file.write_text("sa-2\n")  # the kubelet rotated it
        api.refused.add("sa-1")
        await kube.list(PODS, Pod)
    assert api.seen == ["GET Bearer sa-1", "GET Bearer sa-1", "GET Bearer sa-2"]


def exec_client(tmp_path: Path, api: Apiserver, exec_stanza: dict, **cluster) -> KubeClient:
    path = write_kubeconfig(tmp_path, {"exec": exec_stanza}, {"server": api.url, **cluster})
    return KubeClient(kubeconfig_credentials(str(path)))


async def test_exec_plugin_protocol(api, tmp_path):
    plugin = ExecPluginScript(tmp_path / "plugin")
    # a command with a path separator is relative to the kubeconfig, as in kubectl
    stanza = plugin.stanza(provideClusterInfo=True, command="plugin/plugin.py")
    extension = {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "bjc"}}
    async with exec_client(
        tmp_path,
        api,
        stanza,
        **{"certificate-authority-data": b64("CA"), "extensions": [extension]},
    ) as kube:
        await kube.list(PODS, Pod)
        await kube.list(PODS, Pod)  # cached: the credentials last an hour
    assert api.seen == ["GET Bearer tok-1", "GET Bearer tok-1"]
    assert plugin.runs() == 1
    assert plugin.exec_info() == {
        "apiVersion": V1BETA1,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": api.url,
                "certificate-authority-data": b64("CA"),
                "config": {"audience": "bjc"},
            },
        },
    }


async def test_exec_credentials_are_renewed_before_they_expire(api, tmp_path):
    plugin = ExecPluginScript(tmp_path / "plugin", lifetime=2)
    async with exec_client(tmp_path, api, plugin.stanza()) as kube:
        await kube.list(PODS, Pod)
        assert plugin.runs() == 1
        await asyncio.sleep(2)  # tok-1 has expired
        await asyncio.gather(*(kube.list(PODS, Pod) for _ in range(5)))
    assert plugin.runs() == 2  # one renewal shared by the five requests
    assert api.seen == ["GET Bearer tok-1"] + ["GET Bearer tok-2"] * 5  # and never a 401


async def test_a_401_renews_exec_credentials_and_sends_once_more(api, tmp_path):
    plugin = ExecPluginScript(tmp_path / "plugin")
    async with exec_client(tmp_path, api, plugin.stanza()) as kube:
        await kube.list(PODS, Pod)
        api.refused.add("tok-1")  # revoked before it expired
        await kube.list(PODS, Pod)
        api.refused.add("tok-2")
        await kube.create(
            PODS, {"metadata": {"name": "p"}}
        )  # a write refused with 401 is safe to repeat
        assert api.seen == [
            "GET Bearer tok-1",
            "GET Bearer tok-1",
            "GET Bearer tok-2",
            "POST Bearer tok-2",
            "POST Bearer tok-3",
        ]
        api.refused.add("*")
        with pytest.raises(ApiError) as err:
            await kube.list(PODS, Pod)
    assert err.value.status == 401
    assert api.seen[5:] == ["GET Bearer tok-3", "GET Bearer tok-4"]  # renewed once, sent once more
    assert plugin.runs() == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"env": [{"name": "PLUGIN_FAIL", "value": "token service down"}]},
            "exited with 3: token service down",
        ),
        (
            {"command": "/nonexistent/plugin", "installHint": "see the docs"},
            "cannot run: .* \\(see the docs\\)",
        ),
        (
            {"args": ["client.authentication.k8s.io/v1"]},
            "expected client.authentication.k8s.io/v1beta1/ExecCredential",
        ),
        ({"command": "echo", "args": ["hello"]}, "printed no ExecCredential"),
    ],
)
async def test_exec_plugin_failures_say_what_went_wrong(api, tmp_path, change, message):
    plugin = ExecPluginScript(tmp_path / "plugin")
    async with exec_client(tmp_path, api, {**plugin.stanza(), **change}) as kube:
        with pytest.raises(ApiError, match=message) as err:
            await kube.list(PODS, Pod)
    assert err.value.status == 401
    assert api.seen == []  # nothing was sent without credentials


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"apiVersion": "client.authentication.k8s.io/v1alpha1"},
            "apiVersion 'client.authentication.k8s.io/v1alpha1' is not one of",
        ),
        ({"command": None}, "command"),
        ({"interactiveMode": "Always"}, "interactiveMode Always"),
    ],
)
def test_broken_exec_stanzas_are_config_errors(tmp_path, change, message):
    stanza = {**ExecPluginScript(tmp_path / "plugin").stanza(), **change}
    path = write_kubeconfig(tmp_path, {"exec": {k: v for k, v in stanza.items() if v is not None}})
    with pytest.raises(KubeConfigError, match=f"user 'u': exec: .*{message}"):
        kubeconfig_credentials(str(path))


async def test_exec_client_certificates_rotate(tmp_path):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    pairs = []
    for name in ("client-1", "client-2"):
        leaf = ca.issue_cert(f"{name}.example", common_name=name)
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        cert.write_bytes(leaf.cert_chain_pems[0].bytes())
        key.write_bytes(leaf.private_key_pem.bytes())
        pairs.append(f"{cert},{key}")
    plugin = ExecPluginScript(tmp_path / "plugin")
    api = Apiserver()
    server = web.AppRunner(api.app())
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = server.addresses[0][1]
    api.url = f"https://127.0.0.1:{port}"
    try:
        ca_data = base64.b64encode(ca.cert_pem.bytes()).decode()
        async with exec_client(
            tmp_path, api, plugin.stanza(*pairs), **{"certificate-authority-data": ca_data}
        ) as kube:
            await kube.list(PODS, Pod)
            await kube.list(PODS, Pod)
            api.refused.add("client-1")
            await kube.list(PODS, Pod)  # renewed: a new connection presents the new certificate
            await kube.list(PODS, Pod)
    finally:
        await server.cleanup()
    assert api.seen == [
        "GET client-1",
        "GET client-1",
        "GET client-1",
        "GET client-2",
        "GET client-2",
    ]
    assert plugin.runs() == 2


GCP_CMD = """\
#!{python}
import datetime, json, os
runs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")
n = int(open(runs).read()) + 1 if os.path.exists(runs) else 1
open(runs, "w").write(str(n))
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
credential = {{"access_token": f"gcp-{{n}}", "token_expiry": expiry.isoformat()}}
print(json.dumps({{"credential": credential}}))
"""


async def test_auth_provider_tokens_are_renewed_after_a_401(api, tmp_path):
    cmd = tmp_path / "gcloud"
    cmd.write_text(GCP_CMD.format(python=sys.executable))
    cmd.chmod(0o755)
    user = {
        "auth-provider": {
            "name": "gcp",
            "config": {"cmd-path": str(cmd), "cmd-args": "config-helper"},
        }
    }
    path = write_kubeconfig(tmp_path, user, {"server": api.url})
    async with KubeClient(kubeconfig_credentials(str(path))) as kube:
        await kube.list(PODS, Pod)
        await kube.list(PODS, Pod)
        api.refused.add("gcp-1")
        await kube.list(PODS, Pod)
    assert api.seen == [
        "GET Bearer gcp-1",
        "GET Bearer gcp-1",
        "GET Bearer gcp-1",
        "GET Bearer gcp-2",
    ]
    # as kubectl did, the refreshed token is kept in the kubeconfig
    saved = yaml.safe_load(path.read_text())["users"][0]["user"]["auth-provider"]["config"]
    assert saved["access-token"] == "gcp-2"
