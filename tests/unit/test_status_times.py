"""Times in the fleet views: format_time writes every moment in UTC with seconds and a Z,
whatever its zone and however it was made."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.gitops.status_files import format_time, parse_time

BERLIN = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize(("moment", "text"), [
    (dt.datetime(2026, 11, 23, 4, 10, tzinfo=dt.UTC), "2026-11-23T04:10:00Z"),
    (dt.datetime(2026, 11, 23, 4, 10, 5, 999_999, tzinfo=dt.UTC), "2026-11-23T04:10:05Z"),
    (dt.datetime(2026, 11, 23, 5, 10, tzinfo=BERLIN), "2026-11-23T04:10:00Z"),
    (dt.datetime(2026, 1, 1, 0, 30, tzinfo=BERLIN), "2025-12-31T23:30:00Z"),
    (dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
     dt.datetime(999, 1, 2, 3, 4, 5).strftime("%Y-%m-%dT%H:%M:%SZ")),
])
def test_format_time(moment: dt.datetime, text: str) -> None:
    assert format_time(moment) == text


@pytest.mark.parametrize("text", ["2026-11-23T04:10:00Z", "2026-11-23T04:10:00+00:00",
                                  "2026-11-23T05:10:00+01:00", "2026-11-23T04:10:00",
                                  "2026-11-23T04:10:00.123456Z"])
def test_parsed_times_are_written_in_utc(text: str) -> None:
    moment = parse_time(text)
    assert moment is not None
    assert format_time(moment) == moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
