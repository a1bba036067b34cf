"""Validate one revision of the fleet repository as a whole.

The loader has already checked each document against its schema; this module adds everything
that needs more than one document: references (parent site, target site, instance solution,
profile, target names, selector sites, binding roles and providers), cycles (site parents,
``dependsOn``), parameter rules (declared names, ``editableAt`` levels, the solution's schema
applied to the resolved value of every (instance, target) pair), templates (syntax, undefined
names), repository paths (no escape by ``..``, absolute paths or symlinks), and the providers'
own checks of binding configs and rendered properties.

Produces a :class:`Report`: every diagnostic, plus the rendered placements per target that the
planner uses. Pure apart from reading the revision's files. Called by ``reconciler validate``,
``explain``, ``plan`` and the daemon.
"""

from __future__ import annotations

import difflib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cerberus

from reconciler.diagnostics import Diagnostic, Severity
from reconciler.errors import TemplateError
from reconciler.loading import (
    LoadResult,
    _schema_errors,
    bulk_allocation,
    field_path,
    load_fleet,
)
from reconciler.model import Fleet, Instance, Solution, Target
from reconciler.provider_api import LocalPolicy
from reconciler.registry import ProviderRegistry, default_registry
from reconciler.rendering import (
    Placement,
    SecretResolver,
    render_placement,
    resolve_params,
    select_targets,
)
from reconciler.templating import has_template, referenced_paths, undeclared_roots

__all__ = ["PERMISSIVE_POLICY", "Report", "validate_fleet", "validate_repository"]

# (solution, version) -> the released Solution, or why it cannot be had
ReleaseLookup = Callable[[str, str], "Solution | str"]

# Validating a repository without a site's local config checks the repository alone.
PERMISSIVE_POLICY = LocalPolicy(
    allowed_providers=None, file_roots=(Path("/"),), allow_scripts=True, namespaces=None
)
PSEUDO_LEVELS = ("instance", "target")


@dataclass(frozen=True)
class Report:
    fleet: Fleet
    diagnostics: tuple[Diagnostic, ...]
    placements: Mapping[str, tuple[Placement, ...]] = field(default_factory=dict)
    manifest_files: tuple[str, ...] = ()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def errors_for(self, target: str) -> list[Diagnostic]:
        """Errors that stop ``target``: global ones, its instances' and its own."""
        instances = {p.instance.name for p in self.placements.get(target, ())}
        return [
            d
            for d in self.errors
            if (not d.target and not d.instance)
            or d.target == target
            or (d.instance in instances and not d.target)
        ]


