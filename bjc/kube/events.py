"""Kubernetes Events posted by job pods through the callback API (`.../event`).

A job pod sends `{"warning", "reason", "message", "action", "args"}`; bjc formats the
message Go-style (the Go controller passed it to fmt.Sprintf), and creates an
events.k8s.io/v1 Event regarding the job pod, reported by the controller.

This module holds the request struct and its validation, the Go-style formatter, the
Event body builder and `send_event`, which performs the two API calls (get the pod,
create the event) through any client with `get_or_none` and `create`
(`bjc.kube.client.KubeClient` fits). Deliberately not here: HTTP handling of the callback
(bjc.web.callback) and deciding which pod belongs to a node (the controller).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import sys
import time
from typing import Any, Protocol, TypeVar

import msgspec

from bjc.kube.objects import micro_time

T = TypeVar("T")

# Limits of events.k8s.io/v1 validation in the apiserver (bytes, as Go's len counts).
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


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """`decoder.decode`, with every way a body can be malformed as msgspec.DecodeError.

    msgspec raises UnicodeDecodeError for invalid UTF-8 inside strings and lets a
    RecursionError escape for nesting deeper than the interpreter's recursion limit.
    """
    try:
        return decoder.decode(body)
    except UnicodeDecodeError as e:
        raise msgspec.DecodeError(f"invalid UTF-8: {e.reason} at byte {e.start}") from None
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None


def decode_event(body: bytes) -> EventRequest:
    """Decode and validate; msgspec.DecodeError for bad JSON, ValueError for bad fields."""
    req = decode_json(event_decoder, body)
    validate_event(req)
    return req


def validate_event(req: EventRequest) -> None:
    if not req.reason:
        raise ValueError("reason is required")
    if not req.reason[0].isupper():
        raise ValueError(f"reason {req.reason!r} must start with an upper-case letter")
    if len(req.reason.encode()) > REASON_MAX:
        raise ValueError(f"reason must be at most {REASON_MAX} bytes (UTF-8)")
    if not req.message:
        raise ValueError("message is required")
    if req.action is not None and len(req.action.encode()) > ACTION_MAX:
        raise ValueError(f"action must be at most {ACTION_MAX} bytes (UTF-8)")


# --------------------------------------------------------------------- formatting
# A port of Go's fmt.Sprintf (doPrintf, fmt/print.go and fmt/format.go) for string
# arguments, writing into a bounded buffer: the note is cut to NOTE_MAX_BYTES anyway, so
# rendering stops once more than that has been produced, and padding is never materialised
# beyond it. Widths and precisions follow Go: a literal over 1e6 is refused the way Go
# refuses it (the rest of the format is consumed: `%!(NOVERB)`), `*` takes (and, our
# arguments being strings, refuses) an argument: `%!(BADWIDTH)`, `%!(BADPREC)`.

_TOO_LARGE = 1_000_000  # Go's fmt.tooLarge
_FLOAT_EXACT_DIGITS = 1100  # past this many digits a float64's decimal expansion is exact
_INT = re.compile(r"^[+-]?\d+$")


class _Buffer:
    """Output that stops growing past `limit` characters (None: unbounded)."""

    def __init__(self, limit: int | None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    @property
    def full(self) -> bool:
        return self.limit is not None and self.size > self.limit

    def room(self) -> int:
        """Characters that still matter (one more than the limit marks it as exceeded)."""
        return sys.maxsize if self.limit is None else max(self.limit + 1 - self.size, 0)

    def write(self, s: str) -> None:
        room = self.room()
        if len(s) > room:
            s = s[:room]
        self.parts.append(s)
        self.size += len(s)

    def padding(self, n: int, char: str = " ") -> None:
        if n > 0:
            self.write(char * min(n, self.room()))


class _Spec:
    """Flags, width and precision of one directive (Go's fmtFlags, wid, prec)."""

    __slots__ = ("minus", "plus", "prec", "sharp", "sharp_v", "space", "wid", "zero")

    def __init__(self) -> None:
        self.sharp = self.zero = self.plus = self.minus = self.space = self.sharp_v = False
        self.wid: int | None = None  # None: no width
        self.prec: int | None = None  # None: no precision


def _parsenum(s: str, start: int, end: int) -> tuple[int | None, int]:
    """Go's parsenum: (number or None, index after it); an overflow consumes to `end`."""
    num, i = None, start
    while i < end and "0" <= s[i] <= "9":
        if num is not None and num > _TOO_LARGE:
            return None, end  # "Overflow; crazy long number most likely."
        num = (num or 0) * 10 + ord(s[i]) - 48
        i += 1
    return num, i


def _pad(out: _Buffer, spec: _Spec, s: str) -> None:
    """Go's fmt.padString: pad to the width, left unless `-`; zeros only on the left."""
    if not spec.wid:
        out.write(s)
        return
    n = spec.wid - len(s)
    char = "0" if spec.zero and not spec.minus else " "
    if spec.minus:
        out.write(s)
        out.padding(n, char)
    else:
        out.padding(n, char)
        out.write(s)


def _go_quote(s: str, ascii_only: bool = False) -> str:
    """strconv.Quote (QuoteToASCII with `ascii_only`) of a string."""
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
        elif (ch.isprintable() or ch == " ") and not (ascii_only and code >= 0x80):
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _can_backquote(s: str) -> bool:
    """strconv.CanBackquote."""
    return not any((c < " " and c != "\t") or c in "`\x7f\ufeff" for c in s)


def _fmt_q(out: _Buffer, spec: _Spec, s: str) -> None:
    if spec.prec is not None:
        s = s[: spec.prec]
    if spec.sharp and _can_backquote(s):
        _pad(out, spec, f"`{s}`")
    else:
        _pad(out, spec, _go_quote(s, ascii_only=spec.plus))


def _fmt_hex(out: _Buffer, spec: _Spec, s: str, upper: bool) -> None:
    """Go's fmtSbx: the UTF-8 bytes in hex, `#` adds 0x, ` ` separates the bytes."""
    data = s.encode()
    length = len(data)
    if spec.prec is not None and spec.prec < length:
        length = spec.prec
    if length == 0:
        out.padding(spec.wid or 0, "0" if spec.zero and not spec.minus else " ")
        return
    width = 2 * length
    if spec.space:
        width = (2 * width if spec.sharp else width) + length - 1
    elif spec.sharp:
        width += 2
    pad = (spec.wid or 0) - width
    char = "0" if spec.zero and not spec.minus else " "
    if not spec.minus:
        out.padding(pad, char)
    prefix = "0X" if upper else "0x"
    shown = data[: min(length, out.room() // 2 + 1)]
    digits = shown.hex().upper() if upper else shown.hex()
    if spec.space:
        each = prefix if spec.sharp else ""
        out.write(" ".join(each + digits[i : i + 2] for i in range(0, len(digits), 2)))
    else:
        out.write((prefix if spec.sharp else "") + digits)
    if spec.minus:
        out.padding(pad, " ")


def _fmt_integer(out: _Buffer, spec: _Spec, arg: str) -> None:
    """Go's fmtInteger (base 10) applied to a decimal string (bjc's extension, see go_sprintf)."""
    negative = arg.startswith("-")
    digits = arg.lstrip("+-").lstrip("0") or "0"
    if negative and digits == "0":
        negative = False
    zeros = 0
    if spec.prec is not None:
        if spec.prec == 0 and digits == "0":
            out.padding(spec.wid or 0)
            return
        zeros = spec.prec - len(digits)
    elif spec.zero and not spec.minus and spec.wid is not None:
        zeros = spec.wid - len(digits) - (1 if negative or spec.plus or spec.space else 0)
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    # Written as Go's pad would, without building the zero run when it cannot show.
    body_len = len(sign) + max(zeros, 0) + len(digits)
    pad = (spec.wid or 0) - body_len
    if not spec.minus:
        out.padding(pad)
    out.write(sign)
    out.padding(zeros, "0")
    out.write(digits)
    if spec.minus:
        out.padding(pad)


def _fmt_float(out: _Buffer, spec: _Spec, verb: str, arg: str) -> bool:
    """A float string with %f %F %e %E (bjc's extension); False when it is not one."""
    try:
        number = float(arg)
    except ValueError:
        return False
    if not math.isfinite(number):
        return False
    on = (spec.sharp, spec.zero, spec.plus, spec.minus, spec.space)
    flags = "".join(flag for flag, set_ in zip("#0+- ", on, strict=True) if set_)
    prec = f".{min(spec.prec, _FLOAT_EXACT_DIGITS)}" if spec.prec is not None else ""
    natural = (f"%{flags}{prec}{verb}") % number
    width = spec.wid or 0
    if width > len(natural):  # never wider than what can still show
        width = min(width, len(natural) + out.room() + 1)
        natural = (f"%{flags}{width}{prec}{verb}") % number
    if spec.prec is not None and spec.prec > _FLOAT_EXACT_DIGITS:
        natural += "0" * min(spec.prec - _FLOAT_EXACT_DIGITS, out.room())
    out.write(natural)
    return True


def _print_arg(out: _Buffer, spec: _Spec, verb: str, arg: str) -> None:
    """Go's printArg for a string argument (fmtString), plus numbers for d/f/e."""
    if verb in "sv":
        if verb == "v" and spec.sharp_v:
            _fmt_q(out, spec, arg)
        else:
            _pad(out, spec, arg if spec.prec is None else arg[: spec.prec])
    elif verb == "q":
        _fmt_q(out, spec, arg)
    elif verb in "xX":
        _fmt_hex(out, spec, arg, verb == "X")
    elif verb == "T":
        _pad(out, spec, "string" if spec.prec is None else "string"[: spec.prec])
    elif verb == "d" and _INT.match(arg):
        _fmt_integer(out, spec, arg)
    elif verb in "fFeE" and _fmt_float(out, spec, verb, arg):
        pass
    else:  # Go's badVerb: the argument printed with %v and the same width and precision
        out.write(f"%!{verb}(string=")
        _print_arg(out, spec, "v", arg)
        out.write(")")


class _Args:
    """Go's pp argument state: the next argument, `[n]` indexes, which were good."""

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.num = 0  # the next argument
        self.after_index = False  # the previous item was an index like [3]
        self.reordered = False  # an index was used: no EXTRA check
        self.good = True  # the current directive's indexes were valid

    def index(self, fmt: str, i: int) -> int:
        """Go's argNumber: an optional `[n]` at i; returns the index after it."""
        self.after_index = False
        if i >= len(fmt) or fmt[i] != "[":
            return i
        self.reordered = True
        close = fmt.find("]", i + 1)
        if len(fmt) - i < 3 or close < 0:
            self.good = False
            return i + 1
        num, end = _parsenum(fmt, i + 1, close)
        if num is None or end != close:
            self.good = False
            return close + 1
        self.after_index = True
        if 0 <= num - 1 < len(self.values):
            self.num = num - 1
        else:
            self.good = False
        return close + 1

    def star(self, out: _Buffer, error: str) -> None:
        """A `*` width or precision takes an int argument; ours are strings: `error`."""
        if self.num < len(self.values):
            self.num += 1
        out.write(error)
        self.after_index = False


def _sprintf(out: _Buffer, fmt: str, values: list[str]) -> None:
    end = len(fmt)
    args = _Args(values)
    i = 0
    while i < end and not out.full:
        args.good = True
        j = fmt.find("%", i)
        if j < 0:
            out.write(fmt[i:])
            break
        out.write(fmt[i:j])
        i = j + 1
        spec = _Spec()
        while i < end and fmt[i] in "#0+- ":
            c = fmt[i]
            if c == "#":
                spec.sharp = True
            elif c == "0":
                spec.zero = True
            elif c == "+":
                spec.plus = True
            elif c == "-":
                spec.minus = True
            else:
                spec.space = True
            i += 1
        i = args.index(fmt, i)
        if i < end and fmt[i] == "*":
            i += 1
            args.star(out, "%!(BADWIDTH)")
        else:
            spec.wid, i = _parsenum(fmt, i, end)
            if args.after_index and spec.wid is not None:
                args.good = False
        if i + 1 < end and fmt[i] == ".":
            i += 1
            if args.after_index:
                args.good = False
            i = args.index(fmt, i)
            if i < end and fmt[i] == "*":
                i += 1
                args.star(out, "%!(BADPREC)")
            else:
                prec, i = _parsenum(fmt, i, end)
                spec.prec = prec or 0
        if not args.after_index:
            i = args.index(fmt, i)
        if i >= end:
            out.write("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.write("%")
        elif not args.good:
            out.write(f"%!{verb}(BADINDEX)")
        elif args.num >= len(values):
            out.write(f"%!{verb}(MISSING)")
        else:
            if verb in "vw":  # %w is %v's bad twin in Sprintf
                spec.sharp_v, spec.sharp = spec.sharp, False
                spec.plus = False
            _print_arg(out, spec, verb, values[args.num])
            args.num += 1
    if not args.reordered and args.num < len(values) and not out.full:
        out.write("%!(EXTRA ")
        for n, arg in enumerate(values[args.num :]):
            if out.full:
                break
            out.write(f", string={arg}" if n else f"string={arg}")
        out.write(")")


def go_sprintf(fmt: str, args: list[str] | None, *, limit: int | None = None) -> str:
    """Format like Go's fmt.Sprintf with string arguments.

    All of Go's directive syntax: flags `#0+- `, width and precision (literal, or `*`
    which needs an int argument and so renders `%!(BADWIDTH)` / `%!(BADPREC)`),
    argument indexes `[n]`, `%%`, and Go's error forms (`%!d(string=abc)`,
    `%!s(MISSING)`, `%!(EXTRA string=…)`, `%!(NOVERB)`, `%!s(BADINDEX)`). Verbs for
    strings as Go: `%s %v %q %x %X %T`. bjc's extension: a decimal string formats as a
    number with `%d`, a float string with `%f %F %e %E`.

    With `limit`, rendering stops once the output exceeds `limit` characters: the
    result is then a prefix (longer than `limit`) of the full output, so its cost is
    bounded by the limit and the input's length whatever the widths and precisions.
    """
    out = _Buffer(limit)
    _sprintf(out, fmt, list(args or []))
    return "".join(out.parts)


def format_note(message: str, args: list[str] | None) -> str:
    """The Event note: `message` formatted with `args`, cut to the apiserver's 1 KiB."""
    return _truncate_bytes(go_sprintf(message, args, limit=NOTE_MAX_BYTES), NOTE_MAX_BYTES)


def _truncate_bytes(s: str, limit: int) -> str:
    raw = s.encode()
    if len(raw) <= limit:
        return s
    return raw[: limit - 3].decode(errors="ignore") + "..."


# ------------------------------------------------------------------------ events
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
        "note": format_note(req.message, req.args),
        "type": "Warning" if req.warning else "Normal",
    }


class EventApi(Protocol):
    """The two Kubernetes calls events need (bjc.kube.client.KubeClient provides them)."""

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
