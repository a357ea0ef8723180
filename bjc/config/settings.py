"""The controller's configuration: `config.yaml`, the pod template and the environment.

`Config` declares every key of config.yaml once: its type, its default and its rules
(msgspec constraints, and the reason shown when one is broken). `load_config` decodes a
file against that declaration key by key (`bjc.config.schema`), so that a bad ConfigMap
refuses to start with one message per problem naming the key and the value, instead of
failing later inside an execution; all problems are collected before `ConfigError` is
raised, so one run of `bjc check-config` shows them all. What spans several keys (two
servers on one port, a time zone named twice) is checked after that, here.

Deliberately pure: nothing here talks to Kubernetes, reads files or logs. Warnings
(unknown keys, legacy values) are returned as strings for the caller to log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from bjc.config.cron import CronSchedule, parse_cron
from bjc.config.schema import INVALID, Problems, decode_struct, decode_value
from bjc.config.values import (
    DURATION_HINT,
    ConfigError,
    kind,
    parse_duration,
    parse_size,
    show,
    yaml_error,
)

MiB = 1024 * 1024

CONFIG_FILE_KEY = "config.yaml"
POD_TEMPLATE_KEY = "pod-template.yaml"

#: Gauge suffixes bjc itself uses for `<prefix>_<suffix>` (the Go controller's metrics).
RESERVED_GAUGE_SUFFIXES = frozenset({"processing", "duration", "pods", "current_execution_id"})
#: Labels bjc adds to every result series; a gauge may not declare them itself.
NODE_LABEL = "node"
EXECUTION_ID_LABEL = "executionID"
RESERVED_LABELS = frozenset({NODE_LABEL, EXECUTION_ID_LABEL})
#: Lock types the Go controller accepted; bjc always uses a Lease and warns about the others.
LEGACY_RESOURCE_LOCKS = ("configmapsleases", "endpointsleases", "configmaps", "endpoints")

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def is_valid_metric_name(name: str) -> bool:
    """Prometheus metric name syntax: `[a-zA-Z_:][a-zA-Z0-9_:]*`."""
    return bool(METRIC_NAME_RE.match(name))


def is_valid_label_name(name: str) -> bool:
    """Prometheus label name syntax, excluding the reserved `__` prefix."""
    return bool(LABEL_NAME_RE.match(name)) and not name.startswith("__")


# --------------------------------------------------------------------------- readers, checks
# What a msgspec constraint cannot say: each raises ValueError with the reason shown.


def read_duration(value: Any) -> float:
    """Seconds from a duration string, or from an integer of nanoseconds.

    The Go controller decodes durations into a Go `time.Duration`, whose only YAML
    form is an integer of nanoseconds (`startupDelay: 3000000000`); bjc accepts that
    form too, so one ConfigMap works for both.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0 or value != int(value):
            raise ValueError("a number is a whole number of nanoseconds, at least 0")
        return int(value) / 1e9
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string, got {kind(value)}; {DURATION_HINT}")
    return parse_duration(value)


