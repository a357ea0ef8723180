"""Kubernetes credentials that expire, and keeping them fresh.

A token from a kubeconfig or a client certificate lasts as long as the process; these
do not: exec plugins (aws, gke-gcloud-auth-plugin, kubelogin, ...), auth providers
(oidc, gcp) and service-account token files all hand out credentials that expire or
rotate. Loaded once, they made every call fail with 401 after an hour or so. Here
each source issues `Issued` credentials, and `RenewingCredentials` caches them until
shortly before they expire and issues them anew after the apiserver answers 401.

- Exec plugins speak the client.authentication.k8s.io ExecCredential protocol
  (v1 and v1beta1) directly, in an asyncio subprocess, so loading works while the
  event loop runs and does not import kubernetes_asyncio (`bjc run` must stay light).
- Auth providers (oidc, gcp; deprecated in kubectl) are still loaded by
  kubernetes_asyncio's kubeconfig loader, lazily: it refreshes a token whose expiry
  it knows; after a 401 its cached token is dropped first so that it must refresh.
  It writes refreshed tokens back to the kubeconfig, as kubectl did.
- Token files (the in-cluster service account) are re-read every minute and after a 401.

Deliberately not here: reading kubeconfigs and sending requests (`bjc.kube.client`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

log = logging.getLogger(__name__)

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_EXEC_TIMEOUT_S = 120.0
_TOKEN_FILE_REREAD_S = 60.0
_RENEW_MARGIN_MAX_S = 60.0


class CredentialError(Exception):
    """A credential source failed: a plugin did not run, failed, or printed nonsense."""


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    """Credentials as issued: a token, a client certificate (PEM), or both."""

    token: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    expires: float | None = None  # wall-clock seconds; None: good until a 401

    @property
    def client_cert(self) -> tuple[str, str] | None:
        return (self.cert_pem, self.key_pem) if self.cert_pem and self.key_pem else None


class CredentialSource(Protocol):
    async def issue(self, rejected: bool) -> Issued:
        """New credentials; ``rejected``: the apiserver refused the last ones."""
        ...


class RenewingCredentials:
    """One source's credentials, issued anew shortly before they expire and after a 401.

    "Shortly" is a tenth of the lifetime they were issued with, at most a minute.
    Concurrent requests share one renewal.
    """

    def __init__(self, source: CredentialSource) -> None:
        self.source = source
        self.issued: Issued | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self, issued: Issued | None) -> bool:
        return issued is not None and (issued.expires is None or time.time() < self._renew_at)

    async def current(self) -> Issued:
        issued = self.issued
        if issued is not None and self._fresh(issued):
            return issued
        async with self._lock:
            if not self._fresh(self.issued):
                await self._issue(rejected=False)
        assert self.issued is not None
        return self.issued

    async def rejected(self, used: Issued) -> Issued:
        """The apiserver answered 401 to ``used``: renew, unless another request did."""
        async with self._lock:
            if self.issued is used:
                await self._issue(rejected=True)
        assert self.issued is not None
        return self.issued

    async def _issue(self, rejected: bool) -> None:
        issued = await self.source.issue(rejected)
        now = time.time()
        if issued.expires is not None:
            margin = min(_RENEW_MARGIN_MAX_S, max(0.0, issued.expires - now) / 10)
            self._renew_at = issued.expires - margin
        self.issued = issued


class TokenFile(msgspec.Struct, frozen=True):
    """A token in a file that something else rotates (the kubelet, for service accounts)."""

    path: str

    async def issue(self, rejected: bool) -> Issued:
        try:
            token = (await asyncio.to_thread(Path(self.path).read_text)).strip()
        except OSError as e:
            raise CredentialError(f"cannot read token file {self.path}: {e}") from e
        return Issued(token=token, expires=time.time() + _TOKEN_FILE_REREAD_S)


class ExecEnvVar(msgspec.Struct, frozen=True):
    name: str
    value: str


class ExecPlugin(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A kubeconfig user's `exec` stanza; `cluster_info` is filled in by the loader."""

    command: str
    api_version: str
    args: list[str] = []
    env: list[ExecEnvVar] | None = None
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    cluster_info: dict[str, Any] | None = None

    def exec_info(self) -> str:
        """KUBERNETES_EXEC_INFO: what the plugin is told about this call."""
        spec: dict[str, Any] = {"interactive": False}
        if self.provide_cluster_info and self.cluster_info is not None:
            spec["cluster"] = self.cluster_info
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    async def issue(self, rejected: bool) -> Issued:
        env = dict(os.environ)
        env.update({e.name: e.value for e in self.env or []})
        env["KUBERNETES_EXEC_INFO"] = self.exec_info()
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            hint = f" ({self.install_hint.strip()})" if self.install_hint.strip() else ""
            raise CredentialError(f"exec plugin {self.command!r} cannot run: {e}{hint}") from e
        try:
            async with asyncio.timeout(_EXEC_TIMEOUT_S):
                out, err = await proc.communicate()
        except TimeoutError:
            raise CredentialError(
                f"exec plugin {self.command!r} did not finish within {_EXEC_TIMEOUT_S:.0f}s"
            ) from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = err.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise CredentialError(
                f"exec plugin {self.command!r} exited with {proc.returncode}: {stderr[-500:]}"
            )
        if stderr:
            log.debug("exec plugin %s: %s", self.command, stderr[-500:])
        return self._parse(out)

    def _parse(self, out: bytes) -> Issued:
        what = f"exec plugin {self.command!r}"
        try:
            cred = msgspec.json.decode(out, type=_ExecCredential)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CredentialError(f"{what} printed no ExecCredential: {e}") from None
        if cred.kind != "ExecCredential" or cred.api_version != self.api_version:
            raise CredentialError(
                f"{what} printed {cred.api_version or '?'}/{cred.kind or '?'}, "
                f"expected {self.api_version}/ExecCredential"
            )
        st = cred.status
        if st is None or not (st.token or st.client_certificate_data):
            raise CredentialError(f"{what}: the ExecCredential has no status.token or certificate")
        if bool(st.client_certificate_data) != bool(st.client_key_data):
            raise CredentialError(
                f"{what}: status.clientCertificateData and clientKeyData come together"
            )
        expires = st.expiration_timestamp.timestamp() if st.expiration_timestamp else None
        return Issued(
            token=st.token or None,
            cert_pem=st.client_certificate_data or None,
            key_pem=st.client_key_data or None,
            expires=expires,
        )


