"""The executor: a trigger starts an execution, which is dispatched to its nodes.

A trigger (schedule, ConfigMap annotation, start-up) is checked against the
policies (`suspend`, `concurrencyPolicy`), selects the nodes, gets a new execution
id, creates the execution on disk and only then (its outcome decided and durable)
answers; the execution deletes the job pods of earlier executions and is handed to
the dispatcher with a plan fixed at its start. An execution whose directory cannot
be written is a failed start, not an error of the process. The flow goes one way: the dispatcher
creates pods and reports the jobs it ends to `bjc.engine.jobs`, as does the pod watch;
`bjc.engine.jobs` records them in the execution, the store and the metrics. The
`Controller` object also assembles these parts (`history`, `jobs`, `watcher`,
`dispatcher`, `callbacks` for the callback API) for the runtime.

Deliberately not here: HTTP servers, leader election, signal handling
(`bjc.runtime`), the history on disk (`bjc.engine.history`), what a finished pod means
(`bjc.engine.jobs`), and the mechanics of watching or placing pods (`bjc.kube.podwatch`,
`bjc.engine.dispatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any

import aiohttp

from bjc.config import podspec
from bjc.config.extensions import Extension
from bjc.config.settings import Config, resolve_share
from bjc.engine.callbacktarget import ControllerCallbacks
from bjc.engine.dispatcher import Dispatcher, DispatchPlan
from bjc.engine.history import History
from bjc.engine.jobs import JobEnds
from bjc.engine.nodemarks import NodeMarks
from bjc.kube.client import ApiError, KubeClient, delete_options
from bjc.kube.objects import Node
from bjc.kube.podwatch import PodWatcher
from bjc.kube.rights import Rights
from bjc.reports.execution import (
    Execution,
    JobStatus,
    NodeJob,
    RetiredExecution,
    TriggerOutcome,
)
from bjc.reports.metrics import Metrics
from bjc.reports.store import NotLeading, ReportStore, is_execution_id

log = logging.getLogger(__name__)

_MINUTE = "%Y%m%d%H%M"  # the Go controller's id layout
_SECOND = "%Y%m%d%H%M%S"  # when the minute's id is taken
#: how far ahead of the clock an execution id may be
ID_LEAD = dt.timedelta(seconds=60)


def next_execution_id(now: dt.datetime, newest: str | None) -> str | None:
    """The id of an execution starting at `now` (local time), after `newest`; None if none.

    Ids sort as text in time order, and a new id must sort after every id in use
    (`newest`), so no execution writes into another's directory. The first id that
    does, in this order: the minute's `yyyyMMddHHmm` (the Go controller's id), the
    second's `yyyyMMddHHmmss`, then the following seconds (a later minute's plain id
    before its second 00) up to ID_LEAD ahead of the clock. None when even that is
    taken: more than one execution a second for a minute, or the clock went back
    (a correction, the end of daylight saving time in the controller's zone).
    """
    return next((c for c in _id_candidates(now) if newest is None or c > newest), None)


def _id_candidates(now: dt.datetime) -> Iterator[str]:
    """The ids an execution starting at `now` may take, in time (and text) order."""
    now = now.replace(microsecond=0)
    yield now.strftime(_MINUTE)
    for ahead in range(int(ID_LEAD.total_seconds()) + 1):
        at = now + dt.timedelta(seconds=ahead)
        if ahead and at.second == 0:
            yield at.strftime(_MINUTE)
        yield at.strftime(_SECOND)


#: The outcome of a start cut short by shutdown or lost leadership: not a decision
#: (nothing is recorded; the next leader decides the trigger).
STOPPED = TriggerOutcome(skipped="the controller stopped before the execution started")


def select_nodes(nodes: list[Node], run_on_unscheduled: bool) -> list[str]:
    """As the Go controller selects nodes: Ready, and schedulable unless runOnUnscheduledNodes."""
    return sorted(
        n.metadata.name
        for n in nodes
        if n.ready and (run_on_unscheduled or not n.spec.unschedulable)
    )


class Controller:
    def __init__(
        self,
        *,
        config: Config,
        template: podspec.PodTemplate,
        namespace: str,
        kube: KubeClient,
        store: ReportStore,
        metrics: Metrics,
        callback_host: str,
        owner: dict[str, Any] | None = None,
        create_backoff: float = 0.5,
        retry_backoff: float = 10.0,
        rights: Rights | None = None,
        extensions: Sequence[Extension] = (),
    ) -> None:
        self.config = config
        self.extensions = extensions  # extra job pod env (bjc.config.extensions)
        self.template = template
        self.namespace = namespace
        self.kube = kube
        self.metrics = metrics
        self.callback_host = callback_host
        self.callback_port: int | None = None  # the bound port, when not callbackServicePort
        self.owner = owner
        self.retry_backoff = retry_backoff  # before a node's first retry (jobRetries)
        self.completed = 0  # executions finished by this process (demo, tests)
        self.execution_done = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None  # act_on_changes at resume
        # called when an execution's dispatch dies of an unexpected error
        self.on_failure: Callable[[str], None] = lambda reason: None
        self._trigger_lock = asyncio.Lock()
        self._replaced = False  # the runner was stopped by a newer trigger (Replace)
        self._newest_id = ""  # the newest execution id this process gave out
        self.clock: Callable[[], dt.datetime] = dt.datetime.now  # local time, for ids
        self.suspended = ""  # why no execution may start now ("": it may)
        self.history = History(config, store, metrics)
        self.jobs = JobEnds(
            config=config,
            namespace=namespace,
            kube=kube,
            store=store,
            metrics=metrics,
            history=self.history,
            pod_phases=lambda: self.watcher.phases,
        )
        self.watcher = PodWatcher(
            kube, namespace, f"{podspec.OWNER_LABEL}={config.name}", self.jobs.on_pod
        )
        self.dispatcher = Dispatcher(
            kube, namespace, finish=self.jobs.finish, backoff=create_backoff, rights=rights
        )
        self.callbacks = ControllerCallbacks(self.history, self.jobs, kube, namespace)
        self.marks = NodeMarks(config, kube, metrics, store.root)
        self.jobs.on_recorded = self.marks.job_ended

    def use(self, config: Config, template: podspec.PodTemplate) -> None:
        """A reloaded configuration and pod template, from the next execution on."""
        self.config = self.history.config = self.jobs.config = self.marks.config = config
        self.template = template

    # --- the history (see bjc.engine.history) ---------------------------------------------
    @property
    def executions(self) -> dict[str, Execution | RetiredExecution]:
        return self.history.executions

    @property
    def current(self) -> Execution | None:
        return self.history.current

    async def load(self) -> list[Execution]:
        """Read the kept executions from disk; the unfinished ones, oldest first."""
        return await self.history.load()

    async def replay_results(self, suffixes: Collection[str]) -> None:
        await self.history.replay_results(suffixes)

    def last_started(self) -> dt.datetime | None:
        return self.history.last_started()

    # --- triggering ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def trigger(self, reason: str, value: str = "") -> TriggerOutcome:
        """Start an execution, honouring the policies; the outcome is false when none started.

        Returns once the outcome is decided: an execution started (its directory and
        state are on disk, the state naming `value`, the ConfigMap trigger value, if
        any), or why none did. A `value` decided before (by this or an earlier
        leader) gets that decision again and starts nothing.
        """
        await self.watcher.synced.wait()  # the ids of existing job pods must be known
        async with self._trigger_lock:
            if value:
                known = await self.history.decision(value)
                if known is not None:
                    log.info("trigger %r was decided before: %s", value, known)
                    return known
            outcome = self._by_policy(reason)
            if outcome is None:
                if self.running:
                    await self._replace_current()
                decided: asyncio.Future[TriggerOutcome] = asyncio.get_running_loop().create_future()
                self._runner = asyncio.create_task(
                    self._logged(self._start(reason, value, decided), f"triggered ({reason})")
                )
        if outcome is None:
            outcome = await decided
        if value and outcome != STOPPED:
            await self.history.record_decision(value, outcome)
        return outcome

    def _by_policy(self, reason: str) -> TriggerOutcome | None:
        """Why a trigger starts nothing now (suspend, concurrencyPolicy Forbid), else None."""
        if self.suspended:
            why = f"the controller is suspended ({self.suspended})"
            log.info("trigger (%s) skipped: %s", reason, why)
            return TriggerOutcome(skipped=why)
        if self.running and self.config.concurrency_policy == "Forbid":
            why = "an execution is still running (concurrencyPolicy Forbid)"
            log.warning("trigger (%s) skipped: %s", reason, why)
            self.metrics.count_skipped_trigger()
            return TriggerOutcome(skipped=why)
        return None

    def _new_id(self) -> str | None:
        """The next execution id (see `next_execution_id`), never one given out before.

        Taken are the kept executions', those of job pods still in the cluster (a
        controller with a fresh report directory must not reuse their pod names) and
        every id this process gave out, including executions that could not start.
        """
        seen = (
            p.metadata.labels.get(podspec.EXECUTION_LABEL, "") for p in self.watcher.pods.values()
        )
        taken = [*self.history.executions, *filter(is_execution_id, seen), self._newest_id]
        execution_id = next_execution_id(self.clock(), max(taken))
        if execution_id is not None:
            self._newest_id = execution_id
        return execution_id

    async def _replace_current(self) -> None:
        await self.stop_running(replaced=True)
        current = self.history.current
        if current is not None and not current.state.done:
            aborted = current.abort("replaced by a newer execution")
            for node in aborted:
                self.jobs.record(current, node)
            log.warning(
                "execution %s replaced: %d unfinished jobs aborted", current.id, len(aborted)
            )
            await current.flushed()
            await self.act_on_changes()

    async def stop_running(self, *, replaced: bool = False) -> None:
        """Stop dispatching (`replaced`: by a newer trigger; else lost leadership, shutdown);
        state stays."""
        if self._runner is not None:
            self._replaced = replaced
            self._runner.cancel()
            await asyncio.wait([self._runner])  # our own cancellation still propagates
            self._runner = None

    async def resume(self, unfinished: list[Execution]) -> bool:
        """Continue executions a previous leader left; True if one was resumed."""
        await self.watcher.synced.wait()
        for older in unfinished[:-1]:
            older.abort("superseded while the controller was away")
            await older.flushed()
        # what an earlier leader may not have done, in the background: reading the
        # verdicts of a long history takes seconds, and the takeover must not wait for it
        # (a node judged by the resumed execution meanwhile keeps that verdict)
        self._catching_up = asyncio.create_task(self._catch_up(), name="act-on-changes")
        if not unfinished:
            return False
        execution = unfinished[-1]
        config, template = self._snapshot()
        self._arm(execution, config)
        for node, job in execution.nodes.items():
            if job.status is JobStatus.CREATED and job.pod not in self.watcher.pods:
                self.jobs.finish(
                    execution,
                    node,
                    JobStatus.FAILED,
                    "job pod vanished while no controller was leading",
                )
        for pod in list(self.watcher.pods.values()):
            self.jobs.on_pod(pod, False)
        log.info("execution %s resumed (%d/%d jobs finished)", execution.id, *execution.counts())
        async with self._trigger_lock:
            self._runner = asyncio.create_task(
                self._logged(self._dispatch(execution, config, template), execution.id)
            )
        return True

    async def _logged(self, run: Awaitable[None], what: str) -> None:
        try:
            await run
        except Exception as e:
            log.exception("execution %s stopped by an error", what)
            self.on_failure(f"execution {what} stopped by an error: {e!r}")

    def _snapshot(self) -> tuple[Config, podspec.PodTemplate]:
        """What an execution runs with: a configuration reloaded meanwhile applies to the next."""
        return self.config, self.template

    async def _selected_nodes(self, config: Config) -> list[str]:
        """The nodes to run on; an unreachable API delays the execution, never skips it."""
        selector = ",".join(f"{k}={v}" for k, v in config.job_node_selector.items())
        delay = 0.5
        while True:
            try:
                nodes, _ = await self.kube.list("/api/v1/nodes", Node, {"labelSelector": selector})
                return select_nodes(nodes, config.run_on_unscheduled_nodes)
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("cannot list nodes: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _start(
        self, reason: str, value: str, decided: asyncio.Future[TriggerOutcome]
    ) -> None:
        """Select the nodes, take an id, create the execution, settle `decided`, dispatch."""
        config, template = self._snapshot()
        execution_id = ""
        try:
            names = await self._selected_nodes(config)
            execution_id = self._new_id() or ""
            if not execution_id:
                why = "no free execution id: ids are taken up to a minute ahead of the clock"
                log.warning("trigger (%s) skipped: %s", reason, why)
                self.metrics.count_skipped_trigger()
                decided.set_result(TriggerOutcome(skipped=why))
                return
            log.info("execution %s triggered (%s)", execution_id, reason)
            tokens = config.callback_auth == "token"
            creating = asyncio.ensure_future(
                self.history.add(execution_id, names, tokens=tokens, trigger=value)
            )
            try:
                execution = await asyncio.shield(creating)
            except asyncio.CancelledError:
                # once begun, the creation finishes, so that the answer matches the disk
                # (an execution created this way is aborted by the trigger replacing it)
                await asyncio.wait([creating])
                if not creating.cancelled() and creating.exception() is None:
                    decided.set_result(TriggerOutcome(execution_id=execution_id))
                raise
            decided.set_result(TriggerOutcome(execution_id=execution.id))
        except asyncio.CancelledError:
            if not decided.done():  # nothing of it exists
                decided.set_result(TriggerOutcome(replaced=True) if self._replaced else STOPPED)
            raise
        except NotLeading:
            decided.set_result(STOPPED)
            raise
        except OSError as e:
            why = f"execution {execution_id} could not start: its report directory: {e}"
            log.error("%s", why)
            self.metrics.count_start_failure()
            decided.set_result(TriggerOutcome(failed=why))
            return
        finally:
            if not decided.done():  # an unexpected error: the process ends (on_failure)
                decided.set_result(TriggerOutcome(failed="the controller failed"))
        self._arm(execution, config)
        await self._dispatch(execution, config, template)

    @staticmethod
    def _arm(execution: Execution, config: Config) -> None:
        """The limits a dispatch enforces: retries per node, failures before it stops."""
        execution.job_retries = config.job_retries
        if config.max_failures is not None:
            execution.max_failures = resolve_share(config.max_failures, len(execution.nodes))

    async def _dispatch(
        self, execution: Execution, config: Config, template: podspec.PodTemplate
    ) -> None:
        self.history.current = execution
        await self._delete_earlier_pods(execution.id)
        pool = resolve_share(config.pod_pool_size, len(execution.nodes))
        shown = f"{pool} ({config.pod_pool_size})" if pool != config.pod_pool_size else pool
        log.info("execution %s: %d nodes, pool size %s", execution.id, len(execution.nodes), shown)
        plan = DispatchPlan(
            pool_size=pool,
            render=functools.partial(self.render_pod, config, template),
            job_timeout=config.job_timeout,
            retry_backoff=self.retry_backoff,
        )
        await self.dispatcher.run(execution, plan)
        execution.close()
        await execution.flushed()
        self.metrics.set_pods(execution.state.pods_started)
        failed = sum(1 for j in execution.nodes.values() if j.error)
        log.info(
            "execution %s finished: %d jobs, %d with errors, %.1fs",
            execution.id,
            len(execution.nodes),
            failed,
            time.time() - execution.state.started,
        )
        if execution.halted:
            log.warning("execution %s failed: %s", execution.id, execution.state.failed)
        await self.act_on_changes()
        self.completed += 1
        async with self.execution_done:
            self.execution_done.notify_all()

    async def _catch_up(self) -> None:
        try:
            await self.act_on_changes()
        except Exception as e:  # a bug: as when it ran inside resume, the process fails
            log.exception("acting on the changes failed")
            self.on_failure(f"acting on the changes failed: {e!r}")

    async def caught_up(self) -> None:
        """Until the changes a new leader acts on at `resume` are acted on (tests)."""
        if self._catching_up is not None:
            await asyncio.shield(self._catching_up)

    async def act_on_changes(self) -> None:
        """The change metrics, node conditions and taints (bjc.engine.nodemarks); a failure
        is logged: the next execution's end, or the next leader, tries again."""
        try:
            await self.marks.update()
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("cannot act on the changes of the executions: %s", e)

    async def _delete_earlier_pods(self, execution_id: str) -> None:
        """As in the Go controller, every job pod of an earlier execution goes (background)."""
        selector = (
            f"{podspec.OWNER_LABEL}={self.config.name},{podspec.EXECUTION_LABEL}!={execution_id}"
        )
        try:
            await self.kube.request(
                "DELETE",
                f"/api/v1/namespaces/{self.namespace}/pods",
                params={"labelSelector": selector},
                body=delete_options("Background"),
            )
        except (ApiError, aiohttp.ClientError) as e:
            log.warning("cannot delete earlier job pods: %s", e)

    def render_pod(
        self,
        config: Config,
        template: podspec.PodTemplate,
        execution: Execution,
        node: str,
        job: NodeJob,
    ) -> dict[str, Any]:
        """The job pod of a node's next attempt, with the configuration of its execution."""
        return podspec.render_pod(
            template,
            config=config,
            namespace=self.namespace,
            node_name=node,
            execution_id=execution.id,
            callback_host=self.callback_host,
            callback_port=self.callback_port,
            owner=self.owner,
            token=job.token or None,
            attempt=len(job.attempts),
            extensions=self.extensions,
        )

    async def close(self, grace: float = 5.0) -> None:
        """Stop dispatching, give side work (pod logs) `grace` seconds, flush state."""
        await self.stop_running()
        if self._catching_up is not None:  # the next leader acts on the changes again
            self._catching_up.cancel()
            await asyncio.gather(self._catching_up, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.jobs.side_work.drain()
        await self.jobs.side_work.close()
        await self.marks.close(grace)
        for execution in self.history.executions.values():
            await execution.flushed()

    # --- waiting (demo, tests) ------------------------------------------------
    async def wait_completed(self, count: int) -> None:
        async with self.execution_done:
            await self.execution_done.wait_for(lambda: self.completed >= count)
