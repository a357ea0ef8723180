"""Decode a YAML mapping against a msgspec Struct, one problem per broken key.

The configuration is declared once, as msgspec Structs whose field types carry their
rules (`Annotated[int, Meta(ge=1, le=65535, description=...)]`). msgspec itself stops at
the first error of a document and words it for programmers ("Expected `int` <= 65535 -
at `$.metrics.port`"); an operator wants every problem of a ConfigMap in one run, each
naming the key, the value and the rule. So this module walks the Struct field by field,
decodes each value with msgspec against its declared type, and turns a failure into
`key: invalid value V: reason`. No key has code of its own here.

What a field declares:
- msgspec constraints (`ge`, `le`, `min_length`, `max_length`, `pattern`) and `Literal`
  choices, checked by msgspec;
- `description`: for a scalar, the reason shown when a constraint is broken; for a
  mapping, list or Struct, what the value should be ("a list of {name: ...}");
- `extra={"read": f}`: `f` turns the YAML form into the stored one (a duration string
  into seconds) and raises ValueError with the reason; returning None means "the
  default" (a port of 0, as in the Go controller);
- `extra={"check": f}`: `f` raises ValueError with the reason for what no constraint can
  say (a cron expression parses, a time zone exists).

A null or absent value, and an empty string where the default is a string, mean the
default (as a Go zero value does). Unknown keys are warnings, with the closest known key
suggested (`closest_key`): the Go controller ignores them, so they must not stop a start.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from bjc.config.values import kind, show


class Problems:
    """Problems and warnings of one configuration, collected in the order found."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def invalid(self, key: str, value: Any, reason: str) -> None:
        self.problems.append(f"{key}: invalid value {show(value)}: {reason}")

    def missing(self, key: str, hint: str = "") -> None:
        self.problems.append(f"{key}: required but missing{hint}")

    def unknown_key(self, path: str, key: str, known: list[str]) -> None:
        self.warnings.append(unknown_key_warning(path, key, known))


def closest_key(key: str, known: list[str]) -> str | None:
    """The known key `key` most likely misspells (difflib, ignoring case), if any is close."""
    by_folded = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None


def unknown_key_warning(path: str, key: str, known: list[str]) -> str:
    """`path: unknown key ignored (did you mean 'K'?)`, naming the closest known key K."""
    close = closest_key(key, known)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"{path}: unknown key ignored{hint}"


class _Invalid:
    """A value that broke its rule (its problem is recorded)."""


INVALID: Any = _Invalid()

_EXPECT = {
    str: "a string",
    int: "an integer",
    bool: "a boolean (true or false)",
    float: "a number",
    dict: "a mapping",
    list: "a list",
}
_TYPE_MISMATCH_RE = re.compile(r"^Expected `[^`]*`, got `")
_UnionType = type(int | None)


@dataclass(frozen=True)
class _Rule:
    """A field type taken apart: the type msgspec checks and what the field declares."""

    checked: Any  # the declared type without `| None`, constraints included
    base: Any  # the same without its Annotated constraints
    description: str | None
    read: Callable[[Any], Any] | None
    check: Callable[[Any], Any] | None


def _rule(declared: Any) -> _Rule:
    checked = declared
    if typing.get_origin(checked) in (typing.Union, _UnionType):
        members = [a for a in typing.get_args(checked) if a is not type(None)]
        if len(members) == 1:
            checked = members[0]
    base: Any = checked
    metas: list[msgspec.Meta] = []
    if typing.get_origin(checked) is typing.Annotated:
        base, *rest = typing.get_args(checked)
        metas = [m for m in rest if isinstance(m, msgspec.Meta)]
    description: str | None = None
    read: Callable[[Any], Any] | None = None
    check: Callable[[Any], Any] | None = None
    for meta in metas:
        description = meta.description or description
        extra: dict[str, Any] = meta.extra or {}
        read = extra.get("read", read)
        check = extra.get("check", check)
    return _Rule(checked, base, description, read, check)


def _is_struct(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, msgspec.Struct)


