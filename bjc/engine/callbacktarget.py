"""What the callback API asks of the controller, answered from the history.

`bjc.web.callback` admits a request only for a node of a kept execution (with its
token under `callbackAuth: token`) and from the node's current attempt (the fence:
`stale`), tells when a result arrived and asks for Kubernetes Events on the job
pod. This adapter answers those questions from the in-memory history, so the web
layer depends on a small protocol (`CallbackTarget`) and never on the engine.
"""

from __future__ import annotations

import hmac
from collections.abc import Container

from bjc.engine.history import History
from bjc.engine.jobs import JobEnds
from bjc.kube.client import KubeClient
from bjc.kube.events import EventRequest, send_event
from bjc.reports.execution import Execution, Stale


class ControllerCallbacks:
    def __init__(self, history: History, jobs: JobEnds, kube: KubeClient, namespace: str) -> None:
        self.history = history
        self.jobs = jobs
        self.kube = kube
        self.namespace = namespace

    def execution_allowed(self, node: str, execution_id: str) -> bool:
        execution = self.history.executions.get(execution_id)
        return execution is not None and execution.has_node(node)

    def nodes_of(self, execution_id: str) -> Container[str] | None:
        execution = self.history.executions.get(execution_id)
        return None if execution is None else execution.nodes

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        if not self.execution_allowed(node, execution_id):
            return False
        expected = self.history.executions[execution_id].token_of(node, attempt)
        # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, 500)
        return bool(expected) and hmac.compare_digest(expected.encode(), token.encode())

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        execution = self.history.executions.get(execution_id)
        if execution is None or not execution.has_node(node):
            return None  # not admitted anyway
        return execution.stale(node, attempt)

    def result_received(self, node: str, execution_id: str) -> None:
        execution = self.history.executions.get(execution_id)
        if execution is not None and execution.result_received(node):
            if isinstance(execution, Execution) and execution.nodes[node].status.terminal:
                self.jobs.record(execution, node)  # the job ended before its result

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        execution = self.history.active(execution_id)
        job = execution.nodes.get(node) if execution is not None else None
        pod = job.pod if job is not None and job.pod else self.jobs.pod_name(node, execution_id)
        await send_event(self.kube, self.namespace, pod, self.jobs.config.name, event)
