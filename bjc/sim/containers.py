"""Controller pods as local processes: the part of a kubelet that runs bjc itself.

Exists so the end-to-end tests run bjc as users deploy it: the shipped Deployment's
pods, scheduled by a real scheduler, become `python -m bjc run` processes on this
machine, and the Deployment, its probes and its rolling updates act on them. The
node agent hands a pod here when `claims()` says so: one container, running the
image `image` (any tag) with `args[0] == "run"` or no args (the image's own `run`)
and no `command` override, which is what manifests/base ships (and what the Go
controller's Helm chart gives its container). Every other pod stays a simulated job pod.

Per pod, what a kubelet and container runtime would give it:
- `HOSTNAME` = the pod's name unless the container's env sets it (as containerd does);
- a pod IP of its own: a distinct loopback address 127.0.x.y, reported in
  `status.podIP` and bound by the process (`BIND_ADDRESS`; a pod would have its own
  network namespace instead);
- the container's env with downward-API fields resolved, and `KUBECONFIG` naming a
  kubeconfig with a ServiceAccount token from the TokenRequest API, bound to the pod,
  so the manifests' RBAC is what bjc runs under;
- volumes: `emptyDir` is a directory per pod; a `persistentVolumeClaim` is the host
  path of its bound PersistentVolume (one directory shared by every pod that mounts
  it, which is what ReadWriteMany means). No mount namespaces: the volume mounted at
  `report_mount` becomes `REPORT_DIRECTORY`;
- httpGet readiness and liveness probes with the pod's timings, reflected in the
  Ready condition and `containerStatuses`; a failed liveness probe restarts the
  container;
- restartPolicy Always: an exited process is restarted after the kubelet's back-off
  (10 s doubling to 5 min, reset after 10 min of running), counted in `restartCount`
  with the exit in `lastState`;
- deletion: SIGTERM, then SIGKILL after `terminationGracePeriodSeconds`.
Deliberately not: images, users and securityContext, resource limits, exec/tcp/grpc
probes, startup probes, init or sidecar containers, log streaming through the API
(each container's output goes to `<work_dir>/<namespace>_<pod>/<container>.log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any, Protocol

import aiohttp
import msgspec
import yaml

from bjc.sim.podmodel import (
    Container,
    Pod,
    PodGone,
    PodSpec,
    conditions,
    container_env,
    container_status,
    now,
    state,
)

log = logging.getLogger("bjc.sim.containers")

BJC_IMAGE = "ghcr.io/bjc-project/bjc"
STABLE_RUN = 600.0  # seconds of running after which the restart back-off starts over


class Agent(Protocol):
    """What ProcessPods uses of the node agent that hands it a pod (`NodeAgent`)."""

    @property
    def api_url(self) -> str: ...

    @property
    def ssl(self) -> bool | SSLContext | None: ...

    @property
    def session(self) -> aiohttp.ClientSession:
        """The agent's HTTP session to the API, with its credentials."""
        ...

    async def patch_status(self, pod: Pod, status: dict[str, Any]) -> None:
        """Patch the pod's status; PodGone if it was deleted or replaced."""
        ...


# --- the parts of a pod that running it as a process needs ---


class _HttpGet(msgspec.Struct):
    port: int | str
    path: str = "/"


class _Probe(msgspec.Struct):
    httpGet: _HttpGet | None = None
    initialDelaySeconds: int = 0
    periodSeconds: int = 10
    timeoutSeconds: int = 1
    successThreshold: int = 1
    failureThreshold: int = 3


class _Port(msgspec.Struct):
    containerPort: int
    name: str = ""


class _Mount(msgspec.Struct):
    name: str
    mountPath: str


class _Claim(msgspec.Struct):
    claimName: str


class _Volume(msgspec.Struct):
    name: str
    emptyDir: dict[str, Any] | None = None
    persistentVolumeClaim: _Claim | None = None


class _ProcessContainer(Container):
    ports: list[_Port] = msgspec.field(default_factory=list)
    readinessProbe: _Probe | None = None
    livenessProbe: _Probe | None = None
    volumeMounts: list[_Mount] = msgspec.field(default_factory=list)


