"""The diagnostics one validation run collects, each once, and the "did you mean" hint.

Every check module writes into one :class:`Findings`; ``reconciler.core.validation`` hands its
sorted content to the :class:`~reconciler.core.validation.Report`.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.schema_messages import closest

__all__ = ["Findings", "near"]


class Findings:
    """Diagnostics in the order found; a finding repeated (by every pair it concerns, say)
    is kept once."""

    __slots__ = ("_found", "_seen")

    def __init__(self, initial: Iterable[Diagnostic] = ()) -> None:
        self._found: list[Diagnostic] = list(initial)
        self._seen: set[Diagnostic] = set(self._found)

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
        diag = Diagnostic(path, line, obj, fld, message, severity, target, instance)
        if diag not in self._seen:
            self._seen.add(diag)
            self._found.append(diag)

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
