"""Exponential backoff: how long to wait before trying again, in the one way the project does.

Three things are tried again after a failure, and all three take their delays from
:class:`Backoff` (the delay after the n-th failure in a row: doubling from ``initial`` up to
``cap``, optionally with full jitter):

* the executor retries a provider call that failed transiently, between provider calls, with
  a sleep that ends as soon as the run is cancelled (:func:`retry`, :func:`cancellable_sleep`);
* the status publisher retries a push rejected because the branch moved, with full jitter so
  that many sites do not push in step, sleeping on the daemon's stop event (:func:`retry`);
* the fetcher asks an unreachable server again only after a delay that grows with every
  failed fetch. That is not a loop but a time before which runs do not fetch, kept across
  runs (``reconciler.engine.fetching``), so it uses :meth:`Backoff.delay` alone.

Why no retry library: the third case is not a call to wrap, and the first sits on the hot path
(a no-op run of a 1,000-target site makes 10,000 provider calls; tenacity's bookkeeping costs
about 7 µs per call, a tenth of such a run). :func:`retry` is a dozen lines, and a caller on
the hot path makes its first attempt inline, so a call that succeeds costs nothing more.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "cancellable_sleep", "retry"]

T = TypeVar("T")

# 2 ** 64 times any initial delay is past every cap; a server down for weeks (a failed fetch
# every 15 minutes) must not make the exponent overflow a float
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """Delays that double after every failure in a row, from ``initial`` up to ``cap``.

    With ``jitter`` the delay is drawn uniformly between 0 and that value ("full jitter"),
    which spreads out the retries of many clients that failed at the same moment.
    """

    initial: float
    cap: float
    jitter: bool = False

    def delay(self, failures: int, *, at_least: float = 0.0,
              uniform: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after ``failures`` failures in a row (1 after the first).

        ``at_least`` raises the delay (a server's own "retry after"), still within ``cap``.
        """
        exponent = min(max(0, failures - 1), _MAX_EXPONENT)
        value = min(self.cap, max(at_least, self.initial * 2.0 ** exponent))
        return uniform(0.0, value) if self.jitter else value


def retry(attempt: Callable[[], T], *,
          on: type[BaseException] | tuple[type[BaseException], ...], attempts: int,
          backoff: Backoff, sleep: Callable[[float], object],
          give_up: Callable[[], bool] = lambda: False,
          at_least: Callable[[BaseException], float] = lambda _exc: 0.0,
          before_sleep: Callable[[int, float, BaseException], None] | None = None,
          failed: BaseException | None = None) -> T:
    """Call ``attempt`` until it returns, at most ``attempts`` times in all.

    Only errors of the types ``on`` are tried again, after ``sleep(backoff delay)``; any other
    error, the last one, or one after which ``give_up()`` answers True (the run is cancelled)
    propagates. ``at_least(error)`` is the smallest delay that error asks for;
    ``before_sleep(failures, delay, error)`` is called before each wait (to log it).

    ``failed`` is the error of a first attempt the caller made itself (of a type in ``on``),
    which counts as one of the ``attempts``: a caller on a hot path calls once inline and
    comes here only when that failed.
    """
    failures = 0
    error = failed
    while True:
        if error is not None:
            failures += 1
            if failures >= attempts or give_up():
                raise error
            delay = backoff.delay(failures, at_least=at_least(error))
            if before_sleep is not None:
                before_sleep(failures, delay, error)
            sleep(delay)
        try:
            return attempt()
        except on as exc:
            error = exc


def cancellable_sleep(seconds: float, cancelled: Callable[[], bool], *,
                      clock: Callable[[], float] = time.monotonic, step: float = 0.1) -> None:
    """Sleep ``seconds``, returning early (within ``step``) once ``cancelled()`` is True.

    For waits on a condition that is a question, not an event (the pipeline's
    ``cancelled()`` also looks at the server now and then); a wait on an event uses
    ``Event.wait`` instead.
    """
    deadline = clock() + seconds
    while clock() < deadline:
        if cancelled():
            return
        time.sleep(min(step, max(0.0, deadline - clock())))