def read_share(value: Any) -> int | str:
    """A count of at least 1, or a share of the selected nodes such as "10%"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("must be at least 1")
        return value
    m = _PERCENT_RE.match(value) if isinstance(value, str) else None
    if m is None or not 0 < float(m.group(1)) <= 100:
        raise ValueError('expected an integer, or a percentage such as "10%" (at most 100%)')
    return f"{float(m.group(1)):g}%"


def _zero_is_default(value: Any) -> Any:
    """A port of 0 means the default, as in the Go controller."""
    return None if value == 0 and not isinstance(value, bool) else value


def _string_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _not_a_plain_string(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(f"expected {{name: {value}}}, got a plain string")
    return value


def _check_zone(zone: str) -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone; use an IANA name such as 'Europe/Zurich'") from None


def _check_label_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if (slash and (not prefix or len(prefix) > 253 or not re.match(_DNS_SUBDOMAIN, prefix))) or (
        not re.fullmatch(_LABEL_PART, name) or len(name) > 63
    ):
        raise ValueError(
            "not a valid label key ([prefix/]name; name up to 63 letters, digits, '-', '_', '.')"
        )


def _check_not_reserved_suffix(suffix: str) -> None:
    if suffix in RESERVED_GAUGE_SUFFIXES:
        reserved = ", ".join(sorted(RESERVED_GAUGE_SUFFIXES))
        raise ValueError(f"the suffix is reserved for bjc's own metrics ({reserved})")


def _check_label_name(label: str) -> None:
    if label.startswith("__"):
        raise ValueError("label names starting with '__' are reserved by Prometheus")
    if label in RESERVED_LABELS:
        raise ValueError("'node' and 'executionID' are added by bjc to every series")


def _check_unique(labels: list[str]) -> None:
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"label listed twice: {', '.join(twice)}")


# --------------------------------------------------------------------------- declared types


def _rule(reason: str | None = None, **constraints: Any) -> msgspec.Meta:
    """A msgspec constraint; `reason` is what an operator reads when it is broken."""
    return msgspec.Meta(description=reason, **constraints)


def _reads(read: Any = None, check: Any = None, reason: str | None = None) -> msgspec.Meta:
    extra = {k: f for k, f in (("read", read), ("check", check)) if f is not None}
    return msgspec.Meta(description=reason, extra=extra)


Port = Annotated[
    int, _rule("a port must be between 1 and 65535", ge=1, le=65535), _reads(_zero_is_default)
]
Count = Annotated[int, _rule("must be 0 or more", ge=0)]
Limit = Annotated[int, _rule("must be at least 1", ge=1)]
Share = Annotated[int | str, _reads(read_share)]  # a count, or "N%" of the selected nodes
Duration = Annotated[float, _reads(read_duration)]  # seconds
TimeoutDuration = Annotated[Duration, _rule("must be positive (omit it for no timeout)", gt=0)]
DeadlineDuration = Annotated[
    Duration, _rule("must be positive (omit it to skip missed runs)", gt=0)
]
ControllerName = Annotated[
    str,
    _rule(
        "it prefixes job pod names and is a label value, so it must be at most 63 lower-case "
        "letters, digits, '-' or '.', starting and ending with a letter or digit",
        max_length=63,
        pattern=_DNS_SUBDOMAIN,
    ),
]
ServiceAccountName = Annotated[
    str,
    _rule(
        "not a valid ServiceAccount name (lower-case DNS subdomain)",
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
    ),
]
ServiceName = Annotated[
    str,
    _rule(
        "not a valid Service name (lower-case letters, digits, '-', starting with a letter, "
        "at most 63)",
        max_length=63,
        pattern=_DNS1035_LABEL,
    ),
]
SecretName = Annotated[
    str,
    _rule(
        "not a valid Secret name (lower-case DNS subdomain)",
        min_length=1,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
    ),
]
LabelKey = Annotated[str, _reads(check=_check_label_key)]
LabelValue = Annotated[
    str,
    _rule(
        "not a valid label value (up to 63 letters, digits, '-', '_', '.')",
        max_length=63,
        pattern=f"^({_LABEL_PART})?$",
    ),
]
MetricPrefix = Annotated[
    str, _rule("not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", pattern=METRIC_NAME_RE.pattern)
]
GaugeSuffix = Annotated[
    str,
    _rule("a gauge suffix must be a non-empty string", min_length=1),
    _reads(check=_check_not_reserved_suffix),
]
LabelName = Annotated[
    str,
    _rule("not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)", pattern=LABEL_NAME_RE.pattern),
    _reads(check=_check_label_name),
]
ResourceLock = Annotated[
    Literal["leases", "configmapsleases", "endpointsleases", "configmaps", "endpoints"],
    _rule(f"expected 'leases' (legacy: {', '.join(sorted(LEGACY_RESOURCE_LOCKS))})"),
]


class GaugeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False, frozen=True):
    help: str = ""
    labels: Annotated[
        list[LabelName], _reads(check=_check_unique, reason="a list of label names")
    ] = msgspec.field(default_factory=list)


class MetricsConfig(msgspec.Struct, kw_only=True, frozen=True):
    port: Port = 9153
    prefix: MetricPrefix = ""
    gauges: Annotated[
        dict[GaugeSuffix, GaugeConfig], _rule("a mapping of suffix: {help, labels}")
    ] = msgspec.field(default_factory=dict)


ConditionType = Annotated[
    str,
    _rule(
        "a condition type is a CamelCase name, optionally with a DNS prefix "
        "(example.com/NodeCheckFailed)",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?$",
    ),
]


class NodeConditionConfig(msgspec.Struct, kw_only=True, frozen=True):
    """`nodeCondition`: a condition on each node's status, True while its job fails."""

    type: ConditionType = "NodeCheckFailed"


