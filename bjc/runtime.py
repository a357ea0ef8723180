"""One controller process: its servers, its tasks, leadership and shutdown.

`bjc run` and `bjc demo` both come through here, so the demo exercises exactly
the production wiring. The runtime owns every server (callback, metrics, health,
files) and, through one `Supervisor`, every long-lived task (leader election, the
ConfigMap watch, and while leading: pod watch, schedule, dispatch); a task that
dies ends the process.

Every replica watches the ConfigMap (`bjc.engine.configwatch`) and applies a changed
configuration (`reconfigure`: the frozen `Config` is replaced and handed to its
holders), so a standby that takes over runs with the current one; only the acting
leader triggers from it and writes to it.

Leadership is the only licence to write. A standby serves the history as it read
it from disk and answers callbacks 503; it is Ready all the same (readiness is
health, so a Deployment can roll). On winning the Lease it starts the pod watch,
reloads what changed on disk, resumes, and only then accepts callbacks and labels
its pod for the callback Service. On losing the Lease it exits (the store's fence
stops its writes even before that). On SIGTERM it stops triggering, finishes the
callbacks in flight and flushes state while still leading, then releases the Lease.

Deliberately not here: what an execution does (`bjc.engine.controller`) and reading the
configuration (`bjc.config.settings`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from bjc.config.configmap import LoadedConfig
from bjc.config.extensions import Extension
from bjc.config.podspec import PodTemplate
from bjc.config.settings import (
    Config,
    Environment,
    cron_schedule,
    effective_report_directory,
    with_keys,
)
from bjc.engine.configwatch import ConfigMapWatch
from bjc.engine.controller import Controller
from bjc.engine.schedule import Schedule, missed_run
from bjc.engine.supervisor import Supervisor
from bjc.kube.client import ApiError, KubeClient
from bjc.kube.leader import LeaderElector
from bjc.kube.ownpod import find_top_owner, set_leader_label
from bjc.kube.rights import Rights
from bjc.reports.execution import TriggerOutcome
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.web import bound_port, serve
from bjc.web.callback import make_callback_app
from bjc.web.files import make_file_app
from bjc.web.health import make_health_app, report_directory_check, runner_check
from bjc.web.metrics import make_metrics_app

log = logging.getLogger(__name__)

# /healthz fails when the leader's pod watch has had no list, event or clean end of
# a stream for this long (a watch stream ends on its own every few minutes)
WATCH_SILENCE_LIMIT_S = 600.0


async def callback_host(kube: KubeClient, config: Config, env: Environment) -> str:
    """The Service's ClusterIP when configured (survives failover), else POD_IP."""
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
        retry_backoff: float = 10.0,
        config_data: Mapping[str, str] | None = None,
        extensions: Sequence[Extension] = (),
    ) -> None:
        """`config_data`: the ConfigMap data `config` and `template` were loaded from."""
        self.config = config
        self.env = env
        self.kube = kube
        self.bind_host = bind_host
        self.identity = identity or env.hostname or socket.gethostname()
        self.supervisor = Supervisor()
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
        self.store = ReportStore(
            Path(effective_report_directory(config, env)),
            may_write=None if self.elector is None else self.elector.holds_lease,
        )
        self.metrics = Metrics(config)
        self.store.on_writable = self.metrics.set_report_directory_writable
        self.store.fsync = config.durability == "fsync"
        self.cron = cron_schedule(config)
        # the features the RBAC refuses, each reported once (bjc.kube.rights)
        self.rights = Rights(kube, env.namespace, env.hostname, config.name)
        self.controller = Controller(
            config=config,
            template=template,
            namespace=env.namespace,
            kube=kube,
            store=self.store,
            metrics=self.metrics,
            callback_host="",
            create_backoff=create_backoff,
            retry_backoff=retry_backoff,
            rights=self.rights,
            extensions=extensions,
        )
        self.controller.on_failure = self.supervisor.fail
        self.config_watch = ConfigMapWatch(
            kube, env, config, self.metrics, self, config_data, rights=self.rights
        )
        self.controller.marks.on_refused = functools.partial(
            self.config_watch.post_event, "NodePatchForbidden", warning=True
        )
        self.suspend(self.config_watch.suspension())
        self._acting = False  # leading, resumed, scheduling: may trigger and write
        self.catch_up: dt.datetime | None = None  # the missed run caught up on leading
        self.runners: dict[str, web.AppRunner] = {}
        self.ports: dict[str, int] = {}
        self.watch_silence_limit = WATCH_SILENCE_LIMIT_S
        self.loaded = False  # the history was read once: Ready
        # leading with the history reloaded: callbacks accepted
        self.accepting_callbacks = asyncio.Event()

    @property
    def serving(self) -> bool:
        return self.accepting_callbacks.is_set()

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    @property
    def acting(self) -> bool:
        """Leading and done taking over: triggers and ConfigMap writes are allowed."""
        return self._acting and self.leading

    async def trigger(self, reason: str, value: str = "") -> TriggerOutcome:
        return await self.controller.trigger(reason, value)

    async def reconfigure(self, loaded: LoadedConfig, keys: list[str], template: bool) -> None:
        """Hot reload: apply `keys` of a reloaded config (and the pod template).

        `Config` is frozen: the running one is replaced by a new object, handed to
        each holder (the controller and its parts, the ConfigMap watch; the callback
        API reads `self.config` per request). An execution keeps the configuration it
        started with (see `Controller._snapshot`), so a change applies from the next one.
        """
        merged = with_keys(self.config, loaded.config, keys)
        replay = self.metrics.reconfigure(merged)  # ValueError: refused, nothing changed
        self.config = self.config_watch.config = merged
        self.store.fsync = merged.durability == "fsync"
        self.controller.use(merged, loaded.template if template else self.controller.template)
        if "cronExpression" in keys or "timeZone" in keys:
            self.cron = cron_schedule(self.config)
            if self.supervisor.get("schedule") is not None:  # leading: reschedule now
                await self.supervisor.cancel("schedule")
                self.supervisor.spawn("schedule", self._schedule().run())
        if replay:
            await self.controller.replay_results(replay)

    def _schedule(self) -> Schedule:
        return Schedule(self.cron, self._scheduled)

    async def _scheduled(self, reason: str) -> None:
        """A trigger of the schedule; with startingDeadline its time is recorded."""
        now = dt.datetime.now(dt.UTC)
        outcome = await self.controller.trigger(reason)
        if outcome.failed and self.acting:  # an annotation's failure is in its answer
            await self.config_watch.post_event(
                "ExecutionFailed", f"{outcome.failed} (trigger: {reason})", warning=True
            )
        if self.config.starting_deadline is not None and reason != "start-up":
            await self.config_watch.record_schedule(now)

    async def _missed_run(self) -> dt.datetime | None:
        """A scheduled run missed while no controller led, still within startingDeadline."""
        deadline = self.config.starting_deadline
        if deadline is None:
            return None
        await self.config_watch.synced.wait()
        known = [self.config_watch.last_schedule_time(), self.controller.last_started()]
        last = max((t for t in known if t is not None), default=None)
        return missed_run(self.cron, last, dt.datetime.now(dt.UTC), deadline)

    def suspend(self, why: str) -> None:
        if why and why != self.controller.suspended:
            log.info("suspended by %s: no new executions start", why)
        elif self.controller.suspended and not why:
            log.info("no longer suspended")
        self.controller.suspended = why
        self.metrics.set_suspended(bool(why))

    @property
    def failed(self) -> asyncio.Event:
        """Set when the process can no longer do its job (`bjc run` exits non-zero)."""
        return self.supervisor.failed

    async def start(self) -> None:
        """Serve, read the history (read-only), then campaign for the Lease.

        Until it leads, this replica writes nothing: it serves the file server and
        the metrics of the history as it was on disk, and answers callbacks 503.
        """
        os.makedirs(self.store.root, exist_ok=True)
        self.controller.owner = await find_top_owner(
            self.kube, self.env.namespace, self.env.hostname
        )
        if self.elector is not None:  # the Lease goes with the Deployment, as job pods do
            self.elector.owner = self.controller.owner
        await self._start_servers()  # probes answer while the history loads
        await self._label_pod(leading=False)  # a restarted ex-leader attracts no callbacks
        await self.controller.load()
        self.loaded = True
        self.supervisor.spawn("read-verdicts", self._read_verdicts(), forever=False)
        self.controller.callback_host = await callback_host(self.kube, self.config, self.env)
        self.supervisor.spawn("config-watch", self.config_watch.run())
        if self.elector is None:
            self.supervisor.spawn("lead", self._lead(), forever=False)
        else:
            self.elector.on_change(self._on_leadership)
            self.supervisor.spawn("leader-election", self.elector.run())

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
        self.controller.callback_port = self.ports["callback"]
        checks = {"report-directory": report_directory_check(self.store.root)}
        checks.update({f"{n}-server": runner_check(r) for n, r in self.runners.items()})
        checks["pod-watch"] = self._pod_watch_check()
        health = make_health_app(checks, readiness={"history-loaded": lambda: self.loaded})
        self.runners["health"] = await serve(health, self.bind_host, c.health_probe_port)
        self.ports["health"] = bound_port(self.runners["health"])

    def _pod_watch_check(self) -> Callable[[], bool]:
        """Failing once the leader's pod watch has heard nothing for too long."""
        watcher = self.controller.watcher

        def check() -> bool:
            if self.supervisor.get("pod-watch") is None:
                return True  # a standby does not watch
            quiet = asyncio.get_running_loop().time() - watcher.last_contact
            return quiet < self.watch_silence_limit

        return check

    def _callback_app(self) -> web.Application:
        return make_callback_app(
            lambda: self.config,
            self.store,
            self.metrics,
            self.controller.callbacks,
            dev_mode=self.env.dev_mode,
            accepting=lambda: self.serving,
            fast_results=self.env.bjc_fast_results,
        )

    async def _read_verdicts(self) -> None:
        """Read the history's verdicts (bjc.reports.summary) once the history is loaded, so
        that taking over later does not wait for them: 4 s for 30 executions x 5,000 nodes
        (docs/benchmarks.md). A standby has the time; a leader reads them anyway."""
        try:
            await self.controller.marks.summaries.chain()
        except Exception as e:  # only a head start: the leader reads what is missing
            log.warning("history verdicts not read ahead: %s", e)

    def _on_leadership(self, leading: bool) -> None:
        """Synchronous: runs inside the elector the moment leadership changes."""
        self.metrics.set_leader(leading)
        if leading:
            self.supervisor.spawn("lead", self._lead(), forever=False)
        elif not self.supervisor.stopping:
            # Like controller-runtime: a replica that lost its lease ends. The store
            # already refuses writes (its fence is the Lease); a restart begins as a
            # standby that reloads what the new leader writes.
            self.accepting_callbacks.clear()
            self.supervisor.fail("lost the lease")

    async def _lead(self) -> None:
        """Become the acting leader: watch, reload, resume, then accept and schedule."""
        log.info("leading as %s", self.identity)
        self.supervisor.spawn("pod-watch", self.controller.watcher.run())
        # what the previous leader wrote to the (shared) report directory since we read it
        resumed = await self.controller.resume(await self.controller.load())
        self._acting = True  # triggers and ConfigMap writes from now on
        startup = self.config.startup_delay if self.config.run_on_startup and not resumed else None
        self.catch_up = await self._missed_run() if startup is None else None
        self.accepting_callbacks.set()  # only now: a callback must not race the reload
        await self._label_pod(leading=True)
        self.supervisor.spawn("schedule", self._schedule().run(startup, self.catch_up))
        await self.config_watch.reconcile()  # a trigger set while no one was leading

    async def _label_pod(self, *, leading: bool) -> None:
        await set_leader_label(
            self.kube, self.env.namespace, self.env.hostname, self.config.name, leading,
            rights=self.rights,
        )  # fmt: skip

    async def stop(self) -> None:
        """Graceful shutdown (SIGTERM): hand over without losing an acknowledgement.

        New callbacks are refused (503: the job retries and reaches the next leader);
        triggering, dispatching and the pod watch stop (a job that ends from now on is
        the next leader's to see: nothing changes after the final flush); callbacks in
        flight finish and the state is flushed while this replica still holds the
        Lease; then the label goes and the Lease is released, so a standby takes over
        at once.
        """
        self.supervisor.stopping = True
        self._acting = False
        self.accepting_callbacks.clear()
        await self.supervisor.cancel("schedule", "lead", "config-watch", "pod-watch")
        await self.controller.stop_running()
        callback = self.runners.pop("callback", None)
        if callback is not None:
            await callback.cleanup()  # waits for in-flight requests (bounded)
        await self.controller.close()
        await self.store.close()  # logged results become files while still leading
        if self.leading and self.elector is not None:
            await self._label_pod(leading=False)
        await self.supervisor.cancel("leader-election")  # the elector releases the Lease
        for name in ("health", "metrics", "files"):
            runner = self.runners.pop(name, None)
            if runner is not None:
                await runner.cleanup()
        await self.supervisor.stop()
