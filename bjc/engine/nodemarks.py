"""Acting on what changed: the change metrics, node conditions and node taints.

When a node's job ends (`job_ended`, from bjc.engine.jobs; again when a late result
changes its verdict) its verdict goes to the cluster at once; when an execution ends
(and when a replica starts to lead, beside the takeover: bjc.engine.controller) `update`
brings everything in line with the report directory (bjc.reports.changes, computed by
bjc.reports.summary), which repairs whatever a crash, a failed patch or another writer
left:

- metrics: `bjc_execution_new_failures`, `bjc_execution_recoveries` per kept
  execution and `bjc_node_failure_streak` per node of the latest one;
- with `nodeCondition`: a condition of that type on each judged node's status,
  `True` (reason `CheckFailed`, the failure as message) while its job fails,
  `False` (reason `CheckSucceeded`) once it succeeds. A strategic-merge patch of
  `nodes/<node>/status` whose list item is keyed by the condition type, so other
  conditions are never touched; sent only when status, reason or message differ
  from what the node shows, and `lastTransitionTime` moves only with the status;
- with `nodeTaint`: the taint on failing nodes, on at most `maxShare` of the
  execution's nodes (when a job ends: while there is room; when an execution ends:
  nodes tainted already keep it first, then the longest streaks), removed once a node
  succeeds. A JSON patch of `spec.taints` guarded by a `test` of the
  resourceVersion, so a concurrent change to the node's taints is never overwritten
  (a conflict is read again and retried).

What a node shows is cached (`_Shown`): filled from one node list per `update`, kept
by the answers to bjc's own patches, so a job's end costs no read. Each node is synced
by one task at a time (a verdict arriving meanwhile is applied after it), at most
`CONCURRENCY` nodes at once.

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
import collections
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bjc.config.settings import Config, share_at_most
from bjc.engine.supervisor import SideWork
from bjc.kube.backoff import Backoff
from bjc.kube.client import ApiError, KubeClient
from bjc.reports import changes
from bjc.reports.execution import Execution
from bjc.reports.metrics import Metrics
from bjc.reports.summary import SummaryCache
from bjc.terminal import visible

log = logging.getLogger(__name__)

FAILED_REASON = "CheckFailed"
SUCCEEDED_REASON = "CheckSucceeded"
SUCCEEDED_MESSAGE = "the node's check job succeeded"
MAX_MESSAGE = 1024  # characters of a failure reason put into a condition's message
PATCH_ATTEMPTS = 5
CONCURRENCY = 8  # nodes patched at once

Refused = Callable[[str], Awaitable[None]]
Want = tuple[str, str, str]  # a condition's status, reason, message


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(reason: str) -> str:
    """A failure reason as a condition's message: job-controlled text (a termination
    message), so control characters are shown as escapes (`kubectl describe node`
    prints it to terminals), and cut to MAX_MESSAGE characters."""
    reason = visible(reason) or "the node's check job failed"
    return reason if len(reason) <= MAX_MESSAGE else reason[: MAX_MESSAGE - 1] + "\u2026"


def _want(failure: str | None) -> Want:
    if failure is None:
        return "False", SUCCEEDED_REASON, SUCCEEDED_MESSAGE
    return "True", FAILED_REASON, _message(failure)


class _Shown(msgspec.Struct):
    """What bjc knows a node shows: its condition of bjc's type, its taints."""

    condition: dict[str, Any] | None
    taints: list[dict[str, Any]]
    resource_version: str


