r"""Schedules in a time zone on daylight-saving change days fire as robfig/cron v3 fires them.

robfig/cron v3 (what the Go controller and Kubernetes CronJobs use) decides the next run
with its own walk over the wall clock (bjc.config.cron), and bjc copies it: a fixed time
in a skipped hour does not run that day, one in a repeated hour runs in both passes.
The proof is a table robfig itself produced: `robfig_dst_cases.json` beside this file
holds, for every daylight-saving change of 2026 in Europe/Berlin, America/New_York,
Australia/Lord_Howe (a 30-minute change) and America/Santiago (changes at midnight),
and for 13 expressions, every run robfig fires from 26 h before the change to 26 h
after it (chaining `Next`), and `Next` asked from a point every 9 min 47 s within 3 h
of the change. The tests ask bjc the same, with the zone given as a `CRON_TZ=` prefix,
a `TZ=` prefix and the `timeZone` key. The table also holds, away from any change, runs
of expressions that combine day of month and day of week (robfig: either may match
unless one is `*`; a step such as `*/10` counts as a restriction), names and steps.

How the table was generated (not part of the repository, whose Go is only for test
binaries): in an empty directory, `go mod init gen && go get
github.com/robfig/cron/v3@v3.0.1`, this program as main.go, then
`go run . > robfig_dst_cases.json` (Go 1.26.8; the zones from the system's tzdata, which
`test_the_time_zone_data_agrees_with_the_table` compares with Python's):

    // Writes robfig_dst_cases.json: what robfig/cron v3.0.1 answers around the
    // daylight-saving changes of 2026 (go run . > robfig_dst_cases.json).
    package main

    import (
        "encoding/json"
        "fmt"
        "runtime"
        "time"

        "github.com/robfig/cron/v3"
    )

    var zones = []string{
        "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
    }

    var expressions = []string{
        "30 2 * * *", "0 2 * * *", "59 2 * * *", "30 1 * * *", "0 3 * * *",
        "30 0 * * *", "0 23 * * *", "0 * * * *", "*/15 1-3 * * *", "*/15 1 * * *",
        "*/20 0 * * *", "@hourly", "@daily",
    }

    // day-of-month / day-of-week combinations, names and steps, away from any change
    var fieldExpressions = []string{
        "0 9 1,15 * MON", "0 0 */10 * MON", "0 0 1,*/9 * 2", "0 0 */1 * 2", "30 4 1-7 * 1",
        "5/20 * * * *", "0 12 * * MON-FRI", "0 0 ? * SUN", "0 0 29 2 *", "*/7 3 * * 1,3,5",
    }

    type fieldCase struct {
        Expression string  `json:"expression"` // in Europe/Berlin
        From       int64   `json:"from"`
        Fires      []int64 `json:"fires"` // Next chained from `from`, six times
    }

    type change struct {
        At     int64 `json:"at"`     // when the offset changes (Unix seconds)
        Before int   `json:"before"` // UTC offset before, in seconds
        After  int   `json:"after"`  // and after
    }

    type chain struct {
        Expression string     `json:"expression"`
        From       int64      `json:"from"`   // Next asked from here first,
        Until      int64      `json:"until"`  // then from each answer up to here
        Fires      []string   `json:"fires"`  // the answers, RFC 3339 in the zone
        Probes     [][2]int64 `json:"probes"` // [t, Next(t)] around the change
    }

    type zoneCases struct {
        Zone   string  `json:"zone"`
        Change change  `json:"change"`
        Chains []chain `json:"chains"`
    }

    func changes(loc *time.Location, year int) []change {
        var out []change
        t := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
        _, prev := t.In(loc).Zone()
        for t.Year() == year {
            next := t.Add(15 * time.Minute)
            if _, off := next.In(loc).Zone(); off != prev {
                out = append(out, change{At: next.Unix(), Before: prev, After: off})
                prev = off
            }
            t = next
        }
        return out
    }

    func chainOf(zone string, loc *time.Location, at time.Time, expr string) chain {
        schedule, err := cron.ParseStandard("CRON_TZ=" + zone + " " + expr)
        if err != nil {
            panic(err)
        }
        from, until := at.Add(-26*time.Hour), at.Add(26*time.Hour)
        c := chain{Expression: expr, From: from.Unix(), Until: until.Unix()}
        for t := schedule.Next(from); !t.After(until); t = schedule.Next(t) {
            c.Fires = append(c.Fires, t.In(loc).Format(time.RFC3339))
        }
        // every 9 min 47 s from 3 h before the change to 3 h after it
        for t := at.Add(-3 * time.Hour); t.Before(at.Add(3 * time.Hour)); {
            c.Probes = append(c.Probes, [2]int64{t.Unix(), schedule.Next(t).Unix()})
            t = t.Add(587 * time.Second)
        }
        return c
    }

    func fieldCaseOf(expr string) fieldCase {
        schedule, err := cron.ParseStandard("CRON_TZ=Europe/Berlin " + expr)
        if err != nil {
            panic(err)
        }
        t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
        c := fieldCase{Expression: expr, From: t.Unix()}
        for range 6 {
            t = schedule.Next(t)
            c.Fires = append(c.Fires, t.Unix())
        }
        return c
    }

    func js(v any) string {
        b, err := json.Marshal(v)
        if err != nil {
            panic(err)
        }
        return string(b)
    }

    func comma(i, n int) string {
        if i < n-1 {
            return ","
        }
        return ""
    }

    func main() {
        var cases []zoneCases
        for _, zone := range zones {
            loc, err := time.LoadLocation(zone)
            if err != nil {
                panic(err)
            }
            for _, ch := range changes(loc, 2026) {
                zc := zoneCases{Zone: zone, Change: ch}
                for _, expr := range expressions {
                    at := time.Unix(ch.At, 0).UTC()
                    zc.Chains = append(zc.Chains, chainOf(zone, loc, at, expr))
                }
                cases = append(cases, zc)
            }
        }
        // one chain per line
        generator := "robfig/cron v3.0.1, go " + runtime.Version()[2:]
        fmt.Printf("{\n \"generator\": %s,\n \"fields\": [\n", js(generator))
        for i, expr := range fieldExpressions {
            fmt.Printf("  %s%s\n", js(fieldCaseOf(expr)), comma(i, len(fieldExpressions)))
        }
        fmt.Print(" ],\n \"cases\": [\n")
        for i, zc := range cases {
            fmt.Printf("  {\n   \"zone\": %s,\n", js(zc.Zone))
            fmt.Printf("   \"change\": %s,\n   \"chains\": [\n", js(zc.Change))
            for j, c := range zc.Chains {
                fmt.Printf("    %s%s\n", js(c), comma(j, len(zc.Chains)))
            }
            fmt.Printf("   ]\n  }%s\n", comma(i, len(cases)))
        }
        fmt.Print(" ]\n}\n")
    }

The second half checks the same rules on 2025's changes in Europe/Zurich by hand,
readably, and what belongs to bjc's configuration (`timeZone` and its problems).

2025-03-30: 02:00 CET -> 03:00 CEST, the hour 02:00-03:00 is skipped.
2025-10-26: 03:00 CEST -> 02:00 CET, the hour 02:00-03:00 is repeated.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bjc.config.cron import CronSchedule, parse_cron
from bjc.config.settings import cron_schedule

from .test_config import load, single_problem

ROBFIG = json.loads((Path(__file__).parent / "robfig_dst_cases.json").read_text())
TABLE: list[dict[str, Any]] = ROBFIG["cases"]
ZURICH = ZoneInfo("Europe/Zurich")
SPRING = datetime(2025, 3, 30, tzinfo=ZURICH)
AUTUMN = datetime(2025, 10, 26, tzinfo=ZURICH)


def _case_id(case: dict[str, Any]) -> str:
    day = datetime.fromtimestamp(case["change"]["at"], ZoneInfo(case["zone"])).date()
    return f"{case['zone']}-{day}"


def _forms(zone: str, expression: str) -> dict[str, CronSchedule]:
    """The schedule as each way of naming its zone gives it."""
    config, _ = load(timeZone=zone, cronExpression=expression)
    return {
        "CRON_TZ=": parse_cron(f"CRON_TZ={zone} {expression}"),
        "TZ=": parse_cron(f"TZ={zone} {expression}"),
        "timeZone": cron_schedule(config),
    }


def _at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_the_time_zone_data_agrees_with_the_table(case: dict[str, Any]) -> None:
    """Else a difference below would be the tzdata's, not bjc's."""
    zone, change = ZoneInfo(case["zone"]), case["change"]
    offset = {
        when: _at(change["at"] + delta).astimezone(zone).utcoffset()
        for when, delta in (("before", -1), ("after", 0))
    }
    assert offset == {k: timedelta(seconds=change[k]) for k in ("before", "after")}


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_runs_on_the_change_day_are_robfigs(case: dict[str, Any]) -> None:
    for chain in case["chains"]:
        expected = [datetime.fromisoformat(f) for f in chain["fires"]]
        for form, schedule in _forms(case["zone"], chain["expression"]).items():
            fires, at = [], schedule.next_after(_at(chain["from"]))
            while at.timestamp() <= chain["until"]:
                fires.append(at)
                at = schedule.next_after(at)
            what = f"{form} {chain['expression']}"
            assert [f.isoformat() for f in fires] == [f.isoformat() for f in expected], what
            assert [f.utcoffset() for f in fires] == [f.utcoffset() for f in expected], what


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_the_next_run_from_any_moment_is_robfigs(case: dict[str, Any]) -> None:
    for chain in case["chains"]:
        schedule = _forms(case["zone"], chain["expression"])["CRON_TZ="]
        got = [[t, int(schedule.next_after(_at(t)).timestamp())] for t, _ in chain["probes"]]
        assert got == chain["probes"], chain["expression"]


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_the_last_run_between_two_times_is_the_last_robfig_fired(case: dict[str, Any]) -> None:
    """What a catch-up (startingDeadline) takes as the missed run."""
    for chain in case["chains"]:
        schedule = _forms(case["zone"], chain["expression"])["CRON_TZ="]
        fires = [datetime.fromisoformat(f).timestamp() for f in chain["fires"]]
        for t, _ in chain["probes"]:
            before = [f for f in fires if f <= t]
            last = schedule.last_run_between(_at(chain["from"]), _at(t))
            got = last.timestamp() if last is not None else None
            assert got == (before[-1] if before else None), (chain["expression"], t)


@pytest.mark.parametrize("case", ROBFIG["fields"], ids=lambda case: case["expression"])
def test_day_of_month_and_day_of_week_combine_as_in_robfig(case: dict[str, Any]) -> None:
    schedule = parse_cron(f"CRON_TZ=Europe/Berlin {case['expression']}")
    fires, at = [], _at(case["from"])
    for _ in case["fires"]:
        at = schedule.next_after(at)
        fires.append(int(at.timestamp()))
    assert fires == case["fires"]


# --------------------------------------------------------------------------- by hand


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
def test_a_run_in_the_skipped_hour_does_not_run_that_day(expr: str) -> None:
    assert runs(expr, *day(SPRING)) == []
    assert len(runs(expr, SPRING - timedelta(days=1), SPRING + timedelta(days=2))) == 2


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "59 2 * * *"])
def test_a_run_in_the_repeated_hour_runs_in_both_passes(expr: str) -> None:
    first, second = runs(expr, *day(AUTUMN))
    assert (first.hour, first.utcoffset()) == (2, timedelta(hours=2))
    assert (second.hour, second.utcoffset()) == (2, timedelta(hours=1))
    assert second.timestamp() - first.timestamp() == 3600


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


def test_next_run_is_strictly_later_also_in_the_second_pass_of_the_repeated_hour() -> None:
    """A scheduler (re)started at 02:40 CET, after 02:45 CEST ran: 02:45 CET is next."""
    second_pass = datetime(2025, 10, 26, 2, 40, tzinfo=ZURICH, fold=1)
    assert second_pass.utcoffset() == timedelta(hours=1)
    schedule = parse_cron("45 2 * * *", tz=ZURICH)
    following = schedule.next_after(second_pass)
    assert following == datetime(2025, 10, 26, 2, 45, tzinfo=ZURICH, fold=1)
    assert following.utcoffset() == timedelta(hours=1)
    sweep = datetime(2025, 10, 25, 22, 0, tzinfo=UTC)
    last = schedule.last_run_between(sweep, second_pass)
    assert last is not None
    assert (last.hour, last.minute, last.utcoffset()) == (2, 45, timedelta(hours=2))
    for minute in range(0, 6 * 60, 7):  # any moment around the change
        now = sweep + timedelta(minutes=minute)
        nxt = schedule.next_after(now)
        assert nxt > now
        last = schedule.last_run_between(sweep - timedelta(days=1), now)
        assert last is not None and last <= now
        assert schedule.next_after(last).timestamp() == nxt.timestamp()


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


def test_a_minute_step_inside_the_changed_hour() -> None:
    """Documented in docs/operating.md: no run in a skipped hour, both passes of a repeated one."""
    assert runs("*/15 2 * * *", *day(SPRING)) == []
    assert len(runs("*/15 2 * * *", *day(AUTUMN))) == 8
