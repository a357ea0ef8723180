"""config.yaml, environment and ConfigMap loading (the Go controller's keys and bjc's own)."""

from __future__ import annotations

import json

import pytest
import yaml

from bjc.config.configmap import load_config_map, load_config_map_manifest
from bjc.config.settings import (
    Config,
    Environment,
    MiB,
    effective_report_directory,
    load_config,
    load_environment,
)
from bjc.config.values import ConfigError, format_duration, parse_duration, parse_size

BASE = {
    "name": "foo",
    "cronExpression": "42 3 * * *",
    "reportDirectory": "/var/www",
    "metrics": {"prefix": "foo"},
}

POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: job
      image: busybox
"""


def load(**overrides: object) -> tuple[Config, list[str]]:
    doc = {**BASE, **overrides}
    return load_config(yaml.safe_dump(doc))


def problems_of(**overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**overrides)
    return info.value.problems


def single_problem(**overrides: object) -> str:
    problems = problems_of(**overrides)
    assert len(problems) == 1, problems
    return problems[0]


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("300us", 0.0003),
        ("300\u00b5s", 0.0003),
        ("10ns", 1e-8),
        ("0", 0.0),
        ("+5s", 5.0),
        (".5s", 0.5),
        ("1h0m0s", 3600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-1s", "negative"),
        ("10", "missing unit"),
        ("", "empty"),
        ("1d", "cannot parse"),
        ("10 s", "cannot parse"),
        ("abc", "cannot parse"),
        ("1s-", "cannot parse"),
    ],
)
def test_parse_duration_invalid(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("10s", "1m30s", "500ms", "1h0m0s"):
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("64Mi", 64 * MiB), ("10M", 10_000_000), ("1.5Ki", 1536), ("100", 100)],
)
def test_parse_size(value: int | str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["64 MB", "lots", "1x", True, [1]])
def test_parse_size_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_size(value)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- defaults


def test_defaults_of_every_key() -> None:
    cfg, warnings = load_config(
        "name: foo\ncronExpression: '42 3 * * *'\nreportDirectory: /var/www\n"
    )
    assert warnings == [
        "metrics.prefix is empty: metrics are named '_pods', '_processing', ... "
        "(set a prefix such as 'batch_job')"
    ]
    assert cfg.name == "foo"
    assert cfg.job_service_account == ""
    assert cfg.job_image_pull_secrets == []
    assert cfg.job_node_selector == {}
    assert cfg.run_on_unscheduled_nodes is False
    assert cfg.cron_expression == "42 3 * * *"
    assert cfg.report_directory == "/var/www"
    assert cfg.report_history == 30
    assert cfg.pod_pool_size == 1
    assert cfg.run_on_startup is False
    assert cfg.startup_delay == 10.0
    assert cfg.callback_service_name == ""
    assert cfg.callback_service_port == 8090
    assert cfg.health_probe_port == 9152
    assert cfg.metrics.port == 9153
    assert cfg.metrics.prefix == ""
    assert cfg.metrics.gauges == {}
    assert cfg.latest_metrics_label is False
    assert cfg.leader_election_resource_lock == "leases"
    assert cfg.save_pod_log is False
    assert cfg.custom == {}
    assert cfg.concurrency_policy == "Replace"
    assert cfg.job_timeout is None
    assert cfg.callback_auth == "none"
    assert cfg.max_upload_size == 64 * MiB
    assert cfg.file_server_port == 8080


SEED_CONFIG = """\
name: "bjc-test"
jobServiceAccount: "job-sa"
jobNodeSelector: {"node-role.kubernetes.io/worker": ""}
runOnUnscheduledNodes: true
cronExpression: "42 3 * * *"
reportDirectory: "/var/www"
reportHistory: 5
podPoolSize: 10
runOnStartup: true
startupDelay: 1m30s
callbackServiceName: "bjc-callback"
callbackServicePort: 8091
healthProbePort: 9000
custom: {"a": [1, 2]}
latestMetricsLabel: true
leaderElectionResourceLock: leases
savePodLog: true
jobImagePullSecrets: [{name: regcred}]
metrics:
  port: 9001
  prefix: "foo_bar"
  gauges:
    test:
      help: "help ..."
      labels:
        - label_a
        - label_b
