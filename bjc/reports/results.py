"""Job results: decoding, checking against the limits, and exposing them as gauges.

A job posts a result as JSON, `{"suffix": [{"value": 1.5, "labels": {...}}]}`. The
callback API decodes and checks it before storing it; the controller decodes stored
results again when it rebuilds history or replays them for changed gauges, and the
summary pages read values from the stored files. All of them use this module, so a
result means the same thing wherever it is read, and neither the engine nor the
reports depend on the web layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import msgspec

from bjc.config.settings import Config, is_valid_metric_name
from bjc.kube.events import decode_json


class ResultMetrics(Protocol):
    """The part of bjc.reports.metrics.Metrics that results are checked against and set on."""

    def set_result(
        self, execution_id: str, node: str, suffix: str, labels: dict[str, str], value: float
    ) -> None: ...

    def new_series(
        self, execution_id: str, node: str, series: Iterable[tuple[str, Mapping[str, str]]]
    ) -> int:
        """How many distinct (suffix, labels) series set_result would add."""
        ...

    def series_held(self, execution_id: str, node: str) -> tuple[int, int]:
        """Result series of (the node, the whole execution) held now."""
        ...


class ResultEntry(msgspec.Struct):
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
) -> None:
    """ValueError naming the limit a result would break; runs before anything is written.

    Only series count (entries of configured gauges, with their configured labels):
    `maxLabelValueLength` per value, `maxSeriesPerNode` entries in one result and
    series of the node in the execution, `maxSeriesPerExecution` for all its nodes.
    """
    gauges = config.metrics.gauges
    per_node = config.max_series_per_node
    entries = sum(len(v) for k, v in result.items() if k in gauges)
    if entries > per_node:
        raise ValueError(
            f"{entries} entries of configured gauges in one result, over maxSeriesPerNode "
            f"({per_node})"
        )
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
    series = [(k, e.labels) for k, v in result.items() if k in gauges for e in v]
    added = metrics.new_series(execution_id, node, series)
    if not added:
        return
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


def apply_result(
    metrics: ResultMetrics, config: Config, execution_id: str, node: str, result: Result
) -> None:
    """Set the configured gauges of a result; suffixes not configured expose nothing."""
    for suffix, entries in result.items():
        if suffix in config.metrics.gauges:
            for entry in entries:
                metrics.set_result(execution_id, node, suffix, entry.labels, entry.value)
