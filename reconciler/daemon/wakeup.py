"""The one-off run at the moment a waiting change may go.

A run that leaves a change waiting (outside its maintenance window, or under a hold) says in
its summary when the earliest of them may go (``RunSummary.wake_at``). :class:`WakeUp` keeps
one apscheduler job (a ``DateTrigger``) at that time, so the change is applied when the
window opens or the hold ends, not up to an interval later. Each run's summary replaces the
job: moved, or removed when nothing waits any more. A summary of a run that had no revision
to work from (the server unreachable, nothing fetched yet) says nothing about what waits,
and leaves the job as it was. Used by :class:`~reconciler.daemon.daemon.Daemon`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger

from reconciler.engine.pipeline import RunSummary

__all__ = ["WakeUp"]

_log = structlog.get_logger(__name__)
JOB = "wake"
# never sooner than this after a run: a wake time already past cannot make runs back to back
MIN_DELAY = timedelta(seconds=1)


class WakeUp:
    """Keeps the wake job of ``scheduler`` (see the module docstring); ``wake`` is called
    at the time, in a scheduler thread."""

    def __init__(self, scheduler: BaseScheduler, wake: Callable[[], None], *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.scheduler = scheduler
        self.wake = wake
        self.now = now
        self.at: datetime | None = None  # when the job runs; None: no job

    def after_run(self, summary: RunSummary | None) -> None:
        if summary is None or not summary.revision:
            return
        self.set(summary.wake_at)

    def set(self, when: datetime | None) -> None:
        """Run ``wake`` at ``when`` (replacing the time set before); None: not at all."""
        if when is None:
            if self.at is not None:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(JOB)
                _log.info("wake_cancelled")
            self.at = None
            return
        at = max(when, self.now() + MIN_DELAY)
        if at == self.at:
            return
        self.scheduler.add_job(self._fire, DateTrigger(run_date=at), id=JOB,
                               replace_existing=True, misfire_grace_time=None, coalesce=True)
        self.at = at
        _log.info("wake_scheduled", at=at.isoformat(timespec="seconds"))

    def _fire(self) -> None:
        self.at = None
        self.wake()
