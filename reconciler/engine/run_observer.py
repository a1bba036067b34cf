"""What the engine reports as runs progress, and to whom: the :class:`RunObserver` seam.

The engine calls an observer at fixed points of a run (a revision fetched, a fetch failed,
one target's outcome, a target no longer served, the run's end). The daemon passes its
Prometheus ``Metrics``, which has these methods (a structural match: the daemon's module
imports nothing of this one); ``sync --once`` and tests pass nothing and get
:data:`NO_OBSERVER`. Calls are made from the run's thread and must not block.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

__all__ = ["NO_OBSERVER", "RunObserver"]


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


class _Unobserved:
    """An observer that notes nothing."""

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


NO_OBSERVER: Final[RunObserver] = _Unobserved()
