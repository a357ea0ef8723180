"""The controller's ConfigMap, watched: hot reload, and the annotations operators act through.

Operators operate bjc the way they operate any Kubernetes object: by changing its
ConfigMap. Whoever may patch the ConfigMap (plain RBAC) may

- change `config.yaml` or `pod-template.yaml`: a valid change applies without a
  restart, from the next execution (keys that name servers, storage or the
  controller itself wait for the next start, with a warning); an invalid one is
  refused, the running configuration stays, and an Event on the ConfigMap, a log
  line and `bjc_config_problems{key,problem}` say what is wrong. What a valid
  configuration only warns about (an unknown key, named with the closest known one)
  is a Warning Event `ConfigWarning` on the ConfigMap, posted by each leader for the
  configuration it starts leading with and again at every reload;
- set `batch-job-controller.bakito.github.com/trigger: <any new value>`: start an
  execution now. The controller answers on the ConfigMap itself, in one patch:
  `.../triggered: <that value>` and `.../triggered-execution: <executionID>` (or
  `skipped: <why>`, `failed: <why>`, `replaced before it started`), plus an Event
  regarding the ConfigMap. The answer is written only once it is decided and
  durable (see `bjc.engine.history`): a leader that takes over gives a value the
  answer the previous leader decided, so a value starts at most one execution,
  and a trigger set while no controller led runs once a leader appears.
- `batch-job-controller.bakito.github.com/suspend: "true"`: no new executions
  (like `suspend: true` in config.yaml); a running one finishes.

With `startingDeadline`, the leader also records when the schedule last fired,
`.../last-schedule-time: <RFC 3339>` (like a CronJob's `status.lastScheduleTime`),
so that the next leader knows whether a run was missed while no one led.

This module watches the one ConfigMap (list + watch, relist on 410) and reconciles
each state it sees, level-based: what matters is the ConfigMap as it is now, not
the event that brought it. Every replica watches; only the acting leader acts
(triggers, answers, posts Events).

Deliberately not here: validating a configuration (`bjc.config.settings`), applying one
(`bjc.runtime`), what a trigger does (`bjc.engine.controller`, which also applies
concurrencyPolicy) and the wiring to leadership (`bjc.runtime`). `observe` is shared
with `bjc trigger`, which waits for the answer through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

import aiohttp

from bjc.config.configmap import LoadedConfig, load_config_map
from bjc.config.settings import (
    POD_TEMPLATE_KEY,
    RESTART_KEYS,
    Config,
    Environment,
    changed_keys,
    problem_key,
)
from bjc.config.values import ConfigError
from bjc.kube.client import ApiError, KubeClient
from bjc.kube.events import EventRequest, build_event
from bjc.kube.objects import ConfigMap
from bjc.kube.rights import Rights
from bjc.reports.metrics import Metrics

log = logging.getLogger(__name__)

_PREFIX = "batch-job-controller.bakito.github.com/"
TRIGGER_ANNOTATION = _PREFIX + "trigger"
TRIGGERED_ANNOTATION = _PREFIX + "triggered"
TRIGGERED_EXECUTION_ANNOTATION = _PREFIX + "triggered-execution"
SUSPEND_ANNOTATION = _PREFIX + "suspend"
LAST_SCHEDULE_ANNOTATION = _PREFIX + "last-schedule-time"
SKIPPED_PREFIX = "skipped: "
FAILED_PREFIX = "failed: "
REPLACED_ANSWER = "replaced before it started"

_WATCH_TIMEOUT_S = 290
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 10.0


def config_map_path(namespace: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    return f"{path}/{name}" if name else path


async def observe(
    kube: KubeClient, namespace: str, name: str
) -> AsyncGenerator[ConfigMap | None, None]:
    """Every state of one ConfigMap: the current one first, then each change (None: absent).

    Resumes a dropped watch from the last resourceVersion; relists on 410; any
    other failure (API down, RBAC) is logged and retried with capped backoff.
    """
    path = config_map_path(namespace)
    params = {"fieldSelector": f"metadata.name={name}"}
    loop = asyncio.get_running_loop()
    resource_version = ""
    backoff = _BACKOFF_MIN_S
    while True:
        try:
            if not resource_version:
                items, resource_version = await kube.list(path, ConfigMap, params)
                yield items[0] if items else None
            started, events = loop.time(), 0
            async for event in kube.watch(
                path,
                ConfigMap,
                resource_version=resource_version,
                params=params,
                timeout_seconds=_WATCH_TIMEOUT_S,
            ):
                resource_version = event.object.metadata.resource_version or resource_version
                events += 1
                if event.type != "BOOKMARK":
                    yield None if event.type == "DELETED" else event.object
            if events or loop.time() - started >= 1.0:
                backoff = _BACKOFF_MIN_S
                continue  # the server ended the stream as asked: watch on
            error: object = "the watch ended at once"
        except ApiError as e:
            if e.status == 410:
                resource_version = ""
                continue
            error = e
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            error = repr(e)
        log.warning("ConfigMap %s watch: %s; retrying in %.1fs", name, error, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX_S)


class Outcome(Protocol):
    """A trigger's outcome (`bjc.reports.execution.TriggerOutcome`)."""

    @property
    def execution_id(self) -> str: ...

    @property
    def skipped(self) -> str: ...

    @property
    def failed(self) -> str: ...

    @property
    def replaced(self) -> bool: ...


