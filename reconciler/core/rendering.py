"""The render stage: resolve parameters with their provenance, select targets, render
components.

Precedence, lowest first (DESIGN §2): solution defaults < the instance's profile < instance
params < site params from the root down to the target's site (general, then solution-scoped,
at each level) < target params. General site and target params apply to the solutions that
declare them; everything else must name a declared parameter (checked by validation).

:func:`render_fleet` renders every (instance, target) pair of a revision once; validation
calls it between the document checks and the placement checks, and the placements it returns
are what explain, plan and sync use. Pure: reads nothing but the
:class:`~reconciler.core.model.Fleet` it is given (and secret files, through the resolver passed).
"""

from __future__ import annotations

import functools
import graphlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.core.errors import ReconcilerError, TemplateError
from reconciler.core.model import Fleet, Instance, Solution, Source, Target
from reconciler.core.provider_api import Component
from reconciler.core.schema_messages import split_field
from reconciler.core.secrets import is_secret_ref, secret_file
from reconciler.core.templating import has_template, render_value

__all__ = [
    "Origin",
    "ParamCache",
    "Placement",
    "RenderProblem",
    "Rendering",
    "ResolvedParam",
    "component_order",
    "fleet_pairs",
    "render_fleet",
    "render_placement",
    "resolve_params",
    "select_targets",
    "template_context",
]


@dataclass(frozen=True)
class Origin:
    """Where a parameter value was set."""

    level: str  # "default", "profile:<name>", "instance", a hierarchy level name, "target"
    obj: str  # "Solution/web", "Site/berlin", ...
    path: str  # repository-relative file
    line: int
    field: str  # dotted field path of the setting

    def format(self) -> str:
        return f"{self.path}:{self.line} ({self.level}, {self.obj} {self.field})"


@dataclass(frozen=True)
class ResolvedParam:
    name: str
    value: Any
    origin: Origin
    overridden: tuple[Origin, ...] = ()  # lower-precedence settings this value replaced
    secret: bool = False
    secret_ref: str = ""  # the site-local file a secretFrom value names
    error: str = ""  # why a secretFrom value could not be read (value is then a placeholder)

    @property
    def unresolved(self) -> bool:
        """A secretFrom value whose file was not read (repository-only validation, error)."""
        return bool(self.secret_ref) and (bool(self.error) or self.value is None)


@dataclass(frozen=True)
class RenderProblem:
    """A problem found while resolving or rendering one (instance, target) pair."""

    path: str
    line: int
    obj: str
    field: str
    message: str


@dataclass(frozen=True)
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


def select_targets(fleet: Fleet, instance: Instance,
                   labels: dict[str, Mapping[str, str]] | None = None,
                   by_site: Mapping[str, list[Target]] | None = None) -> list[Target]:
    """Targets an instance deploys to: its names plus every target its selector matches.

    For selecting the targets of many instances of one fleet: ``labels``, each target's
    labels, filled as they are needed; ``by_site``, the targets of each site."""
    chosen: dict[str, Target] = {}
    for name in instance.names:
        target = fleet.targets.get(name)
        if target is not None:
            chosen[name] = target
    sel = instance.selector
    if sel is not None and (sel.sites or sel.match_labels):
        roots = {s.name for ref in sel.sites if (s := fleet.find_site(ref)) is not None}
        # the sites whose chain reaches a root: once per site, not per target
        under = {name for name, chain in fleet.site_chains.items()
                 if any(s.name in roots for s in chain)}
        candidates: Iterable[Target] = fleet.targets.values()
        if sel.sites and by_site is not None:
            candidates = [t for site in under for t in by_site.get(site, ())]
        for target in candidates:
            if sel.sites and target.site not in under:
                continue
            if sel.match_labels:
                if labels is None:
                    found: Mapping[str, str] = fleet.target_labels(target)
                elif (known := labels.get(target.name)) is not None:
                    found = known
                else:
                    found = labels[target.name] = fleet.target_labels(target)
                if any(found.get(k) != v for k, v in sel.match_labels.items()):
                    continue
            chosen[target.name] = target
    return sorted(chosen.values(), key=lambda t: t.name)


def _layers(fleet: Fleet, instance: Instance, target: Target, solution: Solution
            ) -> Iterator[tuple[Origin, Mapping[str, Any], Source]]:
    """Each layer of settings, lowest precedence first: (origin template, values, source).

    A released solution's settings are named ``<tag>:<path>`` (``app/v1.2.0:solution.yaml``):
    they come from the tag, not from the tracked revision.
    """
    src = solution.source
    sol_path = f"{solution.release}:{src.path}" if solution.release else src.path
    for name, param in solution.parameters.items():
        if param.has_default:
            yield (Origin("default", f"Solution/{solution.name}", sol_path,
                          src.line_of("spec", "parameters", name, "default"),
                          f"spec.parameters.{name}.default"),
                   {name: param.rules["default"]}, src)
    if instance.profile and instance.profile in solution.profiles:
        yield (Origin(f"profile:{instance.profile}", f"Solution/{solution.name}", sol_path, 0,
                      f"spec.profiles.{instance.profile}"),
               solution.profiles[instance.profile], src)
    yield (Origin("instance", f"Instance/{instance.name}", instance.source.path, 0,
                  "spec.params"), instance.params, instance.source)
    for site in fleet.site_chains.get(target.site, ()):
        level = fleet.site_level(site.name)
        yield (Origin(level, f"Site/{site.name}", site.source.path, 0, "spec.params"),
               site.params, site.source)
        scoped = site.solution_params.get(solution.name)
        if scoped:
            yield (Origin(level, f"Site/{site.name}", site.source.path, 0,
                          f"spec.solutionParams.{solution.name}"), scoped, site.source)
    yield (Origin("target", f"Target/{target.name}", target.source.path, 0, "spec.params"),
           target.params, target.source)


