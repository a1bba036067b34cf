"""Parameters: declared names, set only where ``editableAt`` allows, values that fit the rules.

Names set at any level (profile, instance, site, solution-scoped site, target) must be
parameters the solution declares, at a level its ``editableAt`` lists (levels themselves must
exist); a general site or target parameter no solution declares is a warning. Each rendered
placement then gets its resolved values checked: required ones present, ``secretFrom`` files
read, and the solution's cerberus rules met (a failing secret is shown as ``<secret>``).
Called by ``reconciler.core.validation``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import cerberus

from reconciler.core.checks.findings import Findings, near
from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.model import Fleet, Solution, Source
from reconciler.core.rendering import Placement
from reconciler.core.schema_messages import field_path, schema_errors
from reconciler.core.secrets import PLACEHOLDER

__all__ = ["PSEUDO_LEVELS", "ParameterChecks"]

PSEUDO_LEVELS = ("instance", "target")  # levels besides the hierarchy's own
_CROSS_FIELD_RULES = frozenset({"dependencies", "excludes"})

# a schema finding: (path in the checked mapping, message)
_ValueError = tuple[tuple[Any, ...], str]


_SCALAR = (str, int, float, bool)


def _value_key(value: Any) -> Any:
    """A hashable key for a parameter value (the type too: 1, 1.0 and True differ)."""
    if value is None or isinstance(value, _SCALAR):
        return (type(value).__name__, value)
    return ("json", json.dumps(value, sort_keys=True, default=repr))


class ParameterChecks:
    """The parameter checks of one revision, with the caches that make checking every
    placement cheap."""

    def __init__(self, fleet: Fleet, findings: Findings) -> None:
        self.fleet = fleet
        self.findings = findings
        self.levels = tuple(fleet.settings.hierarchy)
        # keyed by solution and release: a pinned release may declare other rules than the
        # head solution of the same name
        self._validators: dict[tuple[str, str], cerberus.Validator] = {}  # whole-mapping check
        # schema errors per (rules or solution, value): most pairs share most values
        self._value_checks: dict[tuple[Any, Any], list[_ValueError]] = {}
        self._rule_keys: dict[tuple[str, str], dict[str, str]] = {}  # parameter -> rules JSON
        self._param_validators: dict[str, cerberus.Validator] = {}  # rules JSON -> validator
        # (solution, release, object) whose general params were checked: the same for every
        # placement that reaches them
        self._general_checked: dict[tuple[str, str, str, str], list[Diagnostic]] = {}
        self._required_names: dict[tuple[str, str], tuple[str, ...]] = {}
        self._cross_field: dict[tuple[str, str], bool] = {}  # rules that relate two fields
        self._value_keys: dict[int, tuple[Any, Any]] = {}  # id -> (value, its key)

    # -- documents ---------------------------------------------------------------------
    def check_sites(self) -> None:
        """Solution-scoped site params are declared; general ones are declared somewhere."""
        fleet = self.fleet
        for site in fleet.sites.values():
            for sol, params in site.solution_params.items():
                solution = fleet.solutions.get(sol)
                if solution is None:
                    continue  # an unknown solution: a reference error
                self.declared(
                    solution,
                    params,
                    site.source,
                    f"Site/{site.name}",
                    ("spec", "solutionParams", sol),
                    fleet.site_level(site.name),
                )
        declared_anywhere = {p for s in fleet.solutions.values() for p in s.parameters}
        for obj, src, names in [
            *((f"Site/{s.name}", s.source, s.params) for s in fleet.sites.values()),
            *((f"Target/{t.name}", t.source, t.params) for t in fleet.targets.values()),
        ]:
            for pname in names:
                if pname not in declared_anywhere:
                    self.findings.add(
                        src.path,
                        src.line_of("spec", "params", pname),
                        obj,
                        f"spec.params.{pname}",
                        "no solution declares this parameter" + near(pname, declared_anywhere),
                        severity=Severity.WARNING,
                    )

    def check_solutions(self) -> None:
        """``editableAt`` names known levels; profiles set declared parameters."""
        names = (*self.levels, *PSEUDO_LEVELS)
        for solution in self.fleet.solutions.values():
            src = solution.source
            obj = f"Solution/{solution.name}"
            for pname, param in solution.parameters.items():
                for level in param.editable_at or ():
                    if level not in names:
                        self.findings.add(
                            src.path,
                            src.line_of("spec", "parameters", pname, "editableAt"),
                            obj,
                            f"spec.parameters.{pname}.editableAt",
                            f"unknown level '{level}' (levels: {', '.join(names)})",
                        )
            for profile, params in solution.profiles.items():
                for pname in params:
                    if pname not in solution.parameters:
                        self.findings.add(
                            src.path,
                            src.line_of("spec", "profiles", profile, pname),
                            obj,
                            f"spec.profiles.{profile}.{pname}",
                            f"unknown parameter '{pname}'" + near(pname, solution.parameters),
                        )

    def check_instances(self, solutions: Mapping[str, Solution | None]) -> None:
        """Instance params are declared by the solution each instance is checked against."""
        for inst in self.fleet.instances.values():
            solution = solutions.get(inst.name)
            if solution is not None:
                self.declared(solution, inst.params, inst.source, f"Instance/{inst.name}",
                              ("spec", "params"), "instance", instance=inst.name)

    def declared(
        self,
        solution: Solution,
        params: Mapping[str, Any],
        src: Source,
        obj: str,
        base: tuple[str, ...],
        level: str,
        *,
        instance: str = "",
    ) -> None:
        """Named parameters must be declared and editable at this level."""
        for pname in params:
            param = solution.parameters.get(pname)
            fld = field_path((*base, pname))
            line = src.line_of(*base, pname)
            if param is None:
                self.findings.add(
                    src.path,
                    line,
                    obj,
                    fld,
                    f"unknown parameter '{pname}' of solution "
                    f"'{solution.name}'" + near(pname, solution.parameters),
                    instance=instance,
                )
            elif param.editable_at is not None and level not in param.editable_at:
                self.findings.add(
                    src.path,
                    line,
                    obj,
                    fld,
                    f"parameter '{pname}' cannot be set at level '{level}' (editableAt: "
                    f"{', '.join(param.editable_at)})",
                    instance=instance,
                )

    # -- placements --------------------------------------------------------------------
    def check_placement(self, placement: Placement) -> None:
        """Where the pair's general params apply, that they may be set there; its values."""
        fleet = self.fleet
        inst, target, solution = placement.instance, placement.target, placement.solution
        resolved = placement.params
        # general params at site and target levels: editableAt is checked where they apply
        for site in fleet.site_chains.get(target.site, ()):
            self._general(solution, "Site", site.name, site.params, site.source)
        self._general(solution, "Target", target.name, target.params, target.source)
        for pname in self._required(solution):
            if pname not in resolved:
                self.findings.add(
                    solution.source.path,
                    solution.source.line_of("spec", "parameters", pname),
                    f"Solution/{solution.name}",
                    f"spec.parameters.{pname}",
                    f"required parameter has no value on target '{target.name}' "
                    f"(instance '{inst.name}')",
                    target=target.name,
                    instance=inst.name,
                )
        for rp in resolved.values():
            if rp.error:
                self.findings.add(rp.origin.path, rp.origin.line, rp.origin.obj,
                                  rp.origin.field, rp.error, target=target.name,
                                  instance=inst.name)
        # unresolved secrets (no site, or unreadable) have no value to check
        values = {n: p.value for n, p in resolved.items() if not p.unresolved}
        for path, message in self.value_errors(solution, values):
            pname = str(path[0]) if path else ""
            if pname not in resolved:
                continue
            origin = resolved[pname].origin
            shown = PLACEHOLDER if resolved[pname].secret else repr(values.get(pname))
            self.findings.add(
                origin.path,
                origin.line,
                origin.obj,
                origin.field,
                f"{message} (value {shown} for solution '{solution.name}')",
                target=target.name,
                instance=inst.name,
            )

    def _required(self, solution: Solution) -> tuple[str, ...]:
        which = (solution.name, solution.release)
        found = self._required_names.get(which)
        if found is None:
            found = self._required_names[which] = tuple(
                pname for pname, param in solution.parameters.items()
                if param.rules.get("required"))
        return found

    def _general(self, solution: Solution, kind: str, name: str, params: Mapping[str, Any],
                 src: Source) -> None:
        key = (solution.name, solution.release, kind, name)
        found = self._general_checked.get(key)
        if found is not None:  # said again for each placement: see PlacementMemo
            if found:
                self.findings.replay(found)
            return
        obj = f"{kind}/{name}"
        level = "target" if kind == "Target" else self.fleet.site_level(name)
        record = self.findings.record()
        general = {k: v for k, v in params.items() if k in solution.parameters}
        self.declared(solution, general, src, obj, ("spec", "params"), level)
        self.findings.stop(record)
        self._general_checked[key] = record

    def _value_key(self, value: Any) -> Any:
        """``_value_key(value)``, a value that is not a scalar made its key once: pairs
        share the very objects of their documents' values, never changed while checked."""
        if value is None or isinstance(value, _SCALAR):
            return (type(value).__name__, value)
        found = self._value_keys.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        key = _value_key(value)
        self._value_keys[id(value)] = (value, key)  # the value kept: its id stays its own
        return key

    def value_errors(self, solution: Solution, values: Mapping[str, Any]) -> list[_ValueError]:
        """Schema errors of one pair's resolved values, each (rules, value) checked once.

        Pairs share most of their values and solutions often share parameter definitions, so
        checking parameter by parameter with a cache turns thousands of cerberus runs into a
        few hundred. Rules that relate two fields (dependencies, excludes) need the whole
        mapping: such a solution is checked as a whole, once per distinct set of values.
        """
        which = (solution.name, solution.release)
        keys = self._rule_keys.get(which)
        if keys is None:
            keys = {
                n: json.dumps(p.rules, sort_keys=True, default=repr)
                for n, p in solution.parameters.items()
            }
            self._rule_keys[which] = keys
            self._cross_field[which] = any(_CROSS_FIELD_RULES & p.rules.keys()
                                           for p in solution.parameters.values())
        if self._cross_field[which]:
            whole = (which, json.dumps(values, sort_keys=True, default=repr))
            errors = self._value_checks.get(whole)
            if errors is None:
                validator = self._validator(solution)
                errors = (
                    []
                    if validator.validate(values, normalize=False)
                    else list(schema_errors(validator._errors, {}))
                )
                self._value_checks[whole] = errors
            return errors
        found: list[_ValueError] = []
        for pname, value in values.items():
            rules_key = keys.get(pname)
            if rules_key is None:
                continue  # not declared: reported where it is set
            key = (rules_key, self._value_key(value))
            errors = self._value_checks.get(key)
            if errors is None:
                validator = self._param_validators.get(rules_key)
                if validator is None:
                    rules = dict(solution.parameters[pname].rules)
                    validator = cerberus.Validator({"value": rules}, allow_unknown=False)
                    self._param_validators[rules_key] = validator
                errors = (
                    []
                    if validator.validate({"value": value}, normalize=False)
                    else list(schema_errors(validator._errors, {}))
                )
                self._value_checks[key] = errors
            if errors:
                found.extend(((pname, *path[1:]), message) for path, message in errors)
        return found

    def _validator(self, solution: Solution) -> cerberus.Validator:
        which = (solution.name, solution.release)
        found = self._validators.get(which)
        if found is None:
            schema = {n: dict(p.rules) for n, p in solution.parameters.items()}
            found = cerberus.Validator(schema, allow_unknown=False)
            self._validators[which] = found
        return found
