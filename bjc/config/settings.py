"""The controller's configuration: `config.yaml`, the pod template and the environment.

Everything an operator can get wrong is checked here, at load time, so that a bad
ConfigMap refuses to start with one message per problem naming the key and the
value, instead of failing later inside an execution. All problems are collected
before `ConfigError` is raised, so one run of `bjc check-config` shows them all.

Deliberately pure: nothing here talks to Kubernetes, reads files or logs. Warnings
(unknown keys, legacy values) are returned as strings for the caller to log.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from bjc.config.cron import CronSchedule, parse_cron
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
LEGACY_RESOURCE_LOCKS = frozenset(
    {"configmapsleases", "endpointsleases", "configmaps", "endpoints"}
)
CONCURRENCY_POLICIES = ("Replace", "Forbid")
CALLBACK_AUTH_MODES = ("none", "token")

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_PART_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")


def is_valid_metric_name(name: str) -> bool:
    """Prometheus metric name syntax: `[a-zA-Z_:][a-zA-Z0-9_:]*`."""
    return bool(METRIC_NAME_RE.match(name))


def is_valid_label_name(name: str) -> bool:
    """Prometheus label name syntax, excluding the reserved `__` prefix."""
    return bool(LABEL_NAME_RE.match(name)) and not name.startswith("__")


class GaugeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False, frozen=True):
    help: str = ""
    labels: list[str] = msgspec.field(default_factory=list)


class MetricsConfig(msgspec.Struct, kw_only=True, frozen=True):
    port: int = 9153
    prefix: str = ""
    gauges: dict[str, GaugeConfig] = msgspec.field(default_factory=dict)


class PullSecret(msgspec.Struct, frozen=True):
    name: str


class Config(msgspec.Struct, kw_only=True, rename="camel", frozen=True):
    """config.yaml: the Go controller's keys, then bjc's own. Durations are seconds (float)."""

    name: str
    job_service_account: str = ""
    job_image_pull_secrets: list[PullSecret] = msgspec.field(default_factory=list)
    job_node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    run_on_unscheduled_nodes: bool = False
    cron_expression: str = ""
    report_directory: str = ""
    report_history: int = 30
    pod_pool_size: int | str = 1  # a count, or "N%" of the selected nodes
    run_on_startup: bool = False
    startup_delay: float = 10.0
    callback_service_name: str = ""
    callback_service_port: int = 8090
    health_probe_port: int = 9152
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    latest_metrics_label: bool = False
    leader_election_resource_lock: str = "leases"
    save_pod_log: bool = False
    custom: dict[str, object] = msgspec.field(default_factory=dict)
    # --- bjc only (each defaults to the Go controller's behaviour) ---
    concurrency_policy: str = "Replace"  # "Replace" | "Forbid"
    job_timeout: float | None = None  # seconds
    callback_auth: str = "none"  # "none" | "token"
    max_upload_size: int = 64 * MiB
    file_server_port: int = 8080
    max_series_per_node: int = 1_000  # result series of one node in one execution
    max_series_per_execution: int = 100_000  # result series of all nodes of an execution
    max_label_value_length: int = 1_024  # characters
    # --- operating executions (docs/operating.md) ---
    suspend: bool = False
    job_retries: int = 0
    max_failures: int | str | None = None  # a count, or "N%" of the selected nodes
    time_zone: str = ""  # IANA zone of cronExpression; "" = local time (or its TZ= prefix)
    starting_deadline: float | None = None  # seconds; None: a missed run is skipped

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


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def invalid(self, key: str, value: Any, reason: str) -> None:
        self.problems.append(f"{key}: invalid value {show(value)}: {reason}")

    def missing(self, key: str, hint: str = "") -> None:
        self.problems.append(f"{key}: required but missing{hint}")


_EXPECT = {
    str: "a string",
    int: "an integer",
    bool: "a boolean (true or false)",
    float: "a number",
    dict: "a mapping",
    list: "a list",
}


def _typed(c: _Collector, raw: Mapping[str, Any], key: str, typ: type, path: str = "") -> Any:
    """raw[key] when it has type `typ`; None when absent/null; records a problem otherwise."""
    value = raw.get(key)
    if value is None:
        return None
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        c.invalid(path or key, value, f"expected {_EXPECT[typ]}, got {kind(value)}")
        return None
    return value


def _check_port(c: _Collector, key: str, value: Any, default: int) -> int:
    if value is None or value == 0:  # the Go controller treats 0 as "use the default"
        return default
    if not 1 <= value <= 65535:
        c.invalid(key, value, "a port must be between 1 and 65535")
        return default
    return int(value)


def _check_count(c: _Collector, raw: Mapping[str, Any], key: str) -> int | None:
    """An integer of 0 or more (a negative one is recorded as a problem)."""
    value = _typed(c, raw, key, int)
    if value is not None and value < 0:
        c.invalid(key, value, "must be 0 or more")
    return value


def _check_duration(c: _Collector, key: str, value: Any) -> float | None:
    """A duration string, or an integer of nanoseconds.

    The Go controller decodes durations into a Go `time.Duration`, whose only YAML
    form is an integer of nanoseconds (`startupDelay: 3000000000`); bjc accepts that
    form too, so one ConfigMap works for both.
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0 or value != int(value):
            c.invalid(key, value, "a number is a whole number of nanoseconds, at least 0")
            return None
        return int(value) / 1e9
    if not isinstance(value, str):
        c.invalid(key, value, f"expected a duration string, got {kind(value)}; {DURATION_HINT}")
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        c.invalid(key, value, str(exc))
        return None


