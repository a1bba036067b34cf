"""Maintenance windows: whether a change may be applied now, and when that changes.

A window is a cron schedule (five fields, read in the window's IANA time zone) and a duration:
each start S of the schedule opens the half-open interval [S, S + duration), so a window is open
at its exact start and closed at its exact end, and one that started before ``now`` and has not
run its duration yet is open. The loader checks the raw ``windows`` key of a Site, Target or
Instance with ``WINDOWS_SCHEMA`` and ``window_problems`` and builds ``Window`` values with
``parse_window``; the engine asks ``window_state`` once per target and instance per run.

Combining: the windows of one level (one Site of the chain, the Target, the Instance) form a
UNION, overlapping or touching intervals chaining into one; the levels form an INTERSECTION, so
a lower Site narrows its parent. A level without windows imposes nothing; no windows anywhere
means always open (``closes_at`` None).

Cron: weekdays are numbered as in crontab (0 and 7 are Sunday; APScheduler 3 counts from
Monday, so numbers are translated to names before it sees them); names (jan, mon-fri) are
allowed in the month and weekday fields only, without steps (APScheduler 3 would ignore what
follows a name). A schedule that restricts both the day of month and the day of week is
refused: crontab would match either, APScheduler both; two windows say either without doubt.

Daylight saving time (times are compared as real instants, durations are elapsed seconds):
- a start in the hour the clocks skip opens when that hour would have been, i.e. shifted by
  the gap (02:30 on the spring-forward night in Berlin opens at 03:30 CEST, 01:30Z);
- a start in the hour the clocks repeat opens once, at its first occurrence (as crontab
  does); its duration runs on through the repeated hour (02:30 for 1h on the fall-back night
  in Berlin: 00:30Z to 01:30Z; the second 02:30 opens nothing);
- a window ``0 22 * * *`` in Europe/Berlin opens at 21:00Z in winter and 20:00Z in summer.

Horizon: searches look ``HORIZON`` (400 days) ahead and at most ``MAX_STEPS`` chained starts or
openings: ``next_open`` None means no common opening within it (e.g. a site open on weekday
nights and an instance open on Sunday noons), ``closes_at`` None when open means the window
does not close within it (no windows, or a window that overlaps its own next start).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.cron import CronTrigger

from reconciler.core import durations

__all__ = ["HORIZON", "MAX_DURATION", "MAX_STEPS", "WINDOWS_SCHEMA", "Window", "WindowState",
           "describe_window", "parse_duration", "parse_window", "window_problems", "window_state"]

HORIZON = timedelta(days=400)
MAX_STEPS = 1000
MAX_DURATION = 366 * 86400

WINDOWS_SCHEMA: dict[str, Any] = {"type": "list", "schema": {"type": "dict", "schema": {
    "schedule": {"type": "string", "required": True, "empty": False},
    "duration": {"type": ["string", "integer"], "required": True},
    "timezone": {"type": "string", "default": "UTC", "empty": False},
}}}

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_NOT_DURATION = "is not a duration such as 4h, 90m, 1h30m or 2d (or a number of seconds)"
_NOT_CRON = "is not a valid cron expression: "
_BOTH_DAYS = ("restricts both the day of month and the day of week (cron matches either): "
              "write one window for each")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_ITEM = re.compile(r"(\*|([0-9]+)(?:-([0-9]+))?)(?:/([0-9]+))?")
_NAMES = re.compile(r"[A-Za-z]{3}(?:-[A-Za-z]{3})?")  # APScheduler 3 ignores what follows
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    """One window: ``schedule`` starts it, in ``timezone``; it stays open ``duration`` seconds."""

    schedule: str
    duration: int
    timezone: str
    _trigger: Any = field(init=False, repr=False, compare=False)
    _span: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.duration, bool) or not 0 < self.duration <= MAX_DURATION:
            raise ValueError(f"window duration must be 1 to {MAX_DURATION} seconds, "
                             f"got {self.duration!r}")
        object.__setattr__(self, "_trigger", _trigger(self.schedule, self.timezone))
        object.__setattr__(self, "_span", timedelta(seconds=self.duration))


@dataclass(frozen=True)
class WindowState:
    """Whether changes may be applied at an instant; every time is timezone-aware UTC."""

    open: bool
    closes_at: datetime | None  # open: when the combined window closes (None: not within reach)
    next_open: datetime | None  # closed: when it next opens (None: not within the horizon)


def parse_duration(text: str | int) -> int:
    """Seconds of ``4h``, ``90m``, ``1h30m``, ``2d``, ``45s`` or a number of seconds, whole
    and within the bounds of a window (``reconciler.core.durations`` reads the spelling)."""
    if isinstance(text, bool) or not isinstance(text, int | str) or (
            isinstance(text, str) and not (text.isdigit() or (text and
                                                               _DURATION.fullmatch(text)))):
        raise ValueError(f"{text!r} {_NOT_DURATION}")
    try:
        seconds = int(durations.parse_duration(text, zero=True))
    except ValueError:
        raise ValueError(f"{text!r} {_NOT_DURATION}") from None
    if seconds <= 0:
        raise ValueError(f"must be positive, got {seconds}")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {_format(MAX_DURATION)}, got {_format(seconds)}")
    return seconds


def window_problems(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each semantic problem of one raw window that passed the schema."""
    problems: list[tuple[str, str]] = []
    try:
        _trigger(" ".join(str(raw.get("schedule", "")).split()), "UTC")
    except ValueError as error:
        problems.append(("schedule", str(error)))
    try:
        parse_duration(raw.get("duration", ""))
    except ValueError as error:
        problems.append(("duration", str(error)))
    try:
        _zone(str(raw.get("timezone", "UTC")))
    except ValueError as error:
        problems.append(("timezone", str(error)))
    return problems


