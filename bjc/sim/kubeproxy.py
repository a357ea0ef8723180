"""A kube-proxy stand-in for the real control plane of the e2e tests.

(`bjc.sim.proxy` is the reliability harness's twin against bjc.sim; the two were
written side by side and are to be merged into one.) A Service's ClusterIP and
port forward TCP to a Ready pod it selects.

Exists because the end-to-end tests run the shipped manifests, whose job pods call
back through the `bjc` Service: without something playing kube-proxy a ClusterIP
routes nowhere. For one Service (`namespace`/`name`) it list+watches the Service and
the pods of its namespace, listens on `clusterIP:port` for every port while the
ClusterIP is a loopback address (the e2e control plane allocates them from
127.96.0.0/16; no other address is ever bound), and hands each
connection to one of the Service's endpoints, round robin: the pods in its
namespace that match its selector, are Ready and not being deleted, at the
`targetPort` (a number, or a container port's name). Endpoints come from the pods
themselves, not EndpointSlices, because the apiserver refuses loopback addresses
in those. With no endpoint a connection is closed at once, as kube-proxy rejects it.
Deliberately not: UDP, session affinity, NodePorts, external traffic policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import msgspec

from bjc.kube.client import ApiError, KubeClient
from bjc.kube.objects import NodeCondition, ObjectMeta

log = logging.getLogger("bjc.sim.proxy")

T = TypeVar("T")
Key = tuple[str, str]  # namespace, name


class _ServicePort(msgspec.Struct):
    port: int
    targetPort: int | str | None = None
    protocol: str = "TCP"


class _ServiceSpec(msgspec.Struct):
    clusterIP: str = ""
    selector: dict[str, str] = msgspec.field(default_factory=dict)
    ports: list[_ServicePort] = msgspec.field(default_factory=list)


class _Service(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _ServiceSpec = msgspec.field(default_factory=_ServiceSpec)


class _ContainerPort(msgspec.Struct):
    containerPort: int
    name: str = ""


class _Container(msgspec.Struct):
    ports: list[_ContainerPort] = msgspec.field(default_factory=list)


class _PodSpec(msgspec.Struct):
    containers: list[_Container] = msgspec.field(default_factory=list)


class _PodStatus(msgspec.Struct):
    podIP: str = ""
    conditions: list[NodeCondition] = msgspec.field(default_factory=list)  # same shape


class _Pod(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _PodSpec = msgspec.field(default_factory=_PodSpec)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)

    @property
    def ready(self) -> bool:
        ready = any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
        return ready and bool(self.status.podIP) and self.metadata.deletion_timestamp is None


class ServiceProxy:
    """Forwards the loopback ClusterIP of Service `namespace`/`name` to its endpoints."""

    def __init__(self, kube: KubeClient, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.services: dict[Key, _Service] = {}
        self.pods: dict[Key, _Pod] = {}
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._services_changed = asyncio.Event()
        self._changed = asyncio.Condition()  # any store or listener change
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._turn = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._inform("services", _Service, self.services)),
            asyncio.create_task(self._inform("pods", _Pod, self.pods)),
            asyncio.create_task(self._listen()),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._connections]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._connections, return_exceptions=True)
        self._tasks.clear()
        for server in self._servers.values():
            server.close()
        self._servers.clear()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is checked after every change seen."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    @property
    def listening(self) -> set[tuple[str, int]]:
        return set(self._servers)

    async def _notify(self, services: bool) -> None:
        if services:
            self._services_changed.set()
        async with self._changed:
            self._changed.notify_all()

    # --- list + watch ---

    async def _inform(self, plural: str, kind: type[T], store: dict[Key, T]) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/{plural}"
        params = {"fieldSelector": f"metadata.name={self.name}"} if kind is _Service else {}
        while True:
            try:
                items, rv = await self.kube.list(path, kind, params=params)
                store.clear()
                store.update({(i.metadata.namespace, i.metadata.name): i for i in items})  # type: ignore[attr-defined]
                await self._notify(kind is _Service)
                while True:
                    events = self.kube.watch(path, kind, resource_version=rv, params=params)
                    async for event in events:
                        meta = event.object.metadata  # type: ignore[attr-defined]
                        rv = meta.resource_version or rv
                        if event.type == "BOOKMARK":
                            continue
                        if event.type == "DELETED":
                            store.pop((meta.namespace, meta.name), None)
                        else:
                            store[(meta.namespace, meta.name)] = event.object
                        await self._notify(kind is _Service)
            except ApiError as e:
                if e.status != 410:
                    log.debug("watch %s: %s", path, e)
                    await asyncio.sleep(1)
            except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as e:
                log.debug("watch %s: %s", path, e)
                await asyncio.sleep(1)

    # --- listeners ---

    async def _listen(self) -> None:
        """Keep one listener per loopback ClusterIP and TCP port."""
        while True:
            await self._services_changed.wait()
            self._services_changed.clear()
            wanted = {
                (svc.spec.clusterIP, p.port): (key, p)
                for key, svc in self.services.items()
                if svc.spec.clusterIP.startswith("127.")
                for p in svc.spec.ports
                if p.protocol == "TCP"
            }
            for address in [a for a in self._servers if a not in wanted]:
                self._servers.pop(address).close()
            for address, (key, port) in wanted.items():
                if address in self._servers:
                    continue
                try:
                    self._servers[address] = await asyncio.start_server(
                        lambda r, w, key=key, port=port: self._forward(key, port, r, w),  # type: ignore[misc]
                        *address,
                    )
                except OSError as e:
                    log.warning("service %s/%s: cannot listen on %s:%d: %s", *key, *address, e)
            await self._notify(False)

    def endpoint(self, key: Key, port: _ServicePort) -> tuple[str, int] | None:
        """The next Ready pod the Service selects, with its target port; None if none."""
        svc = self.services.get(key)
        if svc is None or not svc.spec.selector:
            return None
        selector = svc.spec.selector.items()
        ready = sorted(
            (pod for (ns, _), pod in self.pods.items() if ns == key[0] and pod.ready
             and selector <= pod.metadata.labels.items()),
            key=lambda p: p.metadata.name,
        )  # fmt: skip
        if not ready:
            return None
        self._turn += 1
        pod = ready[self._turn % len(ready)]
        target = port.targetPort if port.targetPort is not None else port.port
        if isinstance(target, str):
            named = (
                p.containerPort for c in pod.spec.containers for p in c.ports if p.name == target
            )
            number = next(named, None)
            if number is None:
                return None
        else:
            number = target
        return pod.status.podIP, number

    async def _forward(
        self,
        key: Key,
        port: _ServicePort,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            endpoint = self.endpoint(key, port)
            if endpoint is None:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*endpoint)
            except OSError:
                return
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._connections.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
