"""A controller under test: bjc.runtime against bjc.sim, everything over HTTP.

`cluster(tmp_path, plane=...)` runs the same scenario on the real control plane
instead (tests/e2e/controlplane.py): same agent, same controller, same asserts.
There the cluster is shared by the whole session, so a Cluster cleans up after
itself (its job pods, its nodes) and its agent only plays the nodes it added.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml

from bjc.config.configmap import load_config_map
from bjc.config.extensions import Extension
from bjc.config.settings import Environment
from bjc.kube.client import ApiError, Credentials, KubeClient
from bjc.kube.objects import Pod
from bjc.runtime import Runtime
from bjc.sim import JobBehaviour, NodeAgent, RunningPod, SimCluster
from tests.e2e.controlplane import ControlPlane, add_ready_node, settle

NAMESPACE = "jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
CONFIG_MAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
CONFIG_MAP = f"{CONFIG_MAPS}/batch"
EVENTS = f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"

BASE_CONFIG: dict[str, Any] = {
    "name": "batch",
    "cronExpression": "0 0 1 1 *",  # never fires during a test; tests trigger explicitly
    "reportDirectory": "/unused",
    "reportHistory": 5,
    "podPoolSize": 5,
    "metrics": {
        "prefix": "bjc_test",
        "gauges": {"checks": {"help": "checks by kind", "labels": ["kind"]}},
    },
}

POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    app: job
spec:
  containers:
    - name: main
      image: busybox
      env:
        - name: WHERE
          value: "{{ .NodeName }}"
"""


