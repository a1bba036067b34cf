"""One document as the loader sees it, and where the loader collects its findings.

Used by ``reconciler.core.loading`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.model import Source
from reconciler.core.yamlio import YamlDocument

__all__ = ["Collector", "LoadedDocument"]


@dataclass
class LoadedDocument:
    rel: str
    doc: YamlDocument

    @property
    def data(self) -> Any:
        return self.doc.data

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "")) if isinstance(self.data, dict) else ""

    @property
    def name(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def obj(self) -> str:
        return f"{self.kind or '?'}/{self.name or '?'}"

    def source(self) -> Source:
        return Source(self.rel, self.doc.line, self.doc.lines)


class Collector:
    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, path: str, line: int, obj: str, fld: str, message: str,
            severity: Severity = Severity.ERROR) -> None:
        self.items.append(Diagnostic(path, line, obj, fld, message, severity))