class _ExecStatus(msgspec.Struct, rename="camel"):
    token: str = ""
    client_certificate_data: str = ""
    client_key_data: str = ""
    expiration_timestamp: datetime | None = None


class _ExecCredential(msgspec.Struct, rename="camel"):
    api_version: str = ""
    kind: str = ""
    status: _ExecStatus | None = None


def exec_plugin(stanza: Any, cluster_info: dict[str, Any]) -> ExecPlugin:
    """The `exec` stanza of a kubeconfig user, checked; ValueError says what is wrong."""
    try:
        plugin = msgspec.convert(stanza, ExecPlugin)
    except msgspec.ValidationError as e:
        raise ValueError(f"exec: {e}") from None
    if plugin.api_version not in EXEC_API_VERSIONS:
        raise ValueError(
            f"exec: apiVersion {plugin.api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}"
        )
    if plugin.interactive_mode == "Always":
        raise ValueError("exec: interactiveMode Always needs a terminal, which bjc never has")
    return msgspec.structs.replace(plugin, cluster_info=cluster_info)


class AuthProvider(msgspec.Struct, frozen=True):
    """A kubeconfig user's `auth-provider` (oidc, gcp), loaded by kubernetes_asyncio."""

    kubeconfig: str  # the KUBECONFIG list (os.pathsep-separated), as kubernetes_asyncio reads it
    context: str
    user: str

    async def issue(self, rejected: bool) -> Issued:
        # heavy imports, only for these (deprecated) users
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

        merger = KubeConfigMerger(self.kubeconfig)  # re-read: kubectl may have refreshed it
        merged: Any = merger.config  # loosely typed ConfigNodes
        try:
            user = merged["users"].get_with_name(self.user)["user"]
            settings = user["auth-provider"].value.setdefault("config", {})
            if rejected:  # make the loader refresh instead of handing out the same token
                settings.pop("access-token", None)
                settings.pop("id-token", None)
            cfg = Configuration()
            loader = KubeConfigLoader(
                config_dict=merged,
                config_base_path=None,
                active_context=self.context,
                # the loader calls its persister with the config, save_changes takes none
                config_persister=lambda _config: merger.save_changes(),
            )
            await loader.load_and_set(cfg)
        except Exception as e:  # the loader raises anything from ValueError to aiohttp errors
            raise CredentialError(f"auth-provider of user {self.user!r}: {e}") from e
        token = (cfg.api_key.get("BearerToken") or "").removeprefix("Bearer ").strip()
        if not token:
            raise CredentialError(f"auth-provider of user {self.user!r} gave no token")
        return Issued(token=token, expires=_jwt_expiry(token) or _rfc3339(settings.get("expiry")))


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (oidc id-tokens), unverified: only to know when to renew."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(claims["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def _rfc3339(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None