class _ProcessSpec(PodSpec):
    containers: list[_ProcessContainer] = msgspec.field(default_factory=list)  # type: ignore[assignment]
    volumes: list[_Volume] = msgspec.field(default_factory=list)
    serviceAccountName: str = "default"
    terminationGracePeriodSeconds: int = 30


class _ProcessPod(Pod):
    spec: _ProcessSpec = msgspec.field(default_factory=_ProcessSpec)


class _PvcSpec(msgspec.Struct):
    volumeName: str = ""


class _Pvc(msgspec.Struct):
    spec: _PvcSpec = msgspec.field(default_factory=_PvcSpec)


class _HostPath(msgspec.Struct):
    path: str


class _PvSpec(msgspec.Struct):
    hostPath: _HostPath | None = None


class _Pv(msgspec.Struct):
    spec: _PvSpec = msgspec.field(default_factory=_PvSpec)


class _TokenStatus(msgspec.Struct):
    token: str


class _TokenRequest(msgspec.Struct):
    status: _TokenStatus


class _Unrunnable(Exception):
    """The pod cannot start (a volume that does not resolve, no token): why."""


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


@dataclass
class _Probing:
    """One probe's consecutive results, as the kubelet's prober counts them."""

    probe: _Probe
    ok: bool
    streak: int = 0

    def record(self, success: bool) -> bool:
        """Count one result; True when the probe's outcome flips."""
        if success == self.ok:
            self.streak = 0
            return False
        self.streak += 1
        threshold = self.probe.successThreshold if success else self.probe.failureThreshold
        if self.streak < threshold:
            return False
        self.ok, self.streak = success, 0
        return True


