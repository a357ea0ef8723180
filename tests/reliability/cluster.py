"""The test bed of the reliability scenarios: bjc.sim with what a real cluster adds around bjc.

- The simulated API server (in this process), N Ready nodes and the node agent
  running the job program (tests/reliability/job.py) for every job pod.
- Controller pods: each a `bjc run` process (tests/reliability/bound_run.py) with
  its own loopback address as POD_IP and its Pod object in the sim (owner chain
  Deployment → ReplicaSet → Pod, named container ports, `status.podIP`). This
  module plays their kubelet: it marks a pod Ready from its `/readyz` answers
  (the readiness probe, every PROBE_PERIOD) and not Ready the moment its process
  exits.
- The callback Service (ClusterIP CLUSTER_IP) with bjc.sim.proxy in front, so a
  callback reaches whichever pod the Service selects: the pod bjc labels as
  leader, or (select_leader=False, for bjc versions without that label) every
  controller pod, readiness deciding.
- Pod creations counted per pod name from the sim's commit log.

Every process, task and server started here is stopped by `Cluster.close()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bjc.config.podspec import OWNER_LABEL
from bjc.kube.client import ApiError, KubeClient
from bjc.sim import JobBehaviour, NodeAgent, SimCluster
from bjc.sim.proxy import ServiceProxy
from bjc.sim.store import Change

from ..integration.harness import POD_TEMPLATE
from . import procfs
from .job import GAUGE, JobProgram

NAMESPACE = "reliability"
NAME = "rel"  # the controller's name
PREFIX = "bjc_rel"  # its metrics prefix
SERVICE = "bjc-callback"
CLUSTER_IP = "127.0.0.10"
LEADER_LABEL = "batch-job-controller.bakito.github.com/leader"
TRIGGER = "batch-job-controller.bakito.github.com/trigger"  # answered in .../triggered(-execution)
COMPONENT = {"app.kubernetes.io/component": "controller"}
PROGRESS_BOUND = 120.0  # seconds without a new execution that count as a hang
PROBE_PERIOD = 0.5  # seconds between readiness probes (the manifests use 2 s)
REPO = Path(__file__).resolve().parents[2]


class Stalled(Exception):
    """The cluster did not reach a state a scenario waits for within its bound."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControllerPod:
    """One controller replica: its Pod object, its `bjc run` process and its probe."""

    def __init__(self, cluster: Cluster, name: str, ip: str) -> None:
        self.cluster = cluster
        self.name = name
        self.ip = ip
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.peak_rss_kb = 0
        self.baseline: tuple[procfs.Descriptors, int] | None = None  # fds, rss at first answer
        self._poke = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def url(self, server: str, path: str) -> str:
        return f"http://{self.ip}:{self.cluster.ports[server]}{path}"

    def manifest(self) -> dict[str, Any]:
        ports = [{"name": n, "containerPort": p} for n, p in self.cluster.ports.items()]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "labels": dict(COMPONENT),
                "ownerReferences": [self.cluster.replica_set_ref],
            },
            "spec": {"containers": [{"name": "bjc", "image": "bjc", "ports": ports}]},
            "status": {
                "phase": "Running",
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }

    async def start(self) -> None:
        """Start (or restart, as a container restart would) the `bjc run` process."""
        assert not self.alive
        if self.starts == 0:
            self.cluster.sim.create(self.manifest())
            self._tasks.append(asyncio.create_task(self._probe(), name=f"probe-{self.name}"))
        self.starts += 1
        self.baseline = None
        env = {k: v for k, v in os.environ.items() if k not in ("DEV_MODE", "REPORT_DIRECTORY")}
        env.update(
            NAMESPACE=NAMESPACE,
            CONFIG_MAP_NAME=NAME,
            POD_IP=self.ip,
            HOSTNAME=self.name,
            KUBECONFIG=str(self.cluster.kubeconfig),
            LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO),
        )
        log = self.cluster.logs / f"{self.name}.{self.starts}.log"
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.reliability.bound_run",
                env=env, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        finally:
            os.close(out)
        self._tasks.append(asyncio.create_task(self._reap(self.proc), name=f"reap-{self.name}"))

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._poke.set()  # the kubelet sees a container exit at once

    def note_memory(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.peak_rss_kb = max(self.peak_rss_kb, procfs.peak_rss_kb(self.proc.pid))

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` and wait for the process to end (SIGTERM: bounded, then SIGKILL)."""
        if not self.alive:
            return
        assert self.proc is not None
        self.note_memory()
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(30):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise Stalled(f"{self.name} did not exit within 30 s of signal {sig}") from None

    def kill_now(self) -> None:
        """SIGKILL without waiting: for callbacks that must act within microseconds."""
        if self.alive:
            assert self.proc is not None
            self.note_memory()
            self.proc.kill()

    async def remove(self) -> None:
        """Kill the process, stop the probe and delete the Pod object."""
        await self.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(ApiError, aiohttp.ClientError):
            await self.cluster.kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{self.name}")

    def descriptors(self) -> procfs.Descriptors | None:
        if not self.alive:
            return None
        assert self.proc is not None
        return procfs.descriptors(self.proc.pid, self.cluster.sim.port)

    # --- the kubelet's readiness probe --------------------------------------------

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        if not self.alive:
            return False
        try:
            async with http.get(self.url("health", "/readyz")) as r:
                if self.baseline is None and self.proc is not None:
                    fds = self.descriptors()
                    if fds is not None:
                        self.baseline = (fds, procfs.rss_kb(self.proc.pid))
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _probe(self) -> None:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{self.name}/status"
        reported: bool | None = False
        timeout = aiohttp.ClientTimeout(total=1)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            while True:
                ready = await self._ready(http)
                if ready != reported:
                    condition = {"type": "Ready", "status": "True" if ready else "False"}
                    try:
                        await self.cluster.kube.patch(path, {"status": {"conditions": [condition]}})
                        reported = ready
                    except (ApiError, aiohttp.ClientError, TimeoutError):
                        reported = None  # the API refused: try again next period
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_PERIOD):  # not wait_for: 3.11 can
                        await self._poke.wait()  # swallow a cancellation there
                self._poke.clear()


class Cluster:
    """A simulated cluster with nodes, job pods, the callback Service and controller pods."""

    def __init__(
        self,
        tmp: Path,
        *,
        nodes: int,
        pool: int,
        seed: int = 0,
        select_leader: bool = True,
        work: tuple[float, float] = (0.1, 0.5),
        retry_seconds: float = 90.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config = config or {}  # config.yaml keys over the defaults of _config_map
        self.notes: list[str] = []  # broken promises a scenario saw (its row fails)
        self.node_names = [f"node-{i:03d}" for i in range(nodes)]
        self.pool = pool
        self.seed = seed
        self.rng = random.Random(seed)
        self.select_leader = select_leader
        self.reports = tmp / "reports"  # one report directory, shared by every replica
        self.logs = tmp / "logs"
        self.kubeconfig = tmp / "kubeconfig"
        self.sim = SimCluster(seed=seed, bookmark_interval=1.0)
        self._kube: KubeClient | None = None
        self.program = JobProgram(
            tmp / "records", work=work, retry_seconds=retry_seconds, seed=seed
        )
        self.agent: NodeAgent | None = None
        self.proxy: ServiceProxy | None = None
        self.pods: list[ControllerPod] = []  # every controller pod ever started
        self.pod_creates: collections.Counter[str] = collections.Counter()
        self.ports = {n: free_port() for n in ("callback", "health", "files", "metrics")}
        self.replica_set_ref: dict[str, Any] = {}

    @property
    def kube(self) -> KubeClient:
        """A client of the sim's API (subject to its injected faults, like everyone's)."""
        assert self._kube is not None, "the cluster is not started"
        return self._kube

    # --- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        for d in (self.reports, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.sim.store.on_commit.append(self._count_creation)
        await self.sim.start()
        self.sim.write_kubeconfig(self.kubeconfig)
        self._kube = KubeClient.from_url(self.sim.url)
        self.sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        self.sim.create(self._config_map())
        self._owner_chain()
        selector = dict(COMPONENT)
        if self.select_leader:
            selector[LEADER_LABEL] = NAME
        self.sim.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                "spec": {
                    "clusterIP": CLUSTER_IP,
                    "selector": selector,
                    "ports": [
                        {
                            "name": "callback",
                            "port": self.ports["callback"],
                            "targetPort": "callback",
                        }
                    ],
                },
            }
        )
        for node in self.node_names:
            self.sim.add_node(node)
        self.proxy = ServiceProxy(self.kube, NAMESPACE, SERVICE)
        await self.proxy.start()
        # the agent retries its status updates for as long as the API is away
        self.agent = NodeAgent(self.sim.url, behaviour=JobBehaviour(run=self.program))
        await self.agent.start()
        await self.agent.synced.wait()
        self.program.last_start = asyncio.get_running_loop().time()  # progress counts from here

    async def close(self) -> None:
        for pod in self.pods:
            await pod.remove()
        if self.agent is not None:
            await self.agent.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.program.close()
        if self._kube is not None:
            await self._kube.close()
        await self.sim.stop()

    def _config_map(self) -> dict[str, Any]:
        config = {
            "name": NAME,
            "cronExpression": "@every 1s",  # back to back: Forbid skips while one runs
            "concurrencyPolicy": "Forbid",
            "reportDirectory": str(self.reports),
            "reportHistory": 1000,  # nothing a scenario checks is ever pruned
            "podPoolSize": self.pool,
            "callbackServiceName": SERVICE,
            "callbackServicePort": self.ports["callback"],
            "healthProbePort": self.ports["health"],
            "fileServerPort": self.ports["files"],
            "metrics": {
                "port": self.ports["metrics"],
                "prefix": PREFIX,
                "gauges": {GAUGE: {"help": "reliability check", "labels": ["kind"]}},
            },
            **self.config,
        }
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {"config.yaml": yaml.safe_dump(config), "pod-template.yaml": POD_TEMPLATE},
        }

    def _owner_chain(self) -> None:
        deployment = self.sim.create(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "bjc", "namespace": NAMESPACE},
                "spec": {"selector": {"matchLabels": COMPONENT}, "template": {}},
            }
        )
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bjc", "controller": True}
        replica_set = self.sim.create(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": "bjc-7c9f",
                    "namespace": NAMESPACE,
                    "ownerReferences": [{**ref, "uid": deployment["metadata"]["uid"]}],
                },
            }
        )
        self.replica_set_ref = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "bjc-7c9f",
            "uid": replica_set["metadata"]["uid"],
            "controller": True,
        }

    def _count_creation(self, change: Change) -> None:
        if change.key == "pods" and change.type == "ADDED":
            labels = change.obj["metadata"].get("labels") or {}
            if labels.get(OWNER_LABEL) == NAME:
                self.pod_creates[change.obj["metadata"]["name"]] += 1

    # --- controller pods ----------------------------------------------------------

    async def add_controller(self) -> ControllerPod:
        """A new replica (as a ReplicaSet would create it): new name, new address."""
        n = len(self.pods)
        pod = ControllerPod(self, f"bjc-7c9f-{n}", f"127.0.0.{n + 2}")
        self.pods.append(pod)
        await pod.start()
        return pod

    def live(self) -> list[ControllerPod]:
        return [p for p in self.pods if p.alive]

    def lease_holder(self) -> str:
        lease = self.sim.get("leases", NAMESPACE, f"{NAME}-leader-election")
        return ((lease or {}).get("spec") or {}).get("holderIdentity") or ""

    def leader(self) -> ControllerPod | None:
        """The live replica holding the Lease, if any."""
        holder = self.lease_holder()
        return next((p for p in self.live() if p.name == holder), None)

    async def until(self, predicate: Callable[[], bool], bound: float, what: str) -> None:
        """Wait until `predicate` holds, woken by API changes and job records."""
        try:
            async with asyncio.timeout(bound):
                while not predicate():
                    waits = [
                        asyncio.ensure_future(self.sim.store.changed().wait()),
                        asyncio.ensure_future(self.program.changed.wait()),
                    ]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
        except TimeoutError:
            raise Stalled(f"waited {bound:g}s for {what}") from None

    async def wait_leader(self, bound: float = 60.0) -> ControllerPod:
        await self.until(lambda: self.leader() is not None, bound, "a live leader")
        leader = self.leader()
        assert leader is not None
        return leader

    async def wait_executions(self, count: int) -> None:
        """Until job pods of `count` executions have started (Stalled if none starts for
        PROGRESS_BOUND)."""
        while (seen := len(self.program.executions)) < count:
            await self.until(
                lambda: len(self.program.executions) > seen,
                PROGRESS_BOUND,
                f"execution {seen + 1} of {count} to start",
            )

    def check_progress(self) -> None:
        """Stalled when no execution has started for PROGRESS_BOUND (for fault loops)."""
        idle = asyncio.get_running_loop().time() - self.program.last_start
        if idle > PROGRESS_BOUND:
            raise Stalled(f"no execution started for {idle:.0f}s")

    def served(self) -> bool:
        """Whether the callback Service selects a ready controller pod (in the API)."""
        service = self.sim.get("services", NAMESPACE, SERVICE) or {}
        selector = (service.get("spec") or {}).get("selector") or {}
        for pod in self.sim.list("pods", NAMESPACE):
            labels = pod["metadata"].get("labels") or {}
            conditions = (pod.get("status") or {}).get("conditions") or []
            if all(labels.get(k) == v for k, v in selector.items()) and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            ):
                return True
        return False

    def job_pods_busy(self) -> bool:
        return any(
            (p.get("status") or {}).get("phase") in ("Pending", "Running", None)
            for p in self.sim.list("pods", NAMESPACE)
            if (p["metadata"].get("labels") or {}).get(OWNER_LABEL) == NAME
        )

    # --- the ConfigMap's trigger annotations and Events ------------------------------

    async def set_trigger(self, value: str) -> None:
        """Set the trigger annotation with an update (PUT), so a fault on PATCHes spares it."""
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
        config_map = await self.kube.get(path, dict)
        config_map["metadata"].setdefault("annotations", {})[TRIGGER] = value
        await self.kube.replace(path, config_map)

    def answer(self, value: str) -> str | None:
        """The controller's answer to trigger `value` on the ConfigMap (None: not answered)."""
        config_map = self.sim.get("configmaps", NAMESPACE, NAME) or {}
        annotations = config_map.get("metadata", {}).get("annotations") or {}
        if annotations.get(TRIGGER + "ed") != value:
            return None
        return str(annotations.get(TRIGGER + "ed-execution", ""))

    def event_notes(self, reason: str) -> list[str]:
        """The notes of the Events with `reason` (bjc posts them regarding its ConfigMap)."""
        return [
            str(e.get("note") or e.get("message") or "")
            for e in self.sim.list("events", NAMESPACE)
            if e.get("reason") == reason
        ]

    def job_pods_gone(self) -> bool:
        """No job pod exists: a later execution deleted those of the last one that had any."""
        return not any(
            (p["metadata"].get("labels") or {}).get(OWNER_LABEL) == NAME
            for p in self.sim.list("pods", NAMESPACE)
        )

    async def cordon(self, unschedulable: bool = True) -> None:
        """No node is schedulable: executions from now on have no job pods."""
        for node in self.node_names:
            await self.kube.patch(
                f"/api/v1/nodes/{node}", {"spec": {"unschedulable": unschedulable}}
            )

    async def uncordon(self) -> None:
        await self.cordon(False)