def _near(word: str, choices: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else ""


class _Checker:
    def __init__(
        self,
        loaded: LoadResult,
        registry: ProviderRegistry,
        policy: LocalPolicy,
        revision: str,
        secrets: SecretResolver | None = None,
        releases: ReleaseLookup | None = None,
    ) -> None:
        self.secrets = secrets
        self.releases = releases
        self.versioned: dict[str, Solution] = {}  # instance -> its released solution
        self.fleet = loaded.fleet
        self.registry = registry
        self.policy = policy
        self.revision = revision
        self.out: list[Diagnostic] = list(loaded.diagnostics)
        self.seen: set[Diagnostic] = set(self.out)
        self.validators: dict[str, cerberus.Validator] = {}
        # schema errors per (rules or solution, value): most pairs share most values
        self.value_checks: dict[tuple[str, Any], list[tuple[tuple[Any, ...], str]]] = {}
        self.rule_keys: dict[str, dict[str, str]] = {}  # solution -> parameter -> rules JSON
        self.param_validators: dict[str, cerberus.Validator] = {}  # rules JSON -> validator
        # (solution id, component, property, value) -> findings of the first pair checked
        self.path_checks: dict[tuple[int, int, str, str], list[Diagnostic]] = {}
        self.levels = tuple(self.fleet.settings.hierarchy)
        self.template_errors: set[tuple[str, str]] = set()  # (file, field) found statically

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
        if diag not in self.seen:
            self.seen.add(diag)
            self.out.append(diag)

    # -- sites and targets -------------------------------------------------------------
    def sites(self) -> None:
        fleet = self.fleet
        for site in fleet.sites.values():
            src = site.source
            if (site.parent is not None and site.parent not in fleet.sites
                    and ("Site", site.parent) not in fleet.broken):
                self.add(
                    src.path,
                    src.line_of("spec", "parent"),
                    f"Site/{site.name}",
                    "spec.parent",
                    f"unknown parent site '{site.parent}'" + _near(site.parent, fleet.sites),
                )
        reported: set[str] = set()
        for name in sorted(fleet.sites):
            path: list[str] = []
            current: str | None = name
            while current is not None and current in fleet.sites and current not in path:
                path.append(current)
                current = fleet.sites[current].parent
            if current is not None and current in path:
                cycle = path[path.index(current) :]
                if not reported.intersection(cycle):
                    reported.update(cycle)
                    first = fleet.sites[min(cycle)]
                    loop = " -> ".join([*cycle, current])
                    self.add(
                        first.source.path,
                        first.source.line_of("spec", "parent"),
                        f"Site/{first.name}",
                        "spec.parent",
                        f"cycle in site parents: {loop}",
                    )
        for site in fleet.sites.values():
            chain = fleet.site_chains[site.name]
            depth = len(chain)
            # a chain whose top still has a known parent was cut by a cycle: already reported
            cut = chain[0].parent is not None and chain[0].parent in fleet.sites
            if site.name not in reported and not cut and depth > len(self.levels):
                self.add(
                    site.source.path,
                    site.source.line_of("spec", "parent"),
                    f"Site/{site.name}",
                    "spec.parent",
                    f"site is {depth} levels deep but the hierarchy has "
                    f"{len(self.levels)} ({', '.join(self.levels)})",
                )
            for sol, params in site.solution_params.items():
                solution = fleet.solutions.get(sol)
                if solution is None:
                    if ("Solution", sol) in fleet.broken:
                        continue
                    self.add(
                        site.source.path,
                        site.source.line_of("spec", "solutionParams", sol),
                        f"Site/{site.name}",
                        f"spec.solutionParams.{sol}",
                        f"unknown solution '{sol}'" + _near(sol, fleet.solutions),
                    )
                    continue
                self.declared(
                    solution,
                    params,
                    site.source,
                    f"Site/{site.name}",
                    ("spec", "solutionParams", sol),
                    fleet.site_level(site.name),
                )
        declared_anywhere = {p for s in fleet.solutions.values() for p in s.parameters}
        for obj, src, params in [
            *((f"Site/{s.name}", s.source, s.params) for s in fleet.sites.values()),
            *((f"Target/{t.name}", t.source, t.params) for t in fleet.targets.values()),
        ]:
            for pname in params:
                if pname not in declared_anywhere:
                    self.add(
                        src.path,
                        src.line_of("spec", "params", pname),
                        obj,
                        f"spec.params.{pname}",
                        "no solution declares this parameter" + _near(pname, declared_anywhere),
                        severity=Severity.WARNING,
                    )

    def targets(self) -> None:
        fleet = self.fleet
        for target in fleet.targets.values():
            src = target.source
            obj = f"Target/{target.name}"
            if target.site not in fleet.sites and ("Site", target.site) not in fleet.broken:
                self.add(
                    src.path,
                    src.line_of("spec", "site"),
                    obj,
                    "spec.site",
                    f"unknown site '{target.site}'" + _near(target.site, fleet.sites),
                )
            roles: set[str] = set()
            for i, binding in enumerate(target.bindings):
                where = ("spec", "bindings", i)
                if binding.role in roles:
                    self.add(
                        src.path,
                        src.line_of(*where, "role"),
                        obj,
                        f"spec.bindings[{i}].role",
                        f"role '{binding.role}' bound twice",
                    )
                roles.add(binding.role)
                provider = self.registry.get(binding.provider)
                if provider is None:
                    self.add(
                        src.path,
                        src.line_of(*where, "provider"),
                        obj,
                        f"spec.bindings[{i}].provider",
                        self.registry.describe_missing(binding.provider),
                        target=target.name,
                    )
                    continue
                allowed = self.policy.allowed_providers
                if allowed is not None and binding.provider not in allowed:
                    self.add(
                        src.path,
                        src.line_of(*where, "provider"),
                        obj,
                        f"spec.bindings[{i}].provider",
                        f"the local policy does not allow provider '{binding.provider}' "
                        f"(allowed: {', '.join(sorted(allowed)) or 'none'})",
                        target=target.name,
                    )
                    continue
                for problem in provider.check_config(binding.config, self.policy):
                    at: tuple[str | int, ...]
                    if problem.field == "provider":  # about the binding itself (e.g. policy)
                        fld, at = f"spec.bindings[{i}].provider", (*where, "provider")
                    else:
                        fld = f"spec.bindings[{i}].config" + (
                            f".{problem.field}" if problem.field else ""
                        )
                        at = (*where, "config", *problem.field.split("."))
                    self.add(
                        src.path,
                        src.line_of(*at),
                        obj,
                        fld,
                        problem.message,
                        target=target.name,
                    )

    # -- solutions ---------------------------------------------------------------------
    def solutions(self) -> None:
        for solution in self.fleet.solutions.values():
            src = solution.source
            obj = f"Solution/{solution.name}"
            names = [c.name for c in solution.components]
            for comp in solution.components:
                base = ("spec", "components", comp.index)
                if names.count(comp.name) > 1 and names.index(comp.name) != comp.index:
                    self.add(
                        src.path,
                        src.line_of(*base, "name"),
                        obj,
                        f"spec.components[{comp.index}].name",
                        f"duplicate component name '{comp.name}'",
                    )
                for j, dep in enumerate(comp.depends_on):
                    if dep not in names or dep == comp.name:
                        why = (
                            "a component cannot depend on itself"
                            if dep == comp.name
                            else f"unknown component '{dep}'" + _near(dep, names)
                        )
                        self.add(
                            src.path,
                            src.line_of(*base, "dependsOn", j),
                            obj,
                            f"spec.components[{comp.index}].dependsOn[{j}]",
                            why,
                        )
                self.templates(solution, comp.properties, (*base, "properties"))
            self.depends_cycles(solution)
            for pname, param in solution.parameters.items():
                for level in param.editable_at or ():
                    if level not in self.levels and level not in PSEUDO_LEVELS:
                        self.add(
                            src.path,
                            src.line_of("spec", "parameters", pname, "editableAt"),
                            obj,
                            f"spec.parameters.{pname}.editableAt",
                            f"unknown level '{level}' (levels: "
                            f"{', '.join((*self.levels, *PSEUDO_LEVELS))})",
                        )
            for profile, params in solution.profiles.items():
                for pname in params:
                    if pname not in solution.parameters:
                        self.add(
                            src.path,
                            src.line_of("spec", "profiles", profile, pname),
                            obj,
                            f"spec.profiles.{profile}.{pname}",
                            f"unknown parameter '{pname}'" + _near(pname, solution.parameters),
                        )

    def depends_cycles(self, solution: Solution) -> None:
        deps = {c.name: [d for d in c.depends_on if d != c.name] for c in solution.components}
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> list[str] | None:
            state[name] = 1
            stack.append(name)
            for dep in deps.get(name, []):
                if dep not in deps:
                    continue
                if state.get(dep) == 1:
                    return [*stack[stack.index(dep) :], dep]
                if dep not in state:
                    found = visit(dep)
                    if found:
                        return found
            stack.pop()
            state[name] = 2
            return None

        for name in deps:
            if name not in state:
                cycle = visit(name)
                if cycle:
                    comp = next(c for c in solution.components if c.name == cycle[0])
                    self.add(
                        solution.source.path,
                        solution.source.line_of("spec", "components", comp.index, "dependsOn"),
                        f"Solution/{solution.name}",
                        f"spec.components[{comp.index}].dependsOn",
                        f"cycle in dependsOn: {' -> '.join(cycle)}",
                    )
                    return

    def templates(self, solution: Solution, value: Any, path: tuple[str | int, ...]) -> None:
        before = len(self.out)
        self._templates(solution, value, path)
        for diag in self.out[before:]:
            self.template_errors.add((diag.path, diag.field))

    def _templates(self, solution: Solution, value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._templates(solution, v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._templates(solution, v, (*path, i))
        elif isinstance(value, str) and has_template(value):
            src = solution.source
            obj = f"Solution/{solution.name}"
            fld = field_path(path)
            line = src.line_of(*path)
            try:
                for name in sorted(undeclared_roots(value, source=fld)):
                    self.add(
                        src.path,
                        line,
                        obj,
                        fld,
                        f"template names undefined '{name}' (known: params, target, site, "
                        "instance, solution)",
                    )
                for chain in referenced_paths(value, source=fld):
                    if chain[0] == "params" and chain[1] not in solution.parameters:
                        self.add(
                            src.path,
                            line,
                            obj,
                            fld,
                            f"template names undefined parameter '{chain[1]}'"
                            + _near(chain[1], solution.parameters),
                        )
            except TemplateError as exc:
                self.add(src.path, line, obj, fld, exc.message.removeprefix(fld + ": "))

    # -- parameters --------------------------------------------------------------------
    def declared(
        self,
        solution: Solution,
        params: Mapping[str, Any],
        src: Any,
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
                self.add(
                    src.path,
                    line,
                    obj,
                    fld,
                    f"unknown parameter '{pname}' of solution "
                    f"'{solution.name}'" + _near(pname, solution.parameters),
                    instance=instance,
                )
            elif param.editable_at is not None and level not in param.editable_at:
                self.add(
                    src.path,
                    line,
                    obj,
                    fld,
                    f"parameter '{pname}' cannot be set at level '{level}' (editableAt: "
                    f"{', '.join(param.editable_at)})",
                    instance=instance,
                )

    def solution_for(self, inst: Instance) -> Solution | None:
        """The head Solution, or the released one an instance pins with ``version``."""
        head = self.fleet.solutions.get(inst.solution)
        if not inst.version:
            return head
        src = inst.source
        where = (src.path, src.line_of("spec", "version"), f"Instance/{inst.name}", "spec.version")
        if self.releases is None:
            self.add(*where, f"version {inst.version} not checked (the repository's tags are "
                     "not available here); the head solution is shown",
                     severity=Severity.WARNING, instance=inst.name)
            return head
        found = self.releases(inst.solution, inst.version)
        if isinstance(found, str):
            self.add(*where, found, instance=inst.name)
            return head
        self.versioned[inst.name] = found
        return found

    def instances(self) -> None:
        fleet = self.fleet
        for inst in fleet.instances.values():
            src = inst.source
            obj = f"Instance/{inst.name}"
            solution = self.solution_for(inst)
            if solution is None and ("Solution", inst.solution) not in fleet.broken:
                self.add(
                    src.path,
                    src.line_of("spec", "solution"),
                    obj,
                    "spec.solution",
                    f"unknown solution '{inst.solution}'" + _near(inst.solution, fleet.solutions),
                    instance=inst.name,
                )
            for i, name in enumerate(inst.names):
                if name not in fleet.targets and ("Target", name) not in fleet.broken:
                    self.add(
                        src.path,
                        src.line_of("spec", "targets", "names", i),
                        obj,
                        f"spec.targets.names[{i}]",
                        f"unknown target '{name}'" + _near(name, fleet.targets),
                        instance=inst.name,
                    )
            if inst.selector is not None:
                for i, ref in enumerate(inst.selector.sites):
                    if fleet.find_site(ref) is None:
                        self.add(
                            src.path,
                            src.line_of("spec", "targets", "selector", "sites", i),
                            obj,
                            f"spec.targets.selector.sites[{i}]",
                            f"unknown site '{ref}'" + _near(ref.rsplit("/", 1)[-1], fleet.sites),
                            instance=inst.name,
                        )
            if solution is None:
                continue
            if inst.profile is not None and inst.profile not in solution.profiles:
                self.add(
                    src.path,
                    src.line_of("spec", "profile"),
                    obj,
                    "spec.profile",
                    f"unknown profile '{inst.profile}' of solution '{solution.name}'"
                    + _near(inst.profile, solution.profiles),
                    instance=inst.name,
                )
            self.declared(
                solution, inst.params, src, obj, ("spec", "params"), "instance", instance=inst.name
            )

    # -- pairs -------------------------------------------------------------------------
    def validator(self, solution: Solution) -> cerberus.Validator:
        found = self.validators.get(solution.name)
        if found is None:
            schema = {n: dict(p.rules) for n, p in solution.parameters.items()}
            found = cerberus.Validator(schema, allow_unknown=False)
            self.validators[solution.name] = found
        return found

    def value_errors(
        self, solution: Solution, values: Mapping[str, Any]
    ) -> list[tuple[tuple[Any, ...], str]]:
        """Schema errors of one pair's resolved values, each (rules, value) checked once.

        Pairs share most of their values and solutions often share parameter definitions, so
        checking parameter by parameter with a cache turns thousands of cerberus runs into a
        few hundred. Rules that relate two fields (dependencies, excludes) need the whole
        mapping: such a solution is checked as a whole, once per distinct set of values.
        """
        keys = self.rule_keys.get(solution.name)
        if keys is None:
            keys = {
                n: json.dumps(p.rules, sort_keys=True, default=repr)
                for n, p in solution.parameters.items()
            }
            self.rule_keys[solution.name] = keys
        if any(_CROSS_FIELD_RULES & p.rules.keys() for p in solution.parameters.values()):
            key = (solution.name, json.dumps(values, sort_keys=True, default=repr))
            errors = self.value_checks.get(key)
            if errors is None:
                validator = self.validator(solution)
                errors = (
                    []
                    if validator.validate(values, normalize=False)
                    else list(_schema_errors(validator._errors, {}))
                )
                self.value_checks[key] = errors
            return errors
        found: list[tuple[tuple[Any, ...], str]] = []
        for pname, value in values.items():
            rules_key = keys.get(pname)
            if rules_key is None:
                continue  # not declared: reported where it is set
            key = (rules_key, _value_key(value))
            errors = self.value_checks.get(key)
            if errors is None:
                validator = self.param_validators.get(rules_key)
                if validator is None:
                    rules = dict(solution.parameters[pname].rules)
                    validator = cerberus.Validator({"value": rules}, allow_unknown=False)
                    self.param_validators[rules_key] = validator
                errors = (
                    []
                    if validator.validate({"value": value}, normalize=False)
                    else list(_schema_errors(validator._errors, {}))
                )
                self.value_checks[key] = errors
            found.extend(((pname, *path[1:]), message) for path, message in errors)
        return found

    def placements(self) -> dict[str, list[Placement]]:
        fleet = self.fleet
        result: dict[str, list[Placement]] = defaultdict(list)
        for inst in sorted(fleet.instances.values(), key=lambda i: i.name):
            solution = self.versioned.get(inst.name) or fleet.solutions.get(inst.solution)
            if solution is None or (inst.version and inst.name not in self.versioned
                                    and self.releases is not None):
                continue
            chosen = select_targets(fleet, inst)
            if not chosen:
                self.add(
                    inst.source.path,
                    inst.source.line_of("spec", "targets"),
                    f"Instance/{inst.name}",
                    "spec.targets",
                    "selects no target",
                    severity=Severity.WARNING,
                    instance=inst.name,
                )
            for target in chosen:
                placement = self.pair(inst, target, solution)
                result[target.name].append(placement)
        return result

    def pair(self, inst: Instance, target: Target, solution: Solution) -> Placement:
        fleet = self.fleet
        resolved = resolve_params(fleet, inst, target, solution, secrets=self.secrets)
        pair = (target.name, inst.name)
        # general params at site and target levels: editableAt is checked where they apply
        for site in fleet.site_chains.get(target.site, ()):
            general = {k: v for k, v in site.params.items() if k in solution.parameters}
            self.declared(
                solution,
                general,
                site.source,
                f"Site/{site.name}",
                ("spec", "params"),
                fleet.site_level(site.name),
            )
        general = {k: v for k, v in target.params.items() if k in solution.parameters}
        self.declared(
            solution, general, target.source, f"Target/{target.name}", ("spec", "params"), "target"
        )
        for pname, param in solution.parameters.items():
            if param.rules.get("required") and pname not in resolved:
                self.add(
                    solution.source.path,
                    solution.source.line_of("spec", "parameters", pname),
                    f"Solution/{solution.name}",
                    f"spec.parameters.{pname}",
                    f"required parameter has no value on target '{target.name}' "
                    f"(instance '{inst.name}')",
                    target=pair[0],
                    instance=pair[1],
                )
        for rp in resolved.values():
            if rp.error:
                self.add(rp.origin.path, rp.origin.line, rp.origin.obj, rp.origin.field,
                         rp.error, target=pair[0], instance=pair[1])
        # unresolved secrets (no site, or unreadable) have no value to check
        values = {n: p.value for n, p in resolved.items() if not p.unresolved}
        for path, message in self.value_errors(solution, values):
            pname = str(path[0]) if path else ""
            origin = resolved[pname].origin if pname in resolved else None
            if origin is None:
                continue
            shown = "<secret>" if resolved[pname].secret else repr(values.get(pname))
            self.add(
                origin.path,
                origin.line,
                origin.obj,
                origin.field,
                f"{message} (value {shown} for solution '{solution.name}')",
                target=pair[0],
                instance=pair[1],
            )
        placement = render_placement(
            fleet, inst, target, solution, revision=self.revision, params=resolved
        )
        for problem in placement.problems:
            if (problem.path, problem.field) in self.template_errors:
                continue  # the template itself is wrong: reported once, not per target
            self.add(
                problem.path,
                problem.line,
                problem.obj,
                problem.field,
                problem.message,
                target=pair[0],
                instance=pair[1],
            )
        self.bindings(placement)
        return placement

    def bindings(self, placement: Placement) -> None:
        target, solution = placement.target, placement.solution
        src = solution.source
        obj = f"Solution/{solution.name}"
        pair = (target.name, placement.instance.name)
        comps = {c.name: c for c in solution.components}
        for component in placement.components:
            comp = comps[component.name]
            base = ("spec", "components", comp.index)
            binding = target.binding(component.type)
            if binding is None:
                roles = ", ".join(b.role for b in target.bindings) or "none"
                self.add(
                    target.source.path,
                    target.source.line_of("spec", "bindings"),
                    f"Target/{target.name}",
                    "spec.bindings",
                    f"no binding for role '{component.type}' needed by component "
                    f"'{component.name}' of solution '{solution.name}' (bound roles: "
                    f"{roles})",
                    target=pair[0],
                    instance=pair[1],
                )
                continue
            provider = self.registry.get(binding.provider)
            if provider is None:
                continue  # reported on the target
            for prop in sorted(getattr(provider, "untemplated", frozenset())):
                raw = comp.properties.get(prop)
                if raw is not None and _contains_template(raw):
                    self.add(
                        src.path,
                        src.line_of(*base, "properties", prop),
                        obj,
                        f"spec.components[{comp.index}].properties.{prop}",
                        f"templates are not allowed in '{prop}' for provider "
                        f"'{binding.provider}' (parameters reach it another way)",
                        target=pair[0],
                        instance=pair[1],
                    )
            for prop in sorted(getattr(provider, "path_properties", frozenset())):
                if prop in component.properties:
                    self.repo_path(component.properties[prop], placement, comp.index, prop)
            for problem in provider.check_properties(component.properties):
                parts = problem.field.split(".") if problem.field else []
                self.add(
                    src.path,
                    src.line_of(*base, "properties", *parts),
                    obj,
                    f"spec.components[{comp.index}].properties"
                    + (f".{problem.field}" if problem.field else ""),
                    problem.message,
                    target=pair[0],
                    instance=pair[1],
                )

    def repo_path(self, value: Any, placement: Placement, index: int, prop: str) -> None:
        """A property naming a repository path must exist and stay inside the repository.

        The answer depends on the solution and the value, not on the target: the file system
        is asked once per distinct path and the findings repeated for each pair.
        """
        key = (id(placement.solution), index, prop, repr(value))
        found = self.path_checks.get(key)
        if found is None:
            before = len(self.out)
            self._repo_path(value, placement, index, prop)
            self.path_checks[key] = self.out[before:]
            return
        for d in found:
            self.add(d.path, d.line, d.obj, d.field, d.message, severity=d.severity,
                     target=placement.target.name, instance=placement.instance.name)

    def _repo_path(self, value: Any, placement: Placement, index: int, prop: str) -> None:
        if isinstance(value, list):
            value = value[0] if value and isinstance(value[0], str) and "/" in value[0] else None
        if not isinstance(value, str) or "://" in value or not value:
            return
        solution = placement.solution
        src = solution.source
        root = self.fleet.root.resolve()
        line = src.line_of("spec", "components", index, "properties", prop)
        obj = f"Solution/{solution.name}"
        fld = f"spec.components[{index}].properties.{prop}"
        pair = (placement.target.name, placement.instance.name)
        if os.path.isabs(value):
            self.add(
                src.path,
                line,
                obj,
                fld,
                f"'{value}' is absolute; paths are relative to {src.path}",
                target=pair[0],
                instance=pair[1],
            )
            return
        candidate = self.fleet.root / solution.directory / value
        if not os.path.normpath(candidate).startswith(str(self.fleet.root)):
            self.add(
                src.path,
                line,
                obj,
                fld,
                f"'{value}' leaves the repository",
                target=pair[0],
                instance=pair[1],
            )
            return
        real = candidate.resolve()
        if not real.is_relative_to(root):
            self.add(
                src.path,
                line,
                obj,
                fld,
                f"'{value}' is a symlink that points outside the repository",
                target=pair[0],
                instance=pair[1],
            )
        elif not real.exists():
            self.add(
                src.path,
                line,
                obj,
                fld,
                f"'{value}' does not exist",
                target=pair[0],
                instance=pair[1],
            )

    def run(self) -> dict[str, list[Placement]]:
        self.sites()
        self.targets()
        self.solutions()
        self.instances()
        return self.placements()


_CROSS_FIELD_RULES = frozenset({"dependencies", "excludes"})


def _value_key(value: Any) -> Any:
    """A hashable key for a parameter value (the type too: 1, 1.0 and True differ)."""
    if value is None or isinstance(value, str | int | float | bool):
        return (type(value).__name__, value)
    return ("json", json.dumps(value, sort_keys=True, default=repr))


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_template(v) for v in value.values())
    return False


def validate_fleet(
    loaded: LoadResult,
    *,
    registry: ProviderRegistry | None = None,
    policy: LocalPolicy | None = None,
    revision: str = "",
    secrets: SecretResolver | None = None,
    releases: ReleaseLookup | None = None,
) -> Report:
    checker = _Checker(
        loaded,
        registry or default_registry(),
        policy or PERMISSIVE_POLICY,
        revision,
        secrets,
        releases,
    )
    with bulk_allocation():  # every placement stays alive: see bulk_allocation
        placements = checker.run()
    diagnostics = tuple(
        sorted(checker.out, key=lambda d: (d.path, d.line, d.obj, d.field, d.message, d.target))
    )
    return Report(
        loaded.fleet,
        diagnostics,
        {t: tuple(ps) for t, ps in placements.items()},
        loaded.manifest_files,
    )


def validate_repository(
    root: Path,
    *,
    registry: ProviderRegistry | None = None,
    policy: LocalPolicy | None = None,
    revision: str = "",
    secrets: SecretResolver | None = None,
    releases: ReleaseLookup | None = None,
) -> Report:
    """Load and validate the repository checked out at ``root``."""
    return validate_fleet(
        load_fleet(root.resolve()),
        registry=registry,
        policy=policy,
        revision=revision,
        secrets=secrets,
        releases=releases,
    )
