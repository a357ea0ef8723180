"""Cron specs exactly as the Go controller (robfig/cron) accepts them, evaluated in local time.

The Go controller takes `cronExpression` through robfig/cron's standard parser:
5 fields, the `@hourly`/`@daily`/... descriptors, `@every <duration>` and an
optional `CRON_TZ=<zone>`/`TZ=<zone>` prefix. `cronsim` knows plain 5/6-field
expressions only, so this module maps the descriptors to 5-field forms, rejects
6-field (seconds) expressions like robfig's standard parser, turns `?` into `*`
as robfig does, and runs `@every` as a fixed interval itself.

Daylight saving changes follow cron (cronsim, like Debian's cron): a run at a
fixed time inside a skipped hour runs once, at the change (02:30 on the day
clocks jump 02:00 -> 03:00 runs at 03:00); one inside a repeated hour runs once,
in the first pass. Schedules with wildcards or steps in the minute or hour run by
the clock as it is (an hourly job runs at every real hour). `next_after` is
strictly after its argument in absolute time, also when that lies in the second
pass of a repeated hour (cronsim would answer the first pass, in the past, and a
scheduler restarted then would run the job twice).

This module only answers "when is the next run after T?". It deliberately does
not sleep, start tasks or know about executions: the scheduler owns the timing
loop and asks `next_after` each time.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bjc.config.values import parse_duration

__all__ = ["DESCRIPTORS", "CronSchedule", "local_timezone", "parse_cron"]

#: robfig/cron descriptors and the 5-field expressions they stand for.
DESCRIPTORS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = "minute hour day-of-month month day-of-week"


def local_timezone() -> tzinfo:
    """The process's local zone the way Go's `time.Local` finds it: `$TZ`, then /etc/localtime.

    A real zone (not a fixed offset) matters: a daily 03:00 run must stay at 03:00
    across a daylight-saving change.
    """
    tz_name = os.environ.get("TZ")
    if tz_name:
        try:
            return ZoneInfo(tz_name.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        pass
    local = datetime.now().astimezone().tzinfo
    assert local is not None
    return local


def _format_interval(seconds: int) -> str:
    """Go's Duration.String() for whole seconds: 90 -> 1m30s, 3600 -> 1h0m0s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class CronSchedule:
    """A parsed `cronExpression`: either a cron table (5 fields) or an `@every` interval."""

    def __init__(
        self,
        expression: str,
        *,
        fields: str | None,
        interval: int | None,
        tz: tzinfo | None,
        tz_name: str | None,
    ) -> None:
        self.expression = expression
        #: the 5-field form evaluated (descriptors mapped), None for `@every`
        self.fields = fields
        #: whole seconds between runs for `@every`, None for cron tables
        self.interval = interval
        self._tz = tz
        self._tz_name = tz_name

    @property
    def timezone(self) -> tzinfo:
        """The zone the schedule is evaluated in (the `TZ=` prefix, else local time)."""
        return self._tz if self._tz is not None else local_timezone()

    def next_after(self, dt: datetime) -> datetime:
        """The first run strictly after `dt` (a naive `dt` is taken as local time).

        The result is timezone-aware, in the schedule's zone.
        """
        zone = self.timezone
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=local_timezone())
        if self.interval is not None:
            # robfig ConstantDelaySchedule: drop sub-second part, add the interval.
            return dt.replace(microsecond=0).astimezone(zone) + timedelta(seconds=self.interval)
        assert self.fields is not None
        runs = CronSim(self.fields, dt.astimezone(zone))
        at = next(runs)
        while at.timestamp() <= dt.timestamp():  # see the module docstring
            at = next(runs)
        return at

    def last_at_or_before(self, dt: datetime) -> datetime:
        """The latest run at or before `dt` of a cron table (not `@every`: no fixed times)."""
        assert self.fields is not None, "an @every schedule has no fixed run times"
        zone = self.timezone
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=local_timezone())
        # from past any DST shift: cronsim ignores `fold`, so a `dt` in the second pass of
        # a repeated hour would be read as the first pass, an hour earlier
        runs = CronSim(self.fields, dt.astimezone(zone) + timedelta(hours=3), reverse=True)
        at = next(runs)
        while at.timestamp() > dt.timestamp():
            at = next(runs)
        return at

    def describe(self) -> str:
        """One line for logs: the expression, what it means, and the zone."""
        if self.interval is not None:
            return f"{self.expression} (every {_format_interval(self.interval)})"
        assert self.fields is not None
        try:
            explained = CronSim(self.fields, datetime.now()).explain()
        except Exception:  # explain() is best effort; the schedule itself is valid
            explained = self.fields
        zone = self._tz_name or "local time"
        shown = self.expression
        if self.expression.strip() != self.fields:
            shown = f"{self.expression} = {self.fields}"
        return f"{shown} ({explained}, {zone})"

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"


def parse_cron(expression: str, tz: tzinfo | None = None) -> CronSchedule:
    """Parse a `cronExpression`; raise ValueError with the reason when robfig/cron would refuse it.

    `tz` fixes the evaluation zone (the `timeZone` key, tests); a `CRON_TZ=`/`TZ=`
    prefix in the expression wins over it.
    """
    if not isinstance(expression, str):
        raise ValueError(f"expected a string, got {type(expression).__name__}")
    spec = expression.strip()
    if not spec:
        raise ValueError("empty cron expression")

    tz_name: str | None = str(tz) if tz is not None else None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, rest = spec.partition(" ")
        tz_name = prefix.split("=", 1)[1]
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz_name!r} in {prefix!r}") from None
        spec = rest.strip()
        if not spec:
            raise ValueError(f"nothing follows the {prefix!r} prefix")

    if spec.startswith("@"):
        word, _, arg = spec.partition(" ")
        word_l = word.lower()
        if word_l == "@every":
            arg = arg.strip()
            if not arg:
                raise ValueError("'@every' needs a duration, e.g. '@every 1h30m'")
            try:
                seconds = parse_duration(arg)
            except ValueError as exc:
                raise ValueError(f"'@every {arg}': {exc}") from None
            if seconds <= 0:
                raise ValueError(f"'@every {arg}': the interval must be positive")
            # robfig truncates to whole seconds with a minimum of one second
            interval = max(1, math.floor(seconds))
            return CronSchedule(expression, fields=None, interval=interval, tz=tz, tz_name=tz_name)
        if word_l in DESCRIPTORS:
            if arg.strip():
                raise ValueError(f"{word!r} takes no arguments, got {arg.strip()!r}")
            fields = DESCRIPTORS[word_l]
            return CronSchedule(expression, fields=fields, interval=None, tz=tz, tz_name=tz_name)
        known = ", ".join([*DESCRIPTORS, "@every <duration>"])
        raise ValueError(f"unknown descriptor {word!r}; known: {known}")

    parts = spec.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields ({_FIELDS}), got {len(parts)}")
    # robfig treats '?' as '*' (day-of-month and day-of-week)
    parts = ["*" if p == "?" else p for p in parts]
    fields = " ".join(parts)
    try:
        next(CronSim(fields, datetime(2000, 1, 1)))
    except CronSimError as exc:
        raise ValueError(f"{exc} (fields: {_FIELDS})") from None
    except StopIteration:
        raise ValueError("the expression never matches a date") from None
    return CronSchedule(expression, fields=fields, interval=None, tz=tz, tz_name=tz_name)