concurrencyPolicy: Forbid
jobTimeout: 1h30m
callbackAuth: token
maxUploadSize: 10Mi
fileServerPort: 8081
maxSeriesPerNode: 50
maxSeriesPerExecution: 5000
maxLabelValueLength: 64
"""


def test_every_key_set() -> None:
    cfg, warnings = load_config(SEED_CONFIG)
    assert warnings == []
    assert cfg.name == "bjc-test"
    assert cfg.job_service_account == "job-sa"
    assert [s.name for s in cfg.job_image_pull_secrets] == ["regcred"]
    assert cfg.job_node_selector == {"node-role.kubernetes.io/worker": ""}
    assert cfg.run_on_unscheduled_nodes is True
    assert cfg.report_history == 5
    assert cfg.pod_pool_size == 10
    assert cfg.run_on_startup is True
    assert cfg.startup_delay == 90.0
    assert cfg.callback_service_name == "bjc-callback"
    assert cfg.callback_service_port == 8091
    assert cfg.health_probe_port == 9000
    assert cfg.custom == {"a": [1, 2]}
    assert cfg.latest_metrics_label is True
    assert cfg.save_pod_log is True
    assert cfg.metrics.port == 9001
    assert cfg.metrics.prefix == "foo_bar"
    assert cfg.metrics.gauges["test"].help == "help ..."
    assert cfg.metrics.gauges["test"].labels == ["label_a", "label_b"]
    assert cfg.concurrency_policy == "Forbid"
    assert cfg.job_timeout == 5400.0
    assert cfg.callback_auth == "token"
    assert cfg.max_upload_size == 10 * MiB
    assert cfg.file_server_port == 8081
    assert cfg.max_series_per_node == 50
    assert cfg.max_series_per_execution == 5000
    assert cfg.max_label_value_length == 64


def test_callback_limits_default_generously() -> None:
    cfg, _ = load()
    assert (cfg.max_series_per_node, cfg.max_series_per_execution) == (1000, 100_000)
    assert cfg.max_label_value_length == 1024


def test_json_config_is_accepted() -> None:
    cfg, _ = load_config(json.dumps({**BASE, "podPoolSize": 4, "metrics": {"prefix": "x"}}))
    assert cfg.pod_pool_size == 4
    assert cfg.metrics.prefix == "x"


def test_null_values_mean_default() -> None:
    cfg, _ = load(jobNodeSelector=None, reportHistory=None, metrics={"gauges": {"g": None}})
    assert cfg.job_node_selector == {}
    assert cfg.report_history == 30
    assert cfg.metrics.gauges["g"].labels == []


def test_port_zero_means_default_like_go() -> None:
    cfg, _ = load(healthProbePort=0, metrics={"port": 0})
    assert cfg.health_probe_port == 9152
    assert cfg.metrics.port == 9153


def test_startup_delay_zero_is_the_go_default_with_a_warning() -> None:
    cfg, warnings = load(startupDelay="0s")
    assert cfg.startup_delay == 10.0
    assert any("startupDelay" in w for w in warnings)


def test_durations_as_go_decodes_them_integer_nanoseconds() -> None:
    cfg, warnings = load(startupDelay=3_000_000_000, jobTimeout=90_000_000_000)
    assert cfg.startup_delay == 3.0 and cfg.job_timeout == 90.0 and warnings == []


def test_max_upload_size_as_int() -> None:
    cfg, _ = load(maxUploadSize=1000)
    assert cfg.max_upload_size == 1000


def test_max_pod_log_size_defaults_to_the_kubelets_log_rotation_size() -> None:
    assert load()[0].max_pod_log_size == 10 * 1024 * 1024
    assert load(maxPodLogSize="1Gi")[0].max_pod_log_size == 1024**3
    assert load(maxPodLogSize=2048)[0].max_pod_log_size == 2048


def test_name_with_dots_like_go() -> None:
    assert load(name="team.batch-1")[0].name == "team.batch-1"


def test_report_history_zero_allowed() -> None:
    cfg, _ = load(reportHistory=0)
    assert (cfg.report_history, cfg.kept_executions) == (0, 1)  # the current one is kept


def test_every_descriptor_and_interval_are_valid_cron() -> None:
    for expr in ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"):
        assert load(cronExpression=expr)[0].cron_expression == expr
    assert load(cronExpression="@every 1h30m")[0].cron_expression == "@every 1h30m"


# ----------------------------------------------------------------------------- alias


def test_image_pull_secrets_alias() -> None:
    cfg, warnings = load(imagePullSecrets=[{"name": "a"}, {"name": "b"}])
    assert [s.name for s in cfg.job_image_pull_secrets] == ["a", "b"]
    assert warnings == []


def test_both_pull_secret_keys_identical_warns() -> None:
    cfg, warnings = load(jobImagePullSecrets=[{"name": "a"}], imagePullSecrets=[{"name": "a"}])
    assert [s.name for s in cfg.job_image_pull_secrets] == ["a"]
    assert any("both given" in w for w in warnings)


def test_both_pull_secret_keys_different_is_an_error() -> None:
    problem = single_problem(jobImagePullSecrets=[{"name": "a"}], imagePullSecrets=[{"name": "b"}])
    assert "jobImagePullSecrets" in problem and "imagePullSecrets" in problem
    assert '"a"' in problem and '"b"' in problem


def test_an_empty_mapping_of_pull_secrets_means_none() -> None:
    """`jobImagePullSecrets: {}` is what the Go controller's Helm chart renders; the Go
    controller never reads that key, so bjc takes it as absent (the alias still counts)."""
    cfg, warnings = load(jobImagePullSecrets={})
    assert (cfg.job_image_pull_secrets, warnings) == ([], [])
    cfg, _ = load(jobImagePullSecrets={}, imagePullSecrets=[{"name": "a"}])
    assert [s.name for s in cfg.job_image_pull_secrets] == ["a"]
    assert "a list of {name: ...}" in single_problem(jobImagePullSecrets={"name": "a"})


def test_pull_secret_as_plain_string_is_an_error() -> None:
    problem = single_problem(jobImagePullSecrets=["regcred"])
    assert problem.startswith('jobImagePullSecrets[0]: invalid value "regcred"')
    assert "{name: regcred}" in problem


# ----------------------------------------------------------------------------- warnings


def test_unknown_keys_warn_with_suggestion() -> None:
    cfg, warnings = load(
        podPoolsize=3, extra=1, metrics={"prefx": "a", "gauges": {"g": {"hepl": "x"}}}
    )
    assert cfg.pod_pool_size == 1
    text = "\n".join(warnings)
    assert "podPoolsize: unknown key ignored (did you mean 'podPoolSize'?)" in text
    assert "extra: unknown key ignored" in text
    assert "metrics.prefx: unknown key ignored (did you mean 'prefix'?)" in text
    assert "metrics.gauges.g.hepl: unknown key ignored (did you mean 'help'?)" in text


@pytest.mark.parametrize("lock", ["configmapsleases", "endpointsleases", "configmaps", "endpoints"])
def test_legacy_lock_warns_and_uses_leases(lock: str) -> None:
    cfg, warnings = load(leaderElectionResourceLock=lock)
    assert cfg.leader_election_resource_lock == "leases"
    assert len(warnings) == 1
    assert lock in warnings[0] and "leaderElectionResourceLock" in warnings[0]


def test_empty_lock_means_leases() -> None:
    cfg, warnings = load(leaderElectionResourceLock="")
    assert cfg.leader_election_resource_lock == "leases"
    assert warnings == []


def test_an_empty_string_means_the_default_of_a_string_key() -> None:
    cfg, _ = load(concurrencyPolicy="", callbackAuth="", jobServiceAccount="", timeZone="")
    assert (cfg.concurrency_policy, cfg.callback_auth) == ("Replace", "none")
    assert (cfg.job_service_account, cfg.time_zone) == ("", "")
    assert single_problem(name="") == "name: required but missing (empty)"
    assert single_problem(podPoolSize="").startswith('podPoolSize: invalid value ""')


def test_items_of_lists_are_named_by_index() -> None:
    problems = problems_of(
        jobImagePullSecrets=[{"name": "ok"}, {"name": "Not OK"}],
        metrics={"prefix": "p", "gauges": {"g": {"labels": ["a", "1b"]}}},
    )
    assert [p.split(":", 1)[0] for p in problems] == [
        "jobImagePullSecrets[1].name",
        "metrics.gauges.g.labels[1]",
    ]


def test_empty_prefix_warns() -> None:
    _, warnings = load(metrics={"gauges": {"g": {}}})
    assert any("metrics.prefix is empty" in w for w in warnings)


# ----------------------------------------------------------------------------- invalid values

INVALID = [
    # (overrides, key named, value shown, reason fragment)
    ({"name": "Foo"}, "name", '"Foo"', "lower-case"),
    ({"name": "foo_bar"}, "name", '"foo_bar"', "lower-case"),
    ({"name": "a" * 64}, "name", "aaaa", "63"),
    ({"name": "-foo"}, "name", '"-foo"', "starting"),
    ({"name": "foo..bar"}, "name", '"foo..bar"', "lower-case"),
    ({"name": "foo."}, "name", '"foo."', "lower-case"),
    ({"name": 12}, "name", "12", "expected a string"),
    ({"name": ""}, "name", "", "required"),
    ({"jobServiceAccount": "Bad SA"}, "jobServiceAccount", '"Bad SA"', "ServiceAccount"),
    ({"jobNodeSelector": ["a"]}, "jobNodeSelector", '["a"]', "expected a mapping"),
    ({"jobNodeSelector": {"role": True}}, "jobNodeSelector.role", "true", "quote it"),
    ({"jobNodeSelector": {"bad key!": "x"}}, "jobNodeSelector", '"bad key!"', "label key"),
    ({"jobNodeSelector": {"role": "a b"}}, "jobNodeSelector.role", '"a b"', "label value"),
    ({"runOnUnscheduledNodes": "yes please"}, "runOnUnscheduledNodes", '"yes please"', "boolean"),
    ({"runOnStartup": 1}, "runOnStartup", "1", "boolean"),
    ({"latestMetricsLabel": "x"}, "latestMetricsLabel", '"x"', "boolean"),
    ({"savePodLog": "x"}, "savePodLog", '"x"', "boolean"),
    ({"cronExpression": "61 * * * *"}, "cronExpression", '"61 * * * *"', "minute"),
    ({"cronExpression": "* * *"}, "cronExpression", '"* * *"', "5 fields"),
    ({"cronExpression": "@reboot"}, "cronExpression", '"@reboot"', "descriptor"),
    ({"cronExpression": "@every -1m"}, "cronExpression", '"@every -1m"', "negative"),
    ({"cronExpression": 5}, "cronExpression", "5", "expected a string"),
    ({"reportDirectory": ["x"]}, "reportDirectory", '["x"]', "expected a string"),
    ({"reportHistory": -1}, "reportHistory", "-1", "0 or more"),
    ({"reportHistory": "30"}, "reportHistory", '"30"', "integer"),
    ({"podPoolSize": 0}, "podPoolSize", "0", "at least 1"),
    ({"podPoolSize": -3}, "podPoolSize", "-3", "at least 1"),
    ({"podPoolSize": 2.5}, "podPoolSize", "2.5", "integer"),
    ({"startupDelay": "10"}, "startupDelay", '"10"', "missing unit"),
    ({"startupDelay": "-5s"}, "startupDelay", '"-5s"', "negative"),
    ({"startupDelay": -10}, "startupDelay", "-10", "nanoseconds"),
    ({"startupDelay": 1.5}, "startupDelay", "1.5", "nanoseconds"),
    ({"startupDelay": True}, "startupDelay", "true", "duration string"),
    ({"callbackServiceName": "Bad_Svc"}, "callbackServiceName", '"Bad_Svc"', "Service"),
    ({"callbackServicePort": 70000}, "callbackServicePort", "70000", "65535"),
    ({"callbackServicePort": -1}, "callbackServicePort", "-1", "65535"),
    ({"healthProbePort": 65536}, "healthProbePort", "65536", "65535"),
    ({"healthProbePort": "9152"}, "healthProbePort", '"9152"', "integer"),
    ({"fileServerPort": 0.5}, "fileServerPort", "0.5", "integer"),
    ({"metrics": {"port": 100000}}, "metrics.port", "100000", "65535"),
    ({"metrics": []}, "metrics", "[]", "mapping"),
    ({"metrics": {"prefix": "1abc"}}, "metrics.prefix", '"1abc"', "metric name"),
    ({"metrics": {"prefix": "a-b"}}, "metrics.prefix", '"a-b"', "metric name"),
    ({"metrics": {"prefix": "p", "gauges": {"pods": {}}}}, "metrics.gauges", '"pods"', "reserved"),
    (
        {"metrics": {"prefix": "p", "gauges": {"processing": {}}}},
        "metrics.gauges",
        '"processing"',
        "reserved",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"duration": {}}}},
        "metrics.gauges",
        '"duration"',
        "reserved",
    ),
    ({"metrics": {"prefix": "p", "gauges": {"a-b": {}}}}, "metrics.gauges", '"a-b"', "p_a-b"),
    ({"metrics": {"prefix": "p", "gauges": ["x"]}}, "metrics.gauges", '["x"]', "mapping"),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": ["1a"]}}}},
        "metrics.gauges.g.labels[0]",
        '"1a"',
        "label name",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": ["__x"]}}}},
        "metrics.gauges.g.labels[0]",
        '"__x"',
        "'__'",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": ["node"]}}}},
        "metrics.gauges.g.labels[0]",
        '"node"',
        "added by bjc",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": ["executionID"]}}}},
        "metrics.gauges.g.labels[0]",
        '"executionID"',
        "added by bjc",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": ["a", "a"]}}}},
        "metrics.gauges.g.labels",
        '"a"',
        "twice",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"labels": "a"}}}},
        "metrics.gauges.g.labels",
        '"a"',
        "list",
    ),
    (
        {"metrics": {"prefix": "p", "gauges": {"g": {"help": 3}}}},
        "metrics.gauges.g.help",
        "3",
        "string",
    ),
    (
        {"leaderElectionResourceLock": "zookeeper"},
        "leaderElectionResourceLock",
        '"zookeeper"',
        "leases",
    ),
    ({"custom": [1]}, "custom", "[1]", "mapping"),
    ({"concurrencyPolicy": "Allow"}, "concurrencyPolicy", '"Allow"', "Replace"),
    ({"concurrencyPolicy": "replace"}, "concurrencyPolicy", '"replace"', "Forbid"),
    ({"jobTimeout": "0s"}, "jobTimeout", '"0s"', "positive"),
    ({"jobTimeout": "soon"}, "jobTimeout", '"soon"', "cannot parse"),
    ({"callbackAuth": "basic"}, "callbackAuth", '"basic"', "token"),
    ({"maxUploadSize": "64 MB"}, "maxUploadSize", '"64 MB"', "quantity"),
    ({"maxUploadSize": 0}, "maxUploadSize", "0", "at least 1"),
    ({"maxPodLogSize": 0}, "maxPodLogSize", "0", "at least 1"),
    ({"maxPodLogSize": "10 MiB"}, "maxPodLogSize", '"10 MiB"', "quantity"),
    ({"maxSeriesPerNode": 0}, "maxSeriesPerNode", "0", "at least 1"),
    ({"maxSeriesPerExecution": "many"}, "maxSeriesPerExecution", '"many"', "integer"),
    ({"maxLabelValueLength": -1}, "maxLabelValueLength", "-1", "at least 1"),
]


@pytest.mark.parametrize(("overrides", "key", "shown", "reason"), INVALID)
def test_invalid_value_names_key_and_value(
    overrides: dict[str, object], key: str, shown: str, reason: str
) -> None:
    problem = single_problem(**overrides)
    assert problem.startswith(f"{key}: "), problem
    assert shown in problem, problem
    assert reason in problem, problem


def test_missing_required_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("podPoolSize: 2\n")
    assert info.value.problems == [
        "name: required but missing",
        'cronExpression: required but missing (e.g. "42 3 * * *")',
        "reportDirectory: required but missing (or set REPORT_DIRECTORY)",
    ]


def test_all_problems_are_collected() -> None:
    problems = problems_of(
        name="Bad",
        podPoolSize=0,
        reportHistory=-1,
        cronExpression="nope",
        startupDelay="x",
        metrics={"prefix": "p", "gauges": {"pods": {}}},
    )
    keys = [p.split(":", 1)[0] for p in problems]
    expected = ["name", "cronExpression", "reportHistory", "podPoolSize", "startupDelay"]
    assert keys == [*expected, "metrics.gauges"]


def test_ports_must_differ() -> None:
    problem = single_problem(callbackServicePort=9153)
    assert problem.startswith("callbackServicePort and metrics.port: ")
    assert "9153" in problem


def test_error_message_joins_problems() -> None:
    err = ConfigError(["a: x", "b: y"])
    assert str(err) == "a: x\nb: y"


def test_yaml_syntax_error_is_located() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("name: foo\n  bad: [\n")
    (problem,) = info.value.problems
    assert problem.startswith("invalid YAML at line")


def test_config_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping of keys, got a list"):
        load_config("- a\n- b\n")


def test_report_directory_override() -> None:
    cfg, _ = load_config("name: foo\ncronExpression: '@daily'\n", report_directory="/data")
    assert cfg.report_directory == "/data"
    cfg, _ = load_config(yaml.safe_dump(BASE), report_directory="/data")
    assert cfg.report_directory == "/data"


# ----------------------------------------------------------------------------- environment


def test_environment_required_vars() -> None:
    with pytest.raises(ConfigError) as info:
        load_environment({})
    assert len(info.value.problems) == 2
    assert "NAMESPACE" in info.value.problems[0]
    assert "CONFIG_MAP_NAME" in info.value.problems[1]
    with pytest.raises(ConfigError, match="CONFIG_MAP_NAME"):
        load_environment({"NAMESPACE": "ns"})


def test_environment_values() -> None:
    env = load_environment(
        {
            "NAMESPACE": "ns",
            "CONFIG_MAP_NAME": "cm",
            "POD_IP": "10.1.2.3",
            "HOSTNAME": "ctrl-abc",
            "DEV_MODE": "TRUE",
            "REPORT_DIRECTORY": "/reports",
            "BIND_ADDRESS": "127.0.0.9",
        }
    )
    assert env == Environment(
        namespace="ns",
        config_map_name="cm",
        pod_ip="10.1.2.3",
        hostname="ctrl-abc",
        dev_mode=True,
        report_directory="/reports",
        bind_address="127.0.0.9",
    )


@pytest.mark.parametrize(
    ("value", "dev"), [("true", True), ("True", True), ("1", False), ("", False)]
)
def test_dev_mode_is_case_insensitive_true(value: str, dev: bool) -> None:
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm", "DEV_MODE": value})
    assert env.dev_mode is dev


@pytest.mark.parametrize(
    ("value", "fast"), [("", True), ("1", True), ("TRUE", True), ("0", False), ("false", False)]
)
def test_the_result_fast_path_is_switched_by_bjc_fast_results(value: str, fast: bool) -> None:
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm", "BJC_FAST_RESULTS": value})
    assert env.bjc_fast_results is fast


def test_an_unknown_bjc_fast_results_value_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm", "BJC_FAST_RESULTS": "no"})
    assert info.value.problems == ['BJC_FAST_RESULTS: invalid value "no": expected 1 or 0']


def test_environment_defaults_and_invalid_namespace() -> None:
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm"})
    assert (env.pod_ip, env.hostname, env.dev_mode) == ("", "", False)
    assert (env.report_directory, env.bind_address, env.bjc_fast_results) == (None, None, True)
    with pytest.raises(ConfigError, match='NAMESPACE: invalid value "Bad NS"'):
        load_environment({"NAMESPACE": "Bad NS", "CONFIG_MAP_NAME": "cm"})


def test_effective_report_directory() -> None:
    cfg, _ = load()
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm"})
    assert effective_report_directory(cfg, env) == "/var/www"
    assert effective_report_directory(cfg, None) == "/var/www"
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm", "REPORT_DIRECTORY": "/x"})
    assert effective_report_directory(cfg, env) == "/x"


# ----------------------------------------------------------------------------- ConfigMap


def test_config_map_loads_both_and_applies_env() -> None:
    env = load_environment({"NAMESPACE": "ns", "CONFIG_MAP_NAME": "cm", "REPORT_DIRECTORY": "/r"})
    loaded = load_config_map(
        {"config.yaml": yaml.safe_dump({**BASE, "x": 1}), "pod-template.yaml": POD_TEMPLATE}, env
    )
    assert loaded.config.report_directory == "/r"
    assert (
        loaded.template.substitute(namespace="n", node_name="a", execution_id="1")["kind"] == "Pod"
    )
    assert loaded.warnings == ["config.yaml: x: unknown key ignored"]


def test_config_map_reports_problems_of_both_files() -> None:
    bad_template = POD_TEMPLATE.replace("busybox", "busybox:{{ .Image }}")
    with pytest.raises(ConfigError) as info:
        load_config_map(
            {
                "config.yaml": yaml.safe_dump({**BASE, "podPoolSize": 0}),
                "pod-template.yaml": bad_template,
            }
        )
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("config.yaml: podPoolSize: invalid value 0")
    assert problems[1].startswith("pod-template.yaml: line 6: unsupported template construct")
    assert ".Image" in problems[1]


def test_config_map_missing_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_map({})
    assert info.value.problems == [
        "ConfigMap data has no 'config.yaml' key",
        "ConfigMap data has no 'pod-template.yaml' key",
    ]
    with pytest.raises(ConfigError) as info:
        load_config_map({"config.yaml": "podPoolSize: 0\n"})
    assert info.value.problems[0] == "ConfigMap data has no 'pod-template.yaml' key"
    assert any(p.startswith("config.yaml: name") for p in info.value.problems)


def configmap_manifest(config: dict[str, object], template: str = POD_TEMPLATE) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bjc"},
            "data": {"config.yaml": yaml.safe_dump(config), "pod-template.yaml": template},
        }
    )


def test_config_map_manifest() -> None:
    loaded = load_config_map_manifest(configmap_manifest(BASE))
    assert loaded.config.name == "foo"
    multi = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n" + configmap_manifest(BASE)
    assert load_config_map_manifest(multi).config.name == "foo"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: Secret\n", "no document of kind ConfigMap (found Secret)"),
        ("kind: ConfigMap\ndata: [1]\n", "data: expected a mapping, got a list"),
        ("kind: ConfigMap\n---\nkind: ConfigMap\n", "2 ConfigMaps"),
        ("kind: [\n", "invalid YAML"),
        ("kind: ConfigMap\ndata:\n  config.yaml: 5\n  pod-template.yaml: x\n", "expected a string"),
    ],
)
def test_config_map_manifest_invalid(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_map_manifest(text)
    assert message in info.value.problems[0]
