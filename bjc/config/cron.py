"""Cron specs exactly as the Go controller (robfig/cron v3) accepts and fires them.

The Go controller takes `cronExpression` through robfig/cron's standard parser:
5 fields, the `@hourly`/`@daily`/... descriptors, `@every <duration>` and an
optional `CRON_TZ=<zone>`/`TZ=<zone>` prefix. `cronsim` parses and explains plain
5/6-field expressions, so this module maps the descriptors to 5-field forms, rejects
6-field (seconds) expressions and cronsim's extensions (`L`, `W`, `#`) like robfig's
standard parser, turns `?` into `*` as robfig does, and runs `@every` as a fixed
interval itself.

When a cron table fires is robfig's `SpecSchedule.Next`, ported step by step
(`_robfig_next`), because on daylight-saving change days no simpler rule gives the
same answers: it walks month, day, hour, minute and second forward on the wall clock
of the schedule's zone, adding whole hours and minutes in real time and building
times with Go's `time.Date` (`_go_date`), whose choice for a skipped or repeated
wall-clock time this module copies too. What results (docs/operating.md, time
zones): a fixed time inside a skipped hour does not run that day; one inside a
repeated hour runs in both passes; the hours of an hourly job are real hours. The
answers are tested against a table robfig/cron itself produced
(tests/unit/test_cron_dst.py). `next_after` is strictly after its argument in
absolute time, as `Next` is.

This module only answers "when is the next run after T?". It deliberately does
not sleep, start tasks or know about executions: the scheduler owns the timing
loop and asks `next_after` each time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
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


@dataclass(frozen=True)
class _Spec:
    """A cron table as robfig's `SpecSchedule` holds it: the values each field matches."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    #: either day field is `*` (or `?`, `*/1`): both must then match, else either does
    day_star: bool

    @classmethod
    def parse(cls, fields: str) -> _Spec:
        """The spec of a 5-field expression cronsim accepts; ValueError for what robfig refuses."""
        sim = CronSim(fields, datetime(2000, 1, 1))
        if not all(isinstance(d, int) and d > 0 for d in sim.days) or not all(
            isinstance(d, int) for d in sim.weekdays
        ):
            raise ValueError(
                "'L', 'W' and '#' are not supported by robfig/cron (the Go controller)"
            )
        parts = fields.split()

        def star(field: str) -> bool:  # robfig's starBit: a term `*` or `?`, unless stepped
            terms = (term.split("/") for term in field.split(","))
            return any(range_[0] in ("*", "?") and range_[1:] in ([], ["1"]) for range_ in terms)

        return cls(
            minutes=frozenset(sim.minutes),
            hours=frozenset(sim.hours),
            days=frozenset(sim.days),
            months=frozenset(sim.months),
            weekdays=frozenset(d % 7 for d in sim.weekdays),  # type: ignore[operator]
            day_star=star(parts[2]) or star(parts[4]),
        )

    def day_matches(self, wall: datetime) -> bool:
        """robfig's `dayMatches`."""
        dom = wall.day in self.days
        dow = (wall.weekday() + 1) % 7 in self.weekdays
        return dom and dow if self.day_star else dom or dow


_EPOCH_DAY = date(1970, 1, 1).toordinal()
_LIMIT_YEARS = 5  # robfig gives up (the zero time) past this


def _wall(unix: int, zone: tzinfo) -> datetime:
    return datetime.fromtimestamp(unix, zone)


