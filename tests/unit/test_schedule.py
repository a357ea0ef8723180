"""The schedule loop: runs at the times the cron schedule gives, each once, start-up first."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

from bjc.config.cron import CronSchedule, parse_cron
from bjc.engine.schedule import Schedule, missed_run


class EveryTenth(CronSchedule):
    """Runs at every tenth of a second of the wall clock (a cron table, faster)."""

    def __init__(self) -> None:
        super().__init__("tenths", fields="* * * * *", interval=None, tz=dt.UTC, tz_name="UTC")
        self.asked: list[dt.datetime] = []

    def next_after(self, at: dt.datetime) -> dt.datetime:
        self.asked.append(at)
        tenth = at.replace(microsecond=at.microsecond // 100_000 * 100_000)
        return tenth + dt.timedelta(seconds=0.1)


async def test_each_run_once_in_order_after_the_start_up_run() -> None:
    fired: list[tuple[str, dt.datetime]] = []
    done = asyncio.Event()
    cron = EveryTenth()

    async def trigger(reason: str) -> None:
        fired.append((reason, dt.datetime.now(dt.UTC)))
        if len(fired) == 4:
            done.set()

    task = asyncio.create_task(Schedule(cron, trigger).run(startup_delay=0.01))
    async with asyncio.timeout(10):
        await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [reason for reason, _ in fired] == ["start-up", "schedule", "schedule", "schedule"]
    # every run is asked for after the previous one: none is started twice
    asked = list(cron.asked)
    assert all(b > a for a, b in itertools.pairwise(asked))
    planned = [cron.next_after(a) for a in asked]
    assert all(b > a for a, b in itertools.pairwise(planned))


# --------------------------------------------------------------------- catch-up (startingDeadline)

NOON = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.UTC)
MINUTE = 60.0


def missed(expr: str, last_run: dt.datetime | None, now: dt.datetime, deadline: float):
    return missed_run(parse_cron(expr, tz=dt.UTC), last_run, now, deadline)


def test_a_run_missed_within_the_deadline_is_caught_up() -> None:
    last = NOON - dt.timedelta(days=1)  # yesterday's 11:55 ran; today's did not
    assert missed("55 11 * * *", last, NOON, 10 * MINUTE) == NOON - dt.timedelta(minutes=5)
    assert missed("55 11 * * *", last, NOON, 5 * MINUTE) == NOON - dt.timedelta(minutes=5)


def test_a_run_missed_longer_ago_than_the_deadline_is_skipped() -> None:
    last = NOON - dt.timedelta(days=1)
    assert missed("55 11 * * *", last, NOON, 4 * MINUTE) is None


def test_nothing_was_missed_when_the_last_run_is_after_the_scheduled_time() -> None:
    assert missed("55 11 * * *", NOON - dt.timedelta(minutes=4), NOON, 10 * MINUTE) is None
    assert missed("55 11 * * *", None, NOON, 10 * MINUTE) is None  # never ran: nothing missed


def test_only_the_latest_of_several_missed_runs_counts() -> None:
    last = NOON - dt.timedelta(hours=5)
    assert missed("*/10 * * * *", last, NOON + dt.timedelta(minutes=3), 5 * MINUTE) == NOON


def test_every_intervals_count_from_the_last_run() -> None:
    last = NOON - dt.timedelta(minutes=25)
    assert missed("@every 10m", last, NOON, 10 * MINUTE) == NOON - dt.timedelta(minutes=5)
    assert missed("@every 10m", last, NOON, 4 * MINUTE) is None
    assert missed("@every 1h", last, NOON, 10 * MINUTE) is None  # not due yet


def test_a_missed_run_is_one_robfig_would_have_fired_since_the_last() -> None:
    """On Australia/Lord_Howe's April 2026 change day robfig, asked from the day before,
    passes over 03:00 (tests/unit/test_cron_dst.py), though asked from 02:00 it finds it:
    a controller that ran at 03:00 the day before missed nothing at 03:00 that day."""
    zone = ZoneInfo("Australia/Lord_Howe")
    cron = parse_cron("0 3 * * *", tz=zone)
    last = dt.datetime(2026, 4, 4, 3, 0, tzinfo=zone)
    now = dt.datetime(2026, 4, 5, 3, 20, tzinfo=zone)
    assert cron.next_after(dt.datetime(2026, 4, 5, 2, 0, tzinfo=zone)) < now  # found from 02:00
    assert missed_run(cron, last, now, 3600) is None
    assert missed_run(cron, last - dt.timedelta(days=1), now, 2 * 86400) == last
