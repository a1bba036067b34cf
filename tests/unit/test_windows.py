"""Maintenance windows: validation, open/closed, union within a level, intersection across
levels, DST. Every instant is injected; nothing reads the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cerberus import Validator

from reconciler.core.windows import (
    WINDOWS_SCHEMA,
    Window,
    WindowState,
    describe_window,
    parse_duration,
    parse_window,
    window_problems,
    window_state,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0,
          fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).astimezone(UTC)


def win(schedule: str, duration: str | int, tz: str = "UTC") -> Window:
    return parse_window({"schedule": schedule, "duration": duration, "timezone": tz})


def opened(closes_at: datetime | None) -> WindowState:
    return WindowState(open=True, closes_at=closes_at, next_open=None)


def closed(next_open: datetime | None) -> WindowState:
    return WindowState(open=False, closes_at=None, next_open=next_open)


# -- durations and validation ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("4h", 4 * 3600), ("90m", 5400), ("1h30m", 5400), ("2d", 2 * 86400), ("45s", 45),
    ("1d2h3m4s", 86400 + 7200 + 180 + 4), (3600, 3600), ("3600", 3600),
])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "4x", "h", "1.5h", "4h 30m", "30m4h", "-5", True, 1.5, 0,
                                  "0m", -60, "400d"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("raw", "problems"), [
    pytest.param({"schedule": "0 22 * * 1-5", "duration": "4h", "timezone": "Europe/Berlin"},
                 [], id="valid"),
    pytest.param({"schedule": "0 22 * * 1-5", "duration": 3600}, [], id="timezone-defaults"),
    pytest.param({"schedule": "0 22 * *", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: Wrong number of fields; "
                               "got 4, expected 5")], id="four-fields"),
    pytest.param({"schedule": "@daily", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: Wrong number of fields; "
                               "got 1, expected 5")], id="macro"),
    pytest.param({"schedule": "61 22 * * *", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: Error validating expression "
                               "'61': the last value (61) is higher than the maximum value "
                               "(59)")], id="minute-out-of-range"),
    pytest.param({"schedule": "0 22 * * 8", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: day of week 8 is not in "
                               "0-7")], id="weekday-out-of-range"),
    pytest.param({"schedule": "0 22 * * mon-5", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: 'mon-5' is not a number, a "
                               "range or a name (jan, mon)")], id="name-and-number"),
    pytest.param({"schedule": "0 22 * jan-3 *", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: 'jan-3' is not a number, a "
                               "range or a name (jan, mon)")], id="month-name-and-number"),
    pytest.param({"schedule": "0 22 * * mon-fri/2", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: 'mon-fri/2' is not a number, "
                               "a range or a name (jan, mon)")], id="step-over-names"),
    pytest.param({"schedule": "0 22 L * *", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: 'L' is not a number, a "
                               "range or a name (jan, mon)")], id="last-day"),
    pytest.param({"schedule": "0 22 * * monday", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: 'monday' is not a number, a "
                               "range or a name (jan, mon)")], id="long-name"),
    pytest.param({"schedule": "0 22 * * xyz", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: Invalid weekday name "
                               "\"xyz\"")], id="unknown-name"),
    pytest.param({"schedule": "0 22 * * 5-1", "duration": "4h"},
                 [("schedule", "is not a valid cron expression: day-of-week item '5-1' "
                               "matches no day")], id="weekdays-backwards"),
    pytest.param({"schedule": "0 22 1 * 1", "duration": "4h"},
                 [("schedule", "restricts both the day of month and the day of week (cron "
                               "matches either): write one window for each")],
                 id="day-of-month-and-week"),
    pytest.param({"schedule": "0 22 * * *", "duration": "4h", "timezone": "Europe/Berln"},
                 [("timezone", "'Europe/Berln' is not an IANA time zone (did you mean "
                               "'Europe/Berlin'?)")], id="misspelt-timezone"),
    pytest.param({"schedule": "0 22 * * *", "duration": "4h", "timezone": "../etc/passwd"},
                 [("timezone", "'../etc/passwd' is not an IANA time zone")], id="path"),
    pytest.param({"schedule": "0 22 * * *", "duration": "4x"},
                 [("duration", "'4x' is not a duration such as 4h, 90m, 1h30m or 2d "
                               "(or a number of seconds)")], id="bad-duration"),
    pytest.param({"schedule": "0 22 * * *", "duration": 0},
                 [("duration", "must be positive, got 0")], id="zero-duration"),
    pytest.param({"schedule": "0 22 * * *", "duration": "0h"},
                 [("duration", "must be positive, got 0")], id="zero-hours"),
    pytest.param({"schedule": "0 22 * * *", "duration": True},
                 [("duration", "True is not a duration such as 4h, 90m, 1h30m or 2d "
                               "(or a number of seconds)")], id="boolean"),
    pytest.param({"schedule": "0 22 * * *", "duration": "367d"},
                 [("duration", "must be at most 366d, got 367d")], id="too-long"),
    pytest.param({"schedule": "x", "duration": "", "timezone": "Nowhere/City"},
                 [("schedule", "is not a valid cron expression: Wrong number of fields; "
                               "got 1, expected 5"),
                  ("duration", "'' is not a duration such as 4h, 90m, 1h30m or 2d "
                               "(or a number of seconds)"),
                  ("timezone", "'Nowhere/City' is not an IANA time zone")], id="all-wrong"),
])
def test_window_problems(raw: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    assert window_problems(raw) == problems


def test_parse_window_refuses_what_window_problems_reports() -> None:
    with pytest.raises(ValueError, match="duration must be positive, got 0"):
        parse_window({"schedule": "0 22 * * *", "duration": 0})
    with pytest.raises(ValueError, match="timezone 'Mars/Olympus' is not an IANA time zone"):
        parse_window({"schedule": "0 22 * * *", "duration": 60, "timezone": "Mars/Olympus"})
    with pytest.raises(ValueError):
        Window(schedule="0 22 * * *", duration=-1, timezone="UTC")


def test_parse_window_values() -> None:
    window = parse_window({"schedule": " 0  22 * * 1-5 ", "duration": "1h30m"})
    assert window == Window(schedule="0 22 * * 1-5", duration=5400, timezone="UTC")
    assert hash(window) == hash(Window(schedule="0 22 * * 1-5", duration=5400, timezone="UTC"))
    assert describe_window(win("0 22 * * 1-5", "4h", "Europe/Berlin")) \
        == "0 22 * * 1-5 for 4h (Europe/Berlin)"
    assert describe_window(win("30 1 * * *", 5400)) == "30 1 * * * for 1h30m (UTC)"
    assert describe_window(win("0 0 1 * *", "1d2h3m4s")) == "0 0 1 * * for 1d2h3m4s (UTC)"


def test_schema() -> None:
    validator = Validator({"windows": WINDOWS_SCHEMA})
    assert validator.validate({"windows": [{"schedule": "0 22 * * *", "duration": "4h"},
                                           {"schedule": "0 1 * * 0", "duration": 60,
                                            "timezone": "Europe/Berlin"}]})
    assert validator.document["windows"][0]["timezone"] == "UTC"
    assert not validator.validate({"windows": [{"duration": "4h"}]})
    assert not validator.validate({"windows": [{"schedule": "0 22 * * *", "duration": 1.5}]})
    assert not validator.validate({"windows": [{"schedule": "0 22 * * *", "duration": "4h",
                                                "tz": "UTC"}]})
    assert not validator.validate({"windows": {"schedule": "0 22 * * *", "duration": "4h"}})


# -- weekdays are numbered as in crontab (0 and 7 are Sunday), not as in APScheduler 3 ----------

@pytest.mark.parametrize(("schedule", "days"), [
    ("0 12 * * 1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0 12 * * mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0 12 * * SAT,Sun", ["Sat", "Sun"]),
    ("0 12 * * 0", ["Sun"]),
    ("0 12 * * 7", ["Sun"]),
    ("0 12 * * 5-7", ["Fri", "Sat", "Sun"]),
    ("0 12 * * 0-2", ["Mon", "Tue", "Sun"]),
    ("0 12 * * */2", ["Tue", "Thu", "Sat", "Sun"]),
    ("0 12 * * 1-5/2,sun", ["Mon", "Wed", "Fri", "Sun"]),
    ("0 12 * * *", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
])
def test_weekdays_as_in_crontab(schedule: str, days: list[str]) -> None:
    window = win(schedule, "1h")
    monday = utc(2025, 6, 2, 12, 30)
    seen = [(monday + timedelta(days=n)).strftime("%a") for n in range(7)
            if window_state([[window]], monday + timedelta(days=n)).open]
    assert seen == days


# -- one level ---------------------------------------------------------------------------------

NIGHTS = win("0 22 * * *", "4h")  # 22:00-02:00 UTC every day


@pytest.mark.parametrize(("now", "state"), [
    pytest.param(utc(2025, 6, 2, 21, 59, 59), closed(utc(2025, 6, 2, 22)), id="before"),
    pytest.param(utc(2025, 6, 2, 22), opened(utc(2025, 6, 3, 2)), id="exact-start-is-open"),
    pytest.param(utc(2025, 6, 2, 23, 30), opened(utc(2025, 6, 3, 2)), id="inside"),
    pytest.param(utc(2025, 6, 3, 1), opened(utc(2025, 6, 3, 2)), id="started-3h-ago"),
    pytest.param(utc(2025, 6, 3, 1, 59, 59, 999999), opened(utc(2025, 6, 3, 2)),
                 id="last-microsecond"),
    pytest.param(utc(2025, 6, 3, 2), closed(utc(2025, 6, 3, 22)), id="exact-end-is-closed"),
    pytest.param(utc(2025, 6, 3, 12), closed(utc(2025, 6, 3, 22)), id="afternoon"),
])
def test_one_window(now: datetime, state: WindowState) -> None:
    assert window_state([[NIGHTS]], now) == state


def test_no_windows_is_always_open() -> None:
    now = utc(2025, 6, 2, 12)
    assert window_state([], now) == opened(None)
    assert window_state([[], [], []], now) == opened(None)


def test_empty_levels_impose_nothing() -> None:
    now = utc(2025, 6, 2, 12)
    assert window_state([[], [NIGHTS], []], now) == window_state([[NIGHTS]], now)


def test_window_over_a_weekend_boundary() -> None:
    friday_night = win("0 22 * * fri", "6h", "Europe/Berlin")
    saturday_1am = local(BERLIN, 2025, 6, 7, 1)
    assert window_state([[friday_night]], saturday_1am) \
        == opened(local(BERLIN, 2025, 6, 7, 4))
    assert window_state([[friday_night]], local(BERLIN, 2025, 6, 8, 1)) \
        == closed(local(BERLIN, 2025, 6, 13, 22))


def test_results_are_utc_and_now_must_be_aware() -> None:
    state = window_state([[NIGHTS]], datetime(2025, 6, 3, 1, tzinfo=BERLIN))
    assert state.closes_at is not None
    assert state.closes_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        window_state([[NIGHTS]], datetime(2025, 6, 3, 1))


def test_union_of_overlapping_windows_in_one_level() -> None:
    late = win("0 1 * * *", "3h")  # 01:00-04:00 overlaps NIGHTS (22:00-02:00)
    assert window_state([[NIGHTS, late]], utc(2025, 6, 2, 23)) == opened(utc(2025, 6, 3, 4))
    assert window_state([[late, NIGHTS]], utc(2025, 6, 3, 3)) == opened(utc(2025, 6, 3, 4))
    assert window_state([[NIGHTS, late]], utc(2025, 6, 3, 4)) == closed(utc(2025, 6, 3, 22))


def test_union_of_touching_and_disjoint_windows() -> None:
    touching = win("0 2 * * *", "1h")  # starts exactly when NIGHTS ends
    noon = win("0 12 * * *", "1h")
    level = [NIGHTS, touching, noon]
    assert window_state([level], utc(2025, 6, 2, 23)) == opened(utc(2025, 6, 3, 3))
    assert window_state([level], utc(2025, 6, 3, 3)) == closed(utc(2025, 6, 3, 12))
    assert window_state([level], utc(2025, 6, 3, 12, 30)) == opened(utc(2025, 6, 3, 13))


def test_window_overlapping_its_own_next_start() -> None:
    every_2h_for_3h = win("0 */2 * * *", "3h")
    assert window_state([[every_2h_for_3h]], utc(2025, 6, 2, 5)) == opened(None)
    weekly_for_8d = win("0 0 * * mon", "8d")
    assert window_state([[weekly_for_8d]], utc(2025, 6, 4)) == opened(None)
    every_day_for_25h_in_june = win("0 0 * 6 *", "25h")
    assert window_state([[every_day_for_25h_in_june]], utc(2025, 6, 4)) \
        == opened(utc(2025, 7, 1, 1))


# -- levels ------------------------------------------------------------------------------------

WEEKDAY_NIGHTS = win("0 22 * * 1-5", "6h", "Europe/Berlin")  # Mon-Fri 22:00 to 04:00
WEDNESDAY = win("0 0 * * wed", "24h", "Europe/Berlin")


@pytest.mark.parametrize(("now", "state"), [
    pytest.param(local(BERLIN, 2025, 6, 2, 12), closed(local(BERLIN, 2025, 6, 4, 0)),
                 id="monday-noon"),
    pytest.param(local(BERLIN, 2025, 6, 3, 23), closed(local(BERLIN, 2025, 6, 4, 0)),
                 id="site-open-target-closed"),
    pytest.param(local(BERLIN, 2025, 6, 4, 1), opened(local(BERLIN, 2025, 6, 4, 4)),
                 id="tuesday-night-into-wednesday"),
    pytest.param(local(BERLIN, 2025, 6, 4, 5), closed(local(BERLIN, 2025, 6, 4, 22)),
                 id="target-open-site-closed"),
    pytest.param(local(BERLIN, 2025, 6, 4, 23), opened(local(BERLIN, 2025, 6, 5, 0)),
                 id="wednesday-night-until-midnight"),
    pytest.param(local(BERLIN, 2025, 6, 5, 0), closed(local(BERLIN, 2025, 6, 11, 0)),
                 id="next-week"),
])
def test_site_weekday_nights_and_target_wednesday(now: datetime, state: WindowState) -> None:
    assert window_state([[WEEKDAY_NIGHTS], [WEDNESDAY]], now) == state
    assert window_state([[WEDNESDAY], [WEEKDAY_NIGHTS]], now) == state


def test_a_lower_site_narrows_its_parent() -> None:
    parent = [win("0 20 * * *", "10h")]  # 20:00-06:00
    child = [win("0 2 * * *", "2h")]  # 02:00-04:00
    instance = [win("0 3 * * *", "4h")]  # 03:00-07:00
    assert window_state([parent, child], utc(2025, 6, 2, 21)) == closed(utc(2025, 6, 3, 2))
    assert window_state([parent, child], utc(2025, 6, 3, 2)) == opened(utc(2025, 6, 3, 4))
    assert window_state([parent, child, [], instance], utc(2025, 6, 3, 2)) \
        == closed(utc(2025, 6, 3, 3))
    assert window_state([parent, child, [], instance], utc(2025, 6, 3, 3, 30)) \
        == opened(utc(2025, 6, 3, 4))


def test_levels_in_different_timezones() -> None:
    site = [win("0 22 * * *", "4h", "Europe/Berlin")]  # 20:00-00:00 UTC in summer
    target = [win("0 23 * * *", "2h")]  # 23:00-01:00 UTC
    assert window_state([site, target], utc(2025, 6, 2, 21)) == closed(utc(2025, 6, 2, 23))
    assert window_state([site, target], utc(2025, 6, 2, 23, 30)) == opened(utc(2025, 6, 3))


def test_windows_that_never_intersect() -> None:
    sunday_noon = win("0 12 * * 0", "2h", "Europe/Berlin")
    assert window_state([[WEEKDAY_NIGHTS], [sunday_noon]], utc(2025, 6, 2, 12)) == closed(None)
    assert window_state([[WEEKDAY_NIGHTS], [sunday_noon]], local(BERLIN, 2025, 6, 8, 13)) \
        == closed(None)


def test_next_opening_beyond_the_horizon() -> None:
    leap_day = win("0 0 29 2 *", "1d")
    assert window_state([[leap_day]], utc(2025, 6, 2)) == closed(None)
    assert window_state([[leap_day]], utc(2027, 6, 2)) == closed(utc(2028, 2, 29))


# -- daylight saving time ------------------------------------------------------------------------

def test_berlin_22h_moves_in_utc_across_the_march_change() -> None:
    evenings = [win("0 22 * * *", "1h", "Europe/Berlin")]
    assert window_state([evenings], utc(2025, 3, 29, 12)) == closed(utc(2025, 3, 29, 21))
    assert window_state([evenings], utc(2025, 3, 30, 12)) == closed(utc(2025, 3, 30, 20))
    assert window_state([evenings], utc(2025, 3, 30, 20, 30)) == opened(utc(2025, 3, 30, 21))
    assert window_state([evenings], utc(2025, 3, 29, 20, 30)) == closed(utc(2025, 3, 29, 21))


def test_start_in_the_skipped_hour_opens_when_the_hour_would_have_been() -> None:
    # 02:30 does not exist in Berlin on 2025-03-30: the window opens at 01:30Z (03:30 CEST)
    # and stays open for one real hour
    skipped = [win("30 2 * * *", "1h", "Europe/Berlin")]
    assert window_state([skipped], utc(2025, 3, 29, 12)) == closed(utc(2025, 3, 30, 1, 30))
    assert window_state([skipped], utc(2025, 3, 30, 1, 30)) == opened(utc(2025, 3, 30, 2, 30))
    assert window_state([skipped], utc(2025, 3, 30, 2, 30)) == closed(utc(2025, 3, 31, 0, 30))


def test_start_in_the_repeated_hour_opens_once() -> None:
    # 02:30 happens twice in Berlin on 2025-10-26: the window opens at the first one only
    repeated = [win("30 2 * * *", "1h", "Europe/Berlin")]
    first = local(BERLIN, 2025, 10, 26, 2, 30)
    second = local(BERLIN, 2025, 10, 26, 2, 30, fold=1)
    assert (first, second) == (utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 30))
    assert window_state([repeated], utc(2025, 10, 25, 12)) == closed(first)
    assert window_state([repeated], first) == opened(second)
    assert window_state([repeated], second) == closed(utc(2025, 10, 27, 1, 30))
    assert window_state([repeated], second + timedelta(minutes=15)) \
        == closed(utc(2025, 10, 27, 1, 30))


def test_new_york_window_on_the_november_change() -> None:
    # 01:30 happens twice in New York on 2025-11-02; the window opens at 01:30 EDT (05:30Z)
    # and lasts two real hours, past the second 01:30 (EST, 06:30Z), until 02:30 EST
    nights = [win("30 1 * * *", "2h", "America/New_York")]
    assert window_state([nights], utc(2025, 11, 2)) == closed(utc(2025, 11, 2, 5, 30))
    assert window_state([nights], utc(2025, 11, 2, 6, 45)) == opened(utc(2025, 11, 2, 7, 30))
    assert window_state([nights], utc(2025, 11, 2, 7, 30)) == closed(utc(2025, 11, 3, 6, 30))
    assert local(NEW_YORK, 2025, 11, 3, 1, 30) == utc(2025, 11, 3, 6, 30)


def test_durations_are_real_elapsed_time() -> None:
    # midnight to "06:00" on the night the clocks go forward lasts 6 real hours: until 07:00 CEST
    night = [win("0 0 * * *", "6h", "Europe/Berlin")]
    assert window_state([night], utc(2025, 3, 30, 0)) == opened(utc(2025, 3, 30, 5))
    assert local(BERLIN, 2025, 3, 30, 7) == utc(2025, 3, 30, 5)


# -- answers agree with themselves (the engine calls this thousands of times per run) ------------

def test_answers_are_consistent_around_the_clock() -> None:
    levels = [[WEEKDAY_NIGHTS, win("30 12 * * sat", "90m", "Europe/Berlin")],
              [win("0 1 * * *", "5h", "America/New_York"), win("0 21 * * *", "2h")]]
    now = utc(2025, 3, 24)  # the week with the Berlin DST change
    checked = 0
    while now < utc(2025, 4, 7):
        state = window_state(levels, now)
        edge = state.closes_at if state.open else state.next_open
        assert edge is not None
        assert edge > now
        assert window_state(levels, edge).open is not state.open
        assert window_state(levels, edge - timedelta(seconds=1)).open is state.open
        checked += 1
        now += timedelta(minutes=47)
    assert checked == 429
