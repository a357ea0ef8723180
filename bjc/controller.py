"""The controller: executions from trigger to pruning, and what job pods report.

This is where the pieces meet: a trigger starts an execution (node selection,
deletion of earlier job pods, dispatch); the pod watch ends each node's job; the
callback app reports results and asks for events; the report store and metrics
record all of it. It keeps every execution of the history in memory so callbacks
are checked without disk I/O, and on start or on becoming leader it rebuilds that
history, and the metrics, from the report directory, resuming what was unfinished.

Deliberately not here: HTTP servers, leader election, signal handling
(`bjc.runtime`), and the mechanics of watching or placing pods (`bjc.reconciler`,
`bjc.dispatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Container
from typing import Any

import aiohttp
import msgspec

from bjc import podspec
from bjc.config import Config, resolve_share
from bjc.dispatcher import Dispatcher, DispatchPlan
from bjc.events import EventRequest, send_event
from bjc.execution import (
    Execution,
    ExecutionState,
    JobStatus,
    NodeJob,
    RetiredExecution,
    decode_state,
)
from bjc.kube import ApiError, KubeClient, delete_options
from bjc.kubetypes import Node, Pod
from bjc.metrics import Metrics
from bjc.reconciler import PodWatcher
from bjc.results import apply_result, decode_result
from bjc.store import ReportStore
from bjc.supervisor import SideWork

log = logging.getLogger(__name__)

_ID_FORMAT = "%Y%m%d%H%M"


def next_execution_id(now: dt.datetime, existing: str | None) -> str:
    """Local time `yyyyMMddHHmm` (SPEC A4.3), never reusing an id.

    A second trigger in the same minute (`@every 30s`, Replace, a restart) would
    otherwise write into the first execution's directory; it takes the next free
    minute instead, which keeps ids sortable and numeric for the metric.
    """
    candidate = now.strftime(_ID_FORMAT)
    if existing is None or candidate > existing:
        return candidate
    last = dt.datetime.strptime(existing, _ID_FORMAT)
    return (last + dt.timedelta(minutes=1)).strftime(_ID_FORMAT)


def select_nodes(nodes: list[Node], run_on_unscheduled: bool) -> list[str]:
    """SPEC A4.2: Ready, and schedulable unless runOnUnscheduledNodes."""
    return sorted(
        n.metadata.name
        for n in nodes
        if n.ready and (run_on_unscheduled or not n.spec.unschedulable)
    )


@dataclasses.dataclass(frozen=True)
class TriggerOutcome:
    """What a trigger did: the execution it started, or why it started none."""

    execution_id: str = ""
    skipped: str = ""

    def __bool__(self) -> bool:
        return bool(self.execution_id)


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


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
    ) -> None:
        self.config = config
        self.template = template
        self.namespace = namespace
        self.kube = kube
        self.store = store
        self.metrics = metrics
        self.callback_host = callback_host
        self.owner = owner
        self.retry_backoff = retry_backoff  # before a node's first retry (jobRetries)
        self.executions: dict[str, Execution | RetiredExecution] = {}
        self.current: Execution | None = None
        self.completed = 0  # executions finished by this process (demo, tests)
        self.execution_done = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None
        self.side_work = SideWork()  # pod log fetches
        # what the loaded history was read from (see ReportStore.signature)
        self._signatures: dict[str, tuple[int, ...]] = {}
        # called when an execution's dispatch dies of an unexpected error
        self.on_failure: Callable[[str], None] = lambda reason: None
        self._trigger_lock = asyncio.Lock()
        self.suspended = ""  # why no execution may start now ("": it may)
        self._history_lock = asyncio.Lock()  # loading vs. adding/pruning executions
        self.watcher = PodWatcher(
            kube, namespace, f"{podspec.OWNER_LABEL}={config.name}", self._on_pod
        )
        self.dispatcher = Dispatcher(kube, namespace, finish=self._finish, backoff=create_backoff)

    # --- history -------------------------------------------------------------
    async def load(self) -> list[Execution]:
        """Read the kept executions from disk and rebuild their metrics.

        Returns the unfinished ones, oldest first.
        """
        async with self._history_lock:
            return await self._load()

    async def _load(self) -> list[Execution]:
        """Read what changed on disk since the last load; unchanged executions stay."""
        loaded: dict[str, Execution | RetiredExecution] = {}
        unfinished: list[Execution] = []
        previous: RetiredExecution | None = None
        for execution_id in await self.store.list_executions():  # oldest first: "latest" ends right
            signature = await self.store.signature(
                execution_id
            )  # before reading: a later change shows
            known = self.executions.get(execution_id)
            if known is None or self._signatures.get(execution_id) != signature:
                if known is not None:
                    self.metrics.remove_execution(execution_id)
                known = await self._read_execution(execution_id, previous)
                if known is None:
                    continue
                self._signatures[execution_id] = signature
            loaded[execution_id] = known
            if isinstance(known, RetiredExecution):
                previous = known
            elif not known.done:
                unfinished.append(known)
        for execution_id in set(self.executions) - set(loaded):
            self.metrics.remove_execution(execution_id)
            self._signatures.pop(execution_id, None)
        self.executions = loaded
        if loaded:
            newest = max(loaded)
            self.metrics.set_current_execution(newest)
            self.metrics.set_pods(loaded[newest].pods_started)
        return unfinished

    async def _read_execution(
        self, execution_id: str, previous: RetiredExecution | None
    ) -> Execution | RetiredExecution | None:
        data = await self.store.read_state(execution_id)
        if data is None:
            return None
        try:
            state = decode_state(*data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("execution %s: unreadable state, skipped: %s", execution_id, e)
            return None
        results = await self.store.read_results(execution_id, state.nodes)
        state.note_results(results)
        self._rebuild_metrics(state, results)
        if state.done:
            return RetiredExecution(state, previous)
        return Execution(state, self.store)

    def _rebuild_metrics(self, state: ExecutionState, results: dict[str, bytes]) -> None:
        for node, job in state.nodes.items():
            if job.status.terminal:
                self._record_node_metrics(state.id, node, job)
            if job.attempts:
                self.metrics.set_attempts(state.id, node, len(job.attempts) + 1)
        self.metrics.set_execution_failed(state.id, bool(state.failed))
        for node, body in results.items():
            self._restore_result(state.id, node, body)
        finished = sum(1 for j in state.nodes.values() if j.status.terminal)
        self.metrics.set_progress(state.id, finished, len(state.nodes))

    def _restore_result(
        self, execution_id: str, node: str, body: bytes, only: Collection[str] | None = None
    ) -> None:
        """Expose a stored result again (all configured gauges, or those in `only`)."""
        try:
            result = decode_result(body)
            if only is not None:
                result = {suffix: result[suffix] for suffix in only if suffix in result}
            apply_result(self.metrics, self.config, execution_id, node, result)
        except (msgspec.DecodeError, KeyError, ValueError) as e:
            # e.g. a gauge's labels changed in the config since the result was stored
            log.warning("execution %s node %s: result not restored: %s", execution_id, node, e)

    async def replay_results(self, suffixes: Collection[str]) -> None:
        """Expose the stored results of every kept execution for new or changed gauges."""
        for execution_id, execution in sorted(self.executions.items()):
            for node, body in (
                await self.store.read_results(execution_id, execution.nodes)
            ).items():
                self._restore_result(execution_id, node, body, suffixes)

    def _record_node_metrics(self, execution_id: str, node: str, job: NodeJob) -> None:
        self.metrics.set_processing(execution_id, node, 1.0 if job.error else 0.0)
        if job.duration_ms is not None:
            self.metrics.set_duration(execution_id, node, job.duration_ms)

    def last_started(self) -> dt.datetime | None:
        """When the newest execution of the history started (None: no history)."""
        started = max((e.started for e in self.executions.values()), default=None)
        return None if started is None else dt.datetime.fromtimestamp(started, dt.UTC)

    def _newest_retired(self) -> RetiredExecution | None:
        retired = [e for e in self.executions.values() if isinstance(e, RetiredExecution)]
        return max(retired, key=lambda e: e.id, default=None)

    async def _prune(self) -> None:
        for execution_id in await self.store.prune(self.config.kept_executions):
            self.executions.pop(execution_id, None)
            self.metrics.remove_execution(execution_id)
            log.info("execution %s pruned from the history", execution_id)

    # --- triggering ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def trigger(self, reason: str) -> TriggerOutcome:
        """Start an execution, honouring concurrencyPolicy; the outcome is false when skipped."""
        await self.watcher.synced.wait()  # the ids of existing job pods must be known
        async with self._trigger_lock:
            if self.suspended:
                why = f"the controller is suspended ({self.suspended})"
                log.info("trigger (%s) skipped: %s", reason, why)
                return TriggerOutcome(skipped=why)
            if self.running:
                if self.config.concurrency_policy == "Forbid":
                    why = "an execution is still running (concurrencyPolicy Forbid)"
                    log.warning("trigger (%s) skipped: %s", reason, why)
                    self.metrics.count_skipped_trigger()
                    return TriggerOutcome(skipped=why)
                await self._replace_current()
            # ids of job pods still in the cluster count too: a controller with a
            # fresh report directory must not reuse their pod names
            seen = {
                p.metadata.labels.get(podspec.EXECUTION_LABEL, "")
                for p in self.watcher.pods.values()
            }
            newest = max([*self.executions, *seen], default=None) or None
            execution_id = next_execution_id(dt.datetime.now(), newest)
            log.info("execution %s triggered (%s)", execution_id, reason)
            self._runner = asyncio.create_task(
                self._logged(self._start(execution_id), execution_id)
            )
            return TriggerOutcome(execution_id=execution_id)

    async def _replace_current(self) -> None:
        await self.stop_running()
        if self.current is not None and not self.current.state.done:
            aborted = self.current.abort("replaced by a newer execution")
            for node in aborted:
                self._record_node_metrics(self.current.id, node, self.current.nodes[node])
            log.warning(
                "execution %s replaced: %d unfinished jobs aborted", self.current.id, len(aborted)
            )

    async def stop_running(self) -> None:
        """Stop dispatching (replacement, lost leadership, shutdown); state stays."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait([self._runner])  # our own cancellation still propagates
            self._runner = None

    async def resume(self, unfinished: list[Execution]) -> bool:
        """Continue executions a previous leader left; True if one was resumed."""
        await self.watcher.synced.wait()
        for older in unfinished[:-1]:
            older.abort("superseded while the controller was away")
        if not unfinished:
            return False
        execution = unfinished[-1]
        config, template = self._snapshot()
        self._arm(execution, config)
        for node, job in execution.nodes.items():
            if job.status is JobStatus.CREATED and job.pod not in self.watcher.pods:
                self._finish(
                    execution,
                    node,
                    JobStatus.FAILED,
                    "job pod vanished while no controller was leading",
                )
        for pod in list(self.watcher.pods.values()):
            self._on_pod(pod, False)
        log.info("execution %s resumed (%d/%d jobs finished)", execution.id, *execution.counts())
        async with self._trigger_lock:
            self._runner = asyncio.create_task(
                self._logged(self._dispatch(execution, config, template), execution.id)
            )
        return True

    async def _logged(self, run: Awaitable[None], execution_id: str) -> None:
        try:
            await run
        except Exception as e:
            log.exception("execution %s stopped by an error", execution_id)
            self.on_failure(f"execution {execution_id} stopped by an error: {e!r}")

    def _snapshot(self) -> tuple[Config, podspec.PodTemplate]:
        """What an execution runs with: a configuration reloaded meanwhile applies to the next."""
        return msgspec.structs.replace(self.config), self.template

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

    async def _start(self, execution_id: str) -> None:
        config, template = self._snapshot()
        names = await self._selected_nodes(config)
        async with self._history_lock:
            await self.store.create_execution(execution_id)
            execution = Execution.new(
                execution_id, names, self.store, tokens=config.callback_auth == "token"
            )
            previous = self.current
            self.executions[execution_id] = self.current = execution
            if previous is not None and previous.done and previous.id in self.executions:
                self.executions[previous.id] = previous.retire(self._newest_retired())
            self.metrics.set_current_execution(execution_id)
            self.metrics.set_progress(execution_id, 0, len(names))
            await self._prune()
        self.metrics.set_execution_failed(execution_id, False)
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
        self.current = execution
        await self._delete_earlier_pods(execution.id)
        pool = resolve_share(config.pod_pool_size, len(execution.nodes))
        shown = f"{pool} ({config.pod_pool_size})" if pool != config.pod_pool_size else pool
        log.info("execution %s: %d nodes, pool size %s", execution.id, len(execution.nodes), shown)
        plan = DispatchPlan(
            pool_size=pool,
            render=functools.partial(self._render, config, template),
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
        self.completed += 1
        async with self.execution_done:
            self.execution_done.notify_all()

    async def _delete_earlier_pods(self, execution_id: str) -> None:
        """SPEC A4.4: every job pod of an earlier execution goes (background)."""
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

    def _render(
        self,
        config: Config,
        template: podspec.PodTemplate,
        execution: Execution,
        node: str,
        job: NodeJob,
    ) -> dict[str, Any]:
        return podspec.render_pod(
            template,
            config=config,
            namespace=self.namespace,
            node_name=node,
            execution_id=execution.id,
            callback_host=self.callback_host,
            owner=self.owner,
            token=job.token or None,
            attempt=len(job.attempts),
        )

    # --- job ends --------------------------------------------------------------
    def _finish(
        self,
        execution: Execution,
        node: str,
        status: JobStatus,
        reason: str = "",
        pod: Pod | None = None,
    ) -> None:
        created = _timestamp(pod.metadata.creation_timestamp) if pod is not None else None
        if status is JobStatus.FAILED and execution.may_retry(node):
            self._retry(execution, node, reason or "pod failed", created)
            return
        if not execution.finish(node, status, reason, created=created):
            return
        if status is JobStatus.FAILED:
            self._stop_if_too_many_failed(execution)
        job = execution.nodes[node]
        self._record_node_metrics(execution.id, node, job)
        finished, total = execution.counts()
        self.metrics.set_progress(execution.id, finished, total)
        if finished * 10 // total != (finished - 1) * 10 // total:  # every tenth
            log.info("execution %s: %d/%d jobs finished", execution.id, finished, total)
        if status is JobStatus.FAILED:
            log.info("execution %s node %s failed: %s", execution.id, node, reason or "pod failed")
        if self.config.save_pod_log and pod is not None:
            execution_id = execution.id
            if not self.side_work.submit(lambda: self._save_logs(execution_id, node, pod)):
                log.warning("too many pod logs waiting: log of %s not saved", pod.metadata.name)

    def _stop_if_too_many_failed(self, execution: Execution) -> None:
        limit = execution.max_failures
        if limit is None or execution.failed_jobs < limit:
            return
        why = (
            f"maxFailures reached: {execution.failed_jobs} of {len(execution.nodes)} nodes "
            f"failed (limit {limit}), no new pods started"
        )
        if execution.halt(why):
            self.metrics.set_execution_failed(execution.id, True)
            log.error("execution %s stops: %s", execution.id, why)

    def _retry(self, execution: Execution, node: str, reason: str, created: float | None) -> None:
        if not execution.retry(node, reason, created):
            return
        failed = len(execution.nodes[node].attempts)
        self.metrics.set_attempts(execution.id, node, failed + 1)
        execution_id, retries = execution.id, execution.job_retries
        log.info(
            "execution %s node %s: %s; retry %d of %d", execution_id, node, reason, failed, retries
        )

    def _on_pod(self, pod: Pod, deleted: bool) -> None:
        """Level-based: look at the pod as it is now, whatever event brought it."""
        self.metrics.set_pods_by_phase(self.watcher.phases)
        execution = self.executions.get(pod.metadata.labels.get(podspec.EXECUTION_LABEL, ""))
        if not isinstance(execution, Execution) or execution.done:
            return
        node = pod.spec.node_name
        job = execution.nodes.get(node)
        if job is None or job.status.terminal:
            return
        attempt = len(job.attempts)  # pods of earlier attempts are history
        if pod.metadata.name != (job.pod or self._pod_name(node, execution.id, attempt)):
            return
        if job.status is JobStatus.PENDING:
            # the watch saw the pod before the create call returned
            execution.pod_created(node, pod.metadata.name, attempt)
        if pod.finished:
            status = JobStatus.SUCCEEDED if pod.status.phase == "Succeeded" else JobStatus.FAILED
            self._finish(execution, node, status, pod.status.reason, pod)
        elif deleted:
            self._finish(
                execution, node, JobStatus.FAILED, "job pod deleted before it finished", pod
            )

    async def _save_logs(self, execution_id: str, node: str, pod: Pod) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod.metadata.name}/log"
        for container in [*pod.spec.init_containers, *pod.spec.containers]:
            try:
                text = await self.kube.read_text(path, {"container": container.name})
            except (ApiError, aiohttp.ClientError) as e:
                log.warning("no log of %s/%s: %s", pod.metadata.name, container.name, e)
                continue
            await self.store.write_log(execution_id, node, container.name, text)

    async def close(self, grace: float = 5.0) -> None:
        """Stop dispatching, give side work (pod logs) `grace` seconds, flush state."""
        await self.stop_running()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.side_work.drain()
        await self.side_work.close()
        for execution in self.executions.values():
            await execution.flushed()

    # --- CallbackTarget ----------------------------------------------------------
    def execution_allowed(self, node: str, execution_id: str) -> bool:
        execution = self.executions.get(execution_id)
        return execution is not None and execution.has_node(node)

    def nodes_of(self, execution_id: str) -> Container[str] | None:
        execution = self.executions.get(execution_id)
        return None if execution is None else execution.nodes

    def token_valid(self, node: str, execution_id: str, token: str) -> bool:
        if not self.execution_allowed(node, execution_id):
            return False
        expected = self.executions[execution_id].token_of(node)
        return bool(expected) and hmac.compare_digest(expected, token)

    async def result_received(self, node: str, execution_id: str) -> None:
        execution = self.executions.get(execution_id)
        if execution is not None:
            execution.result_received(node)

    def _pod_name(self, node: str, execution_id: str, attempt: int = 0) -> str:
        return podspec.job_pod_name(self.config.name, node, execution_id, attempt)

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        execution = self.executions.get(execution_id)
        job = execution.nodes.get(node) if isinstance(execution, Execution) else None
        pod = job.pod if job is not None and job.pod else self._pod_name(node, execution_id)
        await send_event(self.kube, self.namespace, pod, self.config.name, event)

    # --- waiting (demo, tests) ------------------------------------------------
    async def wait_completed(self, count: int) -> None:
        async with self.execution_done:
            await self.execution_done.wait_for(lambda: self.completed >= count)
