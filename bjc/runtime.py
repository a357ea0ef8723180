"""One controller process: its servers, its tasks, leadership and shutdown.

`bjc run` and `bjc demo` both come through here, so the demo exercises exactly
the production wiring. The runtime owns every long-lived task (pod watch, leader
election, schedule) and every server (callback, metrics, health, files), starts
them in order and stops them in the order SIGTERM asks for: stop triggering and
dispatching, release the Lease, let in-flight callbacks finish, flush state.

Deliberately not here: what an execution does (`bjc.controller`) and reading the
configuration (`bjc.config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bjc.config import Config, Environment, effective_report_directory
from bjc.controller import Controller
from bjc.cron import parse_cron
from bjc.kube import ApiError, KubeClient
from bjc.kubetypes import GenericObject
from bjc.leader import LeaderElector
from bjc.metrics import Metrics, make_metrics_app
from bjc.podspec import PodTemplate
from bjc.schedule import Schedule
from bjc.store import ReportStore
from bjc.web import bound_port, serve
from bjc.web.callback import make_callback_app
from bjc.web.files import make_file_app
from bjc.web.health import make_health_app, report_directory_check, runner_check

log = logging.getLogger(__name__)

# where an owner of each kind lives in the API
_OWNER_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs/{name}",
}


async def find_top_owner(kube: KubeClient, namespace: str, pod_name: str) -> dict[str, Any] | None:
    """The controller pod's top-level owner (Pod → ReplicaSet → Deployment), if any."""
    if not pod_name:
        return None
    path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
    top: dict[str, Any] | None = None
    for _ in range(8):  # owner chains are short; never loop on a cycle
        try:
            obj = await kube.get_or_none(path, GenericObject)
        except (ApiError, aiohttp.ClientError) as e:
            log.warning("cannot read owner %s: %s", path, e)
            return top
        if obj is None or not obj.metadata.owner_references:
            return top
        refs = obj.metadata.owner_references
        ref = next((r for r in refs if r.controller), refs[0])
        top = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "uid": ref.uid}
        template = _OWNER_PATHS.get(ref.kind)
        if template is None:
            return top
        path = template.format(ns=namespace, name=ref.name)
    return top


async def callback_host(kube: KubeClient, config: Config, env: Environment) -> str:
    """SPEC B: the Service's ClusterIP when configured (survives failover), else POD_IP."""
    if config.callback_service_name:
        path = f"/api/v1/namespaces/{env.namespace}/services/{config.callback_service_name}"
        try:
            svc = await kube.get(path, dict)
            ip = (svc.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                return str(ip)
        except (ApiError, aiohttp.ClientError) as e:
            log.warning("service %s not readable (%s); using its DNS name", path, e)
        return f"{config.callback_service_name}.{env.namespace}.svc"
    return env.pod_ip or socket.gethostname()


class Runtime:
    def __init__(
        self,
        *,
        config: Config,
        template: PodTemplate,
        env: Environment,
        kube: KubeClient,
        bind_host: str | None = None,
        identity: str | None = None,
        lease_timing: tuple[float, float, float] = (15.0, 10.0, 2.0),
        create_backoff: float = 0.5,
    ) -> None:
        self.config = config
        self.env = env
        self.kube = kube
        self.bind_host = bind_host
        self.identity = identity or env.hostname or socket.gethostname()
        self.store = ReportStore(
            Path(effective_report_directory(config, env)), config.report_history
        )
        self.metrics = Metrics(config)
        self.cron = parse_cron(config.cron_expression)
        self.controller = Controller(
            config=config,
            template=template,
            namespace=env.namespace,
            kube=kube,
            store=self.store,
            metrics=self.metrics,
            callback_host="",
            create_backoff=create_backoff,
        )
        self.elector = (
            None
            if env.dev_mode
            else LeaderElector(
                kube,
                env.namespace,
                config.name,
                self.identity,
                lease_duration=lease_timing[0],
                renew_deadline=lease_timing[1],
                retry_period=lease_timing[2],
            )
        )
        self.runners: dict[str, web.AppRunner] = {}
        self.ports: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._started_once = False
        self._history_current = False

    @property
    def serving(self) -> bool:
        """Ready for callbacks: leading, with the history reloaded and resumed."""
        return self.leading and self._history_current

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    async def start(self) -> None:
        os.makedirs(self.store.root, exist_ok=True)
        self.controller.owner = await find_top_owner(
            self.kube, self.env.namespace, self.env.hostname
        )
        await self._start_servers()  # probes answer while the history loads
        await self.controller.load()  # a standby exposes the history's metrics too
        self.controller.callback_host = await callback_host(self.kube, self.config, self.env)
        self._spawn("pod-watch", self.controller.watcher.run())
        if self.elector is None:
            self._on_leadership(True)
        else:
            self.elector.on_change(self._on_leadership)
            self._spawn("leader-election", self.elector.run())

    async def _start_servers(self) -> None:
        c = self.config
        apps: list[tuple[str, Callable[[], web.Application], int]] = [
            ("callback", self._callback_app, c.callback_service_port),
            ("metrics", lambda: make_metrics_app(self.metrics), c.metrics.port),
            ("files", lambda: make_file_app(self.store.root), c.file_server_port),
        ]
        for name, factory, port in apps:
            self.runners[name] = await serve(factory(), self.bind_host, port)
            self.ports[name] = bound_port(self.runners[name])
        # job pods must call the port actually bound (tests and the demo bind port 0)
        c.callback_service_port = self.ports["callback"]
        checks = {"report-directory": report_directory_check(self.store.root)}
        checks.update({f"{n}-server": runner_check(r) for n, r in self.runners.items()})
        health = make_health_app(checks, is_ready=lambda: self.serving)
        self.runners["health"] = await serve(health, self.bind_host, c.health_probe_port)
        self.ports["health"] = bound_port(self.runners["health"])

    def _callback_app(self) -> web.Application:
        return make_callback_app(
            self.config, self.store, self.metrics, self.controller, dev_mode=self.env.dev_mode
        )

    def _spawn(self, name: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s crashed", task.get_name(), exc_info=task.exception())

    def _on_leadership(self, leading: bool) -> None:
        """Synchronous, so a lost Lease stops triggering before anything else runs."""
        self.metrics.set_leader(leading)
        self._history_current = False
        if leading:
            log.info("leading as %s", self.identity)
            self._spawn("lead", self._lead())
        else:
            for name in ("lead", "schedule"):
                task = self._tasks.pop(name, None)
                if task is not None:
                    task.cancel()
            self._spawn("step-down", self.controller.stop_running())

    async def _lead(self) -> None:
        step_down = self._tasks.get("step-down")
        if step_down is not None:
            await step_down
        # another leader may have written the (shared) report directory meanwhile
        resumed = await self.controller.resume(await self.controller.load())
        self._history_current = True  # now callbacks of every kept execution are known
        startup = None
        if self.config.run_on_startup and not self._started_once and not resumed:
            startup = self.config.startup_delay
        self._started_once = True
        self._spawn("schedule", Schedule(self.cron, self.controller.trigger).run(startup))

    async def stop(self) -> None:
        """Graceful shutdown (SIGTERM)."""
        for name in ("schedule", "lead"):
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
        await self.controller.stop_running()
        election = self._tasks.pop("leader-election", None)
        if election is not None:
            election.cancel()  # the elector releases the Lease on cancel
            with contextlib.suppress(asyncio.CancelledError):
                await election
        for name in ("callback", "health", "metrics", "files"):
            runner = self.runners.pop(name, None)
            if runner is not None:
                await runner.cleanup()  # waits for in-flight requests
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self.controller.close()
