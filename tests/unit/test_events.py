"""Event requests: decoding, validation, Go-style formatting, Event bodies."""

from __future__ import annotations

import datetime as dt
import json
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bjc.kube.events import (
    NOTE_MAX_BYTES,
    EventRequest,
    build_event,
    decode_event,
    format_note,
    go_sprintf,
)

# Outputs of Go's fmt.Sprintf, made by tests/unit/go_sprintf/main.go (see its header).
GO_CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "go_sprintf_cases.json").read_text()
)["cases"]


def test_seed_examples_decode() -> None:
    simple = decode_event(b'{"warning": false, "reason": "TestReason", "message": "test message"}')
    assert simple == EventRequest(warning=False, reason="TestReason", message="test message")
    with_args = decode_event(
        b'{"warning": true, "reason": "TestReason", "message": "test message: %s", "args": ["a1"]}'
    )
    assert with_args.args == ["a1"] and with_args.warning


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"message": "m"}', "reason is required"),
        (b'{"reason": "", "message": "m"}', "reason is required"),
        (b'{"reason": "testReason", "message": "m"}', "upper-case"),
        (b'{"reason": "1Reason", "message": "m"}', "upper-case"),
        (b'{"reason": "Reason"}', "message is required"),
        (b'{"reason": "' + b"R" * 129 + b'", "message": "m"}', "at most 128"),
        (b'{"reason": "R", "message": "m", "action": "' + b"a" * 129 + b'"}', "action"),
    ],
)
def test_validation(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_event(body)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"reason": 1, "message": "m"}', b'{"args": [1]}', b""]
)
def test_bad_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(body)


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("test message: %s", ["a1"], "test message: a1"),
        ("%v and %s", ["x", "y"], "x and y"),
        ("%q", ['say "hi"\n'], '"say \\"hi\\"\\n"'),
        ("%q", ["tab\there é"], '"tab\\there é"'),
        ("%d items", ["42"], "42 items"),
        ("%05d|%-4d|%+d", ["-42", "7", "3"], "-0042|7   |+3"),
        ("%d", ["abc"], "%!d(string=abc)"),
        ("%d", ["1.5"], "%!d(string=1.5)"),
        ("%f", ["1"], "1.000000"),
        ("%.2f%%", ["99.456"], "99.46%"),
        ("%8.3f|", ["3.14159"], "   3.142|"),
        ("%f", ["x"], "%!f(string=x)"),
        ("%e", ["1234.5"], "1.234500e+03"),
        ("%x", ["hi"], "6869"),
        ("%5s|%-5s|%.2s", ["a", "b", "xyz"], "    a|b    |xy"),
        ("100%%", None, "100%"),
        ("%s and %s", ["one"], "one and %!s(MISSING)"),
        ("%s", ["a", "b", "c"], "a%!(EXTRA string=b, string=c)"),
        ("no verbs", ["a"], "no verbs%!(EXTRA string=a)"),
        ("trailing %", [], "trailing %!(NOVERB)"),
        ("%z", ["a"], "%!z(string=a)"),
        ("plain", None, "plain"),
    ],
)
def test_go_sprintf(fmt: str, args: list[str] | None, expected: str) -> None:
    assert go_sprintf(fmt, args) == expected


@pytest.mark.parametrize("case", GO_CASES, ids=[c["format"] for c in GO_CASES])
def test_go_sprintf_matches_go(case: dict[str, Any]) -> None:
    fmt, args = case["format"], case["args"]
    if "go_prefix" in case:  # Go rendered megabytes: compare what a note can hold
        rendered = go_sprintf(fmt, args, limit=NOTE_MAX_BYTES)
        assert len(rendered) > NOTE_MAX_BYTES
        assert case["go_prefix"].startswith(rendered)
        assert case["go_len"] > NOTE_MAX_BYTES
    else:
        expected = case.get("go", "")
        assert go_sprintf(fmt, args) == expected
        assert go_sprintf(fmt, args, limit=NOTE_MAX_BYTES) == expected


def _peak_bytes(fn: Any, *args: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = fn(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("%999999999s", ["x"]),  # the 51-byte body that allocated 1.9 GB
        ("%9999999s", ["x"]),  # accepted by Go: ten million characters of padding
        ("%-9999999s|%9999999q|%09999999x", ["a", "b", "c"]),
        ("%.1000000f %1000000.1000000e", ["1.5", "2"]),
        ("%09999999d|%.1000000d", ["-12", "3"]),
        ("%1000000s" * 200, ["a"] * 200),
        ("%s" * 5000, ["x" * 100] * 5000),
    ],
)
def test_note_cost_is_bounded_whatever_the_widths(message: str, args: list[str]) -> None:
    note, peak = _peak_bytes(format_note, message, args)
    assert len(note.encode()) <= NOTE_MAX_BYTES
    input_size = len(message) + sum(map(len, args))
    assert peak < 64 * 1024 + 4 * input_size, peak


def test_note_is_the_cut_full_rendering() -> None:
    # the bounded rendering gives exactly what cutting Go's full output gives
    full = go_sprintf("%-3000s|%s", ["left", "right"])
    assert len(full) == 3000 + 1 + 5
    assert format_note("%-3000s|%s", ["left", "right"]) == full[: NOTE_MAX_BYTES - 3] + "..."
    assert format_note("short %q", ["x"]) == 'short "x"'


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("%.3d|%08.3d|%.0d|%3.0d|", ["7", "7", "0", "0"], "007|     007||   |"),
        ("% d|%+d|%d", ["5", "-0", "+0012"], " 5|+0|12"),
        ("%x", ["1" * 10_000], "31" * 10_000),
        ("%d", ["9" * 10_000], "9" * 10_000),  # past Python's int() digit limit
        ("%.1200f", ["0.5"], "0." + "5" + "0" * 1199),
    ],
)
def test_number_extension_and_long_arguments(fmt: str, args: list[str], expected: str) -> None:
    assert go_sprintf(fmt, args) == expected


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "bjc-job-node-a-202401011200",
        "namespace": "ns",
        "uid": "uid-1",
        "resourceVersion": "17",
    },
}
NOW = dt.datetime(2024, 1, 1, 12, 0, 5, 123456, tzinfo=dt.UTC)


def test_build_event_warning_with_args() -> None:
    req = EventRequest(warning=True, reason="TestReason", message="test message: %s", args=["a1"])
    event = build_event(POD, req, "bjc", "ns", NOW, reporting_instance="bjc-pod-1")
    assert event == {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"bjc-job-node-a-202401011200.{int(NOW.timestamp() * 1e9):x}",
            "namespace": "ns",
        },
        "eventTime": "2024-01-01T12:00:05.123456Z",
        "reportingController": "bjc",
        "reportingInstance": "bjc-pod-1",
        "action": "n/a",
        "reason": "TestReason",
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "bjc-job-node-a-202401011200",
            "namespace": "ns",
            "uid": "uid-1",
            "resourceVersion": "17",
        },
        "note": "test message: a1",
        "type": "Warning",
    }


def test_build_event_normal_action_and_long_note() -> None:
    req = EventRequest(reason="Done", message="x" * 5000, action="Check")
    event = build_event(POD, req, "bjc", "ns", NOW)
    assert event["type"] == "Normal"
    assert event["action"] == "Check"
    assert event["reportingInstance"] == "bjc"
    assert len(event["note"].encode()) <= 1024  # apiserver limit for events.k8s.io/v1
    assert event["note"].endswith("...")
