"""When a run must stop waiting: on shutdown, or once a newer revision than its own exists.

A run waits in places (health polls, retry backoff, provider operations) and asks
:meth:`Cancellation.cancelled` while it does. The answer only reads flags, so it never waits
itself: ``stop_event`` is set on shutdown, ``newer`` when a newer revision is known (a webhook,
a change of a watched local repository, or a look at the server). Now and then, at most every
``interval`` seconds of a run and never while the server is known to be unreachable,
``cancelled()``
starts such a look (``GitSource.remote_commit``, one ``git ls-remote``) in a background
thread, one at a time; it ends at once on shutdown (the source watches the same stop event),
so a hung git server never holds up a wait, a newer revision or the way out. A look answers
only the run that started it. Used by the pipeline (one per daemon) and handed to providers
through ``ProviderSet``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

import structlog

from reconciler.gitops.source import GitSource

__all__ = ["Cancellation"]

_log = structlog.get_logger(__name__)


class Cancellation:
    """The stop and newer-revision flags of one daemon (see the module docstring)."""

    def __init__(self, source: GitSource, *, interval: float,
                 reachable: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.interval = interval
        self.reachable = reachable
        self.clock = clock
        self.stop_event = threading.Event()
        self.newer = threading.Event()  # set when a newer revision is known to exist
        self.current = ""  # the revision the run works from ("" before it knows one)
        self._run_number = 0  # a look at the server answers only the run that started it
        self._last_look = 0.0
        self._looking = threading.Lock()  # held while a look at the server is under way

    def begin_run(self) -> None:
        """A run starts: what was news for the last one is not news for this one; and the
        run fetches now, so a look at the server is due only once it has lasted
        ``interval`` (a run that does not wait long never looks: at most one fetch and the
        fetch of what a rollout waits on per run)."""
        self._run_number += 1
        self.newer.clear()
        self._last_look = self.clock()

    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def cancelled(self) -> bool:
        """True on shutdown, or once a revision newer than :attr:`current` exists."""
        if self.stop_event.is_set() or self.newer.is_set():
            return True
        now = self.clock()
        # not while the server is known to be unreachable: each look would wait for a timeout
        if (self.current and self.reachable() and now - self._last_look > self.interval
                and self._looking.acquire(blocking=False)):  # one look at a time
            self._last_look = now
            # in the run's log context, so the look's lines say which run started it
            threading.Thread(target=contextvars.copy_context().run,
                             args=(self._look_for_newer, self.current, self._run_number),
                             name="remote-check", daemon=True).start()
        return False

    def _look_for_newer(self, current: str, run_number: int) -> None:
        try:
            remote = self.remote_commit()
        except Exception:  # a look that fails is a look not taken: the next run fetches
            _log.exception("remote_check_crashed")
            remote = None
        finally:
            self._looking.release()
        # only news for the run that asked counts: a later run fetched for itself
        if remote and remote != current and run_number == self._run_number \
                and not self.stop_event.is_set():
            _log.info("newer_revision_arrived", revision=remote[:12])
            self.newer.set()

    def remote_commit(self) -> str | None:
        """The tracked ref's commit on the server (one ``git ls-remote``), or None; the
        source's stop (this daemon's stop event) ends it at once."""
        return self.source.remote_commit()
