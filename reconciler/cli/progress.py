"""Progress of long commands on a terminal: one line on stderr, redrawn in place.

``sync --once`` and ``plan`` draw ``targets done / total`` while they work, and the stage they
are in before that (``validating head 3f2a…``). Only on a terminal: when stderr is not one
(a CI log, a pipe, a file), or ``TERM`` is ``dumb``, nothing at all is written, so piped
output and logs stay exactly as they are. The line is erased when the work ends, so the
command's own output starts on a clean line. Redraws are limited to a few per second: a
fleet of 10,000 targets costs a few hundred writes, not 10,000.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from reconciler.engine.run_observer import Unobserved

__all__ = ["Progress", "ProgressObserver", "on_terminal"]

_ERASE = "\r\x1b[K"  # carriage return, then clear to the end of the line


def on_terminal(stream: TextIO) -> bool:
    """Whether progress may be drawn on ``stream``: a terminal that can move the cursor."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """One redrawn line of progress on ``stream`` (stderr), drawn only on a terminal.

    ``report(label, done, total)`` draws ``label: done/total targets (p%) item``; a
    ``total`` of 0 draws the label alone (a stage whose length is unknown). ``close()``
    (or leaving the ``with`` block) erases the line.
    """

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = on_terminal(self.stream) if enabled is None else enabled
        self.interval = interval
        self.clock = clock
        self._drawn_at: float | None = None
        self._label = ""
        self._shown = False

    def report(self, label: str, done: int = 0, total: int = 0, item: str = "") -> None:
        """Show where the work is; redrawn at most every ``interval`` seconds, except a new
        stage's first line and its last target, which are always drawn."""
        if not self.enabled:
            return
        now = self.clock()
        last = total > 0 and done >= total
        if not last and label == self._label and self._drawn_at is not None \
                and now - self._drawn_at < self.interval:
            return
        self._drawn_at, self._label = now, label
        if total > 0:
            line = f"{label}: {done}/{total} targets ({100 * done // total}%)"
            if item:
                line += f" {item}"
        else:
            line = f"{label}…"
        width = self._width()
        if len(line) >= width:
            line = line[:max(width - 2, 1)] + "…"
        self.stream.write(_ERASE + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the line (when one was drawn)."""
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size().columns

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ProgressObserver(Unobserved):
    """A run observer that draws each finished target on a :class:`Progress` line (the
    engine's optional ``target_done`` hook); it notes nothing else."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label

    def target_done(self, target: str, index: int, total: int) -> None:
        self.progress.report(self.label, index, total, target)
