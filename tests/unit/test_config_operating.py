"""The config keys that operate executions (docs/operating.md): defaults and validation."""

from __future__ import annotations

import pytest

from bjc.config.settings import RESTART_KEYS, changed_keys, problem_key, resolve_share, with_keys

from .test_config import load, single_problem


def test_defaults_keep_the_go_behaviour() -> None:
    config, warnings = load()
    assert warnings == []
    assert config.suspend is False
    assert config.job_retries == 0
    assert config.max_failures is None
    assert config.time_zone == "" and config.starting_deadline is None


def test_suspend_must_be_a_boolean() -> None:
    assert load(suspend=True)[0].suspend is True
    problem = single_problem(suspend="yes")
    assert problem.startswith("suspend: invalid value")
    assert "boolean" in problem


def test_job_retries_is_a_count() -> None:
    assert load(jobRetries=3)[0].job_retries == 3
    assert single_problem(jobRetries=-1) == "jobRetries: invalid value -1: must be 0 or more"
    assert single_problem(jobRetries="3").startswith("jobRetries: invalid value")


@pytest.mark.parametrize(("value", "loaded"), [(3, 3), ("10%", "10%"), (" 2.5 % ", "2.5%")])
def test_max_failures_is_a_count_or_a_percentage(value: object, loaded: object) -> None:
    assert load(maxFailures=value)[0].max_failures == loaded


@pytest.mark.parametrize("value", [0, -1, "0%", "101%", "10", "ten", True, 1.5])
def test_max_failures_refuses_anything_else(value: object) -> None:
    assert single_problem(maxFailures=value).startswith("maxFailures: invalid value")


def test_pod_pool_size_may_be_a_percentage() -> None:
    assert load(podPoolSize="10%")[0].pod_pool_size == "10%"
    assert load(podPoolSize=4)[0].pod_pool_size == 4
    assert single_problem(podPoolSize="0%").startswith('podPoolSize: invalid value "0%"')
    assert single_problem(podPoolSize=0) == "podPoolSize: invalid value 0: must be at least 1"


@pytest.mark.parametrize(
    ("share", "nodes", "count"),
    [(5, 100, 5), ("10%", 5000, 500), ("10%", 11, 2), ("10%", 5, 1), ("50%", 0, 1),
     ("100%", 7, 7), ("33.3%", 3, 1)],
)  # fmt: skip
def test_resolve_share_rounds_up_and_is_at_least_one(share: int | str, nodes: int, count: int):
    assert resolve_share(share, nodes) == count


def test_starting_deadline_is_a_positive_duration() -> None:
    assert load(startingDeadline="10m")[0].starting_deadline == 600.0
    assert single_problem(startingDeadline="0s").startswith("startingDeadline: invalid value")
    assert "missing unit" in single_problem(startingDeadline="10")


# ----------------------------------------------------------------------------- hot reload


def test_changed_keys_name_config_yaml_keys_and_metrics_sub_keys() -> None:
    old, _ = load(podPoolSize=2)
    new, _ = load(
        podPoolSize=3,
        jobNodeSelector={"role": "worker"},
        metrics={"prefix": "foo", "port": 9999, "gauges": {"g": {"help": "h"}}},
    )
    assert changed_keys(old, old) == []
    assert sorted(changed_keys(old, new)) == [
        "jobNodeSelector",
        "metrics.gauges",
        "metrics.port",
        "podPoolSize",
    ]


def test_with_keys_takes_only_the_named_keys() -> None:
    running, _ = load(podPoolSize=2, metrics={"prefix": "foo", "port": 9999})
    new, _ = load(podPoolSize=3, name="other", metrics={"prefix": "bar", "gauges": {"g": {}}})
    merged = with_keys(running, new, ["podPoolSize", "metrics.gauges"])
    assert merged.pod_pool_size == 3 and merged.name == "foo"
    assert merged.metrics.prefix == "foo" and merged.metrics.port == 9999
    assert list(merged.metrics.gauges) == ["g"]
    assert running.pod_pool_size == 2 and running.metrics.gauges == {}  # a copy
    assert {"name", "metrics.prefix", "metrics.port", "reportDirectory"} <= RESTART_KEYS


@pytest.mark.parametrize(
    ("problem", "key", "detail"),
    [
        ("config.yaml: podPoolSize: invalid value 0: must be at least 1", "podPoolSize",
         "invalid value 0: must be at least 1"),
        ("config.yaml: metrics.gauges.x.labels[0]: invalid value", "metrics.gauges.x.labels[0]",
         "invalid value"),
        ("config.yaml: invalid YAML at line 1, column 2: oops", "config.yaml",
         "invalid YAML at line 1, column 2: oops"),
        ("pod-template.yaml: line 3: unknown field .Node", "pod-template.yaml",
         "line 3: unknown field .Node"),
        ("ConfigMap data has no 'config.yaml' key", "ConfigMap",
         "ConfigMap data has no 'config.yaml' key"),
    ],
)  # fmt: skip
def test_problem_key_splits_a_problem_into_its_key_and_what_is_wrong(
    problem: str, key: str, detail: str
) -> None:
    assert problem_key(problem) == (key, detail)
