"""When executions start: the cron schedule and the optional start-up run.

Runs only while this controller leads; the runtime starts it on gaining the Lease
and cancels it the moment the Lease is lost, so a former leader never triggers.
Cron tables fire through aiocron (cronsim underneath); `@every <duration>`, which
cronsim cannot express, is a plain interval timer as in robfig/cron.

Deliberately not here: what a trigger does while an execution runs
(concurrencyPolicy belongs to the controller).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiocron

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
        if self.cron.interval is not None:
            while True:
                await asyncio.sleep(self.cron.interval)
                await self.trigger("schedule")
        assert self.cron.fields is not None
        timer = aiocron.Cron(self.cron.fields, tz=self.cron.timezone)
        try:
            while True:
                await timer.next()
                await self.trigger("schedule")
        finally:
            timer.stop()
