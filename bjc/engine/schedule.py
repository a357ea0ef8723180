"""When executions start: the cron schedule and the optional start-up run.

Runs only while this controller leads; the runtime starts it on gaining the Lease
and cancels it the moment the Lease is lost, so a former leader never triggers.
Each run time comes from `CronSchedule.next_after` (robfig/cron's rule for cron
tables, in the schedule's time zone; `@every <duration>` as a plain interval, as in
robfig/cron) and is waited for with one sleep, no polling. Each run time is
computed from the wall clock anew, after the previous run, so a run is never
started twice.

aiocron is not used for this: it derives every run from one reading of the wall
clock taken when it starts (drifting with the monotonic clock over a long
uptime), and started inside the second pass of a repeated daylight-saving hour it
fires that hour's first-pass run at once, a second time (see `bjc.config.cron`).

With `startingDeadline`, a run missed while no controller led is caught up
once: `missed_run` finds the latest run the schedule fires after the last run the
controller knows of, and the schedule starts with it if it is recent enough, as
a CronJob's `startingDeadlineSeconds` does.

Deliberately not here: what a trigger does while an execution runs
(concurrencyPolicy belongs to the controller).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable

from bjc.config.cron import CronSchedule

log = logging.getLogger(__name__)

Trigger = Callable[[str], Awaitable[object]]


def missed_run(
    cron: CronSchedule, last_run: dt.datetime | None, now: dt.datetime, deadline: float
) -> dt.datetime | None:
    """The latest scheduled time after `last_run`, up to `now`, if at most `deadline` s ago.

    None when nothing was missed, when it is too late, or when no last run is known
    (a controller that never ran has missed nothing).
    """
    if last_run is None:
        return None
    if cron.interval is not None:  # @every: runs every interval after the last one
        periods = math.floor((now - last_run).total_seconds() / cron.interval)
        if periods < 1:
            return None
        at: dt.datetime | None = last_run + dt.timedelta(seconds=periods * cron.interval)
    else:
        # the runs robfig fires after the last one; a run older than the deadline does not
        # count, so the chain may start a little before it (two days: past any
        # daylight-saving change day, where a chain's start can matter)
        since = max(last_run, now - dt.timedelta(seconds=deadline, days=2))
        at = cron.last_run_between(since, now)
    if at is None:
        return None
    return at if (now - at).total_seconds() <= deadline else None


class Schedule:
    def __init__(self, cron: CronSchedule, trigger: Trigger) -> None:
        self.cron = cron
        self.trigger = trigger

    async def run(
        self, startup_delay: float | None = None, catch_up: dt.datetime | None = None
    ) -> None:
        """Fire until cancelled; first once for a missed run (`catch_up`), or once after
        `startup_delay`."""
        if catch_up is not None:
            log.info("catching up the run of %s, missed while no controller led", catch_up)
            await self.trigger("catch-up")
        elif startup_delay is not None:
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