class NodeTaintConfig(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """`nodeTaint`: a taint on each node whose job fails, on at most `maxShare` of them."""

    key: LabelKey  # required
    effect: Annotated[
        Literal["NoSchedule", "PreferNoSchedule"],
        _rule("expected NoSchedule or PreferNoSchedule (never NoExecute: bjc evicts nothing)"),
    ] = "NoSchedule"
    max_share: Share = "10%"  # of the selected nodes, rounded down


class PullSecret(msgspec.Struct, frozen=True):
    name: SecretName


PullSecrets = Annotated[
    list[Annotated[PullSecret, _reads(_not_a_plain_string, reason="{name: ...}")]],
    _rule("a list of {name: ...}"),
]


class Config(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """config.yaml: the Go controller's keys, then bjc's own. Durations are seconds (float)."""

    name: ControllerName
    job_service_account: ServiceAccountName = ""
    job_image_pull_secrets: PullSecrets = msgspec.field(default_factory=list)
    job_node_selector: dict[LabelKey, LabelValue] = msgspec.field(default_factory=dict)
    run_on_unscheduled_nodes: bool = False
    cron_expression: Annotated[str, _reads(check=parse_cron)] = ""  # required
    report_directory: str = ""  # required, unless REPORT_DIRECTORY is set
    report_history: Count = 30
    pod_pool_size: Share = 1
    run_on_startup: bool = False
    startup_delay: Duration = 10.0
    callback_service_name: ServiceName = ""
    callback_service_port: Port = 8090
    health_probe_port: Port = 9152
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    latest_metrics_label: bool = False
    leader_election_resource_lock: ResourceLock = "leases"  # stored as "leases" whatever it says
    save_pod_log: bool = False
    custom: Annotated[dict[str, object], _reads(_string_keys)] = msgspec.field(default_factory=dict)
    # --- bjc only (each defaults to the Go controller's behaviour) ---
    concurrency_policy: Literal["Replace", "Forbid"] = "Replace"
    job_timeout: TimeoutDuration | None = None
    callback_auth: Literal["none", "token"] = "none"
    # "kill": a 200 survives the process being killed; "fsync": also a power cut
    durability: Literal["kill", "fsync"] = "kill"
    max_upload_size: Annotated[int, _rule("must be at least 1 byte", ge=1), _reads(parse_size)] = (
        64 * MiB
    )
    file_server_port: Port = 8080
    max_series_per_node: Limit = 1_000  # result series of one node in one execution
    max_series_per_execution: Limit = 100_000  # result series of all nodes of an execution
    max_label_value_length: Limit = 1_024  # characters
    max_pod_log_size: Annotated[  # bytes of a container's log savePodLog keeps
        int, _rule("must be at least 1 byte", ge=1), _reads(parse_size)
    ] = 10 * MiB  # the kubelet's default containerLogMaxSize: one log file's worth
    # --- operating executions (docs/operating.md) ---
    suspend: bool = False
    job_retries: Count = 0
    max_failures: Share | None = None  # None: unlimited
    time_zone: Annotated[str, _reads(check=_check_zone)] = ""  # "" = local (or a TZ= prefix)
    starting_deadline: DeadlineDuration | None = None  # None: a missed run is skipped
    # --- acting on results (docs/operations.md) ---
    node_condition: NodeConditionConfig | None = None  # None: no node condition
    node_taint: NodeTaintConfig | None = None  # None: no taint

    @property
    def kept_executions(self) -> int:
        """Executions the report directory keeps: `reportHistory`, at least the current one."""
        return max(self.report_history, 1)


class Environment(msgspec.Struct, kw_only=True):
    """The controller's environment, the variables the Go controller reads."""

    namespace: str
    config_map_name: str
    pod_ip: str = ""
    hostname: str = ""
    dev_mode: bool = False
    report_directory: str | None = None
    bind_address: str | None = None  # None: every interface
    bjc_fast_results: bool = True  # result posts on bjc.web.fastresult


# --------------------------------------------------------------------------- config.yaml

_PULL_SECRETS_ALIAS = "imagePullSecrets"
_KNOWN_KEYS = (*(f.encode_name for f in msgspec.structs.fields(Config)), _PULL_SECRETS_ALIAS)
_REQUIRED_HINTS = {
    "cronExpression": ' (e.g. "42 3 * * *")',
    "reportDirectory": " (or set REPORT_DIRECTORY)",
}


def _parse_yaml_mapping(text: str, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return None, [yaml_error(exc)]
    if not docs:
        return {}, []
    if len(docs) > 1:
        return None, [f"expected one YAML document in {what}, found {len(docs)}"]
    doc = docs[0]
    if not isinstance(doc, dict):
        return None, [f"{what} must be a mapping of keys, got {kind(doc)}"]
    return doc, []


def load_config(text: str, *, report_directory: str | None = None) -> tuple[Config, list[str]]:
    """Parse and validate `config.yaml` (YAML or JSON); return the config and the warnings.

    `report_directory` (the `REPORT_DIRECTORY` override, as in the Go controller) replaces the
    file's `reportDirectory`, which then may be missing. Raises `ConfigError`
    with every problem found.
    """
    raw, errors = _parse_yaml_mapping(text, CONFIG_FILE_KEY)
    if raw is None:
        raise ConfigError(errors)
    if report_directory:
        raw = {**raw, "reportDirectory": report_directory}
    if raw.get("jobImagePullSecrets") == {}:
        # what the Go controller's Helm chart renders; the Go controller never reads the
        # key (its pull secrets are `imagePullSecrets`): no pull secrets, as if absent
        raw = {k: v for k, v in raw.items() if k != "jobImagePullSecrets"}
    p = Problems()
    alias = raw.get(_PULL_SECRETS_ALIAS)
    out = decode_struct({k: v for k, v in raw.items() if k != _PULL_SECRETS_ALIAS}, Config, p)
    for key, hint in _REQUIRED_HINTS.items():
        if raw.get(key) in (None, ""):
            p.missing(key, hint)
    if alias is not None:
        _merge_pull_secret_alias(p, raw, alias, out)
    if out.get("startupDelay") == 0:
        # the Go controller replaces a zero delay with the 10s default
        p.warnings.append("startupDelay: 0 means the default 10s (as in the Go controller)")
        del out["startupDelay"]
    lock = out.pop("leaderElectionResourceLock", "leases")
    if lock != "leases":
        p.warnings.append(
            f"leaderElectionResourceLock: {lock!r} is a legacy lock type; bjc always uses "
            "a Lease ('leases')"
        )
    _check_metric_names(p, raw.get("metrics"), out.get("metrics", {}))
    _check_ports(p, out)
    if "timeZone" in out and str(out.get("cronExpression", "")).lstrip().startswith(
        ("TZ=", "CRON_TZ=")
    ):
        p.problems.append(
            "timeZone and cronExpression: both name a time zone (timeZone and a "
            "CRON_TZ=/TZ= prefix); keep one"
        )
    if p.problems:
        raise ConfigError(p.problems)
    return msgspec.convert(out, Config), p.warnings


def _merge_pull_secret_alias(p: Problems, raw: Mapping[str, Any], alias: Any, out: dict) -> None:
    """`imagePullSecrets`, an alias of `jobImagePullSecrets` the Go controller reads too."""
    secrets = decode_value(_PULL_SECRETS_ALIAS, alias, PullSecrets, p)
    primary = raw.get("jobImagePullSecrets")
    if secrets is INVALID:
        return
    if primary is None:
        out["jobImagePullSecrets"] = secrets
    elif out.get("jobImagePullSecrets") == secrets:
        p.warnings.append(
            "jobImagePullSecrets and imagePullSecrets: both given (same value); keep only one"
        )
    elif "jobImagePullSecrets" in out:
        p.problems.append(
            "jobImagePullSecrets and imagePullSecrets: both given with different values "
            f"({show(primary)} vs {show(alias)}); keep only one (imagePullSecrets is an alias)"
        )


def _check_metric_names(p: Problems, raw: Any, metrics: Mapping[str, Any]) -> None:
    """Every gauge's full name `<prefix>_<suffix>` is a metric name; an empty prefix warns."""
    if isinstance(raw, dict) and raw.get("prefix") and "prefix" not in metrics:
        return  # an invalid prefix: already a problem, and every full name would repeat it
    prefix = metrics.get("prefix", "")
    if not prefix:
        p.warnings.append(
            "metrics.prefix is empty: metrics are named '_pods', '_processing', ... "
            "(set a prefix such as 'batch_job')"
        )
    for suffix in metrics.get("gauges", {}):
        full = f"{prefix}_{suffix}"
        if not is_valid_metric_name(full):
            p.invalid(
                "metrics.gauges",
                suffix,
                f"{full!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
            )


def _check_ports(p: Problems, out: Mapping[str, Any]) -> None:
    """No two of the controller's servers on one port."""
    ports = {
        key: out.get(key, default)
        for key, default in (
            ("callbackServicePort", 8090),
            ("healthProbePort", 9152),
            ("fileServerPort", 8080),
        )
    }
    ports["metrics.port"] = out.get("metrics", {}).get("port", 9153)
    by_port: dict[int, list[str]] = {}
    for key, port in ports.items():
        by_port.setdefault(port, []).append(key)
    for port, keys in by_port.items():
        if len(keys) > 1:
            p.problems.append(
                f"{' and '.join(keys)}: invalid value {port}: two servers cannot share port {port}"
            )


def share_at_most(value: int | str, nodes: int) -> int:
    """A count, or a percentage of `nodes` rounded down (a cap: never more than it says)."""
    if isinstance(value, int):
        return min(value, nodes)
    return math.floor(float(value.rstrip("%")) * nodes / 100 + 1e-9)


def resolve_share(value: int | str, nodes: int) -> int:
    """A count, or a percentage of `nodes` rounded up; at least 1."""
    if isinstance(value, int):
        return value
    return max(1, math.ceil(float(value.rstrip("%")) * nodes / 100 - 1e-9))


def cron_schedule(config: Config) -> CronSchedule:
    """The schedule of a validated config, in its `timeZone` (else its prefix, else local)."""
    return parse_cron(
        config.cron_expression, ZoneInfo(config.time_zone) if config.time_zone else None
    )


# --------------------------------------------------------------------------- hot reload

#: Keys a running controller keeps until it restarts: its identity, servers and storage.
RESTART_KEYS = frozenset(
    {
        "name",
        "reportDirectory",
        "callbackServiceName",
        "callbackServicePort",
        "healthProbePort",
        "fileServerPort",
        "metrics.port",
        "metrics.prefix",
        "maxUploadSize",
        "maxSeriesPerNode",  # the metrics store counts series against the limits it started with
        "maxSeriesPerExecution",
        "maxLabelValueLength",
        "leaderElectionResourceLock",
    }
)
_METRICS_KEYS = ("port", "prefix", "gauges")
_FIELD_OF_KEY = {f.encode_name: f.name for f in msgspec.structs.fields(Config)}


def changed_keys(old: Config, new: Config) -> list[str]:
    """The config.yaml keys whose values differ; `metrics` is compared per sub-key."""
    a, b = msgspec.to_builtins(old), msgspec.to_builtins(new)
    keys = []
    for key in a:
        if key == "metrics":
            keys += [f"metrics.{k}" for k in _METRICS_KEYS if a[key][k] != b[key][k]]
        elif a[key] != b[key]:
            keys.append(key)
    return keys


def with_keys(running: Config, new: Config, keys: Iterable[str]) -> Config:
    """A copy of `running` whose `keys` (as `changed_keys` names them) come from `new`."""
    fields: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for key in keys:
        if key.startswith("metrics."):
            sub = key.removeprefix("metrics.")
            metrics[sub] = getattr(new.metrics, sub)
        else:
            fields[_FIELD_OF_KEY[key]] = getattr(new, _FIELD_OF_KEY[key])
    if metrics:
        fields["metrics"] = msgspec.structs.replace(running.metrics, **metrics)
    return msgspec.structs.replace(running, **fields)


_PROBLEM_KEY_RE = re.compile(r"^([A-Za-z][\w.\[\]]*(?: and [A-Za-z]\w*)?): (.*)$", re.DOTALL)


def problem_key(problem: str) -> tuple[str, str]:
    """(key, what is wrong) of one ConfigError problem, e.g. ('podPoolSize', 'invalid ...').

    Problems of the pod template, and of config.yaml as a whole (YAML syntax), are
    keyed by the file name.
    """
    source, sep, rest = problem.partition(": ")
    if not sep or source not in (CONFIG_FILE_KEY, POD_TEMPLATE_KEY):
        return "ConfigMap", problem
    m = _PROBLEM_KEY_RE.match(rest) if source == CONFIG_FILE_KEY else None
    if m is None:
        return source, rest
    return m.group(1), m.group(2)


# --------------------------------------------------------------------------- environment


def load_environment(environ: Mapping[str, str]) -> Environment:
    """The controller environment; NAMESPACE and CONFIG_MAP_NAME are required."""
    problems = []
    for key in ("NAMESPACE", "CONFIG_MAP_NAME"):
        if not environ.get(key):
            problems.append(f"{key}: required environment variable is not set")
    namespace = environ.get("NAMESPACE", "")
    if namespace and (len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace)):
        problems.append(f"NAMESPACE: invalid value {show(namespace)}: not a valid namespace name")
    fast = environ.get("BJC_FAST_RESULTS", "").strip().lower()
    if fast not in ("", "1", "true", "0", "false"):
        problems.append(f"BJC_FAST_RESULTS: invalid value {show(fast)}: expected 1 or 0")
    if problems:
        raise ConfigError(problems)
    return Environment(
        namespace=namespace,
        config_map_name=environ["CONFIG_MAP_NAME"],
        pod_ip=environ.get("POD_IP", ""),
        hostname=environ.get("HOSTNAME", ""),
        dev_mode=environ.get("DEV_MODE", "").lower() == "true",
        report_directory=environ.get("REPORT_DIRECTORY") or None,
        bind_address=environ.get("BIND_ADDRESS") or None,
        bjc_fast_results=fast not in ("0", "false"),
    )


def effective_report_directory(config: Config, env: Environment | None) -> str:
    """`REPORT_DIRECTORY` when set (non-empty), else `reportDirectory`."""
    if env is not None and env.report_directory:
        return env.report_directory
    return config.report_directory