def _check_label_map(c: _Collector, key: str, value: Mapping[Any, Any]) -> dict[str, str]:
    """A Kubernetes label selector map (`jobNodeSelector`)."""
    out: dict[str, str] = {}
    for k, v in value.items():
        path = f"{key}.{k}"
        if not isinstance(k, str):
            c.invalid(key, k, f"label keys must be strings, got {kind(k)}")
            continue
        if not isinstance(v, str):
            c.invalid(path, v, f"label values must be strings, got {kind(v)}; quote it")
            continue
        prefix, slash, label_name = k.rpartition("/")
        if (slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix))) or (
            not _LABEL_PART_RE.match(label_name) or len(label_name) > 63
        ):
            c.invalid(
                key,
                k,
                "not a valid label key ([prefix/]name; name up to 63 letters, digits, "
                "'-', '_', '.')",
            )
            continue
        if v and (len(v) > 63 or not _LABEL_PART_RE.match(v)):
            c.invalid(path, v, "not a valid label value (up to 63 letters, digits, '-', '_', '.')")
            continue
        out[k] = v
    return out


def _check_pull_secrets(c: _Collector, key: str, value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        c.invalid(key, value, f"expected a list of {{name: ...}}, got {kind(value)}")
        return None
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        path = f"{key}[{i}]"
        if isinstance(item, str):
            c.invalid(path, item, f"expected {{name: {item}}}, got a plain string")
            continue
        if not isinstance(item, dict):
            c.invalid(path, item, f"expected {{name: ...}}, got {kind(item)}")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            c.invalid(f"{path}.name", name, "a pull secret needs a non-empty name")
            continue
        if not _DNS_SUBDOMAIN_RE.match(name) or len(name) > 253:
            c.invalid(f"{path}.name", name, "not a valid Secret name (lower-case DNS subdomain)")
            continue
        for extra in item:
            if extra != "name":
                c.warnings.append(f"{path}.{extra}: unknown key ignored")
        out.append({"name": name})
    return out


def _check_metrics(c: _Collector, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"port": 9153, "prefix": "", "gauges": {}}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        c.invalid("metrics", value, f"expected a mapping, got {kind(value)}")
        return out
    for k in value:
        if k not in ("port", "prefix", "gauges"):
            c.warnings.append(
                _unknown_key_warning(f"metrics.{k}", str(k), ("port", "prefix", "gauges"))
            )

    port = _typed(c, value, "port", int, "metrics.port")
    out["port"] = _check_port(c, "metrics.port", port, 9153)

    prefix = _typed(c, value, "prefix", str, "metrics.prefix")
    prefix = prefix or ""
    prefix_ok = True
    if not prefix:
        c.warnings.append(
            "metrics.prefix is empty: metrics are named '_pods', '_processing', ... "
            "(set a prefix such as 'batch_job')"
        )
    elif not is_valid_metric_name(prefix):
        c.invalid("metrics.prefix", prefix, "not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        prefix_ok = False
    out["prefix"] = prefix

    gauges_raw = value.get("gauges")
    gauges: dict[str, Any] = {}
    if gauges_raw is not None and not isinstance(gauges_raw, dict):
        c.invalid(
            "metrics.gauges",
            gauges_raw,
            f"expected a mapping of suffix: {{help, labels}}, got {kind(gauges_raw)}",
        )
        gauges_raw = None
    for suffix, gauge in (gauges_raw or {}).items():
        path = f"metrics.gauges.{suffix}"
        if not isinstance(suffix, str) or not suffix:
            c.invalid("metrics.gauges", suffix, "a gauge suffix must be a non-empty string")
            continue
        if suffix in RESERVED_GAUGE_SUFFIXES:
            reserved = ", ".join(sorted(RESERVED_GAUGE_SUFFIXES))
            c.invalid(
                "metrics.gauges",
                suffix,
                f"the suffix is reserved for bjc's own metrics ({reserved})",
            )
            continue
        full = f"{prefix}_{suffix}"
        if prefix_ok and not is_valid_metric_name(full):
            c.invalid(
                "metrics.gauges",
                suffix,
                f"{full!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
            )
            continue
        if gauge is None:
            gauge = {}
        if not isinstance(gauge, dict):
            c.invalid(path, gauge, f"expected a mapping with help and labels, got {kind(gauge)}")
            continue
        for k in gauge:
            if k not in ("help", "labels"):
                c.warnings.append(_unknown_key_warning(f"{path}.{k}", str(k), ("help", "labels")))
        help_text = _typed(c, gauge, "help", str, f"{path}.help") or ""
        labels_raw = gauge.get("labels")
        labels: list[str] = []
        if labels_raw is not None and not isinstance(labels_raw, list):
            c.invalid(
                f"{path}.labels",
                labels_raw,
                f"expected a list of label names, got {kind(labels_raw)}",
            )
            labels_raw = None
        seen: set[str] = set()
        gauge_ok = True
        for label in labels_raw or []:
            lpath = f"{path}.labels"
            if not isinstance(label, str):
                c.invalid(lpath, label, f"label names must be strings, got {kind(label)}")
                gauge_ok = False
            elif not LABEL_NAME_RE.match(label):
                c.invalid(lpath, label, "not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
                gauge_ok = False
            elif label.startswith("__"):
                c.invalid(lpath, label, "label names starting with '__' are reserved by Prometheus")
                gauge_ok = False
            elif label in RESERVED_LABELS:
                c.invalid(lpath, label, "'node' and 'executionID' are added by bjc to every series")
                gauge_ok = False
            elif label in seen:
                c.invalid(lpath, label, "label listed twice")
                gauge_ok = False
            else:
                seen.add(label)
                labels.append(label)
        if gauge_ok:
            gauges[suffix] = {"help": help_text, "labels": labels}
    out["gauges"] = gauges
    return out


def _unknown_key_warning(path: str, key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}: unknown key ignored{hint}"


# --------------------------------------------------------------------------- config.yaml

_KNOWN_KEYS = (*(f.encode_name for f in msgspec.structs.fields(Config)), "imagePullSecrets")


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
    c = _Collector()
    out: dict[str, Any] = {}

    for key in raw:
        if key not in _KNOWN_KEYS:
            c.warnings.append(_unknown_key_warning(str(key), str(key), _KNOWN_KEYS))

    # name
    name = _typed(c, raw, "name", str)
    if raw.get("name") is None:
        c.missing("name")
    elif name == "":
        c.missing("name", " (empty)")
    elif name:
        if len(name) > 63 or not _DNS_SUBDOMAIN_RE.match(name):
            c.invalid(
                "name",
                name,
                "it prefixes job pod names and is a label value, so it must be at most 63 "
                "lower-case letters, digits, '-' or '.', starting and ending with a letter or "
                "digit",
            )
    out["name"] = name or ""

    sa = _typed(c, raw, "jobServiceAccount", str)
    if sa:
        if len(sa) > 253 or not _DNS_SUBDOMAIN_RE.match(sa):
            c.invalid(
                "jobServiceAccount",
                sa,
                "not a valid ServiceAccount name (lower-case DNS subdomain)",
            )
        out["jobServiceAccount"] = sa

    # image pull secrets, with the alias
    primary = _check_pull_secrets(c, "jobImagePullSecrets", raw.get("jobImagePullSecrets"))
    alias = _check_pull_secrets(c, "imagePullSecrets", raw.get("imagePullSecrets"))
    if primary is not None and alias is not None:
        if primary != alias:
            c.problems.append(
                "jobImagePullSecrets and imagePullSecrets: both given with different values "
                f"({show(raw.get('jobImagePullSecrets'))} vs "
                f"{show(raw.get('imagePullSecrets'))}); "
                "keep only one (imagePullSecrets is an alias)"
            )
        else:
            c.warnings.append(
                "jobImagePullSecrets and imagePullSecrets: both given (same value); keep only one"
            )
    secrets = primary if primary is not None else alias
    if secrets is not None:
        out["jobImagePullSecrets"] = secrets

    selector = _typed(c, raw, "jobNodeSelector", dict)
    if selector is not None:
        out["jobNodeSelector"] = _check_label_map(c, "jobNodeSelector", selector)

    for key in ("runOnUnscheduledNodes", "runOnStartup", "latestMetricsLabel", "savePodLog"):
        flag = _typed(c, raw, key, bool)
        if flag is not None:
            out[key] = flag

    cron_expr = _typed(c, raw, "cronExpression", str)
    if cron_expr is None and raw.get("cronExpression") is None:
        c.missing("cronExpression", ' (e.g. "42 3 * * *")')
    elif cron_expr is not None:
        try:
            parse_cron(cron_expr)
        except ValueError as exc:
            c.invalid("cronExpression", cron_expr, str(exc))
        out["cronExpression"] = cron_expr

    report_dir = _typed(c, raw, "reportDirectory", str)
    if report_directory:
        out["reportDirectory"] = report_directory
    elif report_dir:
        out["reportDirectory"] = report_dir
    elif raw.get("reportDirectory") is None or report_dir == "":
        c.missing("reportDirectory", " (or set REPORT_DIRECTORY)")

    history = _check_count(c, raw, "reportHistory")
    if history is not None:
        out["reportHistory"] = history

    pool = _check_count_or_percent(c, "podPoolSize", raw.get("podPoolSize"))
    if pool is not None:
        out["podPoolSize"] = pool

    delay = _check_duration(c, "startupDelay", raw.get("startupDelay"))
    if delay is not None:
        if delay == 0:
            # the Go controller replaces a zero delay with the 10s default
            c.warnings.append("startupDelay: 0 means the default 10s (as in the Go controller)")
        else:
            out["startupDelay"] = delay

    svc = _typed(c, raw, "callbackServiceName", str)
    if svc:
        if len(svc) > 63 or not _DNS1035_LABEL_RE.match(svc):
            c.invalid(
                "callbackServiceName",
                svc,
                "not a valid Service name (lower-case letters, digits, '-', starting with a "
                "letter, at most 63)",
            )
        out["callbackServiceName"] = svc

    ports: dict[str, int] = {}
    for key, default in (
        ("callbackServicePort", 8090),
        ("healthProbePort", 9152),
        ("fileServerPort", 8080),
    ):
        port = _check_port(c, key, _typed(c, raw, key, int), default)
        out[key] = ports[key] = port

    out["metrics"] = _check_metrics(c, raw.get("metrics"))
    ports["metrics.port"] = out["metrics"]["port"]
    by_port: dict[int, list[str]] = {}
    for key, port in ports.items():
        by_port.setdefault(port, []).append(key)
    for port, keys in by_port.items():
        if len(keys) > 1:
            c.problems.append(
                f"{' and '.join(keys)}: invalid value {port}: two servers cannot share port {port}"
            )

    lock = raw.get("leaderElectionResourceLock")
    if lock is not None and not isinstance(lock, str):
        c.invalid("leaderElectionResourceLock", lock, f"expected a string, got {kind(lock)}")
    elif lock and lock != "leases":
        if lock in LEGACY_RESOURCE_LOCKS:
            c.warnings.append(
                f"leaderElectionResourceLock: {lock!r} is a legacy lock type; bjc always uses "
                "a Lease ('leases')"
            )
        else:
            c.invalid(
                "leaderElectionResourceLock",
                lock,
                "expected 'leases' (legacy: " + ", ".join(sorted(LEGACY_RESOURCE_LOCKS)) + ")",
            )
    out["leaderElectionResourceLock"] = "leases"

    custom = _typed(c, raw, "custom", dict)
    if custom is not None:
        out["custom"] = {str(k): v for k, v in custom.items()}

    policy = raw.get("concurrencyPolicy")
    if policy is not None:
        if policy not in CONCURRENCY_POLICIES:
            c.invalid("concurrencyPolicy", policy, "expected 'Replace' or 'Forbid'")
        else:
            out["concurrencyPolicy"] = policy

    timeout = _check_duration(c, "jobTimeout", raw.get("jobTimeout"))
    if timeout is not None:
        if timeout <= 0:
            c.invalid(
                "jobTimeout", raw.get("jobTimeout"), "must be positive (omit it for no timeout)"
            )
        else:
            out["jobTimeout"] = timeout

    auth = raw.get("callbackAuth")
    if auth is not None:
        if auth not in CALLBACK_AUTH_MODES:
            c.invalid("callbackAuth", auth, "expected 'none' or 'token'")
        else:
            out["callbackAuth"] = auth

    upload = raw.get("maxUploadSize")
    if upload is not None:
        try:
            size = parse_size(upload)
        except ValueError as exc:
            c.invalid("maxUploadSize", upload, str(exc))
        else:
            if size < 1:
                c.invalid("maxUploadSize", upload, "must be at least 1 byte")
            else:
                out["maxUploadSize"] = size

    for key in ("maxSeriesPerNode", "maxSeriesPerExecution", "maxLabelValueLength"):
        limit = _typed(c, raw, key, int)
        if limit is not None:
            if limit < 1:
                c.invalid(key, limit, "must be at least 1")
            else:
                out[key] = limit
    _check_operating(c, raw, out)

    if c.problems:
        raise ConfigError(c.problems)
    config = msgspec.convert(out, Config)
    return config, c.warnings


# --------------------------------------------------------------------------- operating keys


def _check_operating(c: _Collector, raw: Mapping[str, Any], out: dict[str, Any]) -> None:
    """The keys that operate executions (see docs/operating.md)."""
    checked = {
        "suspend": _typed(c, raw, "suspend", bool),
        "jobRetries": _check_count(c, raw, "jobRetries"),
        "maxFailures": _check_count_or_percent(c, "maxFailures", raw.get("maxFailures")),
    }
    out.update((key, value) for key, value in checked.items() if value is not None)
    zone = _typed(c, raw, "timeZone", str)
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            c.invalid(
                "timeZone", zone, "unknown time zone; use an IANA name such as 'Europe/Zurich'"
            )
        else:
            if str(out.get("cronExpression", "")).lstrip().startswith(("TZ=", "CRON_TZ=")):
                c.problems.append(
                    "timeZone and cronExpression: both name a time zone (timeZone and a "
                    "CRON_TZ=/TZ= prefix); keep one"
                )
            out["timeZone"] = zone
    deadline = _check_duration(c, "startingDeadline", raw.get("startingDeadline"))
    if deadline is not None:
        if deadline <= 0:
            c.invalid(
                "startingDeadline",
                raw.get("startingDeadline"),
                "must be positive (omit it to skip missed runs)",
            )
        else:
            out["startingDeadline"] = deadline


_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _check_count_or_percent(c: _Collector, key: str, value: Any) -> int | str | None:
    """A count of at least 1, or a share of the selected nodes such as "10%"."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            c.invalid(key, value, "must be at least 1")
            return None
        return value
    m = _PERCENT_RE.match(value) if isinstance(value, str) else None
    if m is None or not 0 < float(m.group(1)) <= 100:
        c.invalid(key, value, 'expected an integer, or a percentage such as "10%" (at most 100%)')
        return None
    return f"{float(m.group(1)):g}%"


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
    )


def effective_report_directory(config: Config, env: Environment | None) -> str:
    """`REPORT_DIRECTORY` when set (non-empty), else `reportDirectory`."""
    if env is not None and env.report_directory:
        return env.report_directory
    return config.report_directory
