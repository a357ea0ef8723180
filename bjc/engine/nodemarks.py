"""Acting on what changed: the change metrics, node conditions and node taints.

After an execution ends (and when a replica starts to lead), the standing of every
node (bjc.reports.changes, computed from the report directory by
bjc.reports.summary) is handed to the cluster:

- metrics: `bjc_execution_new_failures`, `bjc_execution_recoveries` per kept
  execution and `bjc_node_failure_streak` per node of the latest one;
- with `nodeCondition`: a condition of that type on each judged node's status,
  `True` (reason `CheckFailed`, the failure as message) while its job fails,
  `False` (reason `CheckSucceeded`) once it succeeds. A strategic-merge patch of
  `nodes/<node>/status` whose list item is keyed by the condition type, so other
  conditions are never touched; sent only when status, reason or message differ
  from what the node shows, and `lastTransitionTime` moves only with the status;
- with `nodeTaint`: the taint on failing nodes, on at most `maxShare` of the latest
  execution's nodes (nodes tainted already keep it first, then the longest streaks),
  removed once a node succeeds. A JSON patch of `spec.taints` guarded by a `test`
  of the resourceVersion, so a concurrent change to the node's taints is never
  overwritten (a conflict is read again and retried).

A node that is not judged (its job aborted, its execution suspended or not yet
finished) and a node no longer selected keep what they have: bjc changes nothing
on them. Patches that fail with a 429, a 5xx or a lost connection are retried.

Least privilege: the permission to patch nodes comes from a separate kustomize
component. Before the first patch the controller probes it once (an empty patch,
which changes nothing); a 403 is reported once (log and an Event, through
`on_refused`) and the feature stays off until the process restarts, instead of
failing on every node.

Deliberately not here: what failed means and how streaks count (bjc.reports.changes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bjc.config.settings import Config, share_at_most
from bjc.kube.backoff import Backoff
from bjc.kube.client import ApiError, KubeClient
from bjc.reports.changes import Standing
from bjc.reports.metrics import Metrics
from bjc.reports.summary import SummaryCache

log = logging.getLogger(__name__)

FAILED_REASON = "CheckFailed"
SUCCEEDED_REASON = "CheckSucceeded"
SUCCEEDED_MESSAGE = "the node's check job succeeded"
MAX_MESSAGE = 1024  # characters of a failure reason put into a condition's message
PATCH_ATTEMPTS = 5

Refused = Callable[[str], Awaitable[None]]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(reason: str) -> str:
    reason = reason or "the node's check job failed"
    return reason if len(reason) <= MAX_MESSAGE else reason[: MAX_MESSAGE - 1] + "\u2026"


class NodeMarks:
    def __init__(self, config: Config, kube: KubeClient, metrics: Metrics, root: Path) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.summaries = SummaryCache(root)
        self.on_refused: Refused = self._no_report
        self._lock = asyncio.Lock()
        self._allowed: dict[str, bool] = {}  # "status" / "taint" -> probed permission
        self.patches = 0  # changes sent (tests, benchmarks), not the probes

    @staticmethod
    async def _no_report(message: str) -> None:
        return None

    async def update(self) -> None:
        """Bring metrics, conditions and taints in line with the report directory."""
        async with self._lock:
            steps = await self.summaries.standings()
            for verdicts, changes, _ in steps:
                self.metrics.set_changes(
                    verdicts.id, len(changes.newly_failing), len(changes.recovered)
                )
            if not steps:
                return
            latest, _, standing = steps[-1]
            self.metrics.set_streaks({n: standing.streaks.get(n, 0) for n in latest.nodes})
            config = self.config
            if config.node_condition is None and config.node_taint is None:
                return
            judged = {n: s for n, s in standing.streaks.items() if n in latest.nodes}
            if not judged:
                return
            nodes = await self._nodes()
            if config.node_condition is not None and await self._may("status", judged, nodes):
                await self._conditions(config.node_condition.type, standing, judged, nodes)
            if config.node_taint is not None and await self._may("taint", judged, nodes):
                await self._taints(standing, judged, len(latest.nodes), nodes)

    async def _nodes(self) -> dict[str, dict[str, Any]]:
        items, _ = await self.kube.list("/api/v1/nodes", dict)
        return {n["metadata"]["name"]: n for n in items}

    async def _may(self, what: str, judged: dict[str, int], nodes: dict[str, Any]) -> bool:
        """Whether patches of `what` are allowed: probed once with an empty patch."""
        if what in self._allowed:
            return self._allowed[what]
        node = next((n for n in sorted(judged) if n in nodes), None)
        if node is None:
            return True  # nothing to patch now; probe next time
        path = f"/api/v1/nodes/{node}" + ("/status" if what == "status" else "")
        try:
            await self._patch(path, {}, "strategic")
        except ApiError as e:
            if e.status != 403:
                raise
            key = "nodeCondition" if what == "status" else "nodeTaint"
            resource = "nodes/status" if what == "status" else "nodes"
            why = (
                f"{key} is configured but the controller may not patch {resource} "
                f"(add the kustomize component manifests/components/node-conditions): {e.message}"
            )
            log.error("%s; %s stays off until the controller restarts", why, key)
            self._allowed[what] = False
            await self.on_refused(why)
            return False
        self._allowed[what] = True
        return True

    async def _patch(self, path: str, body: Any, kind: str) -> None:
        """One patch, retried on 429, 5xx and lost connections (patches are idempotent)."""
        backoff = Backoff(0.2, 5.0)
        for attempt in range(PATCH_ATTEMPTS):
            try:
                await self.kube.patch(path, body, kind)
                self.patches += bool(body)  # the probes are not counted
                return
            except ApiError as e:
                if not e.retryable or attempt == PATCH_ATTEMPTS - 1:
                    raise
            except (aiohttp.ClientError, TimeoutError):
                if attempt == PATCH_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(backoff.next_delay())

    async def _conditions(
        self,
        kind: str,
        standing: Standing,
        judged: dict[str, int],
        nodes: dict[str, dict[str, Any]],
    ) -> None:
        for node, streak in sorted(judged.items()):
            obj = nodes.get(node)
            if obj is None:
                continue  # deleted meanwhile
            status = "True" if streak > 0 else "False"
            reason = FAILED_REASON if streak > 0 else SUCCEEDED_REASON
            message = _message(standing.reasons.get(node, "")) if streak > 0 else SUCCEEDED_MESSAGE
            current = next(
                (c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == kind),
                None,
            )
            if current is not None and (
                (current.get("status"), current.get("reason"), current.get("message"))
                == (status, reason, message)
            ):
                continue
            now = _now()
            since = now if current is None or current.get("status") != status else None
            condition = {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since or (current or {}).get("lastTransitionTime", now),
            }
            body = {"status": {"conditions": [condition]}}
            try:
                await self._patch(f"/api/v1/nodes/{node}/status", body, "strategic")
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("node %s: cannot set condition %s: %s", node, kind, e)

    async def _taints(
        self,
        standing: Standing,
        judged: dict[str, int],
        selected: int,
        nodes: dict[str, dict[str, Any]],
    ) -> None:
        taint = self.config.node_taint
        assert taint is not None

        def tainted(obj: dict[str, Any]) -> bool:
            return any(t.get("key") == taint.key for t in obj.get("spec", {}).get("taints") or [])

        cap = share_at_most(taint.max_share, selected)
        holding = {n for n, obj in nodes.items() if tainted(obj)}
        failing = sorted(
            (n for n, s in judged.items() if s > 0 and n in nodes),
            key=lambda n: (n not in holding, -judged[n], n),
        )
        keep = set(failing[:cap])
        if len(failing) > cap:
            log.warning(
                "%d nodes fail but nodeTaint.maxShare (%s of %d nodes) allows %d tainted",
                len(failing),
                taint.max_share,
                selected,
                cap,
            )
        for node in sorted(judged):
            obj = nodes.get(node)
            if obj is None or (node in keep) == (node in holding):
                continue
            await self._set_taint(node, obj, node in keep)

    async def _set_taint(self, node: str, obj: dict[str, Any], on: bool) -> None:
        taint = self.config.node_taint
        assert taint is not None
        path = f"/api/v1/nodes/{node}"
        for _ in range(PATCH_ATTEMPTS):
            taints = [
                t for t in obj.get("spec", {}).get("taints") or [] if t.get("key") != taint.key
            ]
            if on:
                taints.append({"key": taint.key, "effect": taint.effect})
            rv = obj["metadata"]["resourceVersion"]
            ops = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/spec/taints", "value": taints},
            ]
            try:
                await self._patch(path, ops, "json")
                return
            except ApiError as e:
                if e.status not in (409, 422):  # the test failed: the node changed meanwhile
                    log.warning("node %s: cannot change taint %s: %s", node, taint.key, e)
                    return
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("node %s: cannot change taint %s: %s", node, taint.key, e)
                return
            try:
                obj = await self.kube.get(path, dict)
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("node %s: cannot read it again: %s", node, e)
                return
        log.warning("node %s: taint %s not changed: the node kept changing", node, taint.key)
