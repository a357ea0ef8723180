"""Every Prometheus series bjc exposes: the `Metrics` facade the controller writes to.

Why this exists: the Go controller's metrics are a Prometheus compatibility surface -
dashboards and alerts query them by name, label and help text - so their names and
help texts are declared here once, byte for byte, next to bjc's own extras (`bjc_*`,
the leader gauge, the process metrics). `Metrics` builds them from the config (the
configured result gauges, `latestMetricsLabel`, the series limits), applies a reloaded
config, and renders them all from one `aioprometheus.Registry`. The per-execution
series are kept in bjc.reports.series (the series store, and why it exists);
bjc.web.metrics serves them on `/metrics`.

What it deliberately does not do: it decides nothing about executions (the controller
calls `remove_execution` when an execution is pruned and replays kept results after a
restart), validates no config beyond what it needs to build its series (bjc.config.settings
does that), and renders only the Prometheus text format 0.0.4 - the only format
aioprometheus 23.12 negotiates, and the format Go's promhttp serves by default. No
OpenMetrics, no protobuf. Everything runs on the event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import operator
import os
import resource
import sys
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

import aioprometheus
from aioprometheus import Counter, Gauge, Registry
from aioprometheus.formats.text import TEXT_CONTENT_TYPE, TextFormatter

import bjc
from bjc.config.settings import (
    EXECUTION_ID_LABEL,
    NODE_LABEL,
    RESERVED_GAUGE_SUFFIXES,
    Config,
    GaugeConfig,
    is_valid_label_name,
    is_valid_metric_name,
)
from bjc.reports.series import Block as _Block
from bjc.reports.series import (
    Chunk,
    ComputedCounter,
    ComputedGauge,
    SeriesFamily,
    SeriesKey,
)
from bjc.reports.series import assemble as _assemble
from bjc.reports.series import render_simple as _render_simple

__all__ = ["LATEST", "POD_PHASES", "Metrics"]

LATEST = "latest"

# Names and help texts of the Go controller (github.com/bakito/batch-job-controller,
# pkg/metrics/metrics.go), kept byte for byte.
INFO_NAME = "com_github_bakito_batch_job_controller"
INFO_HELP = "information about github.com/bakito/batch-job-controller"
CURRENT_EXECUTION_HELP = "The current execution ID"
PODS_HELP = "The number of pods started for the last execution"
PROCESSING_HELP = "Node with processing error, 1: has error / 0: no error"
DURATION_HELP = "Execution Duration in milliseconds"

# The leader gauge of client-go / controller-runtime, which the Go controller exposes.
LEADER_NAME = "leader_election_master_status"
LEADER_HELP = (
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease. Please make sure "
    "to group by name."
)

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


class _ProcessStats:
    """Process metrics from /proc (Linux), read at scrape time; elsewhere only CPU time."""

    def __init__(self) -> None:
        self._page_size = resource.getpagesize()
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError, AttributeError):
            self._ticks = 100.0
        self._boot_time: float | None = None
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self._boot_time = float(line.split()[1])
        except OSError:
            pass

    @staticmethod
    def _stat() -> list[bytes] | None:
        try:
            with open("/proc/self/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def resident_memory(self) -> float | None:
        fields = self._stat()
        return None if fields is None else float(fields[21]) * self._page_size

    def virtual_memory(self) -> float | None:
        fields = self._stat()
        return None if fields is None else float(fields[20])

    def start_time(self) -> float | None:
        fields = self._stat()
        if fields is None or self._boot_time is None:
            return None
        return float(fields[19]) / self._ticks + self._boot_time

    @staticmethod
    def cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def open_fds() -> float | None:
        try:
            return float(len(os.listdir("/proc/self/fd")))
        except OSError:
            return None

    @staticmethod
    def max_fds() -> float | None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else float(soft)


def _register_process_metrics(registry: Registry) -> None:
    """The standard process_* series (as client_golang and prometheus_client name them)."""
    proc = _ProcessStats()
    ComputedCounter(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        proc.cpu_seconds,
        registry,
    )
    ComputedGauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        proc.resident_memory,
        registry,
    )
    ComputedGauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        proc.virtual_memory,
        registry,
    )
    ComputedGauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        proc.start_time,
        registry,
    )
    ComputedGauge("process_open_fds", "Number of open file descriptors.", proc.open_fds, registry)
    ComputedGauge(
        "process_max_fds", "Maximum number of open file descriptors.", proc.max_fds, registry
    )


class _ResultGauge:
    """A configured gauge (`metrics.gauges.<suffix>`): its family and key builder."""

    __slots__ = (
        "blocks",
        "family",
        "latest_separate",
        "make_key",
        "names",
        "node_at",
        "size",
        "spec",
    )

    def __init__(
        self, family: SeriesFamily, names: tuple[str, ...], spec: tuple[str, tuple[str, ...]]
    ) -> None:
        self.spec = spec  # (help, labels) as configured
        self.family = family
        self.blocks = family.blocks
        self.size = len(names)
        self.names = names  # the label names the job reports, configured order
        fields = family.key_fields
        # make_key(labels, node, execution_id) -> the series key in `fields` order. Not
        # interned: a key that is held already is only looked up; `_put_results` interns
        # a key when it stores it.
        self.make_key: Callable[[Mapping[str, str], str, str], SeriesKey]
        if fields == (*names, NODE_LABEL):  # the usual layout: configured labels, node, executionID
            if not names:
                self.make_key = lambda labels, node, execution_id: (node,)
            elif len(names) == 1:
                (a,) = names
                self.make_key = lambda labels, node, execution_id: (labels[a], node)
            elif len(names) == 2:
                a, b = names
                self.make_key = lambda labels, node, execution_id: (labels[a], labels[b], node)
            else:
                get = operator.itemgetter(*names)
                self.make_key = lambda labels, node, execution_id: (*get(labels), node)
        else:  # node and/or executionID placed among the configured labels

            def make_key(labels: Mapping[str, str], node: str, execution_id: str) -> SeriesKey:
                return tuple(
                    node
                    if f == NODE_LABEL
                    else execution_id
                    if f == EXECUTION_ID_LABEL
                    else labels[f]
                    for f in fields
                )

            self.make_key = make_key
        # Only when executionID is part of the key does "latest" need a key of its own.
        self.latest_separate = EXECUTION_ID_LABEL in fields
        self.node_at = fields.index(NODE_LABEL)  # where a key holds the node name

    def conform(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The configured labels only, a missing one as "" (the Go controller's rule)."""
        return {name: labels.get(name, "") for name in self.names}

    def key(self, labels: Mapping[str, str], node: str, execution_id: str) -> SeriesKey:
        """The series key of reported `labels` (configured ones only, a missing one "")."""
        if len(labels) != self.size:
            labels = self.conform(labels)
        try:
            return self.make_key(labels, node, execution_id)
        except KeyError:
            return self.make_key(self.conform(labels), node, execution_id)

    def keys(
        self, all_labels: list[Mapping[str, str]], node: str, execution_id: str
    ) -> list[SeriesKey]:
        """`key` of each of `all_labels` (the entries of one result)."""
        make = self.make_key
        try:
            return [make(labels, node, execution_id) for labels in all_labels]
        except KeyError:  # a configured label missing somewhere: "" (labels not configured
            # are ignored by make_key anyway)
            return [self.key(labels, node, execution_id) for labels in all_labels]


