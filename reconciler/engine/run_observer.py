"""What the engine reports as runs progress, and to whom: the :class:`RunObserver` seam.

The engine calls an observer at fixed points of a run (a revision fetched, a fetch failed,
one target's outcome, a target no longer served, the run's end). The daemon passes its
Prometheus ``Metrics``, which has these methods (a structural match: the daemon's module
imports nothing of this one); tests pass nothing and get :data:`NO_OBSERVER`. Calls are
made from the run's thread and must not block.

An observer may also follow a run target by target: one that has the optional
:class:`TargetProgress` method ``target_done`` (``sync --once`` and ``plan`` on a terminal,
to draw targets done / total) hears of each served target as it is finished, through
:func:`target_done`. It is a protocol of its own so that observers without it, the daemon's
metrics, still match :class:`RunObserver`.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol, runtime_checkable

__all__ = ["NO_OBSERVER", "RunObserver", "TargetProgress", "Unobserved", "target_done"]


class RunObserver(Protocol):
    """The receiving end of a run's progress (see the module docstring)."""

    def revision(self, sha: str) -> None:
        """The run works from ``sha``, the newest revision of the tracked ref."""

    def fetch_failed(self) -> None:
        """A fetch from the server failed (the run goes on with what was fetched before)."""

    def record_target(self, target: str, phase: str | enum.Enum, *, applied: int = 0,
                      failed: int = 0, pruned: int = 0, drifted: int = 0,
                      success: bool) -> None:
        """The outcome of one target in this run; counts are for this run only."""

    def forget_target(self, target: str) -> None:
        """The target is no longer served: drop what is known of it."""

    def observe_run(self, duration: float) -> None:
        """A run ended after ``duration`` seconds."""


@runtime_checkable
class TargetProgress(Protocol):
    """The optional progress method of an observer (see the module docstring)."""

    def target_done(self, target: str, index: int, total: int) -> None:
        """``target``, the ``index``-th (from 1) of the ``total`` this run works on, is done."""


def target_done(observer: RunObserver, target: str, index: int, total: int) -> None:
    """Tell ``observer`` that a target is done, when it follows progress."""
    done = getattr(observer, "target_done", None)  # TargetProgress, without isinstance's
    if callable(done):  # protocol walk for every target of every run
        done(target, index, total)


class Unobserved:
    """An observer that notes nothing; a base for observers that note only some things."""

    def revision(self, sha: str) -> None:
        pass

    def fetch_failed(self) -> None:
        pass

    def record_target(self, target: str, phase: str | enum.Enum, *, applied: int = 0,
                      failed: int = 0, pruned: int = 0, drifted: int = 0,
                      success: bool) -> None:
        pass

    def forget_target(self, target: str) -> None:
        pass

    def observe_run(self, duration: float) -> None:
        pass

    def target_done(self, target: str, index: int, total: int) -> None:
        pass


NO_OBSERVER: Final[RunObserver] = Unobserved()
