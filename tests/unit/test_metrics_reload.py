"""Metrics of a reloaded configuration: configured gauges, latest series, info, problems."""

from __future__ import annotations

import msgspec
import pytest

from bjc.config.settings import GaugeConfig, MetricsConfig
from bjc.reports.metrics import Metrics
from bjc.reports.results import ResultEntry

from .test_metrics import E1, labels, make_config, parse, samples


def test_gauges_added_changed_and_removed_by_a_reload() -> None:
    config = make_config(
        gauges={
            "kept": GaugeConfig(help="kept", labels=["a"]),
            "changed": GaugeConfig(help="old help", labels=["a"]),
            "removed": GaugeConfig(help="removed", labels=[]),
        }
    )
    metrics = Metrics(config)
    for suffix in ("kept", "changed", "removed"):
        metrics.set_result(E1, "n1", suffix, {"a": "x"}, 1.0)
    gauges = {
        "kept": GaugeConfig(help="kept", labels=["a"]),
        "changed": GaugeConfig(help="new help", labels=["a", "b"]),
        "added": GaugeConfig(help="added", labels=[]),
    }
    config = msgspec.structs.replace(
        config, metrics=msgspec.structs.replace(config.metrics, gauges=gauges)
    )
    assert sorted(metrics.reconfigure(config)) == ["added", "changed"]
    families = parse(metrics)
    assert samples(families, "foo_kept") == {labels(a="x", node="n1", executionID=E1): 1.0}
    assert samples(families, "foo_changed") == {}  # starts empty: the caller replays results
    assert "foo_removed" not in families
    metrics.set_result(E1, "n1", "changed", {"a": "x", "b": "y"}, 2.0)
    metrics.set_result(E1, "n1", "added", {}, 3.0)
    families = parse(metrics)
    assert samples(families, "foo_changed") == {labels(a="x", b="y", node="n1", executionID=E1): 2}
    assert families["foo_changed"].documentation == "new help"
    assert samples(families, "foo_added") == {labels(node="n1", executionID=E1): 3.0}
    with pytest.raises(KeyError):
        metrics.set_result(E1, "n1", "removed", {}, 1.0)


def test_a_gauge_that_cannot_be_exposed_is_refused_and_nothing_changes() -> None:
    config = make_config(prefix="bjc", gauges={})
    metrics = Metrics(config)
    before = parse(metrics)
    clash = msgspec.structs.replace(
        config,
        pod_pool_size=99,
        metrics=MetricsConfig(
            prefix="bjc",  # bjc_execution_progress is one of bjc's own metrics
            gauges={"new": GaugeConfig(), "execution_progress": GaugeConfig()},
        ),
    )
    with pytest.raises(ValueError, match=r"metrics\.gauges\.execution_progress"):
        metrics.reconfigure(clash)
    after = parse(metrics)
    assert after.keys() == before.keys() and "bjc_new" not in after
    (info,) = samples(after, "com_github_bakito_batch_job_controller")
    assert dict(info)["poolSize"] == "7"


def test_info_series_and_latest_follow_a_reload() -> None:
    config = make_config(latest=True)
    metrics = Metrics(config)
    metrics.set_processing(E1, "n1", 0)
    reloaded = msgspec.structs.replace(config, pod_pool_size=3, latest_metrics_label=False)
    metrics.reconfigure(reloaded)
    families = parse(metrics)
    (info,) = samples(families, "com_github_bakito_batch_job_controller")
    assert dict(info)["poolSize"] == "3"
    assert samples(families, "foo_processing") == {labels(node="n1", executionID=E1): 0.0}
    metrics.set_processing(E1, "n2", 1)
    assert labels(node="n2", executionID="latest") not in samples(parse(metrics), "foo_processing")


def test_config_problems_by_key_until_a_change_applies() -> None:
    metrics = Metrics(make_config())
    assert samples(parse(metrics), "bjc_config_last_reload_successful") == {(): 1.0}
    metrics.set_config_problems([("podPoolSize", "invalid value 0: must be at least 1")])
    families = parse(metrics)
    assert samples(families, "bjc_config_problems") == {
        labels(key="podPoolSize", problem="invalid value 0: must be at least 1"): 1.0
    }
    assert samples(families, "bjc_config_last_reload_successful") == {(): 0.0}
    metrics.set_config_problems([])
    families = parse(metrics)
    assert samples(families, "bjc_config_problems") == {}
    assert samples(families, "bjc_config_last_reload_successful") == {(): 1.0}


def test_series_checked_before_a_reload_are_set_with_the_reloaded_gauges() -> None:
    """A callback computes its series' keys before the await for the results log and
    sets them after: a reload in between must not write them into a replaced gauge."""
    config = make_config(gauges={"changed": GaugeConfig(help="old", labels=["a"])})
    metrics = Metrics(config)
    result = {"changed": [ResultEntry(2.0, {"a": "x", "b": "y"})]}
    series = metrics.result_series(E1, "n1", result)  # keys of the old gauge: (a, node)
    gauges = {"changed": GaugeConfig(help="new", labels=["a", "b"])}
    metrics.reconfigure(
        msgspec.structs.replace(
            config, metrics=msgspec.structs.replace(config.metrics, gauges=gauges)
        )
    )
    metrics.set_results(E1, "n1", series)
    assert samples(parse(metrics), "foo_changed") == {
        labels(a="x", b="y", node="n1", executionID=E1): 2.0
    }
