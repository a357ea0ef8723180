"""Tests of bjc.reports.metrics, .series and bjc.web.metrics: the exposition parsed back.

The exposition is parsed with prometheus_client's text parser. Every series of the Go
controller and every bjc extra is checked by name, help, type, labels and value;
escaping, latestMetricsLabel, pruning, freezing of past executions and the aiohttp
handler (over a real test server) are covered. No timing asserts (see
benchmarks/bench_metrics.py for those).
"""

from __future__ import annotations

import gzip
import math
import sys
import time
from typing import Any

import aioprometheus
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bjc.config.settings import Config, GaugeConfig, MetricsConfig
from bjc.reports.metrics import LATEST, Metrics
from bjc.reports.results import ResultEntry, decode_result
from bjc.reports.series import SeriesFamily, escape_label_value
from bjc.web.metrics import _accepts_gzip, make_metrics_app

E1 = "202401011200"
E2 = "202401011300"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def make_config(
    *,
    latest: bool = False,
    gauges: dict[str, GaugeConfig] | None = None,
    prefix: str = "foo",
) -> Config:
    if gauges is None:
        gauges = {"test": GaugeConfig(help="help of test", labels=["label_a", "label_b"])}
    return Config(
        name="my-controller",
        cron_expression="*/5 * * * *",
        pod_pool_size=7,
        report_history=12,
        latest_metrics_label=latest,
        metrics=MetricsConfig(prefix=prefix, gauges=gauges),
    )


