"""Templates: syntax and names checked once per solution, then what each placement could not
render.

A component property's template must parse, and name only the context's roots (``params``,
``target``, ``site``, ``instance``, ``solution``) and, under ``params``, declared parameters.
Those findings concern the solution, so they are reported once; rendering a placement can
still fail (an undefined label key, a value of the wrong shape), and that is reported for the
(target, instance) pair, unless the template itself was already reported. Called by
``reconciler.core.validation``.
"""

from __future__ import annotations

import functools
from typing import Any

from reconciler.core.checks.findings import Findings, near
from reconciler.core.errors import TemplateError
from reconciler.core.model import Fleet, Solution
from reconciler.core.rendering import Placement
from reconciler.core.schema_messages import field_path
from reconciler.core.templating import has_template, referenced_paths, undeclared_roots

__all__ = ["TemplateChecks", "contains_template"]


def contains_template(value: Any) -> bool:
    """Whether a string anywhere inside ``value`` holds a template."""
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    return False


class TemplateChecks:
    """Template findings of one revision; remembers which fields were found wrong as written."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        # (solution, release, field) found wrong as written; a release pinned by an instance
        # is not among them (its own tree was checked), nor another solution of the same file
        self._static: set[tuple[str, str, str]] = set()

    def check_solutions(self, fleet: Fleet) -> None:
        for solution in fleet.solutions.values():
            for comp in solution.components:
                self.check_value(solution, comp.properties,
                                 ("spec", "components", comp.index, "properties"))

    def check_value(self, solution: Solution, value: Any, path: tuple[str | int, ...]) -> None:
        """Every template inside ``value`` (at ``path`` in the solution's document)."""
        mark = self.findings.mark()
        self._walk(solution, value, path)
        for diag in self.findings.since(mark):
            self._static.add((solution.name, solution.release, diag.field))

    def _walk(self, solution: Solution, value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._walk(solution, v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._walk(solution, v, (*path, i))
        elif isinstance(value, str) and has_template(value):
            self._template(solution, value, path)

    def _template(self, solution: Solution, text: str, path: tuple[str | int, ...]) -> None:
        src = solution.source
        obj = f"Solution/{solution.name}"
        fld = field_path(path)
        line = src.line_of(*path)
        roots, chains, error = _analysed(text, fld)
        for name in roots:
            self.findings.add(src.path, line, obj, fld,
                              f"template names undefined '{name}' (known: params, target, "
                              "site, instance, solution)")
        for chain in chains:
            if chain[0] == "params" and chain[1] not in solution.parameters:
                self.findings.add(src.path, line, obj, fld,
                                  f"template names undefined parameter '{chain[1]}'"
                                  + near(chain[1], solution.parameters))
        if error is not None:
            self.findings.add(src.path, line, obj, fld, error.removeprefix(fld + ": "))

    def check_placement(self, placement: Placement) -> None:
        """What rendering this pair could not do, unless the template itself is wrong."""
        solution = placement.solution
        for problem in placement.problems:
            if (solution.name, solution.release, problem.field) in self._static:
                continue  # the template itself is wrong: reported once, not per target
            self.findings.add(
                problem.path,
                problem.line,
                problem.obj,
                problem.field,
                problem.message,
                target=placement.target.name,
                instance=placement.instance.name,
            )


@functools.lru_cache(maxsize=4096)
def _analysed(text: str, source: str
              ) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...], str | None]:
    """The undefined names of a template, the name chains it reads, and why it cannot be
    read (None: it can), as the checks find them one after the other: once per template,
    not once per revision (the plan validates two)."""
    roots: tuple[str, ...] = ()
    chains: list[tuple[str, ...]] = []
    try:
        roots = tuple(sorted(undeclared_roots(text, source=source)))
        for chain in referenced_paths(text, source=source):
            chains.append(chain)
    except TemplateError as exc:
        return roots, tuple(chains), exc.message
    return roots, tuple(chains), None