async def post_result(pod: RunningPod) -> int:
    """A well-behaved job: reports one series, then exits 0."""
    body = {"checks": [{"value": 1.0, "labels": {"kind": pod.node}}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(pod.env["CALLBACK_SERVICE_RESULT_URL"], json=body) as resp:
            assert resp.status == 200, await resp.text()
    return 0


def config_data(template: str = POD_TEMPLATE, **overrides: Any) -> dict[str, str]:
    config = {**BASE_CONFIG, **overrides}
    return {"config.yaml": yaml.safe_dump(config), "pod-template.yaml": template}


class Cluster:
    """A cluster (simulated, or the real control plane) with nodes and a kubelet agent,
    plus controllers on it."""

    def __init__(
        self, sim: SimCluster | None, tmp: Path, plane: ControlPlane | None = None
    ) -> None:
        self._sim = sim
        self.plane = plane
        self.tmp = tmp
        if plane is not None:
            self.creds = Credentials(server=plane.url, insecure=True, token=plane.token)
        else:
            assert sim is not None
            self.creds = Credentials(server=sim.url)
        self.kube = KubeClient(self.creds)
        self.agent: NodeAgent | None = None
        self.runtimes: list[Runtime] = []
        self.nodes: list[str] = []

    @property
    def sim(self) -> SimCluster:
        assert self._sim is not None, "a bjc.sim-only test"
        return self._sim

    async def ready_nodes(self, count: int, prefix: str = "node") -> list[str]:
        """Ready nodes on either kind of cluster."""
        if self.plane is None:
            return self.add_nodes(count, prefix)
        names = [f"{prefix}-{i:03d}" for i in range(count)]
        for name in names:
            await add_ready_node(self.kube, name)
        self.nodes += names
        return names

    async def drop_watches(self, expire: bool = False) -> None:
        """End every watch; `expire`: on bjc.sim, resuming them then gets 410. The
        real control plane gets its apiserver restarted, which ends every watch."""
        if self.plane is None:
            if expire:
                self.sim.faults.expire_history()
            self.sim.faults.drop_watches()
        else:
            await asyncio.to_thread(self.plane.restart, "kube-apiserver")

    async def store_config_map(self, template: str = POD_TEMPLATE, **overrides: Any) -> Any:
        """Create or update the controllers' ConfigMap `batch` with this configuration."""
        data = config_data(template, **overrides)
        if await self.config_map() is None:
            meta = {"name": "batch", "namespace": NAMESPACE}
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            return await self.kube.create(CONFIG_MAPS, body)
        return await self.kube.patch(CONFIG_MAP, {"data": data})

    async def config_map(self) -> dict[str, Any] | None:
        """The ConfigMap `batch` as the API serves it now (None: there is none)."""
        return await self.kube.get_or_none(CONFIG_MAP, dict)

    async def annotate_config_map(self, annotations: dict[str, str | None]) -> dict[str, Any]:
        """Merge-patch annotations (`None` removes one) onto the ConfigMap, as kubectl would."""
        return await self.kube.patch(CONFIG_MAP, {"metadata": {"annotations": annotations}})

    async def config_map_events(self) -> list[dict[str, Any]]:
        """The events.k8s.io/v1 Events regarding the ConfigMap `batch`, from the API."""
        events, _ = await self.kube.list(EVENTS, dict)
        wanted = ("ConfigMap", "batch")
        return [e for e in events if (e["regarding"]["kind"], e["regarding"]["name"]) == wanted]

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this cluster, for commands run as processes (`bjc trigger`)."""
        if self.plane is not None:
            return self.plane.write_kubeconfig(path, self.plane.token)
        self.sim.write_kubeconfig(path)
        return path

    async def start_operated(
        self, nodes: int = 1, behaviour: JobBehaviour | None = None, **overrides: Any
    ) -> Runtime:
        """Nodes, their agent, the ConfigMap with this configuration and a controller of it."""
        await self.ready_nodes(nodes)
        await self.start_agent(behaviour)
        await self.store_config_map(**overrides)
        return await self.start_controller(**overrides)

    def add_nodes(self, count: int, prefix: str = "node", **kw: Any) -> list[str]:
        names = [f"{prefix}-{i:03d}" for i in range(count)]
        for name in names:
            self.sim.add_node(name, **kw)
        return names

    async def start_agent(self, behaviour: JobBehaviour | None = None, **kw: Any) -> NodeAgent:
        if self.plane is not None:  # the shared cluster: only this test's nodes
            auth = {"Authorization": f"Bearer {self.plane.token}"}
            kw = {"headers": auth, "ssl": False, "node_names": list(self.nodes), **kw}
        self.agent = NodeAgent(
            self.creds.server, behaviour=behaviour or JobBehaviour(run=post_result), **kw
        )
        await self.agent.start()
        return self.agent

    async def start_controller(
        self,
        *,
        dev_mode: bool = True,
        identity: str = "controller-a",
        report_dir: Path | None = None,
        lease_timing: tuple[float, float, float] = (2.0, 1.5, 0.2),
        callback_port: int = 0,
        creds: Credentials | None = None,
        extensions: Sequence[Extension] = (),
        **overrides: Any,
    ) -> Runtime:
        """`creds`: whom the controller acts as (default: the cluster's admin)."""
        env = Environment(
            namespace=NAMESPACE,
            config_map_name="batch",
            pod_ip="127.0.0.1",
            hostname=identity,
            dev_mode=dev_mode,
            report_directory=str(report_dir or self.tmp / "reports"),
        )
        data = config_data(**overrides)
        loaded = load_config_map(data, env)
        config = msgspec.structs.replace(
            loaded.config,
            callback_service_port=callback_port,
            health_probe_port=0,
            file_server_port=0,
            metrics=msgspec.structs.replace(loaded.config.metrics, port=0),
        )
        runtime = Runtime(
            config=config,
            template=loaded.template,
            env=env,
            kube=KubeClient(creds or self.creds),  # its own connections, like a process
            bind_host="127.0.0.1",
            identity=identity,
            lease_timing=lease_timing,
            create_backoff=0.05,
            retry_backoff=0.05,
            config_data=data,
            extensions=extensions,
        )
        await runtime.start()
        self.runtimes.append(runtime)
        if dev_mode:  # it leads at once: let it take over before the test acts
            await runtime.accepting_callbacks.wait()
        return runtime

    async def stop_controllers(self) -> None:
        """Stop every controller started so far (gracefully, as on SIGTERM)."""
        for runtime in self.runtimes:
            await runtime.stop()
            await runtime.kube.close()
        self.runtimes.clear()

    async def close(self) -> None:
        await self.stop_controllers()
        if self.agent is not None:
            await self.agent.stop()
        if self.plane is not None:
            now = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
            await self.kube.request("DELETE", PODS, body=now)
            # the next test starts without this one's configuration, annotations and Events
            await self.kube.delete(CONFIG_MAP)
            await self.kube.request("DELETE", EVENTS, body=now)
            for name in self.nodes:
                await self.kube.delete(f"/api/v1/nodes/{name}")
        await self.kube.close()

    async def job_pods(self) -> list[dict[str, Any]]:
        """The job pods as the API lists them (on a real apiserver, terminating ones too)."""
        pods, _ = await self.kube.list(PODS, dict)
        return pods


async def crash(runtime: Runtime) -> None:
    """Stop a runtime the way SIGKILL would: no release, no goodbye."""
    await runtime.kube.close()  # from now on it cannot reach the cluster
    await runtime.supervisor.stop()
    runtime.controller.watcher.synced.clear()
    if runtime.controller._runner is not None:
        runtime.controller._runner.cancel()
        await asyncio.gather(runtime.controller._runner, return_exceptions=True)
    for runner in runtime.runners.values():
        await runner.cleanup()
    runtime.runners.clear()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, plane: ControlPlane | None = None, **sim_kw: Any
) -> AsyncIterator[Cluster]:
    """A bjc.sim cluster (`sim_kw` for SimCluster), or the real control plane."""
    if plane is not None:
        c = Cluster(None, tmp_path, plane)
        try:
            await c.kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        except ApiError as e:
            if e.status != 409:
                raise
        # job pods need the `default` ServiceAccount, which the controller-manager makes
        accounts = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts"
        await settle(c.kube, accounts, lambda found: "default" in found)
        try:
            yield c
        finally:
            await c.close()
        return
    sim = SimCluster(**sim_kw)
    await sim.start()
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    c = Cluster(sim, tmp_path)
    try:
        yield c
    finally:
        await c.close()
        await sim.stop()


class Gate:
    """Jobs that wait until `opened` is set, then report; `running` is set once one runs."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.running = asyncio.Event()

    async def job(self, pod: RunningPod) -> int:
        self.running.set()
        await self.opened.wait()
        return await post_result(pod)


class LivePodWatch:
    """An independent observer: the most job pods alive (not finished) at once."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.live: set[str] = set()
        self.max_live = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        _, rv = await self.kube.list(PODS, Pod)
        self.ready.set()
        async for ev in self.kube.watch(PODS, Pod, resource_version=rv):
            name = ev.object.metadata.name
            if ev.type == "DELETED" or ev.object.finished:
                self.live.discard(name)
            elif ev.type in ("ADDED", "MODIFIED"):
                self.live.add(name)
                self.max_live = max(self.max_live, len(self.live))

    async def __aenter__(self) -> LivePodWatch:
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())
        await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def eventually(predicate: Callable[[], bool], wake: Callable[[], Awaitable[Any]]) -> None:
    """Wait on `wake` until predicate holds (tests only; bounded by pytest's timeout)."""
    while not predicate():
        await wake()
