"""Cron specs as robfig/cron (the Go controller) accepts them: fields, descriptors, @every, TZ."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bjc.config.cron import DESCRIPTORS, local_timezone, parse_cron

ZURICH = ZoneInfo("Europe/Zurich")
START = datetime(2024, 5, 15, 10, 20, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("42 3 * * *", datetime(2024, 5, 16, 3, 42, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2024, 5, 15, 10, 30, tzinfo=UTC)),
        ("0 12 * * MON-FRI", datetime(2024, 5, 15, 12, 0, tzinfo=UTC)),
        ("0 0 1 jan *", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
        ("0 0 ? * SUN", datetime(2024, 5, 19, 0, 0, tzinfo=UTC)),
        ("5/20 * * * *", datetime(2024, 5, 15, 10, 25, tzinfo=UTC)),
        ("0 9 1,15 * *", datetime(2024, 6, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_five_field_expressions(expr: str, expected: datetime) -> None:
    assert parse_cron(expr, tz=UTC).next_after(START) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("@hourly", datetime(2024, 5, 15, 11, 0, tzinfo=UTC)),
        ("@daily", datetime(2024, 5, 16, 0, 0, tzinfo=UTC)),
        ("@midnight", datetime(2024, 5, 16, 0, 0, tzinfo=UTC)),
        ("@weekly", datetime(2024, 5, 19, 0, 0, tzinfo=UTC)),
        ("@monthly", datetime(2024, 6, 1, 0, 0, tzinfo=UTC)),
        ("@yearly", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
        ("@annually", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
        ("@DAILY", datetime(2024, 5, 16, 0, 0, tzinfo=UTC)),
    ],
)
def test_descriptors(expr: str, expected: datetime) -> None:
    schedule = parse_cron(expr, tz=UTC)
    assert schedule.fields == DESCRIPTORS[expr.lower()]
    assert schedule.next_after(START) == expected


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        ("@every 1h30m", 5400),
        ("@every 10s", 10),
        ("@every 1.5s", 1),  # truncated to whole seconds, like robfig
        ("@every 300ms", 1),  # at least one second, like robfig
        ("@every   2m", 120),
    ],
)
def test_every_interval(expr: str, seconds: int) -> None:
    schedule = parse_cron(expr)
    assert schedule.interval == seconds
    start = START.replace(microsecond=700_000)
    assert schedule.next_after(start) == START + timedelta(seconds=seconds)


def test_every_chains_without_drift() -> None:
    schedule = parse_cron("@every 90s", tz=UTC)
    first = schedule.next_after(START)
    assert schedule.next_after(first) == first + timedelta(seconds=90)


def test_next_after_is_strictly_after() -> None:
    schedule = parse_cron("0 * * * *", tz=UTC)
    on_the_hour = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)
    assert schedule.next_after(on_the_hour) == datetime(2024, 5, 15, 11, 0, tzinfo=UTC)


def test_local_wall_clock_across_dst() -> None:
    schedule = parse_cron("0 3 * * *", tz=ZURICH)
    before_switch = datetime(2024, 3, 30, 12, 0, tzinfo=ZURICH)  # CET, switch on the 31st
    first = schedule.next_after(before_switch)
    second = schedule.next_after(first)
    assert (first.hour, first.utcoffset()) == (3, timedelta(hours=2))
    assert (second.day, second.hour, second.utcoffset()) == (1, 3, timedelta(hours=2))


def test_result_is_in_schedule_zone_and_aware() -> None:
    result = parse_cron("30 8 * * *", tz=ZURICH).next_after(START)
    assert result.tzinfo is not None
    assert (result.hour, result.minute) == (8, 30)
    assert result == datetime(2024, 5, 16, 6, 30, tzinfo=UTC)


def test_naive_datetime_is_local_time() -> None:
    schedule = parse_cron("0 * * * *")
    naive = datetime(2024, 5, 15, 10, 20)
    result = schedule.next_after(naive)
    assert result.tzinfo is not None
    assert result == datetime(2024, 5, 15, 11, 0, tzinfo=local_timezone())


def test_local_timezone_follows_tz_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    result = parse_cron("0 6 * * *").next_after(START)
    assert result == datetime(2024, 5, 15, 10, 0, tzinfo=UTC) + timedelta(days=1)


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_timezone_prefix(prefix: str) -> None:
    schedule = parse_cron(f"{prefix}=Asia/Tokyo 0 9 * * *", tz=UTC)
    assert schedule.next_after(START) == datetime(2024, 5, 16, 0, 0, tzinfo=UTC)
    assert "Asia/Tokyo" in schedule.describe()


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty"),
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "expected 5 fields"),  # seconds field: robfig's standard parser refuses
        ("60 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("* * 32 * *", "Bad day-of-month"),
        ("* * * 13 *", "Bad month"),
        ("* * * * 8", "Bad day-of-week"),
        ("a b c d e", "Bad minute"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("0 0 L * *", "'L', 'W' and '#' are not supported by robfig/cron"),
        ("0 0 LW * *", "not supported by robfig/cron"),
        ("0 0 * * 5L", "not supported by robfig/cron"),
        ("0 0 * * MON#2", "not supported by robfig/cron"),
        ("@reboot", "unknown descriptor '@reboot'"),
        ("@daily 5", "takes no arguments"),
        ("@every", "needs a duration"),
        ("@every 5", "missing unit"),
        ("@every -5m", "negative"),
        ("@every 0s", "positive"),
        ("TZ=Mars/Olympus 0 * * * *", "unknown time zone"),
        ("TZ=UTC", "nothing follows"),
    ],
)
def test_invalid(expr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cron(expr)


def test_describe() -> None:
    assert str(parse_cron("42 3 * * *")) == "42 3 * * * (At 03:42 every day, local time)"
    assert parse_cron("@every 1h30m").describe() == "@every 1h30m (every 1h30m0s)"
    assert parse_cron("@daily").describe().startswith("@daily = 0 0 * * * (")
    assert repr(parse_cron("@daily")) == "CronSchedule('@daily')"
