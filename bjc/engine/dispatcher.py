"""Placement of job pods: one per node, at most `podPoolSize` alive at once.

Each execution is dispatched by a `DispatchPlan` fixed when it starts (pool size,
pod rendering, timeout), so a configuration reloaded meanwhile applies from the
next execution. An asyncio.Semaphore of the pool size bounds the pods in flight. A slot is held
from the pod's creation until its job ends, which the reconciler signals through
the execution (an asyncio.Event per node), so a slot frees the moment the pod is
seen finished; nothing sleeps or polls. Pod creation failures (quota, admission,
API errors) are retried with backoff and, if they persist, recorded as that
node's failure: an execution always completes. `jobTimeout` bounds the wait for
pods that never finish (stuck Pending, vanished node). A node whose attempt
failed and may be retried (`jobRetries`, decided by `finish`) comes back pending:
it keeps its slot, backs off (doubling from `retry_backoff`, at most 5 minutes)
and gets a new pod, created only once the retry is recorded on disk (so the
callback fence of its attempts survives a failover). Once the execution is halted
(`maxFailures`, decided by `finish`), no new pod is started: pods running finish,
nodes never dispatched are recorded as aborted.

Deliberately not here: what a finished pod means, or metrics (the controller
passes `finish`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bjc.config.extensions import ExtensionError
from bjc.kube.client import ApiError, KubeClient
from bjc.kube.rights import Rights
from bjc.reports.execution import Execution, JobStatus, NodeJob

log = logging.getLogger(__name__)

FinishFn = Callable[[Execution, str, JobStatus, str], None]
RenderFn = Callable[[Execution, str, NodeJob], dict[str, Any]]

_PERMANENT = (400, 404, 422)  # the pod itself is invalid: retrying cannot help
_TIMEOUT_GRACE_S = 2.0  # let the kubelet report DeadlineExceeded first


@dataclasses.dataclass(frozen=True)
class DispatchPlan:
    """How one execution is dispatched, fixed when it starts."""

    pool_size: int
    render: RenderFn
    job_timeout: float | None = None
    retry_backoff: float = 10.0  # before the first retry of a node; doubles per retry


class Dispatcher:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        finish: FinishFn,
        create_attempts: int = 5,
        backoff: float = 0.5,
        rights: Rights | None = None,
    ) -> None:
        self.kube = kube
        # without the right to delete one pod, a timed-out pod goes by a field selector
        self.rights = rights or Rights(kube, namespace, "", "")
        self.pods_path = f"/api/v1/namespaces/{namespace}/pods"
        self.finish = finish
        self.create_attempts = create_attempts
        self.backoff = backoff

    async def run(self, execution: Execution, plan: DispatchPlan) -> None:
        """Dispatch every unfinished node; returns when all their jobs ended."""
        pool = asyncio.Semaphore(plan.pool_size)
        # resumed pods first: they already hold a slot in the cluster
        order = sorted(
            (n for n, j in execution.nodes.items() if not j.status.terminal),
            key=lambda n: execution.nodes[n].status is JobStatus.PENDING,
        )
        async with asyncio.TaskGroup() as tasks:
            for node in order:
                await pool.acquire()
                if execution.halted and execution.nodes[node].status is JobStatus.PENDING:
                    pool.release()  # stopped: no new pods (running ones are still awaited)
                    break
                tasks.create_task(self._run_node(execution, node, pool, plan))
        for node, job in execution.nodes.items():
            if job.status is JobStatus.PENDING:
                self._give_up(execution, node)

    def _give_up(self, execution: Execution, node: str) -> None:
        """A pending node of a halted execution: failed if it had failed, else aborted."""
        attempts = execution.nodes[node].attempts
        if attempts:
            self.finish(execution, node, JobStatus.FAILED, attempts[-1].reason)
        else:
            reason = f"not dispatched: {execution.state.failed}"
            self.finish(execution, node, JobStatus.ABORTED, reason)

    async def _run_node(
        self, execution: Execution, node: str, pool: asyncio.Semaphore, plan: DispatchPlan
    ) -> None:
        try:
            job = execution.nodes[node]
            while not job.status.terminal:  # one attempt per turn
                attempt = len(job.attempts)
                if job.status is JobStatus.PENDING:
                    if attempt:
                        await asyncio.sleep(min(plan.retry_backoff * 2 ** (attempt - 1), 300.0))
                        # the retry (its number, its token) is on disk before its pod
                        # exists: whoever leads next fences the attempts the same way
                        await execution.recorded()
                        if execution.halted:  # stopped meanwhile: no new pod
                            self._give_up(execution, node)
                            continue
                    try:
                        pod = plan.render(execution, node, job)
                    except ExtensionError as e:  # this node's pod cannot be made
                        log.warning("execution %s node %s: %s", execution.id, node, e)
                        self.finish(execution, node, JobStatus.FAILED, str(e))
                        continue
                    error = await self._create(pod)
                    if error is not None:
                        log.warning("execution %s node %s: %s", execution.id, node, error)
                        self.finish(execution, node, JobStatus.FAILED, error)
                        continue
                    execution.pod_created(node, pod["metadata"]["name"], attempt)
                await self._wait(execution, node, attempt, plan.job_timeout)
        finally:
            pool.release()

    async def _create(self, pod: dict[str, Any]) -> str | None:
        """Create the pod; None on success, else why it failed for good."""
        delay = self.backoff
        last: Exception | None = None
        for attempt in range(self.create_attempts):
            try:
                await self.kube.create(self.pods_path, pod)
                return None
            except ApiError as e:
                if e.status == 409:
                    return None  # an earlier attempt (or leader) created it
                if e.status in _PERMANENT:
                    return f"pod creation failed: {e}"
                last = e
            except (TimeoutError, aiohttp.ClientError) as e:
                last = e
            if attempt < self.create_attempts - 1:
                await asyncio.sleep(delay)
                delay *= 2
        return f"pod creation failed after {self.create_attempts} attempts: {last}"

    async def _wait(
        self, execution: Execution, node: str, attempt: int, job_timeout: float | None
    ) -> None:
        """Until the attempt ends; past `job_timeout` it is failed and its pod deleted."""
        if job_timeout is None:
            await execution.wait_finished(node, attempt)
            return
        job = execution.nodes[node]
        elapsed = 0.0 if job.created is None else max(0.0, time.time() - job.created)
        remaining = job_timeout + _TIMEOUT_GRACE_S - elapsed
        try:
            await asyncio.wait_for(execution.wait_finished(node, attempt), max(remaining, 0.0))
        except TimeoutError:
            reason = f"job did not finish within jobTimeout ({job_timeout:g}s)"
            pod = job.pod
            self.finish(execution, node, JobStatus.FAILED, reason)
            if pod:
                try:
                    await self.rights.delete_pod(self.pods_path, pod)
                except (ApiError, aiohttp.ClientError) as e:
                    log.warning("cannot delete timed-out pod %s: %s", pod, e)