def parse_window(raw: Mapping[str, Any]) -> Window:
    """The ``Window`` of one raw window; ValueError naming the fields if it has problems."""
    problems = window_problems(raw)
    if problems:
        raise ValueError("; ".join(f"{name} {message}" for name, message in problems))
    return Window(schedule=" ".join(str(raw["schedule"]).split()),
                  duration=parse_duration(raw["duration"]),
                  timezone=str(raw.get("timezone", "UTC")))


def describe_window(w: Window) -> str:
    """``0 22 * * 1-5 for 4h (Europe/Berlin)``."""
    return f"{w.schedule} for {_format(w.duration)} ({w.timezone})"


def window_state(levels: Sequence[Sequence[Window]], now: datetime) -> WindowState:
    """Open or closed at ``now`` under ``levels`` (site ancestors root to leaf, the target, the
    instance; each the windows defined there), with the time that changes."""
    if now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    now = now.astimezone(UTC)
    active = [level for level in levels if level]
    if not active:
        return WindowState(open=True, closes_at=None, next_open=None)
    limit = now + HORIZON
    at = now
    for _ in range(MAX_STEPS):
        if at > limit:
            break
        latest: datetime | None = None
        for level in active:
            is_open, opens = _level_at(level, at)
            if is_open:
                continue
            if opens is None:  # a schedule without any further start
                return WindowState(open=False, closes_at=None, next_open=None)
            latest = opens if latest is None else max(latest, opens)
        if latest is None and at == now:  # the intersection closes when its first level does
            closes: datetime | None = None
            for level in active:
                closes = _level_close(level, now, closes or limit) or closes
            return WindowState(open=True, closes_at=closes, next_open=None)
        if latest is None:
            return WindowState(open=False, closes_at=None, next_open=at)
        at = latest  # no level closed at `at` opens before its own next start
    return WindowState(open=False, closes_at=None, next_open=None)


def _level_at(level: Sequence[Window], at: datetime) -> tuple[bool, datetime | None]:
    """(whether a window of ``level`` covers ``at``, if not: the first start after ``at``)."""
    soonest: datetime | None = None
    for window in level:
        start = _first_start_after(window, at - window._span)
        if start is None:
            continue
        if start <= at:
            return True, None
        soonest = start if soonest is None or start < soonest else soonest
    return False, soonest


