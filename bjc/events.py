"""Kubernetes Events posted by job pods through the callback API (SPEC A5, `.../event`).

A job pod sends `{"warning", "reason", "message", "action", "args"}`; bjc formats the
message Go-style (the Go controller passed it to fmt.Sprintf), and creates an
events.k8s.io/v1 Event regarding the job pod, reported by the controller.

This module holds the request struct and its validation, the Go-style formatter, the
Event body builder and `send_event`, which performs the two API calls (get the pod,
create the event) through any client with `get_or_none` and `create`
(`bjc.kube.KubeClient` fits). Deliberately not here: HTTP handling of the callback
(bjc.web.callback) and deciding which pod belongs to a node (the controller).
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any, Protocol

import msgspec

# Limits of events.k8s.io/v1 validation in the apiserver.
REASON_MAX = 128
ACTION_MAX = 128
NOTE_MAX_BYTES = 1024
REPORTING_INSTANCE_MAX = 128


class PodNotFound(Exception):
    """The job pod an event should regard does not exist (callback answers 404)."""


class EventRequest(msgspec.Struct, kw_only=True):
    """The body of `POST /report/{node}/{executionID}/event`."""

    warning: bool = False
    reason: str = ""
    message: str = ""
    action: str | None = None
    args: list[str] | None = None


event_decoder = msgspec.json.Decoder(EventRequest)


def decode_event(body: bytes) -> EventRequest:
    """Decode and validate; msgspec.DecodeError for bad JSON, ValueError for bad fields."""
    req = event_decoder.decode(body)
    validate_event(req)
    return req


def validate_event(req: EventRequest) -> None:
    if not req.reason:
        raise ValueError("reason is required")
    if not req.reason[0].isupper():
        raise ValueError(f"reason {req.reason!r} must start with an upper-case letter")
    if len(req.reason) > REASON_MAX:
        raise ValueError(f"reason must be at most {REASON_MAX} characters")
    if not req.message:
        raise ValueError("message is required")
    if req.action is not None and len(req.action) > ACTION_MAX:
        raise ValueError(f"action must be at most {ACTION_MAX} characters")


# --------------------------------------------------------------------- formatting
_DIRECTIVE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d*|\*))?(.?)", re.DOTALL)
_INT = re.compile(r"^[+-]?\d+$")


def _go_quote(s: str) -> str:
    """strconv.Quote for a string: Go escapes, printable Unicode kept."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                        "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])  # fmt: skip
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _pad(s: str, flags: str, width: int | None) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s.ljust(width)
    return s.rjust(width)


def _format_one(flags: str, width: int | None, prec: int | None, verb: str, arg: str) -> str:
    if verb in "sv":
        s = arg if prec is None else arg[:prec]
        return _pad(s, flags, width)
    if verb == "q":
        s = _go_quote(arg if prec is None else arg[:prec])
        return _pad(s, flags, width)
    if verb in "xX":
        s = arg.encode().hex()
        return _pad(s.upper() if verb == "X" else s, flags, width)
    if verb == "d" and _INT.match(arg):
        spec = "%" + flags.replace("#", "") + (str(width) if width is not None else "") + "d"
        return spec % int(arg)
    if verb in "fFeE":
        try:
            number = float(arg)
        except ValueError:
            number = None
        if number is not None and arg.strip().lower() not in ("nan", "inf", "-inf", "+inf"):
            spec = "%" + flags + (str(width) if width is not None else "")
            spec += f".{prec}" if prec is not None else ""
            return (spec + verb) % number
    return f"%!{verb}(string={arg})"


def go_sprintf(fmt: str, args: list[str] | None) -> str:
    """Format like Go's fmt.Sprintf with string arguments.

    Supports `%s %v %q %x %d %f %e` with flags, width and precision, and `%%`.
    Numeric strings format as numbers for `%d`/`%f`; anything else renders the way Go
    renders a wrong type (`%!d(string=abc)`). Missing arguments give `%!s(MISSING)`,
    unused ones `%!(EXTRA string=...)`, a trailing `%` gives `%!(NOVERB)`.
    """
    args = list(args or [])
    out: list[str] = []
    used = 0
    pos = 0
    while True:
        i = fmt.find("%", pos)
        if i < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:i])
        m = _DIRECTIVE.match(fmt, i)
        assert m is not None  # the pattern matches any `%`
        flags, width_s, prec_s, verb = m.groups()
        pos = m.end()
        if verb == "":
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        width: int | None = None
        prec: int | None = None
        if width_s == "*" or prec_s == "*":
            # Go would take an int argument here; ours are strings.
            out.append("%!(BADWIDTH)")
            continue
        if width_s:
            width = int(width_s)
        if prec_s is not None:
            prec = int(prec_s) if prec_s else 0
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(flags or "", width, prec, verb, args[used]))
        used += 1
    if used < len(args):
        extra = ", ".join(f"string={a}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# ------------------------------------------------------------------------ events
def micro_time(now: _dt.datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return now.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _truncate_bytes(s: str, limit: int) -> str:
    raw = s.encode()
    if len(raw) <= limit:
        return s
    return raw[: limit - 3].decode(errors="ignore") + "..."


def build_event(
    pod: dict[str, Any],
    req: EventRequest,
    controller_name: str,
    namespace: str,
    now: _dt.datetime,
    *,
    reporting_instance: str | None = None,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event regarding `pod` (a Pod object as a dict)."""
    meta = pod.get("metadata") or {}
    pod_name = meta.get("name", "")
    regarding = {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": pod.get("kind", "Pod"),
        "name": pod_name,
        "namespace": meta.get("namespace") or namespace,
    }
    if meta.get("uid"):
        regarding["uid"] = meta["uid"]
    if meta.get("resourceVersion"):
        regarding["resourceVersion"] = meta["resourceVersion"]
    instance = reporting_instance or controller_name
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            # client-go's recorder names events <object>.<unix nanos in hex>.
            "name": f"{pod_name}.{int(now.timestamp() * 1e9):x}",
            "namespace": namespace,
        },
        "eventTime": micro_time(now),
        "reportingController": controller_name,
        "reportingInstance": instance[:REPORTING_INSTANCE_MAX],
        "action": req.action or "n/a",
        "reason": req.reason,
        "regarding": regarding,
        "note": _truncate_bytes(go_sprintf(req.message, req.args), NOTE_MAX_BYTES),
        "type": "Warning" if req.warning else "Normal",
    }


class EventApi(Protocol):
    """The two Kubernetes calls events need (bjc.kube.KubeClient provides them)."""

    async def get_or_none(self, path: str, type: type[Any]) -> Any: ...

    async def create(self, path: str, obj: Any) -> dict[str, Any]: ...


async def send_event(
    kube: EventApi,
    namespace: str,
    pod_name: str,
    controller_name: str,
    req: EventRequest,
    *,
    reporting_instance: str | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Create the Event for `req` regarding job pod `pod_name`; PodNotFound if it is gone."""
    pod = await kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{pod_name}", dict)
    if pod is None:
        raise PodNotFound(f"pod {namespace}/{pod_name} not found")
    if now is None:
        now = _dt.datetime.fromtimestamp(time.time(), _dt.UTC)
    body = build_event(
        pod, req, controller_name, namespace, now, reporting_instance=reporting_instance
    )
    return await kube.create(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body)
