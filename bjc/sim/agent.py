"""A kubelet stand-in: runs the pods bound to simulated nodes and reports their status.

Exists so that job pods created by bjc actually progress Pending → Running →
Succeeded/Failed, through the same HTTP calls a kubelet makes (list+watch pods with
a field selector, PATCH `pods/{name}/status`), so it also drives pods on a real
kube-apiserver. One watch serves all of the agent's nodes. A pod runs either a
built-in behaviour (delays, exit code, an optional async callable) or a local shell
command with the container's env (`--job-command`); its output becomes the container
log, appended through the sim's private `POST /_sim/logs/...` path (ignored when the
server does not have it). A pod deleted while running is stopped (its command
killed); `spec.activeDeadlineSeconds` fails it with reason DeadlineExceeded. Status
updates are retried until the API answers (an outage only delays them), and a pod
the agent has run is never started again, whatever stale view of it arrives later.
On a real apiserver a deleted pod first gets a deletionTimestamp: the agent stops it
and then deletes it with grace period 0, as a kubelet confirms a graceful deletion.
Pods that `processes` (`bjc.sim.containers.ProcessPods`) claims run as local
processes there, with probes and restarts. Deliberately not a kubelet otherwise: no
images, no restarts (restartPolicy is not honoured beyond running once), no probes,
no node heartbeats, no eviction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl as _ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from bjc.sim.containers import ProcessPods
from bjc.sim.podmodel import (
    Container,
    Pod,
    PodGone,
    conditions,
    container_env,
    container_status,
    now,
    state,
)

log = logging.getLogger("bjc.sim.agent")


# --- slim views of the watch's API objects (the pod itself: bjc.sim.podmodel) ---


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""


class _PodList(msgspec.Struct):
    metadata: _ListMeta
    items: list[Pod]


class _Event(msgspec.Struct):
    type: str
    object: msgspec.Raw


class _StatusObj(msgspec.Struct):
    code: int = 0
    message: str = ""


_pod_decoder = msgspec.json.Decoder(Pod)
_list_decoder = msgspec.json.Decoder(_PodList)
_event_decoder = msgspec.json.Decoder(_Event)
_status_decoder = msgspec.json.Decoder(_StatusObj)
_encode = msgspec.json.Encoder().encode


@dataclass
class RunningPod:
    """What a behaviour's ``run`` callable gets: the pod being run and its first container's env."""

    name: str
    namespace: str
    node: str
    uid: str
    env: dict[str, str]
    containers: list[str]


@dataclass
class JobBehaviour:
    """How simulated containers behave; ``per_node`` overrides it for named nodes."""

    pending_seconds: float = 0
    run_seconds: float = 0
    exit_code: int = 0
    # what the container leaves in its terminationMessagePath (the kubelet reports it)
    termination_message: str = ""
    stay_pending: bool = False
    run: Callable[[RunningPod], Awaitable[int | None]] | None = None
    per_node: dict[str, JobBehaviour] = field(default_factory=dict)

    def for_node(self, node: str) -> JobBehaviour:
        return self.per_node.get(node, self)


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class _HttpError(Exception):
    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status
        self.retry_after = retry_after


def _parse_time(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class NodeAgent:
    """Plays the kubelet for ``node_names`` (None: every node) against the API at ``api_url``."""

    def __init__(
        self,
        api_url: str,
        node_names: list[str] | None = None,
        *,
        behaviour: JobBehaviour | None = None,
        job_command: str | None = None,
        namespace: str | None = None,
        max_backoff: float = 2.0,
        headers: dict[str, str] | None = None,
        ssl: bool | _ssl.SSLContext | None = None,
        processes: ProcessPods | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.headers = dict(headers or {})  # e.g. Authorization for a real apiserver
        self.ssl = ssl  # None: aiohttp's default verification
        self.node_names = set(node_names) if node_names is not None else None
        self.behaviour = behaviour or JobBehaviour()
        self.job_command = job_command
        self.namespace = namespace
        self.max_backoff = max_backoff
        self.processes = processes  # runs the pods it claims as local processes
        self.completed = 0
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._pods: dict[str, asyncio.Task[None]] = {}
        # uids of pods this agent has run to the end: a stale view of one (a relist or an
        # event that was on its way) must not run it again
        self._done: set[str] = set()
        self._deleting: dict[str, asyncio.Task[None]] = {}
        self._ip = 0
        self.synced = asyncio.Event()

    # --- lifecycle ---

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self.headers,
            read_bufsize=1 << 20,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        self._loop_task = asyncio.create_task(self._run(), name="bjc-sim-agent-watch")

    async def stop(self) -> None:
        running = [self._loop_task, *self._pods.values(), *self._deleting.values()]
        tasks = [t for t in running if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._pods.clear()
        self._deleting.clear()
        self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The agent's HTTP session to the API (its headers and TLS), while started."""
        if self._session is None:
            raise RuntimeError("the node agent is not started")
        return self._session

    # --- the watch ---

    def _pods_url(self) -> str:
        if self.namespace:
            return f"{self.api_url}/api/v1/namespaces/{self.namespace}/pods"
        return f"{self.api_url}/api/v1/pods"

    def _field_selector(self) -> str:
        if self.node_names is not None and len(self.node_names) == 1:
            return f"spec.nodeName={next(iter(self.node_names))}"
        return "spec.nodeName!="

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                rv = await self._relist()
                backoff = 0.05
                while True:
                    rv = await self._watch(rv)
            except _Gone:
                continue
            except (aiohttp.ClientError, _HttpError, TimeoutError, msgspec.DecodeError) as exc:
                delay = getattr(exc, "retry_after", None) or backoff
                log.debug("agent watch error (%s), retrying in %.2fs", exc, delay)
                backoff = min(backoff * 2, self.max_backoff)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        params = {"fieldSelector": self._field_selector()}
        async with self.session.get(self._pods_url(), params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise _HttpError(resp.status, body.decode(errors="replace"), _retry_after(resp))
        pods = _list_decoder.decode(body)
        seen = set()
        for pod in pods.items:
            seen.add(pod.metadata.uid)
            self._observe(pod)
        for uid in [u for u in self._pods if u not in seen]:
            self._pods.pop(uid).cancel()
        self._done &= seen
        return pods.metadata.resourceVersion

    async def _watch(self, rv: str) -> str:
        params = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
            "fieldSelector": self._field_selector(),
        }
        async with self.session.get(self._pods_url(), params=params) as resp:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise _HttpError(resp.status, await resp.text(), _retry_after(resp))
            self.synced.set()  # listed and watching: from here on nothing is missed
            async for line in resp.content:
                if not line.strip():
                    continue
                event = _event_decoder.decode(line)
                if event.type == "ERROR":
                    status = _status_decoder.decode(event.object)
                    if status.code == 410:
                        raise _Gone()
                    raise _HttpError(status.code, status.message)
                pod = _pod_decoder.decode(event.object)
                if pod.metadata.resourceVersion:
                    rv = pod.metadata.resourceVersion
                if event.type == "BOOKMARK":
                    continue
                if event.type == "DELETED":
                    self._done.discard(pod.metadata.uid)
                    task = self._pods.pop(pod.metadata.uid, None)
                    if task is not None:
                        task.cancel()
                else:
                    self._observe(pod)
        return rv

    def _observe(self, pod: Pod) -> None:
        node = pod.spec.nodeName
        if not node or (self.node_names is not None and node not in self.node_names):
            return
        uid = pod.metadata.uid
        if pod.metadata.deletionTimestamp is not None:
            self._confirm_deletion(pod)
            return
        if uid in self._pods or uid in self._done:
            return
        if pod.status.phase not in ("", "Pending", "Running"):
            return
        if self.processes is not None and self.processes.claims(pod):
            run = self.processes.run(self, pod)
        else:
            behaviour = self.behaviour.for_node(node)
            if behaviour.stay_pending:
                return
            run = self._run_pod(pod, behaviour)
        task = asyncio.create_task(run, name=f"bjc-sim-pod-{pod.metadata.name}")
        self._pods[uid] = task
        task.add_done_callback(lambda t, uid=uid: self._pod_done(uid, t))  # type: ignore[misc]

    def _confirm_deletion(self, pod: Pod) -> None:
        """Graceful deletion (a real apiserver's): stop the pod, then remove it with grace 0."""
        uid = pod.metadata.uid
        if uid in self._deleting:
            return
        task = asyncio.create_task(
            self._delete_now(pod, self._pods.pop(uid, None)),
            name=f"bjc-sim-delete-{pod.metadata.name}",
        )
        self._deleting[uid] = task
        task.add_done_callback(lambda _, uid=uid: self._deleting.pop(uid, None))  # type: ignore[misc]

    async def _delete_now(self, pod: Pod, running: asyncio.Task[None] | None) -> None:
        if running is not None:
            running.cancel()  # a process pod stops within its grace period
            await asyncio.wait([running])
        meta = pod.metadata
        url = f"{self.api_url}/api/v1/namespaces/{meta.namespace}/pods/{meta.name}"
        body = _encode({"gracePeriodSeconds": 0, "preconditions": {"uid": meta.uid}})
        await self._request("DELETE", url, body, "application/json")

    def _pod_done(self, uid: str, task: asyncio.Task[None]) -> None:
        if self._pods.get(uid) is task:
            del self._pods[uid]
        if task.cancelled():
            return  # deleted, or the agent stops
        self._done.add(uid)
        if task.exception() is not None:
            log.warning("simulated pod task failed: %r", task.exception())

    # --- running one pod ---

    async def _run_pod(self, pod: Pod, behaviour: JobBehaviour) -> None:
        try:
            await self._lifecycle(pod, behaviour)
        except PodGone:
            return

    async def _lifecycle(self, pod: Pod, behaviour: JobBehaviour) -> None:
        loop = asyncio.get_running_loop()
        start = pod.status.startTime or now()
        self._ip += 1
        pod_ip = pod.status.podIP or f"10.244.{self._ip // 250 % 250}.{self._ip % 250 + 1}"
        deadline: float | None = None
        if pod.spec.activeDeadlineSeconds is not None:
            elapsed = max(0.0, datetime.now(UTC).timestamp() - _parse_time(start))
            deadline = loop.time() + pod.spec.activeDeadlineSeconds - elapsed
        running_since = now()
        try:
            async with asyncio.timeout_at(deadline):
                if pod.status.phase != "Running":
                    await self.patch_status(pod, self._pending_status(pod, start, pod_ip))
                    if behaviour.pending_seconds:
                        await asyncio.sleep(behaviour.pending_seconds)
                    running_since = now()
                    await self.patch_status(pod, self._running_status(pod, running_since))
                code = await self._execute(pod, behaviour, pod_ip)
        except TimeoutError:
            await self.patch_status(pod, self._deadline_status(pod, running_since))
            self.completed += 1
            return
        message = behaviour.termination_message
        await self.patch_status(pod, self._final_status(pod, running_since, code, message))
        self.completed += 1

    async def _execute(self, pod: Pod, behaviour: JobBehaviour, pod_ip: str) -> int:
        node = pod.spec.nodeName
        if self.job_command:
            for c in pod.spec.initContainers:
                code = await self._command(pod, c, pod_ip)
                if code != 0:
                    return code
            codes = await asyncio.gather(
                *(self._command(pod, c, pod_ip) for c in pod.spec.containers)
            )
            return next((c for c in codes if c != 0), 0)
        if behaviour.run_seconds:
            await asyncio.sleep(behaviour.run_seconds)
        code = behaviour.exit_code
        if behaviour.run is not None:
            first = pod.spec.containers[0] if pod.spec.containers else Container(name="")
            result = await behaviour.run(
                RunningPod(
                    name=pod.metadata.name,
                    namespace=pod.metadata.namespace,
                    node=node,
                    uid=pod.metadata.uid,
                    env=container_env(pod, first, pod_ip),
                    containers=[c.name for c in pod.spec.containers],
                )
            )
            if result is not None:
                code = result
        for c in pod.spec.containers:
            await self._store_log(
                pod, c.name, f"bjc sim: container {c.name} on node {node} exited with {code}\n"
            )
        return code

    async def _command(self, pod: Pod, container: Container, pod_ip: str) -> int:
        assert self.job_command is not None
        env = {**os.environ, **container_env(pod, container, pod_ip)}
        proc = await asyncio.create_subprocess_shell(
            self.job_command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        await self._store_log(pod, container.name, out.decode("utf-8", "replace"))
        rc = proc.returncode if proc.returncode is not None else 1
        return rc if rc >= 0 else 128 - rc

    # --- HTTP calls ---

    async def _request(self, method: str, url: str, data: bytes, ctype: str) -> int:
        """Send until the API answers (retrying 429/5xx/connection errors with capped
        backoff, however long the outage); returns the final status."""
        delay = 0.05
        while True:
            try:
                async with self.session.request(
                    method, url, data=data, headers={"Content-Type": ctype}
                ) as resp:
                    await resp.read()
                    if resp.status != 429 and resp.status < 500:
                        return resp.status
                    wait = _retry_after(resp) or delay
            except aiohttp.ClientError:
                wait = delay
            log.debug("%s %s failed, retrying in %.2fs", method, url, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_backoff)

    async def patch_status(self, pod: Pod, status: dict[str, Any]) -> None:
        """Patch the pod's status as a kubelet does; PodGone if it was deleted or replaced."""
        meta = pod.metadata
        url = f"{self.api_url}/api/v1/namespaces/{meta.namespace}/pods/{meta.name}/status"
        body = _encode({"metadata": {"uid": meta.uid}, "status": status})
        code = await self._request("PATCH", url, body, "application/strategic-merge-patch+json")
        if code in (404, 409):
            raise PodGone()
        if code >= 300:
            raise _HttpError(code, f"status patch of pod {meta.namespace}/{meta.name} refused")

    async def _store_log(self, pod: Pod, container: str, text: str) -> None:
        meta = pod.metadata
        url = f"{self.api_url}/_sim/logs/{meta.namespace}/{meta.name}/{container}"
        # appended: a behaviour's `run` may have logged through `SimCluster.set_log` first
        await self._request("POST", url, text.encode(), "text/plain")  # 404: not a sim

    # --- status documents (what a kubelet reports) ---

    @staticmethod
    def _container_statuses(pod: Pod, current: dict[str, Any], ready: bool) -> list[dict[str, Any]]:
        return [container_status(c, current, ready) for c in pod.spec.containers]

    def _pending_status(self, pod: Pod, start: str, pod_ip: str) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "startTime": start,
            "hostIP": "127.0.0.1",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "conditions": conditions(False, "ContainersNotReady"),
            "containerStatuses": self._container_statuses(
                pod, state(waiting={"reason": "ContainerCreating"}), False
            ),
        }

    def _running_status(self, pod: Pod, since: str) -> dict[str, Any]:
        return {
            "phase": "Running",
            "conditions": conditions(True),
            "containerStatuses": self._container_statuses(
                pod, {"running": {"startedAt": since}}, True
            ),
        }

    def _final_status(self, pod: Pod, since: str, code: int, message: str = "") -> dict[str, Any]:
        reason = "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": since, "finishedAt": now()}
        if message:
            terminated["message"] = message
        ended = state(terminated=terminated)
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": conditions(False, "PodCompleted"),
            "containerStatuses": self._container_statuses(pod, ended, False),
        }

    def _deadline_status(self, pod: Pod, since: str) -> dict[str, Any]:
        status = self._final_status(pod, since, 137)
        status["reason"] = "DeadlineExceeded"
        status["message"] = "Pod was active on the node longer than the specified deadline"
        return status