@dataclass
class RunningProcess:
    """A controller container now: its process, address and restarts (for tests)."""

    namespace: str
    pod: str
    pod_ip: str
    log: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class ProcessPods:
    """Runs claimed pods as local processes; one instance serves one NodeAgent."""

    def __init__(
        self,
        work_dir: Path,
        *,
        image: str = BJC_IMAGE,
        report_mount: str = "/var/www",
        restart_backoff: tuple[float, float] = (10.0, 300.0),
        python: str = sys.executable,
    ) -> None:
        self.work_dir = work_dir
        self.image = image
        self.report_mount = report_mount
        self.restart_backoff = restart_backoff
        self.python = python
        self.running: dict[tuple[str, str], RunningProcess] = {}
        self._addresses = 0

    def claims(self, pod: Pod) -> bool:
        if len(pod.spec.containers) != 1:
            return False
        c = pod.spec.containers[0]
        runs = c.args[:1] == ["run"] or not c.args  # no args: the image's CMD, `run`
        return _repository(c.image) == self.image and runs and not c.command

    # --- one pod ---

    async def run(self, agent: Agent, claimed: Pod) -> None:
        """Run the pod until cancelled (deleted): restartPolicy Always."""
        meta = claimed.metadata
        path = f"/api/v1/namespaces/{meta.namespace}/pods/{meta.name}"
        try:
            pod = await self._get(agent, path, _ProcessPod)
        except _Unrunnable:
            return  # gone meanwhile
        if pod.metadata.uid != meta.uid:
            return  # replaced meanwhile: the agent sees the new one
        self._addresses += 1
        n = self._addresses
        ip = f"127.0.{n // 250}.{n % 250 + 2}"
        home = self.work_dir / f"{meta.namespace}_{meta.name}"
        home.mkdir(parents=True, exist_ok=True)
        container = pod.spec.containers[0]
        running = RunningProcess(meta.namespace, meta.name, ip, home / f"{container.name}.log")
        self.running[(meta.namespace, meta.name)] = running
        try:
            await self._lifecycle(agent, pod, container, running, home)
        except PodGone:
            return  # deleted while we updated it
        finally:
            self.running.pop((meta.namespace, meta.name), None)

    async def _lifecycle(
        self,
        agent: Agent,
        pod: _ProcessPod,
        container: _ProcessContainer,
        running: RunningProcess,
        home: Path,
    ) -> None:
        status = _Status(pod, container, running.pod_ip, pod.status.startTime or now())
        await agent.patch_status(pod, status.waiting("ContainerCreating"))
        try:
            env = await self._environment(agent, pod, container, running.pod_ip, home)
        except _Unrunnable as e:
            log.warning("pod %s/%s cannot start: %s", running.namespace, running.pod, e)
            await agent.patch_status(pod, status.waiting("CreateContainerConfigError", str(e)))
            await asyncio.Event().wait()  # as with a kubelet, it stays so until deleted
        backoff = self.restart_backoff[0]
        while True:
            started = time.monotonic()
            code = await self._run_once(agent, pod, container, env, running, status)
            running.exits.append(code)
            running.restarts += 1
            if time.monotonic() - started > STABLE_RUN:
                backoff = self.restart_backoff[0]
            await agent.patch_status(pod, status.exited(code, running.restarts))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.restart_backoff[1])

    async def _get(self, agent: Agent, path: str, kind: type[Any]) -> Any:
        async with agent.session.get(agent.api_url + path) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise _Unrunnable(f"GET {path}: HTTP {resp.status}")
        return msgspec.json.decode(body, type=kind)

    async def _environment(
        self, agent: Agent, pod: _ProcessPod, c: _ProcessContainer, ip: str, home: Path
    ) -> dict[str, str]:
        mounts = {m.mountPath: await self._volume(agent, pod, m.name, home) for m in c.volumeMounts}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        env["HOSTNAME"] = pod.metadata.name
        env.update(container_env(pod, c, ip))
        env["KUBECONFIG"] = str(await self._kubeconfig(agent, pod, home))
        env["BIND_ADDRESS"] = ip
        if self.report_mount in mounts:
            env["REPORT_DIRECTORY"] = str(mounts[self.report_mount])
        return env

    async def _volume(self, agent: Agent, pod: _ProcessPod, name: str, home: Path) -> Path:
        volume = next((v for v in pod.spec.volumes if v.name == name), None)
        if volume is None:
            raise _Unrunnable(f"volume {name!r} is mounted but not defined")
        if volume.persistentVolumeClaim is not None:
            claim = volume.persistentVolumeClaim.claimName
            ns = pod.metadata.namespace
            pvc = await self._get(
                agent, f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}", _Pvc
            )
            if not pvc.spec.volumeName:
                raise _Unrunnable(f"PersistentVolumeClaim {claim} is not bound")
            pv = await self._get(agent, f"/api/v1/persistentvolumes/{pvc.spec.volumeName}", _Pv)
            if pv.spec.hostPath is None:
                raise _Unrunnable(f"PersistentVolume {pvc.spec.volumeName} is not a hostPath")
            path = Path(pv.spec.hostPath.path)
        else:  # emptyDir, and anything else: a directory of the pod's own
            path = home / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _kubeconfig(self, agent: Agent, pod: _ProcessPod, home: Path) -> Path:
        """A kubeconfig for the pod's ServiceAccount, with a token bound to the pod."""
        meta = pod.metadata
        sa = pod.spec.serviceAccountName or "default"
        url = f"{agent.api_url}/api/v1/namespaces/{meta.namespace}/serviceaccounts/{sa}/token"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.name,
                    "uid": meta.uid,
                },
            },
        }
        async with agent.session.post(url, json=request) as resp:
            body = await resp.read()
            if resp.status != 201:
                raise _Unrunnable(
                    f"token for ServiceAccount {sa}: HTTP {resp.status} {body[:200]!r}"
                )
        token = msgspec.json.decode(body, type=_TokenRequest).status.token
        cluster: dict[str, Any] = {"server": agent.api_url}
        if agent.api_url.startswith("https") and agent.ssl is False:
            cluster["insecure-skip-tls-verify"] = True
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "cluster", "user": sa, "namespace": meta.namespace},
                }
            ],
            "current-context": "pod",
        }
        path = home / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    async def _run_once(
        self,
        agent: Agent,
        pod: _ProcessPod,
        c: _ProcessContainer,
        env: dict[str, str],
        running: RunningProcess,
        status: _Status,
    ) -> int:
        """Start the process, probe it until it exits, return its exit code."""
        with running.log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "bjc", *(c.args or ["run"]),  # no args: the image's CMD
                env=env, cwd=running.log.parent, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        running.process = proc
        status.since = now()
        grace = pod.spec.terminationGracePeriodSeconds
        try:
            ready = c.readinessProbe is None
            await agent.patch_status(pod, status.running(running.restarts, ready))
            async with asyncio.TaskGroup() as group:
                probes = []
                if c.readinessProbe is not None:
                    probes.append(
                        group.create_task(self._readiness(agent, pod, c, running, status))
                    )
                if c.livenessProbe is not None:
                    probes.append(
                        group.create_task(self._liveness(c, c.livenessProbe, running, grace))
                    )
                code = await proc.wait()
                for task in probes:
                    task.cancel()
        finally:
            if proc.returncode is None:  # cancelled: the pod is being deleted
                await asyncio.shield(_terminate(proc, grace))
        return code if code >= 0 else 128 - code

    async def _readiness(
        self,
        agent: Agent,
        pod: _ProcessPod,
        c: _ProcessContainer,
        running: RunningProcess,
        status: _Status,
    ) -> None:
        assert c.readinessProbe is not None
        probing = _Probing(c.readinessProbe, ok=False)
        async for success in self._probe_results(c, c.readinessProbe, running.pod_ip):
            if probing.record(success):
                with contextlib.suppress(PodGone):  # being deleted: we are cancelled soon
                    await agent.patch_status(pod, status.running(running.restarts, probing.ok))

    async def _liveness(
        self, c: _ProcessContainer, probe: _Probe, running: RunningProcess, grace: int
    ) -> None:
        probing = _Probing(probe, ok=True)
        async for success in self._probe_results(c, probe, running.pod_ip):
            if probing.record(success) and not probing.ok and running.process is not None:
                log.info(
                    "liveness probe of %s/%s failed: restarting", running.namespace, running.pod
                )
                await _terminate(running.process, grace)
                return

    async def _probe_results(
        self, c: _ProcessContainer, probe: _Probe, ip: str
    ) -> AsyncIterator[bool]:
        """Each period, whether the httpGet probe succeeded (a 2xx/3xx in time)."""
        assert probe.httpGet is not None
        port = probe.httpGet.port
        if isinstance(port, str):
            port = next((p.containerPort for p in c.ports if p.name == port), 0)
        url = f"http://{ip}:{port}{probe.httpGet.path}"
        timeout = aiohttp.ClientTimeout(total=probe.timeoutSeconds)
        await asyncio.sleep(probe.initialDelaySeconds)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    async with http.get(url, allow_redirects=False) as resp:
                        yield 200 <= resp.status < 400
                except (aiohttp.ClientError, OSError, TimeoutError):
                    yield False
                await asyncio.sleep(probe.periodSeconds)


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL after the grace period, as a kubelet stops a container."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class _Status:
    """The status documents of one process pod (strategic-merge patches)."""

    def __init__(self, pod: _ProcessPod, c: _ProcessContainer, ip: str, start: str) -> None:
        self.pod, self.c, self.ip, self.start = pod, c, ip, start
        self.last_state: dict[str, Any] = {}
        self.since = start  # when the current run of the container started

    def _doc(self, current: dict[str, Any], ready: bool, restarts: int) -> dict[str, Any]:
        return {
            "phase": "Running" if "running" in current or restarts else "Pending",
            "startTime": self.start,
            "hostIP": "127.0.0.1",
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "conditions": conditions(ready, None if ready else "ContainersNotReady"),
            "containerStatuses": [
                {
                    **container_status(self.c, state(**current), ready, restarts),
                    "lastState": self.last_state,
                }
            ],
        }

    def waiting(self, reason: str, message: str = "") -> dict[str, Any]:
        waiting = {"reason": reason, **({"message": message} if message else {})}
        return self._doc({"waiting": waiting}, False, 0)

    def running(self, restarts: int, ready: bool) -> dict[str, Any]:
        return self._doc({"running": {"startedAt": self.since}}, ready, restarts)

    def exited(self, code: int, restarts: int) -> dict[str, Any]:
        finished = now()
        self.last_state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.since,
                "finishedAt": finished,
            }
        }
        return self._doc({"waiting": {"reason": "CrashLoopBackOff"}}, False, restarts)
