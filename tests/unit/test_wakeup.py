"""The daemon's wake job: a run whose summary says a waiting change may go at some time gets
a run at that time, on a real apscheduler (seconds of real time, generous timeouts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.daemon.wakeup import JOB, WakeUp
from reconciler.engine.pipeline import RunSummary


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    s = BackgroundScheduler(timezone=UTC)
    s.start()
    yield s
    s.shutdown(wait=False)


class Woken:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.event.set()


def summary(wake_at: datetime | None, revision: str = "a" * 40) -> RunSummary:
    return RunSummary(revision, (), 0.1, wake_at=wake_at)


def test_a_wake_time_in_the_summary_brings_a_run_at_that_time(
        scheduler: BackgroundScheduler) -> None:
    woken = Woken()
    wake = WakeUp(scheduler, woken)
    started = time.monotonic()
    wake.after_run(summary(datetime.now(UTC) + timedelta(seconds=1.5)))
    assert woken.event.wait(30), "no run at the wake time"
    assert woken.times[0] - started >= 1.0  # at the time, not at once
    assert scheduler.get_job(JOB) is None and wake.at is None  # one-off


def test_the_next_summary_replaces_the_wake_time(scheduler: BackgroundScheduler) -> None:
    woken = Woken()
    wake = WakeUp(scheduler, woken)
    wake.after_run(summary(datetime.now(UTC) + timedelta(hours=1)))
    wake.after_run(summary(datetime.now(UTC) + timedelta(seconds=1)))
    assert len(scheduler.get_jobs()) == 1
    assert woken.event.wait(30)
    time.sleep(0.5)
    assert len(woken.times) == 1  # the hour-later job is gone, not run as well


def test_nothing_waiting_any_more_removes_the_wake_job(scheduler: BackgroundScheduler) -> None:
    wake = WakeUp(scheduler, Woken())
    wake.after_run(summary(datetime.now(UTC) + timedelta(hours=1)))
    assert scheduler.get_job(JOB) is not None
    wake.after_run(summary(None))
    assert scheduler.get_job(JOB) is None and wake.at is None


def test_a_run_without_a_revision_leaves_the_wake_job_alone(
        scheduler: BackgroundScheduler) -> None:
    wake = WakeUp(scheduler, Woken())
    wake.after_run(summary(datetime.now(UTC) + timedelta(hours=1)))
    wake.after_run(summary(None, revision=""))  # the server was unreachable: knows nothing
    wake.after_run(None)  # the run crashed
    assert scheduler.get_job(JOB) is not None


def test_a_wake_time_already_past_runs_soon_but_not_back_to_back(
        scheduler: BackgroundScheduler) -> None:
    # the daemon's clock a year ahead of the scheduler's real one, so that the job set
    # here is not due (and gone) before it is looked at
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    wake = WakeUp(scheduler, Woken(), now=lambda: now)
    wake.set(now - timedelta(minutes=5))
    assert wake.at == now + timedelta(seconds=1)
