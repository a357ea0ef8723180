"""Job results: decoding, checking against the limits, and exposing them as gauges.

A job posts a result as JSON, `{"suffix": [{"value": 1.5, "labels": {...}}]}`. The
callback API decodes and checks it before storing it; the controller decodes stored
results again when it rebuilds history or replays them for changed gauges, and the
summary pages read values from the stored files. All of them use this module, so a
result means the same thing wherever it is read, and neither the engine nor the
reports depend on the web layer.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from bjc.config.settings import Config, is_valid_metric_name
from bjc.kube.events import decode_json


class ResultMetrics(Protocol):
    """The part of bjc.reports.metrics.Metrics that results are checked against and set on."""

    def result_series(self, execution_id: str, node: str, result: Result) -> ResultSeries:
        """The series the result sets (configured gauges only), keys computed once."""
        ...

    def new_series(self, execution_id: str, series: ResultSeries) -> int:
        """How many distinct of these series the execution lacks (set_results would add)."""
        ...

    def series_held(self, execution_id: str, node: str) -> tuple[int, int]:
        """Result series of (the node, the whole execution) held now."""
        ...

    def set_results(self, execution_id: str, node: str, series: ResultSeries) -> None: ...


#: What `ResultMetrics.result_series` gives (a list, one item per series): opaque here.
ResultSeries = Any


class ResultEntry(msgspec.Struct, gc=False):
    """One series of a result. Not tracked by the garbage collector (a float and a dict
    of strings make no cycle): every callback decodes a list of them."""

    value: float
    labels: dict[str, str] = msgspec.field(default_factory=dict)


Result = dict[str, list[ResultEntry]]

result_decoder = msgspec.json.Decoder(Result)


def decode_result(body: bytes) -> Result:
    """A result body; msgspec.DecodeError for anything malformed (see decode_json)."""
    return decode_json(result_decoder, body)


def check_names(config: Config, result: Result) -> None:
    """ValueError unless the result has entries and every key gives a valid metric name."""
    if not result:
        raise ValueError("empty result: at least one metric is required")
    prefix = config.metrics.prefix
    for suffix in result:
        name = f"{prefix}_{suffix}" if prefix else suffix
        if not suffix or not is_valid_metric_name(name):
            raise ValueError(f"result key {suffix!r} gives an invalid metric name {name!r}")


def check_limits(
    metrics: ResultMetrics, config: Config, execution_id: str, node: str, result: Result
) -> ResultSeries:
    """ValueError naming the limit a result would break; runs before anything is written.

    Only series count (entries of configured gauges, with their configured labels):
    `maxSeriesPerNode` entries in one result and series of the node in the execution,
    `maxSeriesPerExecution` for all its nodes, and `maxLabelValueLength` per value of a
    series the execution does not hold yet (a held series passed it when it was added,
    and setting it again holds nothing more). Returns the result's series for
    `apply_result` (their keys are computed once).
    """
    gauges = config.metrics.gauges
    per_node = config.max_series_per_node
    entries = sum(len(v) for k, v in result.items() if k in gauges)
    if entries > per_node:
        raise ValueError(
            f"{entries} entries of configured gauges in one result, over maxSeriesPerNode "
            f"({per_node})"
        )
    series = metrics.result_series(execution_id, node, result)
    added = metrics.new_series(execution_id, series)
    if not added:
        return series
    longest = config.max_label_value_length
    for suffix, items in result.items():
        gauge = gauges.get(suffix)
        if gauge is None or not gauge.labels:
            continue
        for entry in items:
            for label in gauge.labels:
                if len(entry.labels.get(label, "")) > longest:
                    raise ValueError(
                        f"{suffix}: value of label {label!r} is longer than "
                        f"maxLabelValueLength ({longest} characters)"
                    )
    held_node, held_execution = metrics.series_held(execution_id, node)
    if held_node + added > per_node:
        raise ValueError(
            f"node {node} would hold {held_node + added} series in execution {execution_id}, "
            f"over maxSeriesPerNode ({per_node})"
        )
    per_execution = config.max_series_per_execution
    if held_execution + added > per_execution:
        raise ValueError(
            f"execution {execution_id} would hold {held_execution + added} result series, over "
            f"maxSeriesPerExecution ({per_execution})"
        )
    return series


def apply_result(
    metrics: ResultMetrics,
    execution_id: str,
    node: str,
    result: Result,
    series: ResultSeries | None = None,
) -> None:
    """Set the configured gauges of a result; suffixes not configured expose nothing.

    `series`: what `check_limits` returned for this result, if it was checked.
    """
    if series is None:
        series = metrics.result_series(execution_id, node, result)
    metrics.set_results(execution_id, node, series)