def _expected(rule: _Rule) -> str:
    if typing.get_origin(rule.base) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(rule.base))
    origin = typing.get_origin(rule.base) or rule.base
    if rule.description and (origin in (dict, list) or _is_struct(origin)):
        return rule.description
    return _EXPECT.get(origin, "a mapping" if _is_struct(origin) else str(origin))


def decode_struct(
    raw: Mapping[Any, Any], struct: type[msgspec.Struct], problems: Problems, prefix: str = ""
) -> dict[str, Any]:
    """The valid fields of `raw`, by their YAML names; the rest recorded in `problems`.

    Fields left out (absent, null, invalid) take their defaults when the Struct is built;
    a required field that is absent is recorded as missing.
    """
    fields = msgspec.structs.fields(struct)
    known = [f.encode_name for f in fields]
    for key in raw:
        if key not in known:
            problems.unknown_key(f"{prefix}{key}", str(key), known)
    out: dict[str, Any] = {}
    for field in fields:
        path = f"{prefix}{field.encode_name}"
        value = raw.get(field.encode_name)
        if value is None or (value == "" and (field.required or isinstance(field.default, str))):
            if field.required:
                problems.missing(path, " (empty)" if value == "" else "")
            continue
        decoded = decode_value(path, value, field.type, problems)
        if decoded is not INVALID and decoded is not None:
            out[field.encode_name] = decoded
    return out


def decode_value(path: str, value: Any, declared: Any, problems: Problems) -> Any:
    """`value` decoded as `declared`; INVALID (and a problem recorded) when it breaks a rule."""
    rule = _rule(declared)
    shown = value
    if rule.read is not None:
        try:
            value = rule.read(value)
        except ValueError as exc:
            problems.invalid(path, shown, str(exc))
            return INVALID
        if value is None:
            return None
    origin = typing.get_origin(rule.base) or rule.base
    if _is_struct(origin):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.invalid(path, shown, f"expected {_expected(rule)}, got {kind(shown)}")
            return INVALID
        decoded: Any = decode_struct(value, origin, problems, f"{path}.")
    elif origin is dict:
        decoded = _decode_mapping(path, value, rule, problems)
    elif origin is list:
        decoded = _decode_list(path, value, rule, problems)
    else:
        try:
            decoded = msgspec.convert(value, rule.checked, strict=True)
        except msgspec.ValidationError as exc:
            if _TYPE_MISMATCH_RE.match(str(exc)):
                quote = "; quote it" if origin is str and isinstance(value, int | float) else ""
                reason = f"expected {_expected(rule)}, got {kind(value)}{quote}"
            else:
                reason = rule.description or (
                    f"expected {_expected(rule)}"
                    if typing.get_origin(rule.base) is typing.Literal
                    else str(exc)
                )
            problems.invalid(path, shown, reason)
            return INVALID
    if decoded is INVALID:
        return INVALID
    if rule.check is not None:
        try:
            rule.check(decoded)
        except ValueError as exc:
            problems.invalid(path, shown, str(exc))
            return INVALID
    return decoded


def _decode_mapping(path: str, value: Any, rule: _Rule, problems: Problems) -> Any:
    if not isinstance(value, dict):
        problems.invalid(path, value, f"expected {_expected(rule)}, got {kind(value)}")
        return INVALID
    key_type, value_type = typing.get_args(rule.base)
    out = {}
    broken = False
    for k, v in value.items():
        key = decode_value(path, k, key_type, problems)  # a bad key is a problem of the mapping
        item = INVALID if key is INVALID else decode_value(f"{path}.{k}", v, value_type, problems)
        if item is INVALID:
            broken = True
        elif item is not None:
            out[key] = item
    return INVALID if broken else out


def _decode_list(path: str, value: Any, rule: _Rule, problems: Problems) -> Any:
    if not isinstance(value, list):
        problems.invalid(path, value, f"expected {_expected(rule)}, got {kind(value)}")
        return INVALID
    (item_type,) = typing.get_args(rule.base)
    items = [decode_value(f"{path}[{i}]", v, item_type, problems) for i, v in enumerate(value)]
    return INVALID if any(item is INVALID for item in items) else items