def _offset(unix: int, zone: tzinfo) -> int:
    offset = _wall(unix, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _go_date(zone: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Go's `time.Date` (seconds since the epoch), out-of-range fields normalised as Go does.

    A wall-clock time that is skipped or repeated gets the offset Go gives it: that of
    the instant `local - offset(local as UTC)` (so 02:30 on the day clocks jump from
    02:00 to 03:00 is 03:30; a repeated 02:30 is the second pass east of UTC and the
    first west of it).
    """
    year, month0 = year + (month - 1) // 12, (month - 1) % 12
    days = date(year, month0 + 1, 1).toordinal() - _EPOCH_DAY + day - 1
    local = days * 86400 + hour * 3600 + minute * 60
    offset = _offset(local, zone)
    if offset:
        offset = _offset(local - offset, zone)
    return local - offset


def _add_date(unix: int, zone: tzinfo, months: int = 0, days: int = 0) -> int:
    """Go's `Time.AddDate`: the same wall-clock time `months` and `days` on."""
    w = _wall(unix, zone)
    return _go_date(zone, w.year, w.month + months, w.day + days, w.hour, w.minute) + w.second


def _robfig_next(spec: _Spec, after: float, zone: tzinfo) -> int | None:
    """robfig/cron v3.0.1 `SpecSchedule.Next` (spec.go), step by step; None: no run in 5 years.

    The seconds field is always 0 (the standard parser has none).
    """
    t = math.floor(after) + 1  # the upcoming second
    added = False
    year_limit = _wall(t, zone).year + _LIMIT_YEARS
    while True:  # robfig's WRAP label: every field is checked again
        w = _wall(t, zone)
        if w.year > year_limit:
            return None
        wrapped = False
        while w.month not in spec.months:
            if not added:
                added = True
                t = _go_date(zone, w.year, w.month, 1)
            t = _add_date(t, zone, months=1)
            w = _wall(t, zone)
            if w.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not spec.day_matches(w):
            if not added:
                added = True
                t = _go_date(zone, w.year, w.month, w.day)
            t = _add_date(t, zone, days=1)
            w = _wall(t, zone)
            if w.hour != 0:  # midnight skipped or repeated by a change: back to it
                t += (24 - w.hour) * 3600 if w.hour > 12 else -w.hour * 3600
                w = _wall(t, zone)
            if w.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while w.hour not in spec.hours:
            if not added:
                added = True
                t = _go_date(zone, w.year, w.month, w.day, w.hour)
            t += 3600
            w = _wall(t, zone)
            if w.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while w.minute not in spec.minutes:
            if not added:
                added = True
                t -= t % 60  # Go's Truncate(time.Minute), in absolute time
            t += 60
            w = _wall(t, zone)
            if w.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        if w.second != 0:  # robfig adds seconds up to second 0, which wraps
            added = True
            t += 60 - w.second
            continue
        return t


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
        self._spec = _Spec.parse(fields) if fields is not None else None
        #: whole seconds between runs for `@every`, None for cron tables
        self.interval = interval
        self._tz = tz
        self._tz_name = tz_name

    @property
    def timezone(self) -> tzinfo:
        """The zone the schedule is evaluated in (the `TZ=` prefix, else local time)."""
        return self._tz if self._tz is not None else local_timezone()

    def next_after(self, dt: datetime) -> datetime:
        """The first run strictly after `dt` (a naive `dt` is taken as local time), as
        robfig/cron's `Next` answers it.

        The result is timezone-aware, in the schedule's zone.
        """
        zone = self.timezone
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=local_timezone())
        if self.interval is not None:
            # robfig ConstantDelaySchedule: drop sub-second part, add the interval.
            return dt.replace(microsecond=0).astimezone(zone) + timedelta(seconds=self.interval)
        assert self._spec is not None
        after = dt.timestamp()
        while (at := _robfig_next(self._spec, after, zone)) is None:
            # robfig never runs such a schedule again; only a 29 February after a
            # century year gets here (robfig's limit is five years): look further
            year = _wall(math.floor(after), zone).year + _LIMIT_YEARS
            after = datetime(year, 1, 1, tzinfo=UTC).timestamp()
        return _wall(at, zone)

    def last_run_between(self, since: datetime, until: datetime) -> datetime | None:
        """The last run after `since` up to `until` (None: none), as robfig would have fired
        from `since` on: `next_after` chained from `since`.

        The chain matters: on a daylight-saving change day robfig's next run can depend
        on where it was asked from (after a 30-minute change, a run asked for from
        before the change may be passed over that one asked for after it finds), so the
        runs between two times are only those of the chain from the first.
        """
        end = until.timestamp()  # not `until` itself: datetimes of one zone compare by
        at = self.next_after(since)  # wall clock, ignoring which pass of a repeated hour
        if at.timestamp() > end:
            return None
        while (following := self.next_after(at)).timestamp() <= end:
            at = following
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
