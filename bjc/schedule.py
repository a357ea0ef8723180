"""When executions start: the cron schedule and the optional start-up run.

Runs only while this controller leads; the runtime starts it on gaining the Lease
and cancels it the moment the Lease is lost, so a former leader never triggers.
Each run time comes from `CronSchedule.next_after` (cronsim for cron tables, in
the schedule's time zone; `@every <duration>` as a plain interval, as in
robfig/cron) and is waited for with one sleep, no polling. Each run time is
computed from the wall clock anew, after the previous run, so a run is never
started twice.

aiocron is not used for this: it derives every run from one reading of the wall
clock taken when it starts (drifting with the monotonic clock over a long
uptime), and started inside the second pass of a repeated daylight-saving hour it
fires that hour's first-pass run at once, a second time (see `bjc.cron`).

Deliberately not here: what a trigger does while an execution runs
(concurrencyPolicy belongs to the controller).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

from bjc.cron import CronSchedule

log = logging.getLogger(__name__)

Trigger = Callable[[str], Awaitable[object]]


class Schedule:
    def __init__(self, cron: CronSchedule, trigger: Trigger) -> None:
        self.cron = cron
        self.trigger = trigger

    async def run(self, startup_delay: float | None = None) -> None:
        """Fire until cancelled; with startup_delay, fire once after it first."""
        if startup_delay is not None:
            log.info("start-up execution in %gs", startup_delay)
            await asyncio.sleep(startup_delay)
            await self.trigger("start-up")
        log.info("schedule: %s", self.cron.describe())
        last: dt.datetime | None = None
        while True:
            now = dt.datetime.now(dt.UTC)
            # after the previous run, even if the clock lags it; runs missed while a
            # trigger took long are skipped, as robfig/cron skips them
            at = self.cron.next_after(now if last is None else max(now, last))
            await asyncio.sleep(max(0.0, at.timestamp() - time.time()))
            last = at
            await self.trigger("schedule")
