"""Shared parts of configuration checking: durations, sizes and how problems show values.

Both `bjc.config.settings` and the modules it builds on (`bjc.config.cron` for `@every`,
`bjc.config.podspec` for the pod template) report problems the same way; they share this
module, so none of them imports another to reach a helper.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml


class ConfigError(Exception):
    """Every problem found in a configuration, one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- durations, sizes

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
DURATION_HINT = "use a Go duration such as '10s', '1m30s', '500ms' or '1h'"


def parse_duration(s: str) -> float:
    """A Go duration string (`time.ParseDuration` syntax) as float seconds; negatives refused."""
    if not isinstance(s, str):
        raise ValueError(f"expected a duration string, got {type(s).__name__}; {DURATION_HINT}")
    text = s
    if text.startswith("-"):
        raise ValueError("negative durations are not allowed")
    if text.startswith("+"):
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"empty duration; {DURATION_HINT}")
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART_RE.match(text, pos)
        if m is None:
            rest = text[pos:]
            if re.match(r"^(\d+\.?\d*|\.\d+)$", rest):
                reason = f"missing unit after {rest!r}"
            else:
                reason = f"cannot parse {rest!r}"
            raise ValueError(f"{reason}; {DURATION_HINT} (units: ns, us, ms, s, m, h)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Seconds in Go's `Duration.String()` style (`1m30s`, `500ms`, `1h0m0s`)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}us"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SIZE_FACTORS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a Kubernetes quantity string (`64Mi`, `10M`, `1.5Gi`, `1048576`)."""
    if isinstance(value, bool):
        raise ValueError("expected a byte count or a quantity such as '64Mi', got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if m is None:
            raise ValueError(
                "expected a byte count or a quantity such as '64Mi', '10M', '1Gi' "
                "(suffixes k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei)"
            )
        return math.ceil(float(m.group(1)) * _SIZE_FACTORS[m.group(2)])
    raise ValueError(f"expected a byte count or a quantity such as '64Mi', got {kind(value)}")


# ------------------------------------------------------------ how problems show values


def show(value: Any) -> str:
    """A value as the operator wrote it (JSON-ish, shortened)."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{context}, {problem}" if context else problem
    return f"invalid YAML{where}: {detail}"
