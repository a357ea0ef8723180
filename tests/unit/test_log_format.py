"""Log lines carry milliseconds, so pod events and callbacks can be put in order, and
show the control characters of job-controlled text as escapes."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime

from bjc.commands.process import log_formatter
from bjc.terminal import UNSAFE, visible
from tests.unit.test_terminal import HOSTILE

CREATED = 1_704_110_400.123  # 2024-01-01T12:00:00.123Z


def record() -> logging.LogRecord:
    r = logging.LogRecord(
        "bjc.engine.controller", logging.INFO, __file__, 1, "node %s", ("a",), None
    )
    r.created, r.msecs = CREATED, 123.0
    return r


def test_human_lines_have_milliseconds() -> None:
    line = log_formatter(human=True).format(record())
    local = datetime.fromtimestamp(CREATED).strftime("%Y-%m-%d %H:%M:%S")
    assert line.startswith(f"{local}.123 INFO    bjc.engine.controller: node a")


def test_json_lines_have_rfc3339_timestamps_with_milliseconds() -> None:
    entry = json.loads(log_formatter(human=False).format(record()))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.123[+-]\d\d:\d\d", entry["ts"])
    assert datetime.fromisoformat(entry["ts"]).timestamp() == CREATED
    assert entry["msg"] == "node a" and entry["level"] == "info"


def hostile_record(exc: bool = False) -> logging.LogRecord:
    """A message with text a job controls: an escape sequence, a forged line, a C1 CSI."""
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\x1b[2J")
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord(
        "bjc.web.callback", logging.WARNING, __file__, 1, "upload %s failed", (HOSTILE,), exc_info
    )
    r.created, r.msecs = CREATED, 123.0
    return r


def test_human_lines_show_control_characters_as_escapes() -> None:
    line = log_formatter(human=True).format(hostile_record())
    assert "\n" not in line and UNSAFE.search(line) is None  # one line, nothing raw
    assert line.endswith(f"upload {visible(HOSTILE)} failed")


def test_a_traceback_keeps_its_line_breaks_and_nothing_else() -> None:
    text = log_formatter(human=True).format(hostile_record(exc=True))
    lines = text.split("\n")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad\\x1b[2J"
    assert all(UNSAFE.search(line) is None for line in lines)


def test_json_lines_decode_to_the_message_and_carry_no_control_characters() -> None:
    line = log_formatter(human=False).format(hostile_record(exc=True))
    assert UNSAFE.search(line) is None
    entry = json.loads(line)
    assert entry["msg"] == f"upload {HOSTILE} failed"
    assert "ValueError: bad\x1b[2J" in entry["error"]
