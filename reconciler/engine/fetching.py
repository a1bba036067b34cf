"""Fetch the fleet repository at the start of a run, backing off from an unreachable server.

A failed fetch is not a failed run: the run goes on with the last fetched commit, so the last
good revision stays enforced and drift is still repaired. But asking a server that is down at
every run would make each run wait for git's timeout, so after a failure runs do not fetch
until a delay has passed that doubles with every failure in a row (``fetchBackoff`` up to
``fetchBackoffCap``, :class:`~reconciler.core.backoff.Backoff`). A forced fetch (a webhook, an
explicit sync) asks at once. While backing off the fetcher is :attr:`Fetcher.offline`: the
status is committed locally and pushed by the first run after the server answers again.
Used by the pipeline, one fetcher per daemon; runs are serialised, so no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from reconciler.core.backoff import Backoff
from reconciler.core.errors import SourceError
from reconciler.engine.run_observer import NO_OBSERVER, RunObserver
from reconciler.gitops.source import GitSource, Revision

__all__ = ["FetchOutcome", "Fetcher"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FetchOutcome:
    """The tracked ref's commit as known after a fetch (None: none known) and why the
    fetch did not happen or failed ("" when it succeeded)."""

    revision: Revision | None
    error: str = ""


class Fetcher:
    """Fetches ``source`` unless backing off (see the module docstring)."""

    def __init__(self, source: GitSource, backoff: Backoff, *,
                 observer: RunObserver = NO_OBSERVER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.backoff = backoff
        self.observer = observer
        self.clock = clock
        self.failures = 0  # failed fetches in a row
        self.next_attempt = 0.0  # clock time before which runs do not fetch

    @property
    def offline(self) -> bool:
        """True while backing off from a server that did not answer."""
        return self.failures > 0 and self.clock() < self.next_attempt

    def fetch(self, *, force: bool = False) -> FetchOutcome:
        """Fetch (unless backing off and not ``force``), then resolve the tracked ref."""
        error = ""
        now = self.clock()
        if self.failures and now < self.next_attempt and not force:
            error = (f"git server unreachable ({self.failures} failed fetches); next "
                     f"attempt in {self.next_attempt - now:.0f}s")
        else:
            try:
                self.source.fetch()
            except SourceError as exc:
                self.failures += 1
                delay = self.backoff.delay(self.failures)
                self.next_attempt = self.clock() + delay
                self.observer.fetch_failed()
                _log.warning("fetch_failed", error=exc.message, failures=self.failures,
                             retry_in=delay)
                error = exc.message
            else:
                if self.failures:
                    _log.info("fetch_recovered", after_failures=self.failures)
                self.failures = 0
        try:
            return FetchOutcome(self.source.resolve(), error)
        except SourceError as exc:
            return FetchOutcome(None, error or exc.message)
