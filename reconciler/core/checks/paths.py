"""Repository paths: a property that names a file or directory of the repository (a template,
manifests, a chart, a script) must name one that exists and stays inside the repository.

Absolute paths, ``..`` that leave the repository and symlinks that point out of it are
errors. The answer depends on the solution and the value, not on the target: the file system
is asked once per distinct path and the findings repeated for each pair. Called by the
provider checks for each property a provider lists in ``path_properties``.
"""

from __future__ import annotations

import os
from typing import Any

from reconciler.core.checks.findings import Findings
from reconciler.core.diagnostics import Diagnostic
from reconciler.core.model import Fleet
from reconciler.core.rendering import Placement

__all__ = ["PathChecks"]


class PathChecks:
    def __init__(self, fleet: Fleet, findings: Findings) -> None:
        self.fleet = fleet
        self.findings = findings
        self._root = fleet.root.resolve()
        # (solution id, component, property, value) -> findings of the first pair checked
        self._checked: dict[tuple[int, int, str, str], list[Diagnostic]] = {}

    def check(self, value: Any, placement: Placement, index: int, prop: str) -> None:
        """``value`` of property ``prop`` of component ``index``, rendered for ``placement``."""
        key = (id(placement.solution), index, prop, repr(value))
        found = self._checked.get(key)
        if found is None:
            record = self.findings.record()
            self._check(value, placement, index, prop)
            self.findings.stop(record)
            self._checked[key] = record
            return
        for d in found:
            self.findings.add(d.path, d.line, d.obj, d.field, d.message, severity=d.severity,
                              target=placement.target.name, instance=placement.instance.name)

    def _check(self, value: Any, placement: Placement, index: int, prop: str) -> None:
        if isinstance(value, list):  # a command line: its first word, when it is a path
            value = value[0] if value and isinstance(value[0], str) and "/" in value[0] else None
        if not isinstance(value, str) or "://" in value or not value:
            return
        solution = placement.solution
        src = solution.source
        line = src.line_of("spec", "components", index, "properties", prop)
        obj = f"Solution/{solution.name}"
        fld = f"spec.components[{index}].properties.{prop}"

        def add(message: str) -> None:
            self.findings.add(src.path, line, obj, fld, message,
                              target=placement.target.name, instance=placement.instance.name)

        if os.path.isabs(value):
            add(f"'{value}' is absolute; paths are relative to {src.path}")
            return
        candidate = self.fleet.root / solution.directory / value
        if not os.path.normpath(candidate).startswith(str(self.fleet.root)):
            add(f"'{value}' leaves the repository")
            return
        real = candidate.resolve()
        if not real.is_relative_to(self._root):
            add(f"'{value}' is a symlink that points outside the repository")
        elif not real.exists():
            add(f"'{value}' does not exist")
