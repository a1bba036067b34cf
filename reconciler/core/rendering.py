"""The render stage: resolve parameters with their provenance, select targets, render
components.

Parameters are resolved by :mod:`reconciler.core.param_resolution` (precedence and
provenance) and targets selected by :mod:`reconciler.core.target_selection`; both are
re-exported here. :func:`render_fleet` renders every (instance, target) pair of a revision
once; validation calls it between the document checks and the placement checks, and the
placements it returns are what explain, plan and sync use, for as long as the revision is in
use (in a daemon, for every target it serves). So the placements of one rendering share
what they have in common (:class:`ParamCache`): resolved parameters, the parts of the
template context that are the same for every pair of a target, a site, an instance or a
solution, and properties a template does not change; these are only ever read (templates
see them through an immutable sandbox). Pure: reads nothing but the
:class:`~reconciler.core.model.Fleet` it is given (and secret files, through the resolver
passed).
"""

from __future__ import annotations

import contextlib
import functools
import graphlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.core.errors import TemplateError
from reconciler.core.model import Fleet, Instance, Solution, Target
from reconciler.core.param_resolution import (
    Origin,
    ResolvedParam,
    SecretResolver,
    SharedParams,
    resolve_params,
)
from reconciler.core.provider_api import Component
from reconciler.core.schema_messages import split_field
from reconciler.core.target_selection import select_targets
from reconciler.core.templating import has_template, render_value

__all__ = [
    "Origin",
    "ParamCache",
    "Placement",
    "RenderProblem",
    "Rendering",
    "ResolvedParam",
    "SecretResolver",
    "component_order",
    "fleet_pairs",
    "render_fleet",
    "render_placement",
    "resolve_params",
    "select_targets",
    "template_context",
]


@dataclass(frozen=True, slots=True)
class RenderProblem:
    """A problem found while resolving or rendering one (instance, target) pair."""

    path: str
    line: int
    obj: str
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Placement:
    """One instance on one target: resolved parameters and rendered components."""

    instance: Instance
    target: Target
    solution: Solution
    params: Mapping[str, ResolvedParam]
    components: tuple[Component, ...]  # in dependsOn order
    problems: tuple[RenderProblem, ...]

    @property
    def values(self) -> dict[str, Any]:
        return {name: p.value for name, p in self.params.items()}


def template_context(fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                     values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "params": dict(values),
        "target": {"name": target.name, "labels": fleet.target_labels(target),
                   "site": target.site},
        "site": _site_context(fleet, target.site),
        "instance": {"name": instance.name, "labels": dict(instance.labels)},
        "solution": {"name": solution.name, "labels": dict(solution.labels)},
    }


def component_order(solution: Solution) -> list[str]:
    """Component names in dependsOn order (declaration order among independent ones)."""
    return list(_order(tuple((c.name, c.depends_on) for c in solution.components)))


@functools.lru_cache(maxsize=4096)
def _order(graph: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[str, ...]:
    # cached: every (instance, target) pair of a solution asks for the same order
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    names = [name for name, _ in graph]
    for name, depends_on in graph:
        sorter.add(name, *[d for d in depends_on if d in names])
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return tuple(names)
    order: list[str] = []
    position = {n: i for i, n in enumerate(names)}
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: position.get(n, 0))
        order.extend(ready)
        sorter.done(*ready)
    return tuple(order)