def _level_close(level: Sequence[Window], at: datetime, limit: datetime) -> datetime | None:
    """When the union of ``level``, open at ``at``, closes; None if not before ``limit``.

    Each step moves the end to the furthest end of the windows covering the current one, so
    overlapping and touching windows (and a window overlapping its own next start) chain."""
    end = at
    for _ in range(MAX_STEPS):
        if end >= limit:
            return None
        reach: datetime | None = None
        for window in level:
            start = _first_start_after(window, end - window._span)
            if start is not None and start <= end:
                stop = start + window._span
                reach = stop if reach is None or stop > reach else reach
        if reach is None:
            return end
        end = reach
    return None


@lru_cache(maxsize=8192)
def _first_start_after(window: Window, instant: datetime) -> datetime | None:
    """The first start of ``window`` strictly after ``instant``, in UTC.

    Cached: within one run the engine asks the same question for every target of a site."""
    at = instant + _TICK  # APScheduler returns the first fire at or after a whole second
    while True:
        fire: datetime | None = window._trigger.get_next_fire_time(None, at)
        if fire is None:
            return None
        if not _repeated(fire):
            return fire.astimezone(UTC)
        at = fire.astimezone(UTC) + _TICK


def _repeated(fire: datetime) -> bool:
    """Whether ``fire`` is the second of two instants with its wall time (a fall-back hour)."""
    first = fire.replace(fold=0)  # it must exist: a skipped wall time is no repetition
    return bool(fire.fold) and first.utcoffset() != fire.utcoffset() and (
        first.astimezone(UTC).astimezone(fire.tzinfo).replace(tzinfo=None)
        == first.replace(tzinfo=None))


@lru_cache(maxsize=1024)
def _trigger(schedule: str, zone: str) -> Any:
    """The APScheduler trigger of a crontab ``schedule`` read in ``zone`` (shared, cached)."""
    tzinfo = _zone(zone)
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{_NOT_CRON}Wrong number of fields; got {len(fields)}, expected 5")
    if not fields[2].startswith("*") and not fields[4].startswith("*"):
        raise ValueError(_BOTH_DAYS)
    for index, item in ((i, item) for i, value in enumerate(fields) for item in value.split(",")):
        if re.search("[A-Za-z]", item) and (index < 3 or not _NAMES.fullmatch(item)):
            raise ValueError(f"{_NOT_CRON}{item!r} is not a number, a range or a name (jan, mon)")
    try:
        fields[4] = ",".join(_weekdays(item) for item in fields[4].split(","))
        return CronTrigger.from_crontab(" ".join(fields), timezone=tzinfo)
    except ValueError as error:
        raise ValueError(f"{_NOT_CRON}{error}") from None


def _weekdays(item: str) -> str:
    """One item of a crontab day-of-week list (0 and 7: Sunday) as names APScheduler reads."""
    match = _DAY_ITEM.fullmatch(item)
    if match is None:
        return item  # names (sat, mon-fri) mean the same days to both; APScheduler checks them
    whole, first, last, step = match.groups()
    if whole == "*" and step is None:
        return "*"
    low = 0 if first is None else int(first)
    high = 6 if first is None or (last is None and step) else int(last or first)
    for day in (low, high):
        if day > 7:
            raise ValueError(f"day of week {day} is not in 0-7")
    if low > high or step == "0":
        raise ValueError(f"day-of-week item {item!r} matches no day")
    days = {day % 7 for day in range(low, high + 1, int(step or 1))}
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        # not schema_messages.closest: the schemas import this module
        hints = difflib.get_close_matches(name, available_timezones(), n=1, cutoff=0.75)
        raise ValueError(f"{name!r} is not an IANA time zone"
                         + (f" (did you mean {hints[0]!r}?)" if hints else "")) from None


def _format(seconds: int) -> str:
    """``5400`` -> ``1h30m``."""
    parts = ((seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "m"),
             (seconds % 60, "s"))
    return "".join(f"{count}{unit}" for count, unit in parts if count) or "0s"
