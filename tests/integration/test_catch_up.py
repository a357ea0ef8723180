"""Catch-up (startingDeadline): a run missed while no controller led, against bjc.sim."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest

from bjc.engine.configwatch import LAST_SCHEDULE_ANNOTATION
from bjc.reports.execution import ExecutionState
from bjc.reports.store import STATE_FILE

from .harness import cluster
from .test_trigger import BOUND, config_map_when


def daily_at(when: dt.datetime) -> dict[str, str]:
    """A config whose only run today was at `when` (UTC, minute precision)."""
    return {"cronExpression": f"{when.minute} {when.hour} * * *", "timeZone": "UTC"}


def scheduled_two_minutes_ago() -> tuple[dt.datetime, dict[str, str]]:
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
    return at, daily_at(at)


async def test_a_run_missed_within_the_deadline_runs_once_when_a_leader_starts(tmp_path):
    at, schedule = scheduled_two_minutes_ago()
    yesterday = (at - dt.timedelta(days=1)).isoformat()
    async with cluster(tmp_path) as c:
        c.add_nodes(2)
        await c.start_agent()
        await c.store_config_map(startingDeadline="10m", **schedule)
        await c.annotate_config_map({LAST_SCHEDULE_ANNOTATION: yesterday})
        runtime = await c.start_controller(startingDeadline="10m", **schedule)
        assert runtime.catch_up == at
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert len(runtime.controller.executions) == 1
        cm = await config_map_when(
            c.kube, lambda cm: cm.metadata.annotations[LAST_SCHEDULE_ANNOTATION] != yesterday
        )
        recorded = dt.datetime.fromisoformat(cm.metadata.annotations[LAST_SCHEDULE_ANNOTATION])
        assert recorded > at

        # the next leader knows the run happened: no second catch-up
        await c.stop_controllers()
        runtime = await c.start_controller(startingDeadline="10m", **schedule)
        assert runtime.catch_up is None


@pytest.mark.parametrize(
    "deadline",
    [{"startingDeadline": "1m"}, {}],  # too late; no startingDeadline (the Go behaviour)
)
async def test_a_missed_run_is_skipped_too_late_or_without_starting_deadline(tmp_path, deadline):
    at, schedule = scheduled_two_minutes_ago()
    async with cluster(tmp_path) as c:
        c.add_nodes(1)
        await c.start_agent()
        await c.store_config_map(**deadline, **schedule)
        await c.annotate_config_map(
            {LAST_SCHEDULE_ANNOTATION: (at - dt.timedelta(days=1)).isoformat()}
        )
        runtime = await c.start_controller(**deadline, **schedule)
        assert runtime.catch_up is None


async def test_the_history_tells_when_the_last_run_was_if_nothing_was_recorded(tmp_path):
    at, schedule = scheduled_two_minutes_ago()
    reports = tmp_path / "reports"
    earlier = at - dt.timedelta(hours=1)
    eid = earlier.astimezone().strftime("%Y%m%d%H%M")
    (reports / eid).mkdir(parents=True)
    done = ExecutionState(
        id=eid, started=earlier.timestamp(), nodes={}, finished=earlier.timestamp()
    )
    (reports / eid / STATE_FILE).write_bytes(msgspec.json.encode(done))
    async with cluster(tmp_path) as c:
        runtime = await c.start_operated(startingDeadline="10m", **schedule)
        assert runtime.catch_up == at
        async with asyncio.timeout(BOUND):
            await runtime.controller.wait_completed(1)
        assert sorted(runtime.controller.executions)[0] == eid
        assert len(runtime.controller.executions) == 2


async def test_a_controller_that_never_ran_has_missed_nothing(tmp_path):
    _, schedule = scheduled_two_minutes_ago()
    async with cluster(tmp_path) as c:
        runtime = await c.start_operated(startingDeadline="10m", **schedule)
        assert runtime.catch_up is None