def parse(metrics: Metrics) -> dict[str, Any]:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.name not in families, f"family {family.name} is not contiguous"
        families[family.name] = family
    return families


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label items: value} of one family (empty when the family is absent)."""
    if name not in families:
        return {}
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}


def stable(families: dict[str, Any]) -> dict[str, Any]:
    """The families that do not change by themselves (no process_* metrics)."""
    return {k: v for k, v in families.items() if not k.startswith("process_")}


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


# --- the Go controller's series ---


def test_a6_series_names_help_types_labels_values() -> None:
    m = Metrics(make_config(), version="1.2.3")
    m.set_current_execution(E1)
    m.set_pods(3)
    m.set_processing(E1, "node-1", 0)
    m.set_processing(E1, "node-2", 1)
    m.set_duration(E1, "node-1", 1234.5)
    m.set_result(E1, "node-1", "test", {"label_a": "A", "label_b": "B"}, 2.5)
    m.set_result(E1, "node-1", "test", {"label_a": "A2", "label_b": "B2"}, 1)
    f = parse(m)

    expected_help = {
        "foo_current_execution_id": "The current execution ID",
        "foo_pods": "The number of pods started for the last execution",
        "foo_processing": "Node with processing error, 1: has error / 0: no error",
        "foo_duration": "Execution Duration in milliseconds",
        "foo_test": "help of test",
        "com_github_bakito_batch_job_controller": (
            "information about github.com/bakito/batch-job-controller"
        ),
    }
    for name, help_text in expected_help.items():
        assert f[name].documentation == help_text
        assert f[name].type == "gauge"

    assert samples(f, "foo_current_execution_id") == {(): 202401011200.0}
    assert samples(f, "foo_pods") == {(): 3.0}
    assert samples(f, "foo_processing") == {
        labels(node="node-1", executionID=E1): 0.0,
        labels(node="node-2", executionID=E1): 1.0,
    }
    assert samples(f, "foo_duration") == {labels(node="node-1", executionID=E1): 1234.5}
    assert samples(f, "foo_test") == {
        labels(label_a="A", label_b="B", node="node-1", executionID=E1): 2.5,
        labels(label_a="A2", label_b="B2", node="node-1", executionID=E1): 1.0,
    }
    assert samples(f, "com_github_bakito_batch_job_controller") == {
        labels(
            version="1.2.3",
            name="my-controller",
            prefix="foo",
            poolSize="7",
            reportHistory="12",
            cron="*/5 * * * *",
        ): 1.0
    }


def test_label_order_is_configured_labels_then_node_then_execution_id() -> None:
    m = Metrics(make_config())
    m.set_result(E1, "node-1", "test", {"label_b": "B", "label_a": "A"}, 2.5)
    m.set_processing(E1, "node-1", 0)
    text = m.render()[0].decode()
    assert (
        'foo_test{label_a="A",label_b="B",node="node-1",executionID="202401011200"} 2.5\n' in text
    )
    assert 'foo_processing{node="node-1",executionID="202401011200"} 0.0\n' in text


def test_families_without_series_are_not_exposed() -> None:
    f = parse(Metrics(make_config()))
    for name in ("foo_current_execution_id", "foo_pods", "foo_processing", "foo_duration"):
        assert name not in f
    assert "foo_test" not in f
    assert "com_github_bakito_batch_job_controller" in f


def test_set_overwrites_and_values_are_floats() -> None:
    m = Metrics(make_config())
    m.set_result(E1, "n", "test", {"label_a": "a", "label_b": "b"}, 1)
    m.set_result(E1, "n", "test", {"label_a": "a", "label_b": "b"}, 7)
    m.set_pods(4)
    m.set_pods(2)
    f = parse(m)
    assert samples(f, "foo_test") == {labels(label_a="a", label_b="b", node="n", executionID=E1): 7}
    assert samples(f, "foo_pods") == {(): 2}


def test_special_float_values() -> None:
    m = Metrics(make_config())
    for i, value in enumerate([math.inf, -math.inf, math.nan, 1e300, -0.0]):
        m.set_result(E1, f"n{i}", "test", {"label_a": "a", "label_b": "b"}, value)
    text = m.render()[0].decode()
    assert "} +Inf\n" in text and "} -Inf\n" in text and "} NaN\n" in text
    values = [s.value for s in parse(m)["foo_test"].samples]
    assert values[:2] == [math.inf, -math.inf]
    assert math.isnan(values[2])
    assert values[3:] == [1e300, -0.0]


# --- escaping ---

NASTY = ["back\\slash", 'dou"ble', "new\nline", '\\"\n\\n', "ünïcödé ✓", "%s %d", "{a}", ""]


def test_label_values_and_help_are_escaped() -> None:
    config = make_config(
        gauges={"test": GaugeConfig(help='a "help" with \\ and\nnewline', labels=["v"])}
    )
    m = Metrics(config)
    for i, value in enumerate(NASTY):
        m.set_result(E1, f'node"{i}\\', "test", {"v": value}, float(i))
    f = parse(m)
    assert f["foo_test"].documentation == 'a "help" with \\ and\nnewline'
    assert samples(f, "foo_test") == {
        labels(v=value, node=f'node"{i}\\', executionID=E1): float(i)
        for i, value in enumerate(NASTY)
    }


@pytest.mark.parametrize("special", ["new\nline", 'dou"ble', "back\\nslash", "tail\\"])
def test_a_single_kind_of_special_character_is_escaped(special: str) -> None:
    m = Metrics(make_config())
    m.set_result(E1, "n", "test", {"label_a": special, "label_b": "b"}, 1)
    m.set_result(E1, special, "test", {"label_a": "a", "label_b": "b"}, 2)
    assert samples(parse(m), "foo_test") == {
        labels(label_a=special, label_b="b", node="n", executionID=E1): 1,
        labels(label_a="a", label_b="b", node=special, executionID=E1): 2,
    }


@pytest.mark.parametrize("execution_id", ['odd"id\\', "per%cent", "with%s", "x\ny"])
def test_odd_execution_ids_are_escaped(execution_id: str) -> None:
    m = Metrics(make_config())
    m.set_processing(execution_id, "n", 1)
    m.set_result(execution_id, "n", "test", {"label_a": "%s", "label_b": '"'}, 2)
    f = parse(m)
    assert samples(f, "foo_processing") == {labels(node="n", executionID=execution_id): 1}
    assert samples(f, "foo_test") == {
        labels(label_a="%s", label_b='"', node="n", executionID=execution_id): 2
    }


def test_escape_label_value() -> None:
    assert escape_label_value("plain") == "plain"
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_many_series_span_several_render_pieces() -> None:
    m = Metrics(make_config())
    expected = {}
    for n in range(300):
        for j in range(5):
            value = math.inf if (n, j) == (250, 3) else float(n * 10 + j)
            label_b = 'q"uote' if (n, j) == (40, 1) else f"b{j}"
            m.set_result(E1, f"node-{n}", "test", {"label_a": f"a{j}", "label_b": label_b}, value)
            expected[labels(label_a=f"a{j}", label_b=label_b, node=f"node-{n}", executionID=E1)] = (
                value
            )
    assert samples(parse(m), "foo_test") == expected


# --- latestMetricsLabel ---


def test_latest_label_written_and_overwritten_by_newer_executions() -> None:
    m = Metrics(make_config(latest=True))
    ab = {"label_a": "A", "label_b": "B"}
    for node in ("node-1", "node-2"):
        m.set_processing(E1, node, 1)
        m.set_duration(E1, node, 100)
        m.set_result(E1, node, "test", ab, 1)
    # the next execution: node-2 does not report
    m.set_processing(E2, "node-1", 0)
    m.set_duration(E2, "node-1", 200)
    m.set_result(E2, "node-1", "test", ab, 2)
    f = parse(m)
    assert samples(f, "foo_processing") == {
        labels(node="node-1", executionID=E1): 1,
        labels(node="node-2", executionID=E1): 1,
        labels(node="node-1", executionID=E2): 0,
        labels(node="node-1", executionID=LATEST): 0,
        labels(node="node-2", executionID=LATEST): 1,  # most recent value written
    }
    assert samples(f, "foo_duration")[labels(node="node-1", executionID=LATEST)] == 200
    assert samples(f, "foo_duration")[labels(node="node-2", executionID=LATEST)] == 100
    result = samples(f, "foo_test")
    assert result[labels(label_a="A", label_b="B", node="node-1", executionID=LATEST)] == 2
    assert result[labels(label_a="A", label_b="B", node="node-2", executionID=LATEST)] == 1

    # pruning an execution keeps "latest" (Go-like) ...
    m.remove_execution(E1)
    f = parse(m)
    assert samples(f, "foo_processing") == {
        labels(node="node-1", executionID=E2): 0,
        labels(node="node-1", executionID=LATEST): 0,
        labels(node="node-2", executionID=LATEST): 1,
    }
    # ... unless "latest" itself is removed
    m.remove_execution(LATEST)
    f = parse(m)
    assert {dict(k)["executionID"] for k in samples(f, "foo_test")} == {E2}


def test_no_latest_series_without_the_option() -> None:
    m = Metrics(make_config(latest=False))
    m.set_processing(E1, "n", 0)
    m.set_duration(E1, "n", 1)
    m.set_result(E1, "n", "test", {"label_a": "a", "label_b": "b"}, 1)
    text = m.render()[0].decode()
    assert LATEST not in text


# --- pruning ---


def test_remove_execution_removes_exactly_its_series() -> None:
    m = Metrics(make_config())
    m.set_current_execution(E2)
    m.set_pods(2)
    for e in (E1, E2):
        m.set_processing(e, "n", 0)
        m.set_duration(e, "n", 5)
        m.set_result(e, "n", "test", {"label_a": "a", "label_b": "b"}, 1)
        m.set_progress(e, 1, 2)
    before = parse(m)
    m.remove_execution(E1)
    after = parse(m)
    for name in (
        "foo_processing",
        "foo_duration",
        "foo_test",
        "bjc_execution_finished_nodes",
        "bjc_execution_nodes",
        "bjc_execution_progress",
    ):
        kept = {k: v for k, v in samples(before, name).items() if dict(k)["executionID"] != E1}
        assert kept and samples(after, name) == kept, name
    for name in ("foo_current_execution_id", "foo_pods"):
        assert samples(after, name) == samples(before, name)
    m.remove_execution(E1)  # idempotent
    m.remove_execution("never-seen")
    m.remove_execution(E2)
    assert m.series_count() == 0
    assert "foo_test" not in parse(m)


def test_past_executions_are_frozen_and_thawed_on_write() -> None:
    m = Metrics(make_config(latest=True))
    nasty = {"label_a": 'x"\\\ny', "label_b": "%s"}
    for e in (E1, E2):
        for n in range(40):  # enough text to be worth freezing
            m.set_processing(e, f"node-{n}", n % 2)
            m.set_result(e, f"node-{n}", "test", nasty, math.inf if n == 3 else n)
    m.set_current_execution(E1)
    family = m.registry.get("foo_test")
    assert isinstance(family, SeriesFamily)
    parse(m)  # E1 current: rendered and cached, not frozen; E2 frozen
    assert not family.is_frozen(E1) and family.is_frozen(E2)
    m.set_current_execution(E2)
    m.set_result(E2, "node-0", "test", nasty, 0)  # thaws E2
    assert not family.is_frozen(E2)
    before = stable(parse(m))
    assert family.is_frozen(E1) and not family.is_frozen(E2) and not family.is_frozen(LATEST)
    assert stable(parse(m)) == before  # rendered from the compressed copy
    assert m.series_count() == 2 * 40 * 2 + 40 * 2  # two executions + latest

    m.set_result(E1, "late-node", "test", nasty, 42)  # a late callback thaws E1
    assert not family.is_frozen(E1)
    f = parse(m)
    assert (
        samples(f, "foo_test")[
            labels(label_a='x"\\\ny', label_b="%s", node="late-node", executionID=E1)
        ]
        == 42
    )
    assert (
        samples(f, "foo_test")[
            labels(label_a='x"\\\ny', label_b="%s", node="node-3", executionID=E1)
        ]
        == math.inf
    )
    assert len(samples(f, "foo_test")) == len(samples(before, "foo_test")) + 2  # E1 + latest
    assert family.is_frozen(E1)
    m.remove_execution(E1)
    assert sorted(family.execution_ids()) == [E2, LATEST]
    processing = m.registry.get("foo_processing")
    assert isinstance(processing, SeriesFamily)
    assert sorted(processing.execution_ids()) == [E2, LATEST]


# --- configured labels including node / executionID (Go enrichLabels) ---


@pytest.mark.parametrize(
    ("configured", "order"),
    [
        (["node", "x"], ["node", "x", "executionID"]),
        (["executionID", "x"], ["executionID", "x", "node"]),
        (["x", "executionID", "node"], ["x", "executionID", "node"]),
        ([], ["node", "executionID"]),
        (["x"], ["x", "node", "executionID"]),
        (["x", "y", "z"], ["x", "y", "z", "node", "executionID"]),
    ],
)
def test_configured_node_and_execution_id_labels(configured: list[str], order: list[str]) -> None:
    m = Metrics(make_config(latest=True, gauges={"g": GaugeConfig(help="h", labels=configured)}))
    reported = {n: f"v-{n}" for n in configured if n not in ("node", "executionID")}
    for n in range(30):
        m.set_result(E1, f"node-{n}", "g", reported, n)
    m.set_current_execution(E2)
    parse(m)  # freezes E1
    m.set_result(E1, "late", "g", {**reported, "node": "ignored", "executionID": "ignored"}, 99)
    text = m.render()[0].decode()
    line = next(x for x in text.splitlines() if x.startswith("foo_g{") and '"late"' in x)
    assert [p.split("=")[0] for p in line[len("foo_g{") : line.index("}")].split(",")] == order
    series = samples(parse(m), "foo_g")
    assert series[labels(**reported, node="late", executionID=E1)] == 99
    assert series[labels(**reported, node="late", executionID=LATEST)] == 99
    assert series[labels(**reported, node="node-7", executionID=E1)] == 7
    assert len(series) == 62


# --- errors ---


def test_unknown_suffix_is_a_key_error() -> None:
    m = Metrics(make_config())
    with pytest.raises(KeyError, match="nope"):
        m.set_result(E1, "n", "nope", {}, 1)
    assert m.result_suffixes == frozenset({"test"})


@pytest.mark.parametrize(
    ("given", "series"),
    [
        ({"label_a": "a"}, {"label_a": "a", "label_b": ""}),
        ({"label_a": "a", "label_b": "b", "extra": "x"}, {"label_a": "a", "label_b": "b"}),
        ({"label_a": "a", "other": "x"}, {"label_a": "a", "label_b": ""}),
        ({}, {"label_a": "", "label_b": ""}),
    ],
)
def test_labels_are_taken_as_the_go_controller_takes_them(
    given: dict[str, str], series: dict[str, str]
) -> None:
    """A missing configured label is "", a label that is not configured is ignored."""
    m = Metrics(make_config())
    m.set_result(E1, "n", "test", given, 1)
    assert samples(parse(m), "foo_test") == {labels(**series, node="n", executionID=E1): 1}


def test_a_whole_result_is_written_as_its_entries_one_by_one_would_be() -> None:
    """result_series / set_results (per gauge) against set_result (per series): the same
    series, "" for a missing label, unconfigured labels ignored, "latest" too; and the
    limit backstop refuses an entry of a result in both the execution and "latest"."""
    entries = [
        ResultEntry(1, {"label_a": "a", "label_b": "b"}),
        ResultEntry(2, {"label_a": "a"}),  # label_b missing: ""
        ResultEntry(3, {"label_a": "c", "label_b": "d", "other": "x"}),
        ResultEntry(4, {"label_a": "a", "label_b": "b"}),  # the first again: the newer wins
    ]
    batch = Metrics(make_config(latest=True))
    one_by_one = Metrics(make_config(latest=True))
    batch.set_results(E1, "n", batch.result_series(E1, "n", {"test": entries}))
    for entry in entries:
        one_by_one.set_result(E1, "n", "test", entry.labels, entry.value)
    written = samples(parse(batch), "foo_test")
    assert written == samples(parse(one_by_one), "foo_test")
    assert written[labels(label_a="a", label_b="b", node="n", executionID=E1)] == 4
    assert written[labels(label_a="a", label_b="", node="n", executionID=E1)] == 2
    assert len(written) == 6  # three series, in E1 and in "latest"

    m = Metrics(msgspec.structs.replace(make_config(latest=True), max_series_per_node=2))
    m.set_current_execution(E1)
    assert m.series_held(E1, "n") == (0, 0)  # counting starts for E1
    m.set_results(E1, "n", m.result_series(E1, "n", {"test": entries}))  # checked elsewhere
    held = samples(parse(m), "foo_test")
    assert m.series_held(E1, "n") == (2, 2)  # the third series refused
    assert {dict(k)["label_a"] for k in held} == {"a"} and len(held) == 4  # E1 and latest


def test_stored_series_keys_share_their_label_values() -> None:
    """A decoded result's strings are not kept: a stored key's values are interned."""
    m = Metrics(make_config())
    body = b'{"test": [{"value": 1, "labels": {"label_a": "x-1", "label_b": "y-1"}}]}'
    for node in ("n1", "n2"):
        result = decode_result(body)
        m.set_results(E1, node, m.result_series(E1, node, result))
    keys = list(m._results["test"].blocks[E1].series)
    assert keys[0][0] is keys[1][0] is sys.intern("x-1")


def test_node_and_execution_id_in_reported_labels_are_ignored() -> None:
    m = Metrics(make_config())
    m.set_result(
        E1, "n", "test", {"label_a": "a", "label_b": "b", "node": "x", "executionID": "y"}, 1
    )
    assert samples(parse(m), "foo_test") == {
        labels(label_a="a", label_b="b", node="n", executionID=E1): 1
    }


def test_non_numeric_execution_id_for_current_execution() -> None:
    with pytest.raises(ValueError, match="'abc' is not a number"):
        Metrics(make_config()).set_current_execution("abc")


@pytest.mark.parametrize(
    ("gauges", "prefix", "message"),
    [
        ({"processing": GaugeConfig()}, "foo", "metrics.gauges.processing: .* reserved"),
        ({"duration": GaugeConfig()}, "foo", "metrics.gauges.duration: .* reserved"),
        ({"pods": GaugeConfig()}, "foo", "metrics.gauges.pods: .* reserved"),
        ({"g": GaugeConfig(labels=["bad-label"])}, "foo", "metrics.gauges.g.labels: 'bad-label'"),
        ({"g": GaugeConfig(labels=["__x"])}, "foo", "metrics.gauges.g.labels: '__x'"),
        ({"g": GaugeConfig(labels=["a", "a"])}, "foo", "metrics.gauges.g.labels: duplicate"),
        ({"bad-name": GaugeConfig()}, "foo", "'foo_bad-name' is not a valid metric name"),
        (
            {"current_execution_id": GaugeConfig()},
            "foo",
            "metrics.gauges.current_execution_id: .* reserved",
        ),
        ({"execution_nodes": GaugeConfig()}, "bjc", "metrics.gauges.execution_nodes"),
        ({}, "1x", "metrics.prefix: '1x_current_execution_id'"),
    ],
)
def test_invalid_metric_config(gauges: dict[str, GaugeConfig], prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metrics(make_config(gauges=gauges, prefix=prefix))


def test_series_family_refuses_aioprometheus_set() -> None:
    family = Metrics(make_config()).registry.get("foo_test")
    with pytest.raises(TypeError, match=r"bjc\.reports\.metrics\.Metrics"):
        family.set({"node": "n"}, 1)  # type: ignore[arg-type]


# --- bjc's extras ---


def test_progress_gauges() -> None:
    m = Metrics(make_config())
    m.set_progress(E1, 3, 4)
    m.set_progress(E2, 0, 0)
    f = parse(m)
    assert samples(f, "bjc_execution_finished_nodes") == {
        labels(executionID=E1): 3,
        labels(executionID=E2): 0,
    }
    assert samples(f, "bjc_execution_nodes") == {
        labels(executionID=E1): 4,
        labels(executionID=E2): 0,
    }
    assert samples(f, "bjc_execution_progress") == {
        labels(executionID=E1): 0.75,
        labels(executionID=E2): 1.0,
    }
    assert f["bjc_execution_progress"].type == "gauge"
    with pytest.raises(ValueError, match="negative"):
        m.set_progress(E1, -1, 2)


def test_current_execution_info_names_only_the_current_execution() -> None:
    m = Metrics(make_config())
    assert samples(parse(m), "bjc_current_execution_info") == {}
    m.set_current_execution(E1)
    m.set_current_execution(E2)
    f = parse(m)
    assert samples(f, "bjc_current_execution_info") == {labels(executionID=E2): 1}
    assert f["bjc_current_execution_info"].type == "gauge"


def test_pods_by_phase() -> None:
    m = Metrics(make_config())
    phases = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
    assert samples(parse(m), "bjc_job_pods") == {labels(phase=p): 0 for p in phases}
    m.set_pods_by_phase({"Running": 3, "Succeeded": 5})
    m.set_pods_by_phase({"Running": 2, "Failed": 1})  # replaces
    f = parse(m)
    assert samples(f, "bjc_job_pods") == {
        **{labels(phase=p): 0 for p in phases},
        labels(phase="Running"): 2,
        labels(phase="Failed"): 1,
    }
    assert f["bjc_job_pods"].type == "gauge"


def test_callback_counter() -> None:
    m = Metrics(make_config())
    for route, code in [("result", 200), ("result", 200), ("result", 406), ("file", 413)]:
        m.count_callback(route, code)
    f = parse(m)
    family = f["bjc_callback_requests"]
    assert family.type == "counter"
    assert {s.name for s in family.samples} == {"bjc_callback_requests_total"}
    assert samples(f, "bjc_callback_requests") == {
        labels(route="result", code="200"): 2,
        labels(route="result", code="406"): 1,
        labels(route="file", code="413"): 1,
    }
    m.count_callback("result", 200)  # counted between scrapes: added, never replacing
    assert samples(parse(m), "bjc_callback_requests")[labels(route="result", code="200")] == 3


def test_leader_gauge_and_skipped_triggers() -> None:
    m = Metrics(make_config())
    f = parse(m)
    assert samples(f, "leader_election_master_status") == {
        labels(name="my-controller-leader-election"): 0
    }
    assert samples(f, "bjc_skipped_triggers") == {(): 0}
    assert f["bjc_skipped_triggers"].type == "counter"
    m.set_leader(True)
    m.count_skipped_trigger()
    m.count_skipped_trigger()
    f = parse(m)
    assert samples(f, "leader_election_master_status") == {
        labels(name="my-controller-leader-election"): 1
    }
    assert samples(f, "bjc_skipped_triggers") == {(): 2}


def test_process_metrics() -> None:
    f = parse(Metrics(make_config()))
    assert f["process_cpu_seconds"].type == "counter"
    assert samples(f, "process_cpu_seconds")[()] > 0
    assert samples(f, "process_resident_memory_bytes")[()] > 10 * 1024 * 1024
    assert (
        samples(f, "process_virtual_memory_bytes")[()]
        > samples(f, "process_resident_memory_bytes")[()]
    )
    assert time.time() - 86400 * 365 < samples(f, "process_start_time_seconds")[()] <= time.time()
    assert 3 <= samples(f, "process_open_fds")[()] <= samples(f, "process_max_fds")[()]


def test_aioprometheus_own_renderer_sees_the_same_series() -> None:
    m = Metrics(make_config(latest=True))
    m.set_processing(E1, "n", 1)
    m.set_result(E1, "n", "test", {"label_a": "a", "label_b": "b"}, 3)
    m.set_progress(E1, 1, 1)
    body, headers = aioprometheus.render(m.registry, [])
    theirs = {f.name: f for f in text_string_to_metric_families(body.decode())}
    ours = parse(m)
    for name in ("foo_processing", "foo_test", "bjc_execution_progress"):
        assert samples(theirs, name) == samples(ours, name)
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


# --- HTTP ---


def big_metrics() -> Metrics:
    m = Metrics(make_config())
    for e in (E1, E2):
        for n in range(2000):
            m.set_result(e, f"node-{n}", "test", {"label_a": "a", "label_b": str(n % 3)}, n)
    m.set_current_execution(E2)
    return m


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT, "application/json", "*/*"])
async def test_handler_serves_text_format(aiohttp_client: Any, accept: str | None) -> None:
    m = Metrics(make_config())
    m.set_processing(E1, "n", 1)
    client = await aiohttp_client(make_metrics_app(m))
    headers = {"Accept-Encoding": "identity"}
    if accept:
        headers["Accept"] = accept
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in resp.headers
    text = await resp.text()
    f = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert samples(f, "foo_processing") == {labels(node="n", executionID=E1): 1}


async def test_handler_gzip_and_large_bodies(aiohttp_client: Any) -> None:
    m = big_metrics()
    client = await aiohttp_client(make_metrics_app(m))
    for _ in range(2):  # the second scrape serves E1 from its frozen, compressed copy
        resp = await client.get(
            "/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        )
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        raw = await resp.read()  # aiohttp inflates transparently
        series = samples(
            {f.name: f for f in text_string_to_metric_families(raw.decode())}, "foo_test"
        )
        assert len(series) == 4000
        assert series[labels(label_a="a", label_b="2", node="node-5", executionID=E1)] == 5
    assert m.registry.get("foo_test").is_frozen(E1)  # type: ignore[attr-defined]

    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    inflated = gzip.decompress(await resp.read()).decode()
    theirs = {f.name: f for f in text_string_to_metric_families(inflated)}
    assert stable(theirs) == stable(parse(m))


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
async def test_large_bodies_stream_in_pieces(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    import bjc.web.metrics

    monkeypatch.setattr(bjc.web.metrics, "_STREAM_PIECE_BYTES", 4096)  # many pieces
    m = big_metrics()
    m.render()  # freeze the past execution: the stream inflates it piece by piece
    client = await aiohttp_client(make_metrics_app(m))
    resp = await client.get(
        "/metrics", headers={"Accept-Encoding": encoding}, auto_decompress=False
    )
    assert resp.status == 200
    raw = await resp.read()
    if encoding == "gzip":
        assert resp.headers["Content-Encoding"] == "gzip"
        raw = gzip.decompress(raw)
    else:
        assert "Content-Encoding" not in resp.headers

    def steady(text: bytes) -> list[bytes]:  # process_* values move between two renders
        return [line for line in text.splitlines() if b"process_" not in line]

    assert steady(raw) == steady(m.render()[0])
    assert len(raw) > 10 * 4096


async def test_handler_methods(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_metrics_app(Metrics(make_config())))
    assert (await client.head("/metrics")).status == 200
    assert (await client.post("/metrics")).status == 405
    assert (await client.get("/other")).status == 404


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("identity", False),
        ("", False),
        ("br, deflate", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert _accepts_gzip(header) is expected


# --- series limits (maxSeriesPerNode, maxSeriesPerExecution) ---


def limited(per_node: int = 1000, per_execution: int = 100_000) -> Metrics:
    config = msgspec.structs.replace(
        make_config(), max_series_per_node=per_node, max_series_per_execution=per_execution
    )
    return Metrics(config)


def test_new_series_counts_what_the_execution_lacks() -> None:
    m = limited()
    m.set_result(E1, "n1", "test", {"label_a": "a", "label_b": "b"}, 1)
    result = {
        "test": [
            ResultEntry(1, {"label_a": "a", "label_b": "b"}),  # held
            ResultEntry(2, {"label_a": "a", "label_b": "b", "other": "dropped"}),  # the same
            ResultEntry(3, {"label_a": "a"}),  # label_b "": new
            ResultEntry(4, {"label_a": "a"}),  # twice in one result: once
        ],
        "unconfigured": [ResultEntry(5, {"x": "y"})],  # no series
    }
    assert m.new_series(E1, m.result_series(E1, "n1", result)) == 1
    first = {"test": result["test"][:1]}
    assert m.new_series(E1, m.result_series(E1, "n2", first)) == 1  # another node's: its own
    assert m.new_series(E2, m.result_series(E2, "n1", first)) == 1


def test_series_held_is_rebuilt_from_frozen_blocks() -> None:
    m = limited()
    for i in range(300):
        m.set_result(E1, f"n{i % 3}", "test", {"label_a": str(i), "label_b": "x"}, i)
    m.set_current_execution(E2)  # E1 is a past execution now
    m.render()  # freezes E1's blocks
    assert m._results["test"].family.is_frozen(E1)
    assert m.series_held(E1, "n0") == (100, 300)
    held = {"test": [ResultEntry(0, {"label_a": "0", "label_b": "x"})]}
    assert m.new_series(E1, m.result_series(E1, "n0", held)) == 0
    m.remove_execution(E1)
    assert m.series_held(E1, "n0") == (0, 0)


def test_counts_follow_writes_and_hold_the_limits_as_a_backstop() -> None:
    m = limited(per_node=5, per_execution=8)
    m.set_current_execution(E1)
    assert m.series_held(E1, "n1") == (0, 0)  # counting starts for E1
    for i in range(7):  # results checked together, applied one after the other
        m.set_result(E1, "n1", "test", {"label_a": str(i), "label_b": ""}, i)
    assert m.series_held(E1, "n1") == (5, 5)
    m.set_result(E1, "n1", "test", {"label_a": "0", "label_b": ""}, 42)  # update: allowed
    for i in range(7):
        m.set_result(E1, "n2", "test", {"label_a": str(i), "label_b": ""}, i)
    assert m.series_held(E1, "n2") == (3, 8)
    values = {
        (s.labels["node"], s.labels["label_a"]): s.value for s in parse(m)["foo_test"].samples
    }
    assert len(values) == 8 and values[("n1", "0")] == 42
