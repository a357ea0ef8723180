"""Event requests: decoding, validation, Go-style formatting, Event bodies."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from bjc.events import EventRequest, build_event, decode_event, go_sprintf


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
