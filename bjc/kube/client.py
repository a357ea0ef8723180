"""A small Kubernetes REST client: credentials, requests, lists and watches.

bjc talks to a handful of endpoints (pods, nodes, configmaps, leases, events) and
needs them fast and light: importing kubernetes_asyncio's generated client costs
~64 MB of RSS and decodes ~1,600 pod events/s, which alone would break the memory
budget of `bjc run`. So the hot path is aiohttp + msgspec into the slim structs of
`bjc.kube.objects`.

Credentials: the in-cluster service account, else the kubeconfig files named by
KUBECONFIG (os.pathsep-separated), merged as kubectl merges them, else
~/.kube/config. Credentials that expire (exec plugins, auth providers, token files)
come from `bjc.kube.auth`, which renews them before they expire; a request answered
401 renews them and is sent once more (the apiserver refused it before doing anything,
so even a write is safe to repeat). When an exec plugin issues a new client
certificate, the session is replaced and open connections end, as client-go does.

Reads (GET, list pages) are retried a few times with backoff on connection errors,
timeouts, 429 and 5xx (honouring Retry-After). Deliberately not here: retries of
writes and relist logic. Callers decide what a failed create means (the dispatcher
backs off, the reconciler relists on 410).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import yaml

from bjc.kube.auth import (
    AuthProvider,
    CredentialError,
    ExecPlugin,
    Issued,
    RenewingCredentials,
    TokenFile,
    exec_plugin,
)
from bjc.kube.backoff import Backoff
from bjc.kube.objects import ObjectList, RawWatchEvent, Status, WatchEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_READ_ATTEMPTS = 4
_READ_BACKOFF_FIRST_S = 0.2
_READ_BACKOFF_MAX_S = 5.0

_encoder = msgspec.json.Encoder()
_status_decoder = msgspec.json.Decoder(Status)
_raw_event_decoder = msgspec.json.Decoder(RawWatchEvent)


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with its Status fields."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: bytes) -> ApiError:
        try:
            st = _status_decoder.decode(body)
            return cls(status, st.reason, st.message)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return cls(status, "", body[:200].decode("utf-8", "replace"))

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class KubeConfigError(Exception):
    """Credentials could not be found or understood."""


class Credentials(msgspec.Struct, kw_only=True):
    server: str
    ca_file: str | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    namespace: str | None = None
    plugin: ExecPlugin | AuthProvider | None = None  # credentials that expire


def _data_file(data_b64: str, suffix: str) -> str:
    fd, name = tempfile.mkstemp(prefix="bjc-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    return name


def in_cluster_credentials() -> Credentials | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (SA_DIR / "token").exists():
        return None
    if ":" in host:
        host = f"[{host}]"
    ns_file = SA_DIR / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(SA_DIR / "ca.crt"),
        token_file=str(SA_DIR / "token"),
        namespace=ns_file.read_text().strip() if ns_file.exists() else None,
    )


# file references in kubeconfig entries, resolved against the file that names them
_PATH_KEYS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


def _resolved(section: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    entry = dict(entry)
    for key in _PATH_KEYS.get(section, ()):
        if entry.get(key):
            entry[key] = str(base / entry[key])
    command = (entry.get("exec") or {}).get("command")
    if command and os.sep in command:  # a bare name is looked up in PATH, as kubectl does
        entry["exec"] = {**entry["exec"], "command": str(base / command)}
    return entry


def merged_kubeconfig(paths: list[str]) -> dict[str, Any]:
    """kubectl's merge of kubeconfig files.

    The first file that names a cluster, context or user wins for that name;
    current-context comes from the first file that sets it; relative file paths are
    resolved against the file that names them; files that do not exist are skipped
    (if none exists, that is an error). The result maps each section to {name: entry}.
    """
    merged: dict[str, Any] = {"clusters": {}, "contexts": {}, "users": {}, "current-context": ""}
    found = False
    for path in paths:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {e}") from e
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise KubeConfigError(f"kubeconfig {path} is not a mapping")
        found = True
        base = Path(path).parent
        for section in ("clusters", "contexts", "users"):
            for item in doc.get(section) or []:
                name = item.get("name") if isinstance(item, dict) else None
                if name is not None and name not in merged[section]:
                    merged[section][name] = _resolved(section, item.get(section[:-1]) or {}, base)
        merged["current-context"] = merged["current-context"] or doc.get("current-context") or ""
    if not found:
        raise KubeConfigError(f"cannot read kubeconfig {os.pathsep.join(paths)}: no such file")
    return merged


def kubeconfig_paths() -> list[str]:
    """The files of KUBECONFIG (os.pathsep-separated, duplicates dropped), else ~/.kube/config."""
    env = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return list(dict.fromkeys(env)) or [str(Path.home() / ".kube" / "config")]


def kubeconfig_credentials(path: str | None = None, context: str | None = None) -> Credentials:
    """Credentials from a kubeconfig: ``path``, else the files KUBECONFIG names, merged."""
    paths = [path] if path is not None else kubeconfig_paths()
    label = os.pathsep.join(paths)
    doc = merged_kubeconfig(paths)

    def named(section: str, name: str) -> dict[str, Any]:
        if name not in doc[section]:
            raise KubeConfigError(f"kubeconfig {label}: {section[:-1]} {name!r} not found")
        entry: dict[str, Any] = doc[section][name]
        return entry

    ctx_name = context or doc["current-context"]
    if not ctx_name:
        raise KubeConfigError(f"kubeconfig {label}: no current-context")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster", ""))
    user = named("users", ctx["user"]) if ctx.get("user") else {}

    def file_of(key: str, suffix: str, src: dict[str, Any]) -> str | None:
        if src.get(f"{key}-data"):
            return _data_file(src[f"{key}-data"], suffix)
        return src.get(key) or None

    creds = Credentials(
        server=cluster.get("server", ""),
        ca_file=file_of("certificate-authority", ".crt", cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=file_of("client-certificate", ".crt", user),
        key_file=file_of("client-key", ".key", user),
        token=user.get("token"),
        token_file=user.get("tokenFile"),
        namespace=ctx.get("namespace"),
    )
    if not creds.server:
        raise KubeConfigError(f"kubeconfig {label}: cluster has no server")
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        creds.token = f"Basic {basic}"
    if user.get("exec"):
        try:
            creds.plugin = exec_plugin(user["exec"], _exec_cluster_info(cluster))
        except ValueError as e:
            raise KubeConfigError(f"kubeconfig {label}: user {ctx['user']!r}: {e}") from None
    elif user.get("auth-provider"):
        creds.plugin = AuthProvider(label, ctx_name, ctx["user"])
    return creds


def _exec_cluster_info(cluster: dict[str, Any]) -> dict[str, Any]:
    """What an exec plugin with provideClusterInfo is told about the cluster."""
    info: dict[str, Any] = {
        key: cluster[key]
        for key in ("server", "tls-server-name", "insecure-skip-tls-verify", "proxy-url")
        if key in cluster
    }
    ca = cluster.get("certificate-authority-data")
    if not ca and cluster.get("certificate-authority"):
        with contextlib.suppress(OSError):
            ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    if ca:
        info["certificate-authority-data"] = ca
    for ext in cluster.get("extensions") or []:
        if ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return info


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """In-cluster service account first, else KUBECONFIG / ~/.kube/config."""
    if kubeconfig is None:
        creds = in_cluster_credentials()
        if creds is not None:
            return creds
    return kubeconfig_credentials(kubeconfig)


class KubeClient:
    """Requests to one apiserver with one aiohttp session."""

    def __init__(self, creds: Credentials, *, timeout: float = 30.0) -> None:
        self.creds = creds
        self.server = creds.server.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        source = creds.plugin or (TokenFile(creds.token_file) if creds.token_file else None)
        self.renewing = RenewingCredentials(source) if source is not None else None
        self._plugin_cert: tuple[str, str] | None = None  # PEM pair an exec plugin issued

    @classmethod
    def from_url(cls, url: str) -> KubeClient:
        return cls(Credentials(server=url))

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return True
        if self.creds.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.creds.ca_file)
        if self._plugin_cert is not None:
            with tempfile.TemporaryDirectory(prefix="bjc-kube-") as tmp:
                cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
                cert.write_text(self._plugin_cert[0])
                key.write_text(self._plugin_cert[1])
                ctx.load_cert_chain(cert, key)
        elif self.creds.cert_file and self.creds.key_file:
            ctx.load_cert_chain(self.creds.cert_file, self.creds.key_file)
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise aiohttp.ClientConnectionError("the Kubernetes client is closed")
        if self._session is None:
            conn = aiohttp.TCPConnector(ssl=self._ssl(), limit=100)
            self._session = aiohttp.ClientSession(connector=conn, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _renewed(self, rejected: Issued | None = None) -> Issued | None:
        """The current renewing credentials (renewed first if ``rejected`` was refused)."""
        if self.renewing is None:
            return None
        try:
            if rejected is None:
                issued = await self.renewing.current()
            else:
                issued = await self.renewing.rejected(rejected)
        except CredentialError as e:
            raise ApiError(401, "Unauthorized", f"no credentials: {e}") from e
        if issued.client_cert != self._plugin_cert:
            self._plugin_cert = issued.client_cert
            old, self._session = self._session, None
            if old is not None:
                await old.close()  # connections made with the old certificate end
        return issued

    def _headers(
        self, accept: str, content_type: str | None, issued: Issued | None
    ) -> dict[str, str]:
        h = {"Accept": accept, "User-Agent": "bjc"}
        if content_type:
            h["Content-Type"] = content_type
        token = issued.token if issued is not None else self.creds.token
        if token:
            h["Authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
        return h

    async def _send(
        self, method: str, path: str, *, accept: str, content_type: str | None = None, **kw: Any
    ) -> aiohttp.ClientResponse:
        """Send with the current credentials; after a 401, renew them and send once more."""
        issued = await self._renewed()
        for renewed in (False, True):
            headers = self._headers(accept, content_type, issued)
            resp = await self.session.request(method, self.server + path, headers=headers, **kw)
            if resp.status != 401 or renewed or issued is None:
                return resp
            resp.release()
            log.info("%s %s: 401 Unauthorized; renewing credentials", method, path)
            issued = await self._renewed(rejected=issued)
        raise AssertionError("unreachable")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        """One request; 2xx → body bytes, else ApiError.

        Reads retry on 429/5xx, connection errors and timeouts; writes are sent once.
        """
        data = None if body is None else body if isinstance(body, bytes) else _encoder.encode(body)
        return await self._exchange(
            method,
            path,
            _read_body,
            params=params,
            data=data,
            content_type=content_type if data is not None else None,
            accept=accept,
        )

    async def stream(
        self,
        path: str,
        consume: Callable[[aiohttp.StreamReader], Awaitable[T]],
        params: Mapping[str, str] | None = None,
    ) -> T:
        """A GET whose 2xx body `consume` reads as it arrives (pod logs); else ApiError.

        Retried as `request` retries reads; `consume` then starts over on a new body.
        """
        return await self._exchange(
            "GET",
            path,
            lambda resp: consume(resp.content),
            params=params,
            data=None,
            content_type=None,
            accept="*/*",
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        params: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str | None,
        accept: str,
    ) -> T:
        read = method == "GET"
        attempts = _READ_ATTEMPTS if read else 1
        backoff = Backoff(_READ_BACKOFF_FIRST_S, _READ_BACKOFF_MAX_S)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                async with await self._send(
                    method,
                    path,
                    accept=accept,
                    content_type=content_type,
                    params=params,
                    data=data,
                ) as resp:
                    if resp.status < 300:
                        return await consume(resp)
                    err = ApiError.from_body(resp.status, await resp.read())
                    if not err.retryable or last:
                        raise err
                    delay = _retry_after(resp.headers.get("Retry-After"), backoff)
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                if not read or last or self._closed:
                    raise
                delay = backoff.next_delay()
                log.debug("GET %s: %r; retrying in %.2fs", path, e, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def get(self, path: str, type: type[T], params: Mapping[str, str] | None = None) -> T:
        return msgspec.json.decode(await self.request("GET", path, params=params), type=type)

    async def get_or_none(self, path: str, type: type[T]) -> T | None:
        try:
            return await self.get(path, type)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self, path: str, type: type[T], params: Mapping[str, str] | None = None
    ) -> tuple[list[T], str]:
        """All items and the list's resourceVersion (no `limit` is sent: one page)."""
        raw = await self.request("GET", path, params=params)
        page = msgspec.json.decode(raw, type=ObjectList[type])  # type: ignore[valid-type]
        return page.items, page.metadata.resource_version

    async def create(self, path: str, obj: Any) -> dict[str, Any]:
        return msgspec.json.decode(await self.request("POST", path, body=obj))

    async def replace(self, path: str, obj: Any) -> dict[str, Any]:
        return msgspec.json.decode(await self.request("PUT", path, body=obj))

    async def patch(self, path: str, patch: Any, patch_type: str = "merge") -> dict[str, Any]:
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return msgspec.json.decode(
            await self.request("PATCH", path, body=patch, content_type=ctype)
        )

    async def delete(self, path: str, *, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.request("DELETE", path, body=delete_options(propagation))
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise

    async def watch(
        self,
        path: str,
        type: type[T],
        *,
        resource_version: str,
        params: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent[T]]:
        """Watch events after resource_version until the server ends the stream.

        BOOKMARK events are yielded (their object carries only the new
        resourceVersion). A 410, as HTTP status or in-stream ERROR event, raises
        ApiError(410): the caller relists.
        """
        query = dict(params or {})
        query.update(
            watch="true",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
        decoder = msgspec.json.Decoder(type)
        async with await self._send(
            "GET", path, accept="application/json", params=query, timeout=timeout
        ) as resp:
            if resp.status >= 300:
                raise ApiError.from_body(resp.status, await resp.read())
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                if b"\n" not in buf:
                    continue
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _decode_event(line, decoder)
            if buf.strip():
                yield _decode_event(buf, decoder)


def delete_options(propagation: str = "Background") -> dict[str, str]:
    """The DeleteOptions body of a delete or deletecollection."""
    return {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}


class _Bookmark(msgspec.Struct):
    metadata: msgspec.Raw = msgspec.Raw(b"{}")


_bookmark_decoder = msgspec.json.Decoder(_Bookmark)


def _decode_event(line: bytes, decoder: msgspec.json.Decoder[T]) -> WatchEvent[T]:
    raw = _raw_event_decoder.decode(line)
    if raw.type == "ERROR":
        st = _status_decoder.decode(raw.object)
        raise ApiError(st.code or 500, st.reason, st.message)
    if raw.type == "BOOKMARK":
        # only its resourceVersion counts; a real apiserver sends the rest of the
        # object empty, with nulls (`"spec":{"containers":null}`) a typed view refuses
        metadata = bytes(_bookmark_decoder.decode(raw.object).metadata)
        return WatchEvent(type=raw.type, object=decoder.decode(b'{"metadata":' + metadata + b"}"))
    return WatchEvent(type=raw.type, object=decoder.decode(raw.object))


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    return await resp.read()


def _retry_after(header: str | None, backoff: Backoff) -> float:
    """The server's Retry-After (at most 30 s) if it sent a valid one, else the backoff's."""
    delay = backoff.next_delay()
    with contextlib.suppress(ValueError, TypeError):
        delay = min(float(header), 30.0)  # type: ignore[arg-type]
    return delay