class NodeMarks:
    def __init__(self, config: Config, kube: KubeClient, metrics: Metrics, root: Path) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.summaries = SummaryCache(root)
        self.on_refused: Refused = self._no_report
        self.work = SideWork(CONCURRENCY, backlog=1_000_000)  # owner: close()
        self._lock = asyncio.Lock()
        self._allowed: dict[str, bool] = {}  # "status" / "taint" -> probed permission
        self._probing = asyncio.Lock()
        self._shown: dict[str, _Shown] = {}
        self._wants: dict[str, Want] = {}  # the condition each judged node should show
        self._judged_in: dict[str, str] = {}  # node -> the execution its want comes from
        self._judgements: collections.Counter[str] = collections.Counter()  # job_ended calls
        self._tainting: set[str] = set()  # the nodes that should carry the taint
        self._syncing: set[str] = set()
        self._again: set[str] = set()  # a verdict arrived while the node was syncing
        self._synced: collections.Counter[str] = collections.Counter()  # patches per node
        self.patches = 0  # changes sent (tests, benchmarks), not the probes

    @staticmethod
    async def _no_report(message: str) -> None:
        return None

    @property
    def acting(self) -> bool:
        return self.config.node_condition is not None or self.config.node_taint is not None

    def job_ended(self, execution: Execution, node: str) -> None:
        """A node's job ended (or a late result arrived): show its verdict now."""
        job = execution.nodes[node]
        if not self.acting or job.status not in changes.JUDGED:
            return
        failure = changes.failure(job, job.result)
        self._wants[node] = _want(failure)
        self._judged_in[node] = execution.id
        self._judgements[node] += 1
        taint = self.config.node_taint
        if taint is not None:
            if failure is None:
                self._tainting.discard(node)
            elif node not in self._tainting:
                cap = share_at_most(taint.max_share, len(execution.nodes))
                if sum(1 for n in self._tainting if n in execution.nodes) < cap:
                    self._tainting.add(node)
        self._sync_soon(node)

    async def update(self) -> None:
        """Bring metrics, conditions and taints in line with the report directory.

        A node whose job ends (or whose late result arrives) while this reads keeps the
        verdict `job_ended` gave it: the directory read may be older than that.
        """
        async with self._lock:
            seen = self._judgements.copy()
            steps = await self.summaries.standings()
            for verdicts, change, _ in steps:
                self.metrics.set_changes(
                    verdicts.id, len(change.newly_failing), len(change.recovered)
                )
            if not steps:
                if self.acting:  # the first execution's jobs need what the nodes show
                    await self._refresh(seen)
                return
            latest, _, standing = steps[-1]
            selected = set(latest.nodes)
            self.metrics.set_streaks({n: standing.streaks.get(n, 0) for n in selected})
            if not self.acting:
                return
            await self.work.drain()  # no patch of ours is older than the list
            await self._refresh(seen)
            judged = {
                n: s
                for n, s in standing.streaks.items()
                if n in selected
                and self._judged_in.get(n, "") <= latest.id  # (else a newer execution's)
                and self._judgements[n] == seen[n]
            }
            for node, streak in judged.items():
                self._wants[node] = _want(standing.reasons.get(node, "") if streak > 0 else None)
                self._judged_in[node] = latest.id
            if self.config.node_taint is not None:
                self._choose_tainted(judged, len(selected))
                log.debug("execution %s: taint on %s", latest.id, sorted(self._tainting))
            for node in sorted(judged):
                self._sync_soon(node)
            await self.work.drain()

    async def close(self, grace: float = 5.0) -> None:
        """Give the patches under way `grace` seconds, then stop (shutdown)."""
        try:
            async with asyncio.timeout(grace):
                await self.work.drain()
        except TimeoutError:
            log.warning("node patches not finished at shutdown: the next leader makes them")
        await self.work.close()

    async def _refresh(self, seen: collections.Counter[str]) -> None:
        """What every node shows, from one list (a node patched meanwhile keeps ours);
        which nodes hold the taint (a node judged since `seen` keeps its verdict's)."""
        before = self._synced.copy()
        items, _ = await self.kube.list("/api/v1/nodes", dict)
        shown: dict[str, _Shown] = {}
        for obj in items:
            name = obj["metadata"]["name"]
            old = self._shown.get(name)
            if old is not None and self._synced[name] != before[name]:
                shown[name] = old  # patched meanwhile: what our patch returned is newer
            else:
                shown[name] = self._show(obj)
        self._shown = shown
        if self.config.node_taint is not None:  # until judged, tainted nodes keep it
            key = self.config.node_taint.key
            meanwhile = {n for n in self._judgements if self._judgements[n] != seen[n]}
            self._tainting = {
                n for n, s in self._shown.items() if _has(s.taints, key) and n not in meanwhile
            } | (self._tainting & meanwhile)

    def _show(self, obj: dict[str, Any]) -> _Shown:
        kind = None if self.config.node_condition is None else self.config.node_condition.type
        conditions = obj.get("status", {}).get("conditions") or []
        return _Shown(
            condition=next((c for c in conditions if c.get("type") == kind), None),
            taints=obj.get("spec", {}).get("taints") or [],
            resource_version=obj["metadata"].get("resourceVersion", ""),
        )

    def _choose_tainted(self, judged: dict[str, int], selected: int) -> None:
        """Which failing nodes carry the taint: those that have it first, then the longest
        streaks, never more than the share of `selected` nodes (counting untouched ones)."""
        taint = self.config.node_taint
        assert taint is not None
        holding = self._tainting
        untouched = {n for n in holding if n not in judged and n in self._shown}
        cap = max(0, share_at_most(taint.max_share, selected) - len(untouched))
        failing = sorted(
            (n for n, s in judged.items() if s > 0 and n in self._shown),
            key=lambda n: (n not in holding, -judged[n], n),
        )
        if len(failing) > cap:
            log.warning(
                "%d nodes fail but nodeTaint.maxShare (%s of %d nodes) allows %d tainted",
                len(failing),
                taint.max_share,
                selected,
                cap,
            )
        self._tainting = untouched | set(failing[:cap])

    def _sync_soon(self, node: str) -> None:
        if node in self._syncing:
            self._again.add(node)
            return
        self._syncing.add(node)
        if not self.work.submit(lambda: self._sync(node)):
            self._syncing.discard(node)  # not reachable with the backlog's size

    async def _sync(self, node: str) -> None:
        try:
            while True:
                self._again.discard(node)
                await self._apply(node)
                if node not in self._again:
                    return
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("node %s: cannot show its verdict: %s", node, e)
        finally:
            self._syncing.discard(node)

    async def _apply(self, node: str) -> None:
        """Make the node show what it should (one node at a time: see `_sync`)."""
        want = self._wants.get(node)
        if want is None:
            return
        shown = self._shown.get(node)
        if shown is None:  # not in the last list: a new node, or the feature just turned on
            self._patched(node, await self.kube.get(f"/api/v1/nodes/{node}", dict))
            shown = self._shown[node]
        condition = self.config.node_condition
        if condition is not None and await self._may("status", node):
            await self._set_condition(node, condition.type, shown, want)
            shown = self._shown[node]  # a patch changed its resourceVersion
        taint = self.config.node_taint
        if taint is not None and await self._may("taint", node):
            on = node in self._tainting
            if _has(shown.taints, taint.key) != on:
                await self._set_taint(node, shown, on)

    async def _may(self, what: str, node: str) -> bool:
        """Whether patches of `what` are allowed: probed once, on `node`, with an empty patch."""
        if what in self._allowed:
            return self._allowed[what]
        async with self._probing:
            if what in self._allowed:
                return self._allowed[what]
            path = f"/api/v1/nodes/{node}" + ("/status" if what == "status" else "")
            try:
                await self._patch(path, {}, "strategic")
            except ApiError as e:
                if e.status != 403:
                    raise
                key = "nodeCondition" if what == "status" else "nodeTaint"
                resource = "nodes/status" if what == "status" else "nodes"
                why = (
                    f"{key} is configured but the controller may not patch {resource} (add "
                    f"the kustomize component manifests/components/node-conditions): {e.message}"
                )
                log.error("%s; %s stays off until the controller restarts", why, key)
                self._allowed[what] = False
                await self.on_refused(why)
                return False
            self._allowed[what] = True
            return True

    async def _patch(self, path: str, body: Any, kind: str) -> dict[str, Any]:
        """One patch, retried on 429, 5xx and lost connections (patches are idempotent)."""
        backoff = Backoff(0.2, 5.0)
        for attempt in range(PATCH_ATTEMPTS):
            try:
                obj = await self.kube.patch(path, body, kind)
                self.patches += bool(body)  # the probes are not counted
                return obj
            except ApiError as e:
                if not e.retryable or attempt == PATCH_ATTEMPTS - 1:
                    raise
            except (aiohttp.ClientError, TimeoutError):
                if attempt == PATCH_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(backoff.next_delay())
        raise AssertionError("unreachable")

    def _patched(self, node: str, obj: dict[str, Any]) -> None:
        """The node as a patch or a read of ours found it."""
        self._shown[node] = self._show(obj)
        self._synced[node] += 1

    async def _set_condition(self, node: str, kind: str, shown: _Shown, want: Want) -> None:
        current = shown.condition
        if current is not None and (
            (current.get("status"), current.get("reason"), current.get("message")) == want
        ):
            return
        status, reason, message = want
        now = _now()
        moved = current is None or current.get("status") != status
        condition = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now if moved else (current or {}).get("lastTransitionTime", now),
        }
        body = {"status": {"conditions": [condition]}}
        self._patched(node, await self._patch(f"/api/v1/nodes/{node}/status", body, "strategic"))

    async def _set_taint(self, node: str, shown: _Shown, on: bool) -> None:
        taint = self.config.node_taint
        assert taint is not None
        path = f"/api/v1/nodes/{node}"
        for _ in range(PATCH_ATTEMPTS):
            taints = [t for t in shown.taints if t.get("key") != taint.key]
            if on:
                taints.append({"key": taint.key, "effect": taint.effect})
            rv = shown.resource_version
            ops = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/spec/taints", "value": taints},
            ]
            try:
                self._patched(node, await self._patch(path, ops, "json"))
                log.debug("node %s: taint %s %s", node, taint.key, "added" if on else "removed")
                return
            except ApiError as e:
                if e.status not in (409, 422):  # the test failed: the node changed meanwhile
                    raise
            obj = await self.kube.get(path, dict)
            self._patched(node, obj)
            shown = self._shown[node]
            if _has(shown.taints, taint.key) == on:
                return
        log.warning("node %s: taint %s not changed: the node kept changing", node, taint.key)


def _has(taints: list[dict[str, Any]], key: str) -> bool:
    return any(t.get("key") == key for t in taints)