#: The series of one result (`Metrics.result_series`), one item per configured gauge:
#: suffix, gauge, and for each entry its key, its labels as reported, its value.
_ResultSeries = list[
    tuple[str, _ResultGauge, list[SeriesKey], list[Mapping[str, str]], list[float]]
]


_intern = sys.intern


def _interned(key: SeriesKey) -> SeriesKey:
    """A key to keep: its strings interned (label values repeat across nodes and
    executions; each decoded callback would otherwise keep its own copies alive).

    Unpacked for the usual lengths (the node and up to two configured labels):
    `tuple(map(sys.intern, key))` costs 2.5 times as much, a third of `set_result`'s
    time for a new series (benchmarks/bench_metrics.py)."""
    match key:
        case (a, b, c):
            return (_intern(a), _intern(b), _intern(c))
        case (a, b):
            return (_intern(a), _intern(b))
        case (a,):
            return (_intern(a),)
    return tuple(map(_intern, key))


class _SeriesCount:
    """Result series of one execution, per node and in all (for the callback limits)."""

    __slots__ = ("by_node", "total")

    def __init__(self) -> None:
        self.by_node: dict[str, int] = {}
        self.total = 0

    def add(self, node: str, per_node: int, per_execution: int) -> bool:
        """Count one more series of `node`; False (nothing counted) past a limit."""
        held = self.by_node.get(node, 0)
        if held >= per_node or self.total >= per_execution:
            return False
        self.by_node[node] = held + 1
        self.total += 1
        return True


