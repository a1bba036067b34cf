"""The diagnostics one validation run collects, each once, and the "did you mean" hint.

Every check module writes into one :class:`Findings`; ``reconciler.core.validation`` hands its
sorted content to the :class:`~reconciler.core.validation.Report`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.schema_messages import closest

__all__ = ["Findings", "near"]


class Findings:
    """Diagnostics in the order found; a finding repeated (by every pair it concerns, say)
    is kept once."""

    __slots__ = ("_found", "_record", "_seen")

    def __init__(self, initial: Iterable[Diagnostic] = ()) -> None:
        self._found: list[Diagnostic] = list(initial)
        self._seen: set[Diagnostic] = set(self._found)
        self._record: list[list[Diagnostic]] = []  # open records, see record()

    def add(
        self,
        path: str,
        line: int,
        obj: str,
        fld: str,
        message: str,
        *,
        severity: Severity = Severity.ERROR,
        target: str = "",
        instance: str = "",
    ) -> None:
        self.replay((Diagnostic(path, line, obj, fld, message, severity, target, instance),))

    def replay(self, found: Iterable[Diagnostic]) -> None:
        """Add findings made before (by the same checks of equal inputs)."""
        for diag in found:
            for record in self._record:
                record.append(diag)
            if diag not in self._seen:
                self._seen.add(diag)
                self._found.append(diag)

    def record(self) -> list[Diagnostic]:
        """A list that every finding added from now on is appended to, repeated ones
        included, until :meth:`stop`: what some checks find, to be replayed for equal
        inputs. Records nest."""
        record: list[Diagnostic] = []
        self._record.append(record)
        return record

    def stop(self, record: list[Diagnostic]) -> None:
        self._record = [r for r in self._record if r is not record]

    @contextlib.contextmanager
    def scratch(self) -> Iterator[None]:
        """Checks run ahead of their turn: what they add is only recorded (see
        :meth:`record`), and the findings are as before once the block ends."""
        kept = (self._found, self._seen)
        self._found, self._seen = [], set()
        try:
            yield
        finally:
            self._found, self._seen = kept

    def mark(self) -> int:
        """A position to ask :meth:`since` what was found after it."""
        return len(self._found)

    def since(self, mark: int) -> list[Diagnostic]:
        return self._found[mark:]

    def sorted(self) -> tuple[Diagnostic, ...]:
        """Every finding by file, line, object, field, message and target."""
        return tuple(
            sorted(self._found, key=lambda d: (d.path, d.line, d.obj, d.field, d.message, d.target))
        )


def near(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    found = closest(word, choices, 0.6)
    return f" (did you mean '{found}'?)" if found else ""
