"""Log lines carry milliseconds, so pod events and callbacks can be put in order."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

from bjc.commands.process import log_formatter

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