class Metrics:
    """All series of one bjc controller (the Go controller's and bjc's) in one Registry.

    Naming of bjc's extras: process metrics and the leader gauge use the standard names
    the Go controller also exposes (`process_*`, `leader_election_master_status`); the
    other extras are `bjc_*` so they can never collide with configured gauges under the
    Go metric prefix.
    """

    def __init__(self, config: Config, version: str = bjc.__version__) -> None:
        self.registry = Registry()
        reg = self.registry
        prefix = config.metrics.prefix
        self.prefix = prefix
        self.latest = bool(config.latest_metrics_label)
        self._hot: frozenset[str] = frozenset((LATEST,))
        # Result series per execution and node, kept for the executions callbacks write
        # to (built from the blocks on demand, dropped when the current one changes).
        self._counts: dict[str, _SeriesCount] = {}
        self._max_per_node = config.max_series_per_node
        self._max_per_execution = config.max_series_per_execution

        def name_for(suffix: str) -> str:
            name = f"{prefix}_{suffix}"
            if not is_valid_metric_name(name):
                raise ValueError(f"metrics.prefix: {name!r} is not a valid metric name")
            return name

        # --- the Go controller's series ---
        self._current_execution = Gauge(
            name_for("current_execution_id"), CURRENT_EXECUTION_HELP, registry=reg
        )
        self._pods = Gauge(name_for("pods"), PODS_HELP, registry=reg)
        self._processing = SeriesFamily(
            name_for("processing"), PROCESSING_HELP, (NODE_LABEL, EXECUTION_ID_LABEL), reg
        )
        self._duration = SeriesFamily(
            name_for("duration"), DURATION_HELP, (NODE_LABEL, EXECUTION_ID_LABEL), reg
        )
        self._info = Gauge(INFO_NAME, INFO_HELP, registry=reg)
        self.version = version
        self._set_info(config)

        # --- bjc's extras ---
        self._progress_finished = SeriesFamily(
            "bjc_execution_finished_nodes",
            "Nodes of the execution whose job pod has finished (or was given up)",
            (EXECUTION_ID_LABEL,),
            reg,
        )
        self._progress_nodes = SeriesFamily(
            "bjc_execution_nodes", "Nodes selected for the execution", (EXECUTION_ID_LABEL,), reg
        )
        self._failed = SeriesFamily(
            "bjc_execution_failed",
            "1 when the execution stopped early because maxFailures nodes failed, else 0",
            (EXECUTION_ID_LABEL,),
            reg,
        )
        self._attempts = SeriesFamily(
            "bjc_job_attempts",
            "Pods started for the node's job (jobRetries); only nodes retried at least once",
            (NODE_LABEL, EXECUTION_ID_LABEL),
            reg,
        )
        self._progress_ratio = SeriesFamily(
            "bjc_execution_progress",
            "Finished share of the execution's nodes, 0 to 1 (1 when it has no nodes)",
            (EXECUTION_ID_LABEL,),
            reg,
        )
        self._current_info = Gauge(
            "bjc_current_execution_info",
            "The current execution, as a label (value 1): lets alerts select its series",
            registry=reg,
        )
        self._pods_by_phase = Gauge(
            "bjc_job_pods", "Job pods of this controller by phase", registry=reg
        )
        self._pod_phases: dict[str, int] | None = None  # set, not yet in the gauge
        self.set_pods_by_phase({})
        self._set_pods_by_phase()
        self._callbacks = Counter(
            "bjc_callback_requests_total",
            "Callback API requests by route and HTTP status code",
            registry=reg,
        )
        # counted per request, added to _callbacks at the next scrape (count_callback)
        self._callback_counts: dict[tuple[str, int], int] = {}
        self._stale_callbacks = Counter(
            "bjc_stale_callbacks_total",
            "Callbacks refused (409) because they came from an attempt of a node's job that "
            "is not the current one, by route and reason (retried, given_up, not_started)",
            registry=reg,
        )
        self._leader = Gauge(LEADER_NAME, LEADER_HELP, registry=reg)
        self._leader_labels = {"name": f"{config.name}-leader-election"}
        self.set_leader(False)
        self._skipped = Counter(
            "bjc_skipped_triggers_total",
            "Execution triggers skipped: one was still running (concurrencyPolicy Forbid), "
            "or no execution id was free within a minute of the clock",
            registry=reg,
        )
        self._skipped.set({}, 0)
        self._start_failures = Counter(
            "bjc_execution_start_failures_total",
            "Executions that could not start: their report directory could not be written",
            registry=reg,
        )
        self._start_failures.set({}, 0)
        self._suspended = Gauge(
            "bjc_suspended",
            "1 while the controller is suspended (no new executions start), else 0",
            registry=reg,
        )
        self._suspended.set({}, 0)

        self._config_problems = Gauge(
            "bjc_config_problems",
            "Problems of a reloaded configuration that was refused (the previous one runs), "
            "by config key",
            registry=reg,
        )
        self._config_reload_ok = Gauge(
            "bjc_config_last_reload_successful",
            "1 when the last ConfigMap change was applied (or none was made), 0 when refused",
            registry=reg,
        )
        self._config_reload_ok.set({}, 1)
        self._report_directory_writable = Gauge(
            "bjc_report_directory_writable",
            "0 from a failed write to the report directory (full, read-only, I/O error) "
            "until a write succeeds again, else 1",
            registry=reg,
        )
        self._report_directory_writable.set({}, 1)
        self._new_failures = SeriesFamily(
            "bjc_execution_new_failures",
            "Nodes that failed in the execution and not in the finished execution before it",
            (EXECUTION_ID_LABEL,),
            reg,
        )
        self._recoveries = SeriesFamily(
            "bjc_execution_recoveries",
            "Nodes that failed in the finished execution before and succeeded in this one",
            (EXECUTION_ID_LABEL,),
            reg,
        )
        self._streak = Gauge(
            "bjc_node_failure_streak",
            "Finished executions in a row, up to the latest, in which the node's job failed "
            "(0: it succeeded when last judged); one series per node of the latest execution",
            registry=reg,
        )
        _register_process_metrics(reg)

        # Configured gauges last, so that a name clash names the offending config key.
        self._name_for = name_for
        self._results: dict[str, _ResultGauge] = {}
        taken = set(reg.collectors)
        for suffix, gauge in config.metrics.gauges.items():
            self._check_result_gauge(suffix, gauge, taken)
            self._add_result_gauge(suffix, gauge)
        self._index_results()

    def _check_result_gauge(self, suffix: str, gauge: GaugeConfig, taken: Container[str]) -> None:
        """Raise ValueError naming the key when `metrics.gauges.<suffix>` cannot be exposed."""
        key = f"metrics.gauges.{suffix}"
        if suffix in RESERVED_GAUGE_SUFFIXES:
            raise ValueError(
                f"{key}: the metric name {suffix!r} is not allowed, it is one of the "
                f"reserved names {sorted(RESERVED_GAUGE_SUFFIXES)}"
            )
        labels = list(gauge.labels)
        for label in labels:
            if not is_valid_label_name(label):
                raise ValueError(f"{key}.labels: {label!r} is not a valid label name")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{key}.labels: duplicate label names in {labels}")
        name = self._name_for(suffix)
        if name in taken:
            raise ValueError(f"{key}: metric {name} is already exposed by bjc")

    def _add_result_gauge(self, suffix: str, gauge: GaugeConfig) -> None:
        labels = list(gauge.labels)
        # Go's enrichLabels: node and executionID appended unless configured.
        order = labels + [n for n in (NODE_LABEL, EXECUTION_ID_LABEL) if n not in labels]
        family = SeriesFamily(self._name_for(suffix), gauge.help, order, self.registry)
        reported = tuple(n for n in labels if n not in (NODE_LABEL, EXECUTION_ID_LABEL))
        self._results[suffix] = _ResultGauge(family, reported, (gauge.help, tuple(labels)))

    def _index_results(self) -> None:
        self.result_suffixes = frozenset(self._results)
        self._per_execution: tuple[SeriesFamily, ...] = (
            self._processing,
            self._duration,
            *(g.family for g in self._results.values()),
            self._progress_finished,
            self._progress_nodes,
            self._progress_ratio,
            self._failed,
            self._attempts,
            self._new_failures,
            self._recoveries,
        )

    def _set_info(self, config: Config) -> None:
        self._info.values.clear()
        self._info.set(
            {
                "version": self.version,
                "name": config.name,
                "prefix": self.prefix,
                "poolSize": str(config.pod_pool_size),
                "reportHistory": str(config.report_history),
                "cron": config.cron_expression,
            },
            1,
        )

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a reloaded config: configured gauges, `latestMetricsLabel`, the info series.

        A gauge added, or changed in help or labels, starts without series (it returns
        their suffixes, so the caller can replay stored results); a removed one goes
        with its series. Raises ValueError, changing nothing, when a gauge cannot be
        exposed. The prefix is fixed for the life of the process.
        """
        wanted = config.metrics.gauges
        fresh = [
            suffix
            for suffix, gauge in wanted.items()
            if suffix not in self._results
            or self._results[suffix].spec != (gauge.help, tuple(gauge.labels))
        ]
        going = [suffix for suffix in self._results if suffix not in wanted or suffix in fresh]
        taken = set(self.registry.collectors) - {self._results[s].family.name for s in going}
        for suffix in fresh:
            self._check_result_gauge(suffix, wanted[suffix], taken)
        for suffix in going:
            self.registry.deregister(self._results.pop(suffix).family.name)
        for suffix in fresh:
            self._add_result_gauge(suffix, wanted[suffix])
        self._index_results()
        if self.latest and not config.latest_metrics_label:
            for family in self._per_execution:
                family.remove(LATEST)
        self.latest = bool(config.latest_metrics_label)
        self._set_info(config)
        return fresh

    # --- the Go controller's series ---

    def set_current_execution(self, execution_id: str) -> None:
        """`<prefix>_current_execution_id` = the id as a number, and
        `bjc_current_execution_info{executionID}` = 1 (only this execution's series).

        An id with seconds (`yyyyMMddHHmmss`) has them as hundredths of its minute's
        number (`202612050847.3`), so the gauge orders ids as their text does.
        Its blocks stay hot (not frozen at scrapes), as do the "latest" ones.
        """
        try:
            minute, seconds = int(execution_id[:12]), int(execution_id[12:] or 0)
        except ValueError:
            raise ValueError(f"execution id {execution_id!r} is not a number") from None
        value = minute + seconds / 100 if seconds else minute
        self._current_execution.set({}, value)
        self._current_info.values.clear()
        self._current_info.set({EXECUTION_ID_LABEL: execution_id}, 1)
        self._hot = frozenset((execution_id, LATEST))
        self._counts = {k: v for k, v in self._counts.items() if k == execution_id}

    def set_pods(self, count: int) -> None:
        """`<prefix>_pods`: pods started in the last execution."""
        self._pods.set({}, count)

    def set_processing(self, execution_id: str, node: str, value: float) -> None:
        """`<prefix>_processing{node,executionID}`: 1 error / 0 ok."""
        key = (node,)
        value = float(value)
        self._processing.put(execution_id, key, value)
        if self.latest:
            self._processing.put(LATEST, key, value)

    def record_job(
        self, execution_id: str, node: str, failed: bool, duration_ms: float | None
    ) -> None:
        """A finished job: `processing` (1 failed, 0 ok) and, when known, its `duration`."""
        self.set_processing(execution_id, node, 1.0 if failed else 0.0)
        if duration_ms is not None:
            self.set_duration(execution_id, node, duration_ms)

    def set_duration(self, execution_id: str, node: str, ms: float) -> None:
        """`<prefix>_duration{node,executionID}`: job pod run time in milliseconds."""
        key = (node,)
        ms = float(ms)
        self._duration.put(execution_id, key, ms)
        if self.latest:
            self._duration.put(LATEST, key, ms)

    def set_result(
        self,
        execution_id: str,
        node: str,
        suffix: str,
        labels: Mapping[str, str],
        value: float,
    ) -> None:
        """Set `<prefix>_<suffix>{<configured labels>,node,executionID}`.

        Raises KeyError for a suffix that is not configured. Labels are taken as the
        Go controller takes them: a configured label that is missing gets "", labels
        that are not configured are ignored, and `node` / `executionID` always come
        from the arguments. Label values must be strings (the callback decodes them
        as such).
        """
        try:
            gauge = self._results[suffix]
        except KeyError:
            raise KeyError(f"{suffix!r} is not a configured gauge (metrics.gauges)") from None
        # _put_results for one series, without its lists (the per-series API of the
        # metrics benchmark, and of reloaded gauges)
        key = gauge.key(labels, node, execution_id)
        value = float(value)
        block = gauge.blocks.get(execution_id)
        if block is None or block.series is None:
            block = gauge.family.writable(execution_id)
        series: dict[SeriesKey, float] = block.series  # type: ignore[assignment]
        if key in series:
            series[key] = value
        else:
            counts = self._counts.get(execution_id)
            if counts is not None and not counts.add(
                node, self._max_per_node, self._max_per_execution
            ):
                return
            key = _interned(key)
            series[key] = value
        block.text = None
        if self.latest:
            self._put_latest(gauge, node, [key], [labels], [value], None)

    def _put_results(
        self,
        gauge: _ResultGauge,
        execution_id: str,
        node: str,
        keys: list[SeriesKey],
        all_labels: list[Mapping[str, str]],
        values: list[float],
    ) -> None:
        """Set the series `keys` of one gauge (their labels as reported, their values).

        The hot path of every callback: one block lookup per gauge of a result, the
        series of a known key set without a call each (SeriesFamily.put inlined).
        """
        block = gauge.blocks.get(execution_id)
        if block is None or block.series is None:
            block = gauge.family.writable(execution_id)
        series: dict[SeriesKey, float] = block.series  # type: ignore[assignment]
        refused: set[int] | None = None
        if all(map(series.__contains__, keys)):  # the usual case: C-level, no loop here
            series.update(zip(keys, values, strict=True))
        else:
            counts = self._counts.get(execution_id)
            for at, key in enumerate(keys):
                if key in series:
                    series[key] = values[at]
                # A new series: the callback checked the limits (check_limits); this holds
                # them also for concurrent results of one node, which were checked together.
                elif counts is None or counts.add(
                    node, self._max_per_node, self._max_per_execution
                ):
                    series[_interned(key)] = values[at]
                else:
                    refused = refused or set()
                    refused.add(at)
        block.text = None
        if self.latest:
            self._put_latest(gauge, node, keys, all_labels, values, refused)

    def _put_latest(
        self,
        gauge: _ResultGauge,
        node: str,
        keys: list[SeriesKey],
        all_labels: list[Mapping[str, str]],
        values: list[float],
        refused: set[int] | None,
    ) -> None:
        """The "latest" copies of series just set (but those at `refused`)."""
        if gauge.latest_separate:
            keys = [gauge.key(labels, node, LATEST) for labels in all_labels]
        latest = gauge.family.writable(LATEST)
        latest_series: dict[SeriesKey, float] = latest.series  # type: ignore[assignment]
        for at, key in enumerate(keys):
            if refused is not None and at in refused:
                continue
            if key in latest_series:
                latest_series[key] = values[at]
            else:
                latest_series[_interned(key)] = values[at]
        latest.text = None

    def remove_execution(self, execution_id: str) -> None:
        """Remove every series of the execution from every per-execution metric.

        "latest" series are not touched (unless `execution_id` is "latest"): as in the
        Go controller they hold the most recent value written.
        """
        for family in self._per_execution:
            family.remove(execution_id)
        self._counts.pop(execution_id, None)

    # --- limits (maxSeriesPerNode, maxSeriesPerExecution) ---

    def result_series(
        self, execution_id: str, node: str, result: Mapping[str, Iterable[Any]]
    ) -> _ResultSeries:
        """The series a decoded result sets, its keys computed once for the limits
        (`new_series`) and the write (`set_results`).

        `result` maps suffixes to entries with `.labels` and `.value`; entries of
        suffixes that are not configured gauges make no series and are left out.
        """
        out: _ResultSeries = []
        gauges = self._results
        for suffix, entries in result.items():
            gauge = gauges.get(suffix)
            if gauge is None:
                continue
            all_labels = [entry.labels for entry in entries]
            keys = gauge.keys(all_labels, node, execution_id)
            out.append((suffix, gauge, keys, all_labels, [entry.value for entry in entries]))
        return out

    def new_series(self, execution_id: str, series: _ResultSeries) -> int:
        """How many distinct series of `result_series` the execution lacks."""
        new = 0
        for _, gauge, keys, _, _ in series:
            block = gauge.blocks.get(execution_id)
            if block is None:
                new += len(set(keys))
                continue
            held = self._series_dict(gauge, execution_id, block)
            if not all(map(held.__contains__, keys)):  # C-level: the usual answer is yes
                new += len(set(keys).difference(held))
        return new

    def set_results(
        self,
        execution_id: str,
        node: str,
        series: _ResultSeries,
    ) -> None:
        """`set_result` for each series of `result_series`, with the keys it computed."""
        gauges = self._results
        for suffix, gauge, keys, all_labels, values in series:
            if gauges.get(suffix) is gauge:
                self._put_results(gauge, execution_id, node, keys, all_labels, values)
            else:  # the gauges were reconfigured meanwhile
                for labels, value in zip(all_labels, values, strict=True):
                    self.set_result(execution_id, node, suffix, labels, value)

    def series_held(self, execution_id: str, node: str) -> tuple[int, int]:
        """Result series of (`node`, all nodes) in the execution ("latest" not counted)."""
        counts = self._counts.get(execution_id)
        if counts is None:
            counts = self._counts[execution_id] = self._count(execution_id)
        return counts.by_node.get(node, 0), counts.total

    @staticmethod
    def _series_dict(
        gauge: _ResultGauge, execution_id: str, block: _Block
    ) -> dict[SeriesKey, float]:
        if block.series is None:
            gauge.family.writable(execution_id)  # thaw: a write is likely to follow
        return block.series  # type: ignore[return-value]

    def _count(self, execution_id: str) -> _SeriesCount:
        counts = _SeriesCount()
        by_node = counts.by_node
        for gauge in self._results.values():
            block = gauge.blocks.get(execution_id)
            if block is None:
                continue
            at = gauge.node_at
            for key in self._series_dict(gauge, execution_id, block):
                by_node[key[at]] = by_node.get(key[at], 0) + 1
                counts.total += 1
        return counts

    # --- bjc's extras ---

    def set_progress(self, execution_id: str, finished: int, total: int) -> None:
        """`bjc_execution_finished_nodes`, `bjc_execution_nodes`, `bjc_execution_progress`."""
        if finished < 0 or total < 0:
            raise ValueError(f"progress must not be negative: {finished}/{total}")
        self._progress_finished.put(execution_id, (), float(finished))
        self._progress_nodes.put(execution_id, (), float(total))
        self._progress_ratio.put(execution_id, (), finished / total if total else 1.0)

    def set_execution_failed(self, execution_id: str, failed: bool) -> None:
        """`bjc_execution_failed{executionID}`: 1 when stopped early by maxFailures."""
        self._failed.put(execution_id, (), 1.0 if failed else 0.0)

    def set_attempts(self, execution_id: str, node: str, attempts: int) -> None:
        """`bjc_job_attempts{node,executionID}`: pods started for the node's job (> 1)."""
        self._attempts.put(execution_id, (node,), float(attempts))

    def set_changes(self, execution_id: str, new_failures: int, recoveries: int) -> None:
        """`bjc_execution_new_failures`, `bjc_execution_recoveries` of a finished execution."""
        self._new_failures.put(execution_id, (), float(new_failures))
        self._recoveries.put(execution_id, (), float(recoveries))

    def set_streaks(self, streaks: Mapping[str, int]) -> None:
        """`bjc_node_failure_streak{node}`: replaces every node's (nodes no longer there go)."""
        self._streak.values.clear()
        for node, streak in streaks.items():
            self._streak.set({NODE_LABEL: node}, streak)

    def set_pods_by_phase(self, counts: Mapping[str, int]) -> None:
        """`bjc_job_pods{phase}`: replaces all phases; the five pod phases are always present.

        Every pod event sets it, so this keeps the counts (setting the gauge's five phases
        costs ~50 µs in aioprometheus, half of a watch event); they reach the gauge when
        the metrics are rendered.
        """
        self._pod_phases = dict(counts)

    def _set_pods_by_phase(self) -> None:
        counts, self._pod_phases = self._pod_phases, None
        if counts is None:
            return
        self._pods_by_phase.values.clear()
        for phase in POD_PHASES:
            self._pods_by_phase.set({"phase": phase}, 0)
        for phase, count in counts.items():
            self._pods_by_phase.set({"phase": phase}, count)

    def count_callback(self, route: str, code: int) -> None:
        """`bjc_callback_requests_total{route,code}` += 1.

        Every callback counts, so this is one dict update (an aioprometheus `inc` costs
        about 10 µs); the counts reach the counter when the metrics are rendered.
        """
        key = (route, code)
        counts = self._callback_counts
        counts[key] = counts.get(key, 0) + 1

    def _add_callback_counts(self) -> None:
        counts, self._callback_counts = self._callback_counts, {}
        for (route, code), n in counts.items():
            self._callbacks.add({"route": route, "code": str(code)}, n)

    def count_stale_callback(self, route: str, reason: str) -> None:
        """`bjc_stale_callbacks_total{route,reason}` += 1 (a callback of a stale attempt)."""
        self._stale_callbacks.inc({"route": route, "reason": reason})

    def set_leader(self, is_leader: bool) -> None:
        """`leader_election_master_status{name="<name>-leader-election"}`: 1 leader / 0 not."""
        self._leader.set(self._leader_labels, 1 if is_leader else 0)

    def count_skipped_trigger(self) -> None:
        """`bjc_skipped_triggers_total` += 1 (concurrencyPolicy Forbid, or no free id)."""
        self._skipped.inc({})

    def count_start_failure(self) -> None:
        """`bjc_execution_start_failures_total` += 1 (its report directory not writable)."""
        self._start_failures.inc({})

    def set_config_problems(self, problems: Iterable[tuple[str, str]]) -> None:
        """`bjc_config_problems{key,problem}` = 1 for each (key, problem) of a refused config.

        An empty `problems` (a change applied) clears them and sets
        `bjc_config_last_reload_successful` to 1; any problem sets it to 0.
        """
        self._config_problems.values.clear()
        for key, problem in problems:
            self._config_problems.set({"key": key[:100], "problem": problem[:200]}, 1)
        self._config_reload_ok.set({}, 0 if self._config_problems.values else 1)

    def set_report_directory_writable(self, writable: bool) -> None:
        """`bjc_report_directory_writable`: what the store last saw (ReportStore.writable)."""
        self._report_directory_writable.set({}, 1 if writable else 0)

    def set_suspended(self, suspended: bool) -> None:
        """`bjc_suspended`: 1 while no new executions start (suspend key or annotation)."""
        self._suspended.set({}, 1 if suspended else 0)

    # --- exposition ---

    def series_count(self) -> int:
        """Number of series held in the per-execution store (all executions and latest)."""
        return sum(len(f) for f in self._per_execution)

    def render_chunks(self, accept: str | None = None) -> tuple[list[Chunk], str]:
        """The exposition as chunks (some compressed; see `_assemble`) and content type.

        Cheap unless blocks changed since the last scrape; blocks of executions other
        than the current one and "latest" are frozen (kept compressed) afterwards.
        aioprometheus negotiates the text format 0.0.4 for any Accept header (what
        every Prometheus accepts); should it ever pick another formatter, that
        formatter renders the registry through the collectors' `get_all`.
        """
        self._add_callback_counts()
        self._set_pods_by_phase()
        formatter_class = aioprometheus.negotiate([accept] if accept else [])
        if formatter_class is not TextFormatter:  # pragma: no cover - aioprometheus 23.12
            formatter = formatter_class()
            return [formatter.marshall(self.registry)], formatter.get_headers()["Content-Type"]
        out: list[Chunk] = []
        hot = self._hot
        for collector in sorted(self.registry.get_all(), key=lambda c: c.name):
            if isinstance(collector, SeriesFamily):
                collector.render_into(out, hot)
            elif isinstance(collector, (Gauge, Counter)):
                _render_simple(collector, out)
            else:  # histograms and summaries registered by others
                lines = TextFormatter().marshall_lines(collector)
                out.append(("\n".join(lines) + "\n").encode())
        return out, TEXT_CONTENT_TYPE

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format negotiated from `accept`: (body, content type)."""
        chunks, content_type = self.render_chunks(accept)
        return bytes(_assemble(chunks)), content_type
