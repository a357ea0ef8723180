"""The job pod: the operator's `pod-template.yaml` plus the fields bjc enforces (as Go does).

The Go controller runs the template through Go's text/template and parses the
result. bjc supports only the three field references that template ever had data
for (`{{ .Namespace }}`, `{{ .ExecutionID }}`, `{{ .NodeName }}`) and checks that
at load time, so a template mistake is a start-up error, not a broken pod at 3am.

Substitution is injection-safe: each reference is replaced by an inert
alphanumeric placeholder, the YAML is parsed once, and at render time the
placeholders are replaced inside the parsed strings (values and keys). A node
name can therefore never add YAML structure, and substituted values are always
strings (where Go would have produced e.g. an integer from `{{ .ExecutionID }}`).

Deliberately pure: `render_pod` returns a plain dict ready for the API; it does
not create pods, look up owners or choose the callback host.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import msgspec
import yaml

from bjc.config.extensions import Extension
from bjc.config.settings import Config
from bjc.config.values import ConfigError, kind, show, yaml_error
from bjc.kube.objects import OwnerReference

__all__ = [
    "CALLBACK_ROUTES",
    "EXECUTION_LABEL",
    "OWNER_LABEL",
    "RESERVED_ENV",
    "RETRY_PARAM",
    "TEMPLATE_FIELDS",
    "PodTemplate",
    "callback_url",
    "job_pod_name",
    "render_pod",
]

OWNER_LABEL = "batch-job-controller.bakito.github.com/owner"
EXECUTION_LABEL = "batch-job-controller.bakito.github.com/execution-id"

#: The environment variables bjc sets on every (init) container, in this order.
RESERVED_ENV = (
    "EXECUTION_ID",
    "NAMESPACE",
    "NODE_NAME",
    "CALLBACK_SERVICE_NAME",
    "CALLBACK_SERVICE_PORT",
    "CALLBACK_SERVICE_RESULT_URL",
    "CALLBACK_SERVICE_FILE_URL",
    "CALLBACK_SERVICE_EVENT_URL",
)
CALLBACK_ROUTES = ("result", "file", "event")
TEMPLATE_FIELDS = ("Namespace", "ExecutionID", "NodeName")

_ALLOWED_RE = re.compile(r"^\s*\.(Namespace|ExecutionID|NodeName)\s*$")
_FIELD_REF_RE = re.compile(r"^\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
_ALLOWED_TEXT = "only {{ .Namespace }}, {{ .ExecutionID }} and {{ .NodeName }} are supported"


def job_pod_name(config_name: str, node_name: str, execution_id: str, attempt: int = 0) -> str:
    """`<name>-job-<first DNS label of node>-<executionID>`, lower-case.

    A retry (`jobRetries`) gets its own pod: attempt N > 0 appends `-retry<N>`, so
    the failed pod stays for `kubectl logs` until the next execution deletes it.
    Not truncated: with `name` limited to 63 characters and node labels to 63,
    the result is at most 155 characters, within the 253 allowed for pod names.
    """
    first_label = node_name.split(".", 1)[0]
    retry = f"-retry{attempt}" if attempt else ""
    return f"{config_name}-job-{first_label}-{execution_id}{retry}".lower()


#: The query parameter that names a retry in its callback URLs (`?retry=N`, the pod
#: `...-retry<N>`); the first attempt's URLs have none, as the Go controller's.
RETRY_PARAM = "retry"


def callback_url(
    host: str,
    port: int,
    node_name: str,
    execution_id: str,
    route: str,
    token: str | None = None,
    attempt: int = 0,
) -> str:
    """`http://<host>:<port>/report/<node>/<executionID>/<route>[?retry=N][&token=...]`.

    The first attempt's URL (no token) is the Go controller's byte for byte; retry N
    (`attempt` N > 0) is marked `?retry=N`, so the callback API can tell a late call
    of an attempt it gave up on from the current one. An IPv6 host is bracketed (the
    Go controller produced an unusable URL there).
    """
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = (
        f"http://{shown_host}:{port}/report/{quote(node_name, safe='')}/"
        f"{quote(execution_id, safe='')}/{route}"
    )
    query = [f"{RETRY_PARAM}={attempt}"] if attempt else []
    if token:
        query.append(f"token={quote(token, safe='')}")
    return f"{url}?{'&'.join(query)}" if query else url


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _construct_reason(inner: str) -> str:
    stripped = inner.strip()
    if stripped.startswith("-") or stripped.endswith("-"):
        return f"whitespace trim markers are not supported; {_ALLOWED_TEXT}"
    if stripped.startswith("/*"):
        return f"template comments are not supported; {_ALLOWED_TEXT}"
    if "|" in stripped:
        return f"pipelines are not supported; {_ALLOWED_TEXT}"
    m = _FIELD_REF_RE.match(inner)
    if m:
        return f"unknown field .{m.group(1)}; {_ALLOWED_TEXT}"
    if not stripped:
        return f"empty action; {_ALLOWED_TEXT}"
    word = stripped.split()[0]
    return f"{word!r} is not supported; {_ALLOWED_TEXT}"


class PodTemplate:
    """A validated `pod-template.yaml`, parsed once, rendered per node with `render_pod`."""

    def __init__(
        self,
        source: str,
        document: dict[str, Any],
        placeholders: dict[str, str],
        warnings: list[str],
    ) -> None:
        self.source = source
        self._document = document
        self._placeholders = placeholders  # placeholder -> field name
        self._placeholder_re = (
            re.compile("|".join(re.escape(p) for p in placeholders)) if placeholders else None
        )
        #: template fields the template uses (subset of TEMPLATE_FIELDS)
        self.fields_used = frozenset(placeholders.values())
        self.warnings = warnings

    @classmethod
    def parse(cls, text: str) -> PodTemplate:
        """Validate the template text; raise `ConfigError` listing every problem."""
        nonce = secrets.token_hex(6)
        while nonce in text:
            nonce = secrets.token_hex(6)
        by_field = {f: f"bjctpl{nonce}{f}x" for f in TEMPLATE_FIELDS}
        problems: list[str] = []
        pieces: list[str] = []
        used: dict[str, str] = {}
        pos = 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                pieces.append(text[pos:])
                break
            end = text.find("}}", start + 2)
            line = _line_of(text, start)
            if end < 0:
                snippet = text[start : start + 30].split("\n", 1)[0]
                problems.append(
                    f"line {line}: unclosed template action {snippet!r}: missing '}}}}'"
                )
                pieces.append(text[pos:])
                break
            inner = text[start + 2 : end]
            m = _ALLOWED_RE.match(inner)
            pieces.append(text[pos:start])
            if m:
                placeholder = by_field[m.group(1)]
                used[placeholder] = m.group(1)
                pieces.append(placeholder)
            else:
                construct = text[start : end + 2]
                problems.append(
                    f"line {line}: unsupported template construct {construct!r}: "
                    f"{_construct_reason(inner)}"
                )
                pieces.append("x")
            pos = end + 2
        if problems:
            raise ConfigError(problems)

        prepared = "".join(pieces)
        display = _Display(used)
        try:
            docs = [d for d in yaml.safe_load_all(prepared) if d is not None]
        except yaml.YAMLError as exc:
            raise ConfigError([display.text(yaml_error(exc))]) from None
        if len(docs) != 1:
            raise ConfigError([f"expected one YAML document (a Pod manifest), found {len(docs)}"])
        doc = docs[0]
        warnings: list[str] = []
        _validate_pod(doc, problems, warnings, display)
        if problems:
            raise ConfigError(problems)
        return cls(text, doc, used, warnings)

    def substitute(self, *, namespace: str, node_name: str, execution_id: str) -> dict[str, Any]:
        """The template with the field references filled in (a fresh deep copy)."""
        if self._placeholder_re is None:
            return copy.deepcopy(self._document)
        values = {"Namespace": namespace, "NodeName": node_name, "ExecutionID": execution_id}
        pattern = self._placeholder_re
        fields = self._placeholders

        def fill(s: str) -> str:
            return pattern.sub(lambda m: values[fields[m.group(0)]], s)

        def walk(node: Any) -> Any:
            if isinstance(node, str):
                return fill(node)
            if isinstance(node, dict):
                return {(fill(k) if isinstance(k, str) else k): walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            return copy.deepcopy(node)

        result = walk(self._document)
        assert isinstance(result, dict)
        return result


class _Display:
    """Shows placeholders as the template references the operator wrote."""

    def __init__(self, used: Mapping[str, str]) -> None:
        self._used = used

    def text(self, s: str) -> str:
        for placeholder, name in self._used.items():
            s = s.replace(placeholder, "{{ ." + name + " }}")
        return s

    def value(self, v: Any) -> str:
        return self.text(show(v))


def _validate_containers(
    spec: Mapping[str, Any], key: str, required: bool, problems: list[str], display: _Display
) -> None:
    containers = spec.get(key)
    path = f"spec.{key}"
    if containers is None:
        if required:
            problems.append(f"{path}: required but missing (a Pod needs at least one container)")
        return
    if not isinstance(containers, list):
        problems.append(f"{path}: invalid value {display.value(containers)}: expected a list")
        return
    if required and not containers:
        problems.append(f"{path}: invalid value []: a Pod needs at least one container")
    for i, container in enumerate(containers):
        cpath = f"{path}[{i}]"
        if not isinstance(container, dict):
            problems.append(
                f"{cpath}: invalid value {display.value(container)}: expected a mapping, "
                f"got {kind(container)}"
            )
            continue
        for field_name in ("name", "image"):
            value = container.get(field_name)
            if value is None or value == "":
                problems.append(f"{cpath}.{field_name}: required but missing")
            elif not isinstance(value, str):
                problems.append(
                    f"{cpath}.{field_name}: invalid value {display.value(value)}: expected a "
                    f"string, got {kind(value)}"
                )
        env = container.get("env")
        if env is None:
            continue
        if not isinstance(env, list):
            problems.append(f"{cpath}.env: invalid value {display.value(env)}: expected a list")
            continue
        for j, entry in enumerate(env):
            epath = f"{cpath}.env[{j}]"
            if not isinstance(entry, dict):
                problems.append(
                    f"{epath}: invalid value {display.value(entry)}: expected {{name, value}}"
                )
            elif not isinstance(entry.get("name"), str) or not entry.get("name"):
                problems.append(f"{epath}.name: required but missing")
            elif "value" in entry and not isinstance(entry["value"], str | None):
                problems.append(
                    f"{epath}.value: invalid value {display.value(entry['value'])}: env values "
                    f"must be strings, got {kind(entry['value'])}; quote it"
                )


def _validate_pod(doc: Any, problems: list[str], warnings: list[str], display: _Display) -> None:
    if not isinstance(doc, dict):
        problems.append(f"expected a Pod manifest (a mapping), got {kind(doc)}")
        return
    if doc.get("apiVersion") != "v1":
        problems.append(
            f"apiVersion: invalid value {display.value(doc.get('apiVersion'))}: must be v1"
        )
    if doc.get("kind") != "Pod":
        problems.append(f"kind: invalid value {display.value(doc.get('kind'))}: must be Pod")
    meta = doc.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            problems.append(f"metadata: invalid value {display.value(meta)}: expected a mapping")
        else:
            for key in ("labels", "annotations"):
                entries = meta.get(key)
                if entries is None:
                    continue
                if not isinstance(entries, dict):
                    problems.append(
                        f"metadata.{key}: invalid value {display.value(entries)}: "
                        "expected a mapping"
                    )
                    continue
                for k, v in entries.items():
                    if not isinstance(k, str) or not isinstance(v, str):
                        problems.append(
                            f"metadata.{key}.{display.text(str(k))}: invalid value "
                            f"{display.value(v)}: keys and values must be strings; quote them"
                        )
            if "ownerReferences" in meta and not isinstance(meta["ownerReferences"], list):
                problems.append("metadata.ownerReferences: expected a list")
            for key in ("name", "generateName", "namespace"):
                if meta.get(key):
                    warnings.append(
                        f"metadata.{key} {display.value(meta[key])} is ignored: bjc sets the job "
                        "pod's name and namespace"
                    )
    spec = doc.get("spec")
    if spec is None:
        problems.append("spec: required but missing")
        return
    if not isinstance(spec, dict):
        problems.append(f"spec: invalid value {display.value(spec)}: expected a mapping")
        return
    _validate_containers(spec, "containers", True, problems, display)
    _validate_containers(spec, "initContainers", False, problems, display)
    policy = spec.get("restartPolicy")
    if policy is not None and policy != "Never":
        warnings.append(f"spec.restartPolicy {display.value(policy)} is replaced by Never")
    if spec.get("nodeName"):
        warnings.append(
            f"spec.nodeName {display.value(spec['nodeName'])} is replaced by each job's node"
        )
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (
        not isinstance(deadline, int) or isinstance(deadline, bool) or deadline < 1
    ):
        problems.append(
            f"spec.activeDeadlineSeconds: invalid value {display.value(deadline)}: expected a "
            "positive integer"
        )
    if "imagePullSecrets" in spec and not isinstance(spec["imagePullSecrets"], list):
        problems.append("spec.imagePullSecrets: expected a list")


def _merge_env(
    container: dict[str, Any], ours: list[dict[str, str]], reserved: frozenset[str]
) -> None:
    kept = [
        e
        for e in (container.get("env") or [])
        if not (isinstance(e, dict) and e.get("name") in reserved)
    ]
    container["env"] = kept + [dict(e) for e in ours]


def render_pod(
    template: PodTemplate,
    *,
    config: Config,
    namespace: str,
    node_name: str,
    execution_id: str,
    callback_host: str,
    owner: OwnerReference | Mapping[str, Any] | None,
    token: str | None = None,
    attempt: int = 0,
    callback_port: int | None = None,
    extensions: Sequence[Extension] = (),
) -> dict[str, Any]:
    """The job pod for one node of one execution, as an API-ready dict.

    `extensions` (bjc.config.extensions) add env vars to every (init) container after
    bjc's own; one that fails raises ExtensionError.

    `callback_port` is the port the callback API was bound to, when it differs from
    `callbackServicePort` (port 0 in tests and the demo: any free port).

    `owner` is the controller pod's top-level owner (an `OwnerReference`, an
    owner-reference dict or the owner object itself), or None when not found.
    `token` (callbackAuth token, the attempt's own) is appended to the three callback
    URLs; `attempt` > 0 names the pod of a retry (see `job_pod_name`) and marks its
    callback URLs (`?retry=N`, see `callback_url`).
    """
    pod = template.substitute(namespace=namespace, node_name=node_name, execution_id=execution_id)

    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    meta.pop("generateName", None)
    meta["name"] = job_pod_name(config.name, node_name, execution_id, attempt)
    meta["namespace"] = namespace
    labels = dict(meta.get("labels") or {})
    labels[EXECUTION_LABEL] = execution_id
    labels[OWNER_LABEL] = config.name
    meta["labels"] = labels
    if owner is not None:
        ref = owner if isinstance(owner, OwnerReference) else OwnerReference.from_object(owner)
        refs = [
            r
            for r in (meta.get("ownerReferences") or [])
            if not (
                isinstance(r, dict)
                and (
                    r.get("uid") == ref.uid
                    or (r.get("kind") == ref.kind and r.get("name") == ref.name)
                )
            )
        ]
        refs.append(msgspec.to_builtins(ref))
        meta["ownerReferences"] = refs
    pod["metadata"] = meta

    spec = pod["spec"]
    spec["nodeName"] = node_name
    spec["restartPolicy"] = "Never"
    # like the Go controller: the configured values replace the template's, and an
    # empty value removes the field (the pod then uses the namespace defaults)
    if config.job_service_account:
        spec["serviceAccountName"] = config.job_service_account
    else:
        spec.pop("serviceAccountName", None)
    if config.job_image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s.name} for s in config.job_image_pull_secrets]
    else:
        spec.pop("imagePullSecrets", None)
    if config.job_timeout is not None:
        spec["activeDeadlineSeconds"] = math.ceil(config.job_timeout)

    port = config.callback_service_port if callback_port is None else callback_port
    ours = [
        {"name": "EXECUTION_ID", "value": execution_id},
        {"name": "NAMESPACE", "value": namespace},
        {"name": "NODE_NAME", "value": node_name},
        {"name": "CALLBACK_SERVICE_NAME", "value": callback_host},
        {"name": "CALLBACK_SERVICE_PORT", "value": str(port)},
    ] + [
        {
            "name": f"CALLBACK_SERVICE_{route.upper()}_URL",
            "value": callback_url(
                callback_host, port, node_name, execution_id, route, token, attempt
            ),
        }
        for route in CALLBACK_ROUTES
    ]
    reserved = frozenset(RESERVED_ENV)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            _merge_env(container, ours, reserved)
            extra = {
                name: value
                for extension in extensions
                for name, value in extension.env(
                    config, node_name, execution_id, callback_host, container, reserved
                ).items()
            }
            if extra:
                _merge_env(
                    container, [{"name": k, "value": v} for k, v in extra.items()], frozenset(extra)
                )
    return pod
