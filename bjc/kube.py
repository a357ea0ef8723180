"""A small Kubernetes REST client: credentials, requests, lists and watches.

bjc talks to a handful of endpoints (pods, nodes, configmaps, leases, events) and
needs them fast and light: importing kubernetes_asyncio's generated client costs
~64 MB of RSS and decodes ~1,600 pod events/s, which alone would break the memory
budget of `bjc run`. So the hot path is aiohttp + msgspec into the slim structs of
`bjc.kubetypes`. kubernetes_asyncio is still used, lazily, where it does real work
bjc should not repeat: kubeconfigs whose users authenticate through exec plugins or
auth providers are loaded by `kubernetes_asyncio.config`.

Deliberately not here: retries of writes and relist logic. Callers decide what a
failed create means (the dispatcher backs off, the reconciler relists on 410).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import yaml

from bjc.kubetypes import ObjectList, RawWatchEvent, Status, WatchEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TOKEN_REREAD_S = 60.0
_READ_RETRIES = 4

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


def kubeconfig_credentials(path: str | None = None, context: str | None = None) -> Credentials:
    """Read a kubeconfig (KUBECONFIG's first file, else ~/.kube/config)."""
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        path = env.split(os.pathsep)[0] if env else str(Path.home() / ".kube" / "config")
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {e}") from e
    base = Path(path).parent

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in doc.get(section) or []:
            if entry.get("name") == name:
                return entry.get(section[:-1]) or {}
        raise KubeConfigError(f"kubeconfig {path}: {section[:-1]} {name!r} not found")

    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise KubeConfigError(f"kubeconfig {path}: no current-context")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster", ""))
    user = named("users", ctx["user"]) if ctx.get("user") else {}

    def file_of(key: str, suffix: str, src: dict[str, Any]) -> str | None:
        if src.get(f"{key}-data"):
            return _data_file(src[f"{key}-data"], suffix)
        if src.get(key):
            return str(base / src[key])
        return None

    if user.get("exec") or user.get("auth-provider"):
        return _library_credentials(path, ctx_name, ctx.get("namespace"))
    creds = Credentials(
        server=cluster.get("server", ""),
        ca_file=file_of("certificate-authority", ".crt", cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=file_of("client-certificate", ".crt", user),
        key_file=file_of("client-key", ".key", user),
        token=user.get("token"),
        token_file=str(base / user["tokenFile"]) if user.get("tokenFile") else None,
        namespace=ctx.get("namespace"),
    )
    if not creds.server:
        raise KubeConfigError(f"kubeconfig {path}: cluster has no server")
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        creds.token = f"Basic {basic}"
    return creds


def _library_credentials(path: str, context: str, namespace: str | None) -> Credentials:
    """exec plugins and auth providers: let kubernetes_asyncio do that work."""
    from kubernetes_asyncio import client, config  # heavy import, only on this path

    async def load() -> client.Configuration:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
        return cfg

    if _loop_running():
        raise KubeConfigError("exec/auth-provider kubeconfigs must be loaded before the loop")
    cfg = asyncio.run(load())
    auth = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization") or ""
    return Credentials(
        server=cfg.host or "",
        ca_file=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        token=auth.removeprefix("Bearer ").strip() or None,
        namespace=namespace,
    )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """In-cluster service account first, else KUBECONFIG / ~/.kube/config (SPEC A1)."""
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
        self._token = creds.token
        self._token_read_at = 0.0

    @classmethod
    def from_url(cls, url: str) -> KubeClient:
        return cls(Credentials(server=url))

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return True
        if self.creds.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.creds.ca_file)
        if self.creds.cert_file and self.creds.key_file:
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

    def _headers(self, accept: str, content_type: str | None) -> dict[str, str]:
        h = {"Accept": accept, "User-Agent": "bjc"}
        if content_type:
            h["Content-Type"] = content_type
        if self.creds.token_file and time.monotonic() - self._token_read_at > _TOKEN_REREAD_S:
            self._token = Path(self.creds.token_file).read_text().strip()
            self._token_read_at = time.monotonic()
        if self._token:
            scheme = "" if self._token.startswith("Basic ") else "Bearer "
            h["Authorization"] = scheme + self._token
        return h

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
        """One request; 2xx → body bytes, else ApiError. Reads retry on 429/5xx."""
        data = None if body is None else body if isinstance(body, bytes) else _encoder.encode(body)
        attempts = _READ_RETRIES if method == "GET" else 1
        for attempt in range(attempts):
            async with self.session.request(
                method,
                self.server + path,
                params=params,
                data=data,
                headers=self._headers(accept, content_type if data is not None else None),
            ) as resp:
                payload = await resp.read()
                if resp.status < 300:
                    return payload
                err = ApiError.from_body(resp.status, payload)
                if not err.retryable or attempt == attempts - 1:
                    raise err
                delay = _retry_after(resp.headers.get("Retry-After"), attempt)
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
        """All items (following `continue`) and the list's resourceVersion."""
        items: list[T] = []
        query = dict(params or {})
        while True:
            raw = await self.request("GET", path, params=query)
            page = msgspec.json.decode(raw, type=ObjectList[type])  # type: ignore[valid-type]
            items.extend(page.items)
            if not page.metadata.continue_:
                return items, page.metadata.resource_version
            query["continue"] = page.metadata.continue_

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

    async def read_text(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        return await self.request("GET", path, params=params, accept="*/*")

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
        async with self.session.get(
            self.server + path,
            params=query,
            headers=self._headers("application/json", None),
            timeout=timeout,
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


def _decode_event(line: bytes, decoder: msgspec.json.Decoder[T]) -> WatchEvent[T]:
    raw = _raw_event_decoder.decode(line)
    if raw.type == "ERROR":
        st = _status_decoder.decode(raw.object)
        raise ApiError(st.code or 500, st.reason, st.message)
    return WatchEvent(type=raw.type, object=decoder.decode(raw.object))


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(float(header), 30.0) if header else min(0.2 * 2**attempt, 5.0)
    except ValueError:
        return min(0.2 * 2**attempt, 5.0)
