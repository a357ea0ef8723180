"""The schedule loop: runs at the times the cron schedule gives, each once, start-up first."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

from bjc.cron import CronSchedule
from bjc.schedule import Schedule


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