def _render(value: Any, context: Mapping[str, Any], where: str,
            problems: list[tuple[str, str]], path: str) -> Any:
    """``value`` with its templates rendered; a dict or list no template changed is
    returned itself (the solution's, shared by every pair: nothing changes it)."""
    if isinstance(value, str):
        if not has_template(value):
            return value
        try:
            return render_value(value, context, source=where)
        except TemplateError as exc:
            problems.append((path, exc.message.removeprefix(where + ": ")))
            return value
    if isinstance(value, dict):
        out = {k: _render(v, context, where, problems, f"{path}.{k}") for k, v in value.items()}
        return value if all(out[k] is v for k, v in value.items()) else out
    if isinstance(value, list):
        items = [_render(v, context, where, problems, f"{path}[{i}]")
                 for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


class ParamCache:
    """What the pairs of one fleet rendered at once share (see the module docstring):
    resolved parameters (:class:`~reconciler.core.param_resolution.SharedParams`), the
    values of one resolution, the parts of the template context that are the same for
    every pair of a target, a site, an instance or a solution, equal label dicts and sets of
    secret names, and each solution's directory."""

    def __init__(self) -> None:
        self._params = SharedParams()
        self._dirs: dict[int, Path] = {}  # solution -> the directory it renders from
        self._values: dict[int, tuple[Mapping[str, ResolvedParam], dict[str, Any]]] = {}
        self._sites: dict[str, tuple[str, dict[str, Any]]] = {}  # site -> (path, context)
        self._targets: dict[str, tuple[Target, dict[str, Any]]] = {}
        self._named: dict[tuple[str, str], tuple[Mapping[str, str], dict[str, Any]]] = {}
        self._same: dict[Any, Any] = {}  # equal label dicts and sets of names: one object

    def base_dir(self, fleet: Fleet, solution: Solution) -> Path:
        found = self._dirs.get(id(solution))
        if found is None:
            found = self._dirs[id(solution)] = _base_dir(fleet, solution)
        return found

    def resolve(self, fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                secrets: SecretResolver | None) -> dict[str, ResolvedParam]:
        return self._params.resolve(fleet, instance, target, solution, secrets)

    def values(self, resolved: Mapping[str, ResolvedParam]) -> dict[str, Any]:
        """:func:`_values` of ``resolved``, once per resolution shared by several pairs."""
        found = self._values.get(id(resolved))
        if found is None or found[0] is not resolved:
            found = self._values[id(resolved)] = (resolved, _values(resolved))
        return found[1]

    def secret_names(self, resolved: Mapping[str, ResolvedParam]) -> frozenset[str]:
        names = _secret_names(resolved)
        found: frozenset[str] = self._same.setdefault(names, names)
        return found

    def site(self, fleet: Fleet, site: str) -> tuple[str, dict[str, Any]]:
        """The site's path and its part of the template context."""
        found = self._sites.get(site)
        if found is None:
            context = _site_context(fleet, site)
            found = self._sites[site] = (context["path"], context)
        return found

    def context(self, fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                values: dict[str, Any]) -> dict[str, Any]:
        """What :func:`template_context` returns, its parts shared (``values`` itself)."""
        known = self._targets.get(target.name)
        if known is None or known[0] is not target:
            labels = fleet.target_labels(target)
            with contextlib.suppress(TypeError):  # a value that cannot be a key: not shared
                labels = self._same.setdefault(("labels", *_exactly(labels)), labels)
            known = self._targets[target.name] = (
                target, {"name": target.name, "labels": labels, "site": target.site})
        return {"params": values, "target": known[1],
                "site": self.site(fleet, target.site)[1],
                "instance": self._named_context("instance", instance.name, instance.labels),
                "solution": self._named_context("solution", solution.name, solution.labels)}

    def _named_context(self, kind: str, name: str, labels: Mapping[str, str]
                       ) -> dict[str, Any]:
        found = self._named.get((kind, name))
        if found is None or (found[0] is not labels
                             and _exactly(found[0]) != _exactly(labels)):
            found = (labels, {"name": name, "labels": dict(labels)})
            self._named.setdefault((kind, name), found)
        return found[1]


def _exactly(mapping: Mapping[str, Any]) -> tuple[tuple[str, type, Any], ...]:
    """What makes two mappings the same to a template: keys in order, values and types."""
    return tuple((k, type(v), v) for k, v in mapping.items())


def _values(resolved: Mapping[str, ResolvedParam]) -> dict[str, Any]:
    """The values templates and providers see (a placeholder for an unread secret)."""
    return {name: (f"<secret {p.secret_ref}>" if p.unresolved else p.value)
            for name, p in resolved.items()}


def _secret_names(resolved: Mapping[str, ResolvedParam]) -> frozenset[str]:
    return frozenset(n for n, p in resolved.items() if p.secret)


def _site_context(fleet: Fleet, site: str) -> dict[str, Any]:
    return {"name": site, "path": fleet.site_path(site),
            "level": fleet.site_level(site) if site in fleet.sites else "",
            "labels": fleet.site_labels(site)}


def _base_dir(fleet: Fleet, solution: Solution) -> Path:
    root = solution.root or fleet.root
    return Path(root / solution.directory if solution.directory else root)


def render_placement(fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                     *, revision: str = "", params: dict[str, ResolvedParam] | None = None,
                     secrets: SecretResolver | None = None,
                     cache: ParamCache | None = None) -> Placement:
    """Resolve and render one (instance, target) pair; problems are returned, not raised.

    ``cache``: one for every pair of a fleet rendered at once (the solutions must stay
    alive as long as it does)."""
    if params is None:
        params = cache.resolve(fleet, instance, target, solution, secrets) \
            if cache is not None else resolve_params(fleet, instance, target, solution,
                                                     secrets=secrets)
    resolved = params
    if cache is not None:
        values = cache.values(resolved)
        context = cache.context(fleet, instance, target, solution, values)
        base_dir = cache.base_dir(fleet, solution)
        site_path = cache.site(fleet, target.site)[0]
        secret_names = cache.secret_names(resolved)
    else:
        values = _values(resolved)
        context = template_context(fleet, instance, target, solution, values)
        base_dir = _base_dir(fleet, solution)
        site_path = fleet.site_path(target.site)
        secret_names = _secret_names(resolved)
    problems: list[RenderProblem] = []
    by_name = {c.name: c for c in solution.components}
    components: list[Component] = []
    src = solution.source
    root = solution.root or fleet.root  # a released version renders from its own checkout
    for name in component_order(solution):
        comp = by_name[name]
        found: list[tuple[str, str]] = []
        where = f"{src.path}: Solution/{solution.name}: spec.components[{comp.index}]"
        props = _render(comp.properties, context, where, found,
                        f"spec.components[{comp.index}].properties")
        for fld, message in found:
            parts = split_field(fld)
            problems.append(RenderProblem(src.path, src.line_of(*parts),
                                          f"Solution/{solution.name}", fld, message))
        components.append(Component(
            name=comp.name, type=comp.type, properties=props, params=values,
            instance=instance.name, solution=solution.name, target=target.name,
            site=site_path, revision=revision, base_dir=base_dir,
            repo_root=root, depends_on=comp.depends_on, secret_params=secret_names,
            template_context=context))
    return Placement(instance, target, solution, resolved, tuple(components), tuple(problems))


@dataclass(frozen=True)
class Rendering:
    """Every placement of one revision."""

    placements: Mapping[str, tuple[Placement, ...]]  # target -> its placements, by instance
    pairs: tuple[Placement, ...]  # every placement, by instance name, then target name
    unplaced: tuple[Instance, ...]  # rendered instances that select no target


def fleet_pairs(fleet: Fleet, solutions: Mapping[str, Solution]
                ) -> tuple[list[tuple[Instance, Target, Solution]], list[Instance]]:
    """The (instance, target, solution) triples :func:`render_fleet` renders, by instance
    name then target name, and the instances that select no target.

    A suspended target or site suspends every instance placed on it: the instance of such
    a triple says so."""
    pairs: list[tuple[Instance, Target, Solution]] = []
    unplaced: list[Instance] = []
    for inst in sorted(fleet.instances.values(), key=lambda i: i.name):
        solution = solutions.get(inst.name)
        if solution is None:
            continue
        chosen = select_targets(fleet, inst)
        if not chosen:
            unplaced.append(inst)
        suspended: Instance | None = None  # one copy for all its suspended targets
        for target in chosen:
            placed = inst
            if not inst.suspend and fleet.suspended(target):
                placed = suspended = suspended or replace(inst, suspend=True)
            pairs.append((placed, target, solution))
    return pairs, unplaced


def render_fleet(fleet: Fleet, solutions: Mapping[str, Solution], *, revision: str = "",
                 secrets: SecretResolver | None = None) -> Rendering:
    """Render every instance that has a solution in ``solutions`` on each target it selects.

    ``solutions`` maps an instance to the solution it renders from (the head one, or the
    release its ``version`` pins); an instance without one is not rendered.
    """
    by_target: dict[str, list[Placement]] = {}
    pairs: list[Placement] = []
    chosen, unplaced = fleet_pairs(fleet, solutions)
    cache = ParamCache()
    for inst, target, solution in chosen:
        placement = render_placement(fleet, inst, target, solution, revision=revision,
                                     secrets=secrets, cache=cache)
        by_target.setdefault(target.name, []).append(placement)
        pairs.append(placement)
    return Rendering({t: tuple(ps) for t, ps in by_target.items()}, tuple(pairs),
                     tuple(unplaced))
