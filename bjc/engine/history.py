"""The executions of the report history, in memory: load, rebuild, add, prune, retire.

The callback API checks every request against the kept executions, so they are
held in memory (`executions`) rather than read from disk per request. On start,
and when a replica becomes leader, the history is read again from the report
directory: only executions whose files changed since the last read (by
`ReportStore.signature`) are decoded again, and their metrics are rebuilt from the
stored state and results. A new execution is added here, which retires the one
before it and prunes the oldest beyond `reportHistory`.

A ConfigMap trigger value is decided once: the execution it started records it in
its first state snapshot (written before any job pod exists), and every outcome is
also recorded in the report root (`.bjc-trigger.json`, the last value decided), so
`decision` gives a leader that takes over the answer an earlier leader decided but
could not write.

Deliberately not here: starting or dispatching executions (`bjc.engine.controller`), and
what a finished pod means (`bjc.engine.jobs`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Collection

import msgspec

from bjc.config.settings import Config
from bjc.reports.execution import (
    Execution,
    ExecutionState,
    RetiredExecution,
    TriggerOutcome,
    TriggerRecord,
    decode_state,
    decode_trigger_record,
    encode_trigger_record,
)
from bjc.reports.metrics import Metrics
from bjc.reports.results import apply_result, decode_result
from bjc.reports.store import ReportStore

log = logging.getLogger(__name__)


class History:
    def __init__(self, config: Config, store: ReportStore, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.executions: dict[str, Execution | RetiredExecution] = {}
        self.current: Execution | None = None  # the one dispatched last
        # what each loaded execution was read from (see ReportStore.signature)
        self._signatures: dict[str, tuple[int, ...]] = {}
        self._lock = asyncio.Lock()  # loading vs. adding/pruning executions

    def active(self, execution_id: str) -> Execution | None:
        """The execution if it is kept and not retired (its jobs may still change)."""
        execution = self.executions.get(execution_id)
        return execution if isinstance(execution, Execution) else None

    # --- loading ---------------------------------------------------------------
    async def load(self) -> list[Execution]:
        """Read the kept executions from disk and rebuild their metrics.

        Returns the unfinished ones, oldest first. Unchanged executions stay as they are.
        """
        async with self._lock:
            loaded: dict[str, Execution | RetiredExecution] = {}
            unfinished: list[Execution] = []
            previous: RetiredExecution | None = None
            # oldest first: "latest" ends right
            for execution_id in await self.store.list_executions():
                # the signature before reading: a change made meanwhile shows next time
                signature = await self.store.signature(execution_id)
                known = self.executions.get(execution_id)
                if known is None or self._signatures.get(execution_id) != signature:
                    if known is not None:
                        self.metrics.remove_execution(execution_id)
                    known = await self._read(execution_id, previous)
                    if known is None:
                        continue
                    self._signatures[execution_id] = signature
                loaded[execution_id] = known
                if isinstance(known, RetiredExecution):
                    previous = known
                elif not known.done:
                    unfinished.append(known)
            # what a killed leader logged and never wrote as files (leading only)
            await self.store.recover_logs(list(loaded))
            for execution_id in set(self.executions) - set(loaded):
                self.metrics.remove_execution(execution_id)
                self._signatures.pop(execution_id, None)
            self.executions = loaded
            if loaded:
                newest = max(loaded)
                self.metrics.set_current_execution(newest)
                self.metrics.set_pods(loaded[newest].pods_started)
            return unfinished

    async def _read(
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
                self.metrics.record_job(state.id, node, bool(job.error), job.duration_ms)
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
            apply_result(self.metrics, execution_id, node, result)
        except (msgspec.DecodeError, KeyError, ValueError) as e:
            # e.g. a gauge's labels changed in the config since the result was stored
            log.warning("execution %s node %s: result not restored: %s", execution_id, node, e)

    async def replay_results(self, suffixes: Collection[str]) -> None:
        """Expose the stored results of every kept execution for new or changed gauges."""
        for execution_id, execution in sorted(self.executions.items()):
            results = await self.store.read_results(execution_id, execution.nodes)
            for node, body in results.items():
                self._restore_result(execution_id, node, body, suffixes)

    def last_started(self) -> dt.datetime | None:
        """When the newest execution of the history started (None: no history)."""
        started = max((e.started for e in self.executions.values()), default=None)
        return None if started is None else dt.datetime.fromtimestamp(started, dt.UTC)

    # --- trigger decisions -----------------------------------------------------------
    async def decision(self, value: str) -> TriggerOutcome | None:
        """What trigger `value` was decided to do, if it was (None: not yet decided)."""
        for execution in self.executions.values():
            if execution.trigger == value:
                return TriggerOutcome(execution_id=execution.id)
        try:
            data = await self.store.read_trigger()
            record = decode_trigger_record(data) if data is not None else None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("the last trigger decision is unreadable: %s", e)
            return None
        return record.outcome if record is not None and record.value == value else None

    async def record_decision(self, value: str, outcome: TriggerOutcome) -> None:
        """Record `outcome` as the decision of trigger `value` (a write that fails is logged)."""
        try:
            await self.store.write_trigger(encode_trigger_record(TriggerRecord(value, outcome)))
        except OSError as e:
            log.warning("cannot record the decision of trigger %r: %s", value, e)

    # --- adding ----------------------------------------------------------------
    async def add(
        self, execution_id: str, nodes: list[str], *, tokens: bool, trigger: str = ""
    ) -> Execution:
        """A new current execution on disk and in memory; the one before it retires.

        Its directory and first state snapshot (with `trigger`) are written and waited
        for: an OSError (the report directory is not writable) leaves nothing in memory.
        """
        async with self._lock:
            execution = Execution.new(
                execution_id, nodes, self.store, tokens=tokens, trigger=trigger, save=False
            )
            await self.store.ensure_execution(execution_id)
            await execution.write_snapshot()
            try:  # only now, so that `latest` never names an execution without a state
                await self.store.create_execution(execution_id)
            except OSError as e:  # the execution exists: it runs all the same
                log.warning("execution %s: cannot point `latest` at it: %s", execution_id, e)
            previous = self.current
            self.executions[execution_id] = self.current = execution
            if previous is not None and previous.done and previous.id in self.executions:
                self.executions[previous.id] = previous.retire(self._newest_retired())
            self.metrics.set_current_execution(execution_id)
            self.metrics.set_progress(execution_id, 0, len(nodes))
            await self._prune()
        self.metrics.set_execution_failed(execution_id, False)
        return execution

    def _newest_retired(self) -> RetiredExecution | None:
        retired = [e for e in self.executions.values() if isinstance(e, RetiredExecution)]
        return max(retired, key=lambda e: e.id, default=None)

    async def _prune(self) -> None:
        for execution_id in await self.store.prune(self.config.kept_executions):
            self.executions.pop(execution_id, None)
            self.metrics.remove_execution(execution_id)
            log.info("execution %s pruned from the history", execution_id)
