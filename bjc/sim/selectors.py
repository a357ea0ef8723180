"""Label and field selectors as kube-apiserver parses and applies them.

Exists so the simulated cluster filters lists and watches exactly like the real
server (every label operator: ``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
``!exists``; field selectors with ``=``, ``==``, ``!=``). It deliberately supports
only the field labels the real server supports for the kinds bjc touches, and
rejects others with the real server's message, so code that works here also works
against a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector string the real apiserver would reject (answered with 400)."""


Matcher = Callable[[dict[str, Any]], bool]


def valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def valid_dns_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside ``( ... )``."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$")


def _label_requirement(req: str) -> Callable[[dict[str, str]], bool]:
    m = _SET_RE.match(req)
    if m:
        key, op, raw = m.group(1), m.group(2), m.group(3)
        values = frozenset(v.strip() for v in raw.split(",") if v.strip())
        _check_key(key)
        for v in values:
            _check_value(v)
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    m = _CMP_RE.match(req)
    if m:
        key, op, value = m.group(1), m.group(2), m.group(3)
        _check_key(key)
        _check_value(value)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    stripped = req.strip()
    if stripped.startswith("!"):
        key = stripped[1:].strip()
        _check_key(key)
        return lambda labels: key not in labels
    _check_key(stripped)
    return lambda labels: stripped in labels


def _check_key(key: str) -> None:
    if not valid_label_key(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")


def _check_value(value: str) -> None:
    if not valid_label_value(value):
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r}")


def parse_label_selector(text: str | None) -> Matcher | None:
    """Compile ``text`` into a predicate over an object; ``None`` when it selects everything."""
    if not text or not text.strip():
        return None
    reqs = [_label_requirement(part) for part in _split_top_level(text) if part.strip()]
    if not reqs:
        return None

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


# Field labels the real apiserver accepts, per resource plural ("*" = every kind).
FIELD_LABELS: dict[str, frozenset[str]] = {
    "*": frozenset({"metadata.name", "metadata.namespace"}),
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "nodes": frozenset({"spec.unschedulable"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            # events.k8s.io/v1 spellings, mapped onto the stored core/v1 shape
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reportingController",
        }
    ),
}

_EVENT_ALIASES = {
    "regarding.kind": "involvedObject.kind",
    "regarding.namespace": "involvedObject.namespace",
    "regarding.name": "involvedObject.name",
    "regarding.uid": "involvedObject.uid",
    "reportingController": "reportingComponent",
    "source": "source.component",
}


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, plural: str) -> Matcher | None:
    """Compile a field selector for ``plural``; unsupported field labels raise SelectorError."""
    if not text or not text.strip():
        return None
    allowed = FIELD_LABELS["*"] | FIELD_LABELS.get(plural, frozenset())
    reqs: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = _CMP_RE.match(part)
        if not m:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {part!r}")
        field, op, value = m.group(1), m.group(2), m.group(3)
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        if plural == "events":
            field = _EVENT_ALIASES.get(field, field)
        reqs.append((field, op == "!=", value))
    if not reqs:
        return None

    def match(obj: dict[str, Any]) -> bool:
        for field, negate, value in reqs:
            if (_field_value(obj, field) == value) == negate:
                return False
        return True

    return match


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(m(obj) for m in active)
