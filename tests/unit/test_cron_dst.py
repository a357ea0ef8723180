"""Schedules in a time zone across daylight saving changes (Europe/Zurich).

2025-03-30: 02:00 CET -> 03:00 CEST, the hour 02:00-03:00 is skipped.
2025-10-26: 03:00 CEST -> 02:00 CET, the hour 02:00-03:00 is repeated.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bjc.config.cron import parse_cron
from bjc.config.settings import cron_schedule

from .test_config import load, single_problem

ZURICH = ZoneInfo("Europe/Zurich")
SPRING = datetime(2025, 3, 30, tzinfo=ZURICH)
AUTUMN = datetime(2025, 10, 26, tzinfo=ZURICH)


def runs(expr: str, start: datetime, end: datetime) -> list[datetime]:
    """Every run in [start, end), by repeated next_after, as a scheduler asks."""
    schedule = parse_cron(expr, tz=ZURICH)
    out, at = [], schedule.next_after(start - timedelta(microseconds=1))
    while at < end:
        out.append(at)
        at = schedule.next_after(at)
    return out


def day(start: datetime) -> tuple[datetime, datetime]:
    return start, start + timedelta(days=1)


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "59 2 * * *"])
def test_a_run_in_the_skipped_hour_runs_once_at_the_change(expr: str) -> None:
    (only,) = runs(expr, *day(SPRING))
    assert only == datetime(2025, 3, 30, 3, 0, tzinfo=ZURICH)
    assert only.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "59 2 * * *"])
def test_a_run_in_the_repeated_hour_runs_once_in_the_first_pass(expr: str) -> None:
    (only,) = runs(expr, *day(AUTUMN))
    assert (only.hour, only.utcoffset()) == (2, timedelta(hours=2))


def test_runs_outside_the_changed_hour_keep_their_wall_clock_time() -> None:
    for start in (SPRING, AUTUMN):
        week = runs("42 3 * * *", start - timedelta(days=3), start + timedelta(days=4))
        assert [(r.hour, r.minute) for r in week] == [(3, 42)] * 7


def test_hourly_runs_follow_real_hours() -> None:
    spring = runs("0 * * * *", *day(SPRING))
    autumn = runs("0 * * * *", *day(AUTUMN))
    assert len(spring) == 23 and len(autumn) == 25  # the day is 23 h / 25 h long
    for every in (spring, autumn):
        gaps = {b.timestamp() - a.timestamp() for a, b in itertools.pairwise(every)}
        assert gaps == {3600.0}


def test_next_run_is_strictly_later_even_from_the_second_pass_of_the_repeated_hour() -> None:
    """A scheduler (re)started at 02:40 CET, after 02:45 CEST ran, must not run it again."""
    second_pass = datetime(2025, 10, 26, 2, 40, tzinfo=ZURICH, fold=1)
    assert second_pass.utcoffset() == timedelta(hours=1)
    schedule = parse_cron("45 2 * * *", tz=ZURICH)
    assert schedule.next_after(second_pass) == datetime(2025, 10, 27, 2, 45, tzinfo=ZURICH)
    assert schedule.last_at_or_before(second_pass) == datetime(2025, 10, 26, 2, 45, tzinfo=ZURICH)
    sweep = datetime(2025, 10, 25, 22, 0, tzinfo=UTC)
    for minute in range(0, 6 * 60, 7):  # any moment around the change
        now = sweep + timedelta(minutes=minute)
        nxt, last = schedule.next_after(now), schedule.last_at_or_before(now)
        assert last <= now < nxt
        assert schedule.next_after(last) == nxt


def test_time_zone_key_and_prefix() -> None:
    config, _ = load(timeZone="Europe/Zurich", cronExpression="0 6 * * *")
    schedule = cron_schedule(config)
    at = schedule.next_after(datetime(2025, 7, 1, 12, 0, tzinfo=UTC))
    assert at == datetime(2025, 7, 2, 6, 0, tzinfo=ZURICH)
    assert "Europe/Zurich" in schedule.describe()
    local, _ = load(cronExpression="CRON_TZ=America/New_York 0 6 * * *")
    assert "America/New_York" in cron_schedule(local).describe()


def test_time_zone_problems_name_the_key() -> None:
    assert single_problem(timeZone="Europe/Nowhere").startswith(
        'timeZone: invalid value "Europe/Nowhere": unknown time zone'
    )
    both = single_problem(timeZone="Europe/Zurich", cronExpression="TZ=UTC 0 6 * * *")
    assert both.startswith("timeZone and cronExpression: both name a time zone")


def test_a_minute_step_inside_the_changed_hour_is_cron_like() -> None:
    """Documented in docs/operating.md: no run in a skipped hour, both passes of a repeated one."""
    assert runs("*/15 2 * * *", *day(SPRING)) == []
    assert len(runs("*/15 2 * * *", *day(AUTUMN))) == 8
