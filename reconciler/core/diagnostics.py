"""Diagnostics: one finding about the fleet repository, with where it is.

Produced by the loader and the validator, printed by ``reconciler validate`` as
``path:line: Kind/name: field: message`` and written into status files.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Diagnostic", "Severity"]


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str  # repository-relative file path ("" when no file applies)
    line: int  # 1-based; 0 when unknown
    obj: str  # "Kind/name", or "" when the finding is about the whole file
    field: str  # dotted field path inside the object, or ""
    message: str
    severity: Severity = Severity.ERROR
    target: str = ""  # set when the finding only concerns one target
    instance: str = ""  # set when the finding only concerns one instance

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        where = where or "<repository>"
        parts = [where]
        if self.obj:
            parts.append(self.obj)
        if self.field:
            parts.append(self.field)
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return ": ".join(parts) + ": " + prefix + self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "line": self.line,
            "object": self.obj,
            "field": self.field,
            "message": self.message,
            "severity": self.severity.value,
        }
        if self.target:
            out["target"] = self.target
        if self.instance:
            out["instance"] = self.instance
        return out
