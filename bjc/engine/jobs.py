"""How a node's job ends: pod states from the watch and the dispatcher, into the execution.

Two sources report on a job: the pod watch (`on_pod`, level-based: the pod as it
is now, whatever event brought it) and the dispatcher (`finish`: a pod that could
not be created, timed out, or a node never dispatched). Both end in `finish`,
which applies the policies of a failed job (a retry while `jobRetries` allows, a
halt once `maxFailures` is reached), records the job in the execution (and so on
disk) and in the metrics, and saves the pod's logs when `savePodLog` asks for it.

Deliberately not here: creating pods (`bjc.engine.dispatcher`), watching them
(`bjc.kube.podwatch`), and which executions exist (`bjc.engine.history`).
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
from collections.abc import Callable

import aiohttp

from bjc.config import podspec
from bjc.config.settings import Config
from bjc.engine.history import History
from bjc.engine.supervisor import SideWork
from bjc.kube.client import ApiError, KubeClient
from bjc.kube.objects import Pod
from bjc.reports.execution import Execution, JobStatus
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore, WriteFailed

log = logging.getLogger(__name__)

_LOG_CHUNK = 64 * 1024  # bytes of a pod log read at a time


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class JobEnds:
    def __init__(
        self,
        *,
        config: Config,
        namespace: str,
        kube: KubeClient,
        store: ReportStore,
        metrics: Metrics,
        history: History,
        pod_phases: Callable[[], collections.Counter[str]],
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.kube = kube
        self.store = store
        self.metrics = metrics
        self.history = history
        self.pod_phases = pod_phases  # the watch's count of job pods by phase
        self.side_work = SideWork()  # pod log fetches
        # told of every recorded job end (node conditions: bjc.engine.nodemarks)
        self.on_recorded: Callable[[Execution, str], None] = lambda execution, node: None

    def pod_name(self, node: str, execution_id: str, attempt: int = 0) -> str:
        return podspec.job_pod_name(self.config.name, node, execution_id, attempt)

    def on_pod(self, pod: Pod, deleted: bool) -> None:
        """Level-based: look at the pod as it is now, whatever event brought it."""
        self.metrics.set_pods_by_phase(self.pod_phases())
        execution = self.history.active(pod.metadata.labels.get(podspec.EXECUTION_LABEL, ""))
        if execution is None or execution.done:
            return
        node = pod.spec.node_name
        job = execution.nodes.get(node)
        if job is None or job.status.terminal:
            return
        attempt = len(job.attempts)  # pods of earlier attempts are history
        if pod.metadata.name != (job.pod or self.pod_name(node, execution.id, attempt)):
            return
        if job.status is JobStatus.PENDING:
            # the watch saw the pod before the create call returned
            execution.pod_created(node, pod.metadata.name, attempt)
        if pod.finished:
            status = JobStatus.SUCCEEDED if pod.status.phase == "Succeeded" else JobStatus.FAILED
            reason = pod.failure if status is JobStatus.FAILED else ""
            self.finish(execution, node, status, reason, pod)
        elif deleted:
            self.finish(
                execution, node, JobStatus.FAILED, "job pod deleted before it finished", pod
            )

    def finish(
        self,
        execution: Execution,
        node: str,
        status: JobStatus,
        reason: str = "",
        pod: Pod | None = None,
    ) -> None:
        """A job's end: retried, or recorded (execution, metrics, logs)."""
        created = _timestamp(pod.metadata.creation_timestamp) if pod is not None else None
        if status is JobStatus.FAILED and execution.may_retry(node):
            self._retry(execution, node, reason or "pod failed", created)
            return
        if not execution.finish(node, status, reason, created=created):
            return
        if status is JobStatus.FAILED:
            self._stop_if_too_many_failed(execution)
        self.record(execution, node)
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

    def record(self, execution: Execution, node: str) -> None:
        """A node's ended job (again when a late result changes its verdict): its metrics,
        and `on_recorded`."""
        job = execution.nodes[node]
        self.metrics.record_job(execution.id, node, bool(job.error), job.duration_ms)
        self.on_recorded(execution, node)

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
        log.info(
            "execution %s node %s: %s; retry %d of %d",
            execution.id,
            node,
            reason,
            failed,
            execution.job_retries,
        )

    async def _save_logs(self, execution_id: str, node: str, pod: Pod) -> None:
        """Each container's log streamed to its file, at most `maxPodLogSize` bytes of it.

        The API is asked for one byte more than is kept (`limitBytes`), which tells a
        log that was cut from one that fits exactly; nothing holds a whole log.
        """
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod.metadata.name}/log"
        limit = self.config.max_pod_log_size
        for container in [*pod.spec.init_containers, *pod.spec.containers]:
            copy = functools.partial(self._copy_log, execution_id, node, container.name, limit)
            params = {"container": container.name, "limitBytes": str(limit + 1)}
            try:
                cut = await self.kube.stream(path, copy, params)
            except (ApiError, aiohttp.ClientError) as e:
                log.warning("no log of %s/%s: %s", pod.metadata.name, container.name, e)
                continue
            except WriteFailed as e:  # the store said once that the directory is not writable
                log.debug("log of %s/%s not saved: %s", pod.metadata.name, container.name, e)
                continue
            if cut:
                log.info(
                    "log of %s/%s cut at maxPodLogSize (%d bytes)",
                    pod.metadata.name,
                    container.name,
                    limit,
                )

    async def _copy_log(
        self, execution_id: str, node: str, container: str, limit: int, body: aiohttp.StreamReader
    ) -> bool:
        """At most `limit` bytes of `body` into the container's log file; True if it had more."""
        async with self.store.pod_log(execution_id, node, container) as sink:
            async for chunk in body.iter_chunked(_LOG_CHUNK):
                room = limit - sink.size
                if len(chunk) > room:
                    await sink.write(chunk[:room])
                    return True
                await sink.write(chunk)
        return False