def answer(outcome: Outcome) -> tuple[str, str, str]:
    """The `triggered-execution` answer to an outcome, and its Event's reason and note."""
    if outcome.execution_id:
        return outcome.execution_id, "Triggered", f"execution {outcome.execution_id} started"
    if outcome.failed:
        return FAILED_PREFIX + outcome.failed, "TriggerFailed", outcome.failed
    if outcome.replaced:
        return REPLACED_ANSWER, "TriggerSkipped", REPLACED_ANSWER
    return SKIPPED_PREFIX + outcome.skipped, "TriggerSkipped", f"skipped: {outcome.skipped}"


class Operated(Protocol):
    """What the ConfigMap acts on (the runtime)."""

    @property
    def acting(self) -> bool:
        """This replica leads and has resumed: it may trigger and write."""
        ...

    async def trigger(self, reason: str, value: str = "") -> Outcome:
        """Start an execution; `value`: the trigger value (decided once)."""
        ...

    def suspend(self, why: str) -> None:
        """Start no executions while `why` is not empty."""

    async def reconfigure(self, loaded: LoadedConfig, keys: list[str], template: bool) -> None:
        """Apply `keys` of `loaded.config` (and its pod template if `template`).

        Raises ValueError, having changed nothing, when the change cannot be applied.
        """


