"""A kube-proxy stand-in: a Service's ClusterIP:port forwarded to one ready pod behind it.

Exists because neither the simulated cluster nor the e2e control plane has a
kube-proxy (the reliability harness and the e2e tests both use this one), yet controller replicas
are found by their job pods through a Service (`callbackServiceName`): which
replica answers a callback is decided by the Service's selector and by pod
readiness, exactly as in a cluster. The proxy reads the Service once, listens on
its ClusterIP for every Service port (give the Service a loopback ClusterIP such
as 127.0.0.10), keeps a level-based view of the pods its selector matches (list +
watch, relist on 410) and sends each new connection to one of the ready ones,
chosen at random like iptables mode: the pod's `status.podIP`, the port its
container declares under the Service's `targetPort` name (or the number).

Like kube-proxy it keeps the last known endpoints while the API is unreachable,
leaves established connections alone when a pod stops being ready, and refuses
a connection (reset) when no ready pod is there or the pod does not answer.
Deliberately not here: following changes of the Service itself, session
affinity, NodePorts, UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import Any

import aiohttp
import msgspec

from bjc.kube.client import ApiError, KubeClient

log = logging.getLogger("bjc.sim.proxy")

_BACKOFF_MAX_S = 5.0
_CHUNK = 64 * 1024


class _ContainerPort(msgspec.Struct, rename="camel"):
    container_port: int = 0
    name: str = ""


class _Container(msgspec.Struct):
    ports: list[_ContainerPort] = msgspec.field(default_factory=list)


class _Spec(msgspec.Struct):
    containers: list[_Container] = msgspec.field(default_factory=list)


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _Status(msgspec.Struct):
    pod_ip: str = msgspec.field(default="", name="podIP")
    conditions: list[_Condition] = msgspec.field(default_factory=list)


class _Meta(msgspec.Struct, rename="camel"):
    name: str = ""
    resource_version: str = ""
    deletion_timestamp: str | None = None


class EndpointPod(msgspec.Struct):
    """What the proxy reads of a pod."""

    metadata: _Meta = msgspec.field(default_factory=_Meta)
    spec: _Spec = msgspec.field(default_factory=_Spec)
    status: _Status = msgspec.field(default_factory=_Status)

    @property
    def ready(self) -> bool:
        return (
            bool(self.status.pod_ip)
            and self.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
        )

    def port(self, target: int | str) -> int | None:
        if isinstance(target, int):
            return target
        for container in self.spec.containers:
            for p in container.ports:
                if p.name == target:
                    return p.container_port
        return None


def _selector(service: dict[str, Any]) -> str:
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        raise ValueError("the Service has no selector: nothing to forward to")
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


class ServiceProxy:
    """Forwards ``<clusterIP>:<port>`` of Service ``namespace/name`` to its ready pods."""

    def __init__(self, kube: KubeClient, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.cluster_ip = ""
        self.pods: dict[str, EndpointPod] = {}
        self.synced = asyncio.Event()
        self.forwarded = 0
        self.refused = 0
        self._servers: list[asyncio.Server] = []
        self._watch: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Read the Service, listen on its ports and wait until the pods are listed."""
        path = f"/api/v1/namespaces/{self.namespace}/services/{self.name}"
        service = await self.kube.get(path, dict)
        spec = service.get("spec") or {}
        self.cluster_ip = spec.get("clusterIP") or ""
        selector = _selector(service)
        try:
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port["port"])
                server = await asyncio.start_server(
                    functools.partial(self._forward, target=target),
                    self.cluster_ip,
                    port["port"],
                    reuse_address=True,
                )
                self._servers.append(server)
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._run(selector), name=f"proxy-watch-{self.name}")
        await self.synced.wait()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [*self._connections, *([self._watch] if self._watch else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._watch = None

    def endpoints(self, target: int | str) -> list[tuple[str, int]]:
        """(ip, port) of every ready pod that has the target port."""
        out = []
        for pod in self.pods.values():
            port = pod.port(target)
            if pod.ready and port is not None:
                out.append((pod.status.pod_ip, port))
        return out

    # --- the pod view ---------------------------------------------------------

    async def _run(self, selector: str) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        params = {"labelSelector": selector}
        backoff = 0.1
        rv = ""
        while True:
            try:
                if not rv:
                    items, rv = await self.kube.list(path, EndpointPod, params)
                    self.pods = {p.metadata.name: p for p in items}
                    self.synced.set()
                async for event in self.kube.watch(
                    path, EndpointPod, resource_version=rv, params=params
                ):
                    pod = event.object
                    rv = pod.metadata.resource_version or rv
                    if event.type == "DELETED":
                        self.pods.pop(pod.metadata.name, None)
                    elif event.type != "BOOKMARK":
                        self.pods[pod.metadata.name] = pod
                    backoff = 0.1
            except ApiError as e:
                if e.status == 410:
                    rv = ""  # relist
                    continue
                log.debug("proxy %s: pod watch failed: %s", self.name, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as e:
                log.debug("proxy %s: pod watch interrupted: %r", self.name, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    # --- connections ------------------------------------------------------------

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int | str
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            choices = self.endpoints(target)
            upstream = None
            if choices:
                ip, port = random.choice(choices)
                with contextlib.suppress(OSError):
                    upstream = await asyncio.open_connection(ip, port)
            if upstream is None:
                self.refused += 1
                writer.transport.abort()  # a reset, as iptables' REJECT
                return
            self.forwarded += 1
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._connections.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close; a reset on either side ends the copy."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
