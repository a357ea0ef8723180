"""Every Prometheus series bjc exposes, and the `/metrics` endpoint that serves them.

Why this exists: the Go controller's metrics are a Prometheus compatibility
surface - dashboards and alerts query them by name, label and help text - and with
thousands of nodes and 30 executions of history they are also bjc's largest data
structure (100,000-300,000 series). A plain aioprometheus `Gauge` keys every series by
an orjson-encoded label dict and formats every line on every scrape, which costs
about 1 KB per series and most of a second per scrape at that size. So the
per-execution gauges (processing, duration, the configured result gauges, execution
progress) live in `SeriesFamily`, a series store built for this shape of data:

- one block per (metric, execution): a dict from the tuple of label values (interned:
  they repeat across nodes and executions) to a float; `executionID` is written once
  per block, not stored per series;
- a block caches its rendered text until it changes, so a scrape formats only the
  blocks that changed since the previous one;
- after a scrape, blocks of past executions (not the current one, not "latest") are
  frozen: only their zlib-compressed text is kept (about 10 bytes per series); a late
  write thaws the block by parsing that text back;
- removing an execution drops its blocks: time proportional to that execution's
  series, not to all series.

`SeriesFamily` is an `aioprometheus.Gauge` registered in an `aioprometheus.Registry`
next to plain aioprometheus collectors (the single-series gauges, counters and the
process metrics computed at scrape time); `Metrics.render` negotiates the format with
`aioprometheus.negotiate` and renders the registry itself, escaping label values and
help texts as the text format requires (aioprometheus' own text formatter does not).

What it deliberately does not do: it decides nothing about executions (the controller
calls `remove_execution` when an execution is pruned and replays kept results after a
restart), validates no config beyond what it needs to build its series (bjc.config.settings
does that), and serves only the Prometheus text format 0.0.4 - the only format
aioprometheus 23.12 negotiates, and the format Go's promhttp serves by default. No
OpenMetrics, no protobuf. Everything runs on the event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import operator
import os
import re
import resource
import sys
import zlib
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import Any

import aioprometheus
from aiohttp import web
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

__all__ = [
    "LATEST",
    "METRICS_KEY",
    "Metrics",
    "SeriesFamily",
    "escape_label_value",
    "make_metrics_app",
    "metrics_handler",
]

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

_UNESCAPE_RE = re.compile(r"\\(.)")
_SPECIAL_VALUES = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote, line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    text = repr(value)
    return _SPECIAL_VALUES.get(text, text)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


class _Packed:
    """One zlib-compressed piece of a frozen block, and its size inflated."""

    __slots__ = ("data", "size")

    def __init__(self, text: bytes) -> None:
        self.data = zlib.compress(text, 1)
        self.size = len(text)

    def inflate(self) -> bytes:
        return zlib.decompress(self.data)


Chunk = bytes | _Packed


def _assemble(chunks: Sequence[Chunk]) -> bytearray:
    """Join rendered chunks into one buffer, inflating frozen pieces one at a time.

    The buffer is allocated once at its final size, and no more than one inflated
    piece is alive besides it: a scrape leaves no fragmented heap behind. Safe to run
    in a thread (the chunks are immutable; zlib releases the GIL).
    """
    body = bytearray(_size(chunks))
    view = memoryview(body)
    pos = 0
    for chunk in chunks:
        data = chunk.inflate() if isinstance(chunk, _Packed) else chunk
        view[pos : pos + len(data)] = data
        pos += len(data)
    return body


def _size(chunks: Sequence[Chunk]) -> int:
    return sum(c.size if isinstance(c, _Packed) else len(c) for c in chunks)


_FREEZE_MIN_BYTES = 1024
_PIECE_LINES = 512

SeriesKey = tuple[str, ...]


class _Block:
    """The series of one metric for one execution.

    Hot: `series` maps the label values (in the family's key order) to the value, and
    `text` caches the rendered lines until the next change. Frozen (a past execution,
    after a scrape): only `packed`, the compressed text, is kept; a write thaws it.
    """

    __slots__ = ("count", "packed", "series", "text")

    def __init__(self) -> None:
        self.series: dict[SeriesKey, float] | None = {}
        self.text: list[bytes] | None = None  # rendered pieces
        self.packed: list[_Packed] | None = None
        self.count = 0  # series of a frozen block


class SeriesFamily(Gauge):
    """A gauge family whose series belong to executions (one `executionID` label).

    Series are stored per execution in a `_Block`, keyed by the tuple of their label
    values in `key_fields` order (`executionID` is not part of the key when it is the
    last label; it is written once per block). Values are floats. It is an
    `aioprometheus.Gauge`, so it lives in an aioprometheus `Registry`; `get_all` (used
    only by aioprometheus' own formatters) is slow by design and not used by
    `Metrics.render`.
    """

    def __init__(self, name: str, doc: str, label_names: Sequence[str], registry: Registry) -> None:
        super().__init__(name, doc, registry=registry)
        names = tuple(label_names)
        if EXECUTION_ID_LABEL not in names:
            raise ValueError(f"metric {name}: label {EXECUTION_ID_LABEL} is required")
        self.label_names = names
        self.execution_last = names[-1] == EXECUTION_ID_LABEL
        self.key_fields = names[:-1] if self.execution_last else names
        self.blocks: dict[str, _Block] = {}
        self._head = f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} gauge\n".encode()
        value_re = r'"((?:[^"\\]|\\.)*)"'
        pairs = [f"{n}={value_re}" for n in self.key_fields]
        if self.execution_last:
            pairs.append(f'{EXECUTION_ID_LABEL}="(?:[^"\\\\]|\\\\.)*"')
        self._line_re = re.compile(re.escape(name) + r"\{" + ",".join(pairs) + r"\} (\S+)\n")

    # --- writing ---

    def put(self, execution_id: str, key: SeriesKey, value: float) -> None:
        """Set one series; `key` holds the label values in `key_fields` order."""
        block = self.blocks.get(execution_id)
        if block is None or block.series is None:
            block = self.writable(execution_id)
        block.series[key] = value  # type: ignore[index]
        block.text = None

    def writable(self, execution_id: str) -> _Block:
        """The execution's block, created or thawed so that `series` is a dict."""
        block = self.blocks.get(execution_id)
        if block is None:
            block = self.blocks[execution_id] = _Block()
        elif block.series is None:
            self._thaw(block)
        return block

    def remove(self, execution_id: str) -> int:
        """Drop every series of the execution; returns how many there were."""
        block = self.blocks.pop(execution_id, None)
        if block is None:
            return 0
        return block.count if block.series is None else len(block.series)

    # --- reading ---

    def execution_ids(self) -> list[str]:
        return list(self.blocks)

    def is_frozen(self, execution_id: str) -> bool:
        block = self.blocks.get(execution_id)
        return block is not None and block.series is None

    def __len__(self) -> int:
        return sum(b.count if b.series is None else len(b.series) for b in self.blocks.values())

    def render_into(self, out: list[Chunk], hot: Container[str]) -> None:
        """Append this family's chunks to `out`; freeze the blocks not in `hot`."""
        first = True
        for execution_id, block in self.blocks.items():
            chunks: Sequence[Chunk]
            if block.packed is not None:
                chunks = block.packed
            elif block.series:
                pieces = block.text
                if pieces is None:
                    pieces = self._render_pieces(execution_id, block.series)
                if execution_id in hot or sum(map(len, pieces)) < _FREEZE_MIN_BYTES:
                    chunks = block.text = pieces
                else:  # freeze: keep the compressed text only
                    chunks = block.packed = [_Packed(p) for p in pieces]
                    block.count = len(block.series)
                    block.series = None
                    block.text = None
                    # (the compressed pieces go out, not the plain ones: keeping every
                    # plain piece of every block alive until the body is joined would
                    # fragment the heap)
            else:
                continue
            if first:
                out.append(self._head)
                first = False
            out.extend(chunks)

    def _render_pieces(self, execution_id: str, series: dict[SeriesKey, float]) -> list[bytes]:
        """The block's lines, in pieces of at most `_PIECE_LINES` lines.

        Pieces keep every transient buffer small (below the allocator's mmap
        threshold), so a scrape of 100,000 series does not leave a fragmented heap.
        """
        start = self.name + "{"
        if self.execution_last:
            sep = "," if self.key_fields else ""
            end = f'{sep}{EXECUTION_ID_LABEL}="{escape_label_value(execution_id)}"}} '
        else:
            end = "} "
        pairs = ",".join(f'{n}="%s"' for n in self.key_fields)
        template = start + pairs + end.replace("%", "%%")
        quotes = 2 * (len(self.key_fields) + self.execution_last)
        finite = all(map(math.isfinite, series.values()))
        items = iter(series.items())
        pieces = []
        while chunk := list(itertools.islice(items, _PIECE_LINES)):
            # Fast path: raw values, then verify with C-speed scans that nothing needed
            # escaping (and all values are finite); otherwise format carefully.
            if finite:
                text = "".join([template % k + repr(v) + "\n" for k, v in chunk])
                if (
                    "\\" not in text
                    and text.count("\n") == len(chunk)
                    and text.count('"') == quotes * len(chunk)
                ):
                    pieces.append(text.encode())
                    continue
            fmt = _format_value
            esc = escape_label_value
            text = "".join([template % tuple(map(esc, k)) + fmt(v) + "\n" for k, v in chunk])
            pieces.append(text.encode())
        return pieces

    def _series_of(self, block: _Block) -> Iterable[tuple[SeriesKey, float]]:
        if block.series is not None:
            return block.series.items()
        assert block.packed is not None
        return [
            (tuple(map(_unescape, g[:-1])), float(g[-1]))
            for piece in block.packed
            for g in (m.groups() for m in self._line_re.finditer(piece.inflate().decode()))
        ]

    def _thaw(self, block: _Block) -> dict[SeriesKey, float]:
        series = dict(self._series_of(block))
        block.series = series
        block.packed = None
        block.count = 0
        return series

    # --- aioprometheus Collector interface (slow path, not used by Metrics.render) ---

    def set(self, labels: Any, value: Any) -> None:
        raise TypeError(f"{self.name}: series are set through bjc.reports.metrics.Metrics")

    set_value = set

    def get_all(self) -> list[tuple[dict[str, str], float]]:  # type: ignore[override]
        result = []
        fields = self.key_fields
        for execution_id, block in self.blocks.items():
            for key, value in self._series_of(block):
                labels = dict(zip(fields, key, strict=True))
                if self.execution_last:
                    labels[EXECUTION_ID_LABEL] = execution_id
                result.append((labels, value))
        return result


class _Computed:
    """A label-less series whose value is computed at scrape time (None: no series)."""

    def __init__(
        self, name: str, doc: str, compute: Callable[[], float | None], registry: Registry
    ) -> None:
        super().__init__(name, doc, registry=registry)  # type: ignore[call-arg]
        self._compute = compute

    def get_all(self) -> list[tuple[dict[str, str], float]]:
        value = self._compute()
        return [] if value is None else [({}, value)]


class _ComputedGauge(_Computed, Gauge):  # type: ignore[misc]
    pass


class _ComputedCounter(_Computed, Counter):  # type: ignore[misc]
    pass


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
    _ComputedCounter(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        proc.cpu_seconds,
        registry,
    )
    _ComputedGauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        proc.resident_memory,
        registry,
    )
    _ComputedGauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        proc.virtual_memory,
        registry,
    )
    _ComputedGauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        proc.start_time,
        registry,
    )
    _ComputedGauge("process_open_fds", "Number of open file descriptors.", proc.open_fds, registry)
    _ComputedGauge(
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
        # make_key(labels, node, execution_id) -> the series key in `fields` order.
        # Reported values are interned: they repeat across nodes and executions, and
        # each decoded callback would otherwise keep its own copies alive.
        self.make_key: Callable[[Mapping[str, str], str, str], SeriesKey]
        intern = sys.intern
        if fields == (*names, NODE_LABEL):  # the usual layout: configured labels, node, executionID
            if not names:
                self.make_key = lambda labels, node, execution_id: (node,)
            elif len(names) == 1:
                (a,) = names
                self.make_key = lambda labels, node, execution_id: (intern(labels[a]), node)
            elif len(names) == 2:
                a, b = names
                self.make_key = lambda labels, node, execution_id: (
                    intern(labels[a]),
                    intern(labels[b]),
                    node,
                )
            else:
                get = operator.itemgetter(*names)
                self.make_key = lambda labels, node, execution_id: (
                    *map(intern, get(labels)),
                    node,
                )
        else:  # node and/or executionID placed among the configured labels

            def make_key(labels: Mapping[str, str], node: str, execution_id: str) -> SeriesKey:
                return tuple(
                    node
                    if f == NODE_LABEL
                    else execution_id
                    if f == EXECUTION_ID_LABEL
                    else intern(labels[f])
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
        if len(labels) != self.size:
            labels = self.conform(labels)
        try:
            return self.make_key(labels, node, execution_id)
        except KeyError:
            return self.make_key(self.conform(labels), node, execution_id)


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
        self.set_pods_by_phase({})
        self._callbacks = Counter(
            "bjc_callback_requests_total",
            "Callback API requests by route and HTTP status code",
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
        # The hot path of every callback: kept flat (SeriesFamily.put is inlined).
        try:
            gauge = self._results[suffix]
        except KeyError:
            raise KeyError(f"{suffix!r} is not a configured gauge (metrics.gauges)") from None
        if len(labels) != gauge.size:
            labels = gauge.conform(labels)
        try:
            key = gauge.make_key(labels, node, execution_id)
        except KeyError:
            labels = gauge.conform(labels)
            key = gauge.make_key(labels, node, execution_id)
        block = gauge.blocks.get(execution_id)
        if block is None or block.series is None:
            block = gauge.family.writable(execution_id)
        series: dict[SeriesKey, float] = block.series  # type: ignore[assignment]
        if key not in series:
            # A new series: the callback checked the limits (check_limits); this holds
            # them also for concurrent results of one node, which were checked together.
            counts = self._counts.get(execution_id)
            if counts is not None and not counts.add(
                node, self._max_per_node, self._max_per_execution
            ):
                return
        series[key] = value = float(value)
        block.text = None
        if self.latest:
            if gauge.latest_separate:
                key = gauge.make_key(labels, node, LATEST)
            gauge.family.put(LATEST, key, value)

    def remove_execution(self, execution_id: str) -> None:
        """Remove every series of the execution from every per-execution metric.

        "latest" series are not touched (unless `execution_id` is "latest"): as in the
        Go controller they hold the most recent value written.
        """
        for family in self._per_execution:
            family.remove(execution_id)
        self._counts.pop(execution_id, None)

    # --- limits (maxSeriesPerNode, maxSeriesPerExecution) ---

    def new_series(
        self, execution_id: str, node: str, series: Iterable[tuple[str, Mapping[str, str]]]
    ) -> int:
        """How many distinct series of these (suffix, labels) the execution lacks.

        Suffixes that are not configured gauges make no series and are not counted.
        """
        new: set[tuple[str, SeriesKey]] = set()
        for suffix, labels in series:
            gauge = self._results.get(suffix)
            if gauge is None:
                continue
            key = gauge.key(labels, node, execution_id)
            block = gauge.blocks.get(execution_id)
            if block is not None and key in self._series_dict(gauge, execution_id, block):
                continue
            new.add((suffix, key))
        return len(new)

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

    def set_pods_by_phase(self, counts: Mapping[str, int]) -> None:
        """`bjc_job_pods{phase}`: replaces all phases; the five pod phases are always present."""
        self._pods_by_phase.values.clear()
        for phase in POD_PHASES:
            self._pods_by_phase.set({"phase": phase}, 0)
        for phase, count in counts.items():
            self._pods_by_phase.set({"phase": phase}, count)

    def count_callback(self, route: str, code: int) -> None:
        """`bjc_callback_requests_total{route,code}` += 1."""
        self._callbacks.inc({"route": route, "code": str(code)})

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


def _render_simple(collector: Gauge | Counter, out: list[Chunk]) -> None:
    items = collector.get_all()
    if not items:
        return
    name = collector.name
    kind = collector.kind.name
    lines = [f"# HELP {name} {_escape_help(collector.doc)}", f"# TYPE {name} {kind}"]
    for labels, value in items:
        if labels:
            pairs = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{pairs}}} {_format_value(float(value))}")  # type: ignore[arg-type]
        else:
            lines.append(f"{name} {_format_value(float(value))}")  # type: ignore[arg-type]
    lines.append("")
    out.append("\n".join(lines).encode())


# --- HTTP ---

METRICS_KEY = web.AppKey("metrics", Metrics)
_GZIP_MIN_BYTES = 1024
_THREAD_MIN_BYTES = 256 * 1024


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _gzip(body: bytes | bytearray) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1, gzip container
    return compressor.compress(body) + compressor.flush()


def _encode(chunks: list[Chunk], gzip: bool) -> tuple[bytes | bytearray, bool]:
    """The response body from the chunks, and whether it is gzip-encoded."""
    body = _assemble(chunks)
    if gzip and len(body) >= _GZIP_MIN_BYTES:
        return _gzip(body), True
    return body, False


_STREAM_PIECE_BYTES = 1 << 20


def _pieces(chunks: list[Chunk], gzip: bool) -> Iterator[bytes]:
    """The body in pieces of about 1 MiB: only one inflated piece is alive at a time."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
    buf = bytearray()
    for chunk in chunks:
        buf += chunk.inflate() if isinstance(chunk, _Packed) else chunk
        if len(buf) >= _STREAM_PIECE_BYTES:
            yield compressor.compress(buf) if compressor else bytes(buf)
            buf.clear()
    yield (compressor.compress(buf) + compressor.flush()) if compressor else bytes(buf)


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler for GET /metrics: negotiated format, gzip when accepted.

    The chunks are collected on the event loop (cheap: cached text of unchanged
    blocks). A large exposition (30 executions of 5,000 nodes render ~30 MB) is
    streamed: each ~1 MiB piece is inflated and gzipped in a thread (zlib releases
    the GIL), so a scrape neither stalls callbacks nor holds the whole text.
    """

    async def handle_metrics(request: web.Request) -> web.StreamResponse:
        chunks, content_type = metrics.render_chunks(request.headers.get("Accept"))
        gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
        size = _size(chunks)
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if size <= _THREAD_MIN_BYTES and not any(isinstance(c, _Packed) for c in chunks):
            body, gzipped = _encode(chunks, gzip)
            if gzipped:
                headers["Content-Encoding"] = "gzip"
            return web.Response(body=body, headers=headers)
        gzip = gzip and size >= _GZIP_MIN_BYTES
        if gzip:
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        pieces = _pieces(chunks, gzip)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await response.write(piece)
        await response.write_eof()
        return response

    return handle_metrics


def make_metrics_app(metrics: Metrics) -> web.Application:
    """The metrics server (`metrics.port`): GET /metrics."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", metrics_handler(metrics))
    return app