class ConfigMapWatch:
    """Reconciles the observed ConfigMap with the controller (see the module docstring)."""

    def __init__(
        self,
        kube: KubeClient,
        env: Environment,
        config: Config,
        metrics: Metrics,
        target: Operated,
        data: Mapping[str, str] | None = None,
        rights: Rights | None = None,
    ) -> None:
        self.kube = kube
        # without the right to patch the ConfigMap, annotations go by read and update
        self.rights = rights or Rights(kube, env.namespace, "", "")
        self.env = env
        self.namespace = env.namespace
        self.name = env.config_map_name
        self.config = config  # the running configuration (the runtime swaps it on reload)
        self.metrics = metrics
        self.target = target
        # the ConfigMap data last seen, and the configuration as loaded from the data
        # last applied (before the runtime's own changes, such as bound ports)
        self._data: dict[str, str] | None = None
        self._applied: LoadedConfig | None = None
        self._applied_template = ""
        self._warned: LoadedConfig | None = None  # whose warnings this leader posted
        if data is not None:
            self._baseline(dict(data))
        self._suspended_by_annotation = False
        self.latest: ConfigMap | None = None
        self._answered = ""  # the trigger value this process last answered
        self._lock = asyncio.Lock()
        self.synced = asyncio.Event()  # the ConfigMap was observed (present or not)

    async def run(self) -> None:
        """Watch and reconcile until cancelled."""
        async with contextlib.aclosing(observe(self.kube, self.namespace, self.name)) as states:
            async for config_map in states:
                if config_map is None and self.latest is not None:
                    log.warning("ConfigMap %s is gone; the running configuration stays", self.name)
                self.latest = config_map
                self.synced.set()
                await self.reconcile()

    async def reconcile(self) -> None:
        """Act on the latest observed state (also called when this replica starts leading)."""
        async with self._lock:
            config_map = self.latest
            if config_map is not None:
                await self._reload(config_map)
                suspend = config_map.metadata.annotations.get(SUSPEND_ANNOTATION, "")
                self._suspended_by_annotation = suspend.lower() == "true"
            self.target.suspend(self.suspension())
            if config_map is None or not self.target.acting:
                return
            await self._post_warnings()
            await self._answer_trigger(config_map)

    def suspension(self) -> str:
        """Why no execution may start now ("" when nothing suspends the controller)."""
        reasons = []
        if self.config.suspend:
            reasons.append("suspend: true in config.yaml")
        if self._suspended_by_annotation:
            reasons.append(f'annotation {SUSPEND_ANNOTATION}: "true"')
        return " and ".join(reasons)

    # --- hot reload ----------------------------------------------------------------
    def _baseline(self, data: dict[str, str]) -> None:
        """What the running configuration was loaded from."""
        self._data = data
        try:
            self._applied = load_config_map(data, self.env)
        except ConfigError:  # a process started otherwise; the next valid change applies
            self._applied = None
        self._applied_template = data.get(POD_TEMPLATE_KEY, "")

    async def _reload(self, config_map: ConfigMap) -> None:
        data = config_map.data
        if self._data is None:
            self._baseline(dict(data))
            return
        if data == self._data:
            return  # annotations only, or a change already applied or refused
        self._data = dict(data)
        try:
            loaded = load_config_map(data, self.env)
        except ConfigError as e:
            await self._refuse(e.problems)
            return
        base = self._applied.config if self._applied is not None else self.config
        keys = changed_keys(base, loaded.config)
        live = [k for k in keys if k not in RESTART_KEYS]
        later = [k for k in keys if k in RESTART_KEYS]
        template = data.get(POD_TEMPLATE_KEY, "") != self._applied_template
        try:
            await self.target.reconfigure(loaded, live, template)
        except ValueError as e:
            await self._refuse([f"config.yaml: {e}"])
            return
        self._applied, self._applied_template = loaded, data.get(POD_TEMPLATE_KEY, "")
        self.metrics.set_config_problems([])
        applied = [*live, POD_TEMPLATE_KEY] if template else live
        message = "configuration reloaded: " + (
            f"{', '.join(applied)} apply from the next execution" if applied else "no change"
        )
        if later:
            message += f"; {', '.join(later)} apply when the controller restarts"
        for warning in loaded.warnings:
            log.warning("configuration: %s", warning)
        log.info("%s", message)
        if self.target.acting:
            await self.post_event("ConfigReloaded", message, warning=bool(later))

    async def _post_warnings(self) -> None:
        """The Warning Event `ConfigWarning` for the running configuration's warnings.

        Once per configuration applied (at start and at every reload) and leader: a
        replica that starts leading posts it for the configuration it runs with.
        """
        loaded = self._applied
        if loaded is None or loaded is self._warned:
            return
        self._warned = loaded
        if loaded.warnings:
            count = len(loaded.warnings)
            message = f"{count} warning{'s' if count > 1 else ''}: " + "; ".join(loaded.warnings)
            await self.post_event("ConfigWarning", message, warning=True)

    async def _refuse(self, problems: list[str]) -> None:
        for problem in problems:
            log.error("configuration change refused, the running one stays: %s", problem)
        self.metrics.set_config_problems(problem_key(p) for p in problems)
        if self.target.acting:
            message = "change refused, the running configuration stays: " + "; ".join(problems)
            await self.post_event("ConfigRefused", message, warning=True)

    # --- trigger -------------------------------------------------------------------
    async def _answer_trigger(self, config_map: ConfigMap) -> None:
        annotations = config_map.metadata.annotations
        value = annotations.get(TRIGGER_ANNOTATION, "")
        if not value or value in (annotations.get(TRIGGERED_ANNOTATION), self._answered):
            return
        self._answered = value  # never twice, even if the answer cannot be written
        log.info("trigger %r from the ConfigMap annotation", value)
        outcome = await self.target.trigger(f"annotation {TRIGGER_ANNOTATION}={value}", value)
        if not self.target.acting:  # stopped leading meanwhile: the next leader answers
            return
        text, reason, note = answer(outcome)
        await self.post_event(reason, f"{note} (trigger {value})", warning=not outcome.execution_id)
        await self.annotate({TRIGGERED_ANNOTATION: value, TRIGGERED_EXECUTION_ANNOTATION: text})

    def last_schedule_time(self) -> dt.datetime | None:
        """When the schedule last fired, as the leaders recorded it (None: unknown)."""
        annotations = self.latest.metadata.annotations if self.latest is not None else {}
        try:
            at = dt.datetime.fromisoformat(annotations[LAST_SCHEDULE_ANNOTATION])
        except (KeyError, ValueError):
            return None
        return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)

    async def record_schedule(self, at: dt.datetime) -> None:
        await self.annotate({LAST_SCHEDULE_ANNOTATION: at.astimezone(dt.UTC).isoformat()})

    # --- writing to the ConfigMap ----------------------------------------------------
    async def annotate(self, annotations: dict[str, str]) -> None:
        """Merge-patch annotations onto the ConfigMap; transient errors are retried."""
        path = config_map_path(self.namespace, self.name)
        delay = _BACKOFF_MIN_S
        while self.target.acting:
            try:
                await self.rights.annotate(path, annotations)
                return
            except ApiError as e:
                if not e.retryable:
                    log.error("cannot annotate ConfigMap %s: %s", self.name, e)
                    return
                error: Exception = e
            except (TimeoutError, aiohttp.ClientError) as e:
                error = e
            log.warning("cannot annotate ConfigMap %s: %s; retrying", self.name, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def post_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event regarding the ConfigMap (shown by `kubectl describe configmap`)."""
        config_map = self.latest
        meta = config_map.metadata if config_map is not None else None
        regarding: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": meta.uid if meta else "",
                "resourceVersion": meta.resource_version if meta else "",
            },
        }
        request = EventRequest(
            warning=warning, reason=reason, message="%s", args=[message], action="Reconcile"
        )
        now = dt.datetime.now(dt.UTC)
        event = build_event(regarding, request, self.config.name, self.namespace, now)
        path = f"/apis/events.k8s.io/v1/namespaces/{self.namespace}/events"
        try:
            await self.kube.create(path, event)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("cannot post event %s on ConfigMap %s: %s", reason, self.name, e)