SecretResolver = Callable[[Mapping[str, Any]], str]


def resolve_params(fleet: Fleet, instance: Instance, target: Target,
                   solution: Solution, *, secrets: SecretResolver | None = None
                   ) -> dict[str, ResolvedParam]:
    """Every declared parameter that has a value, with where the value came from.

    ``{secretFrom: {file: NAME}}`` values are read with ``secrets`` (the site's secrets
    directory); without one they stay unresolved (value None), which validation skips.
    """
    resolved: dict[str, ResolvedParam] = {}
    for template, values, source in _layers(fleet, instance, target, solution):
        for name, value in values.items():
            param = solution.parameters.get(name)
            if param is None:
                continue  # general params for other solutions; unknown names: validation
            if template.line:
                origin = template
            else:
                field_parts = [*template.field.split("."), name]
                origin = Origin(template.level, template.obj, template.path,
                                source.line_of(*field_parts), ".".join(field_parts))
            previous = resolved.get(name)
            overridden = (*previous.overridden, previous.origin) if previous else ()
            if is_secret_ref(value):
                ref, error, secret_value = "", "", None
                try:
                    ref = secret_file(value)
                    if secrets is not None:
                        secret_value = secrets(value)
                except ReconcilerError as exc:
                    error = exc.message
                resolved[name] = ResolvedParam(name, secret_value, origin, overridden, True,
                                               ref or "?", error)
                continue
            resolved[name] = ResolvedParam(name, value, origin, overridden, param.secret)
    return resolved


def template_context(fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                     values: Mapping[str, Any]) -> dict[str, Any]:
    site = fleet.sites.get(target.site)
    return {
        "params": dict(values),
        "target": {"name": target.name, "labels": fleet.target_labels(target),
                   "site": target.site},
        "site": {"name": target.site, "path": fleet.site_path(target.site),
                 "level": fleet.site_level(target.site) if site else "",
                 "labels": fleet.site_labels(target.site)},
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
    if isinstance(value, str):
        if not has_template(value):
            return value
        try:
            return render_value(value, context, source=where)
        except TemplateError as exc:
            problems.append((path, exc.message.removeprefix(where + ": ")))
            return value
    if isinstance(value, dict):
        return {k: _render(v, context, where, problems, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, where, problems, f"{path}[{i}]")
                for i, v in enumerate(value)]
    return value


class ParamCache:
    """Resolved parameters shared by the pairs of one instance at one site, for rendering
    many pairs of one fleet: a target that sets no parameters of its own resolves to what
    every such target of its site resolves to (the target's name is in no layer)."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, int, str], dict[str, ResolvedParam]] = {}
        self._dirs: dict[int, Path] = {}  # solution -> the directory it renders from

    def base_dir(self, fleet: Fleet, solution: Solution) -> Path:
        found = self._dirs.get(id(solution))
        if found is None:
            found = self._dirs[id(solution)] = _base_dir(fleet, solution)
        return found

    def resolve(self, fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                secrets: SecretResolver | None) -> dict[str, ResolvedParam]:
        if target.params:
            return resolve_params(fleet, instance, target, solution, secrets=secrets)
        key = (instance.name, id(solution), target.site)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = resolve_params(fleet, instance, target, solution,
                                                      secrets=secrets)
        return found


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
    if params is not None:
        resolved = params
    elif cache is not None:
        resolved = cache.resolve(fleet, instance, target, solution, secrets)
    else:
        resolved = resolve_params(fleet, instance, target, solution, secrets=secrets)
    values = {name: (f"<secret {p.secret_ref}>" if p.unresolved else p.value)
              for name, p in resolved.items()}
    context = template_context(fleet, instance, target, solution, values)
    problems: list[RenderProblem] = []
    by_name = {c.name: c for c in solution.components}
    components: list[Component] = []
    src = solution.source
    root = solution.root or fleet.root  # a released version renders from its own checkout
    base_dir = cache.base_dir(fleet, solution) if cache is not None \
        else _base_dir(fleet, solution)
    site_path = fleet.site_path(target.site)
    secret_names = frozenset(n for n, p in resolved.items() if p.secret)
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
    labels: dict[str, Mapping[str, str]] = {}
    by_site: dict[str, list[Target]] = {}
    for target in fleet.targets.values():
        by_site.setdefault(target.site, []).append(target)
    for inst in sorted(fleet.instances.values(), key=lambda i: i.name):
        solution = solutions.get(inst.name)
        if solution is None:
            continue
        chosen = select_targets(fleet, inst, labels, by_site)
        if not chosen:
            unplaced.append(inst)
        for target in chosen:
            placed = replace(inst, suspend=True) if not inst.suspend \
                and fleet.suspended(target) else inst
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
