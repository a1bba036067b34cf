"""Validate one revision of the fleet repository as a whole: load, check, render, check.

The stages, in order:

1. load (``reconciler.core.loading``): every document against its schema;
2. check the documents (``reconciler.core.checks``): references and cycles, parameter names and
   levels, templates as written, bindings and their providers, projects and their bounds;
3. render (``reconciler.core.rendering.render_fleet``): every (instance, target) pair, from the
   solution each instance pins (a release, or the head one);
4. check the placements: resolved parameter values, what rendering could not resolve, the
   providers' checks of rendered properties and the repository paths they name, the bounds
   of the instance's project.

The :class:`Report` holds every diagnostic and the placements per target, which the planner
and the executor use. Pure apart from reading the revision's files. Called by ``reconciler
validate``, ``explain``, ``plan`` and the daemon.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core.checks import references
from reconciler.core.checks.findings import Findings
from reconciler.core.checks.parameters import ParameterChecks
from reconciler.core.checks.paths import PathChecks
from reconciler.core.checks.projects import ProjectChecks, check_projects
from reconciler.core.checks.providers import ProviderChecks, check_bindings
from reconciler.core.checks.references import ReleaseLookup
from reconciler.core.checks.templates import TemplateChecks
from reconciler.core.diagnostics import Diagnostic
from reconciler.core.loading import DocumentCache, LoadResult, bulk_allocation, load_fleet
from reconciler.core.model import Fleet, Solution
from reconciler.core.placement_memo import PlacementMemo
from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import ProviderRegistry, default_registry
from reconciler.core.rendering import (
    ParamCache,
    Placement,
    SecretResolver,
    fleet_pairs,
    render_fleet,
    render_placement,
    select_targets,
)

__all__ = ["PERMISSIVE_POLICY", "ReleaseLookup", "Report", "validate_fleet",
           "validate_repository"]

# Validating a repository without a site's local config checks the repository alone.
PERMISSIVE_POLICY = LocalPolicy(
    allowed_providers=None, file_roots=(Path("/"),), allow_scripts=True, namespaces=None
)


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
        """Errors that stop ``target``: global ones, its own, and those of every instance
        that selects it — rendered or not: an instance that could not be rendered (a pinned
        release that does not exist) must hold the target, not look removed and be pruned."""
        instances = {p.instance.name for p in self.placements.get(target, ())}
        return [
            d
            for d in self.errors
            if (not d.target and not d.instance)
            or d.target == target
            or (not d.target and (d.instance in instances
                                  or self._selects(d.instance, target)))
        ]

    def _selects(self, instance: str, target: str) -> bool:
        found = self.fleet.instances.get(instance)
        return found is not None and any(
            t.name == target for t in select_targets(self.fleet, found))


def validate_fleet(
    loaded: LoadResult,
    *,
    registry: ProviderRegistry | None = None,
    policy: LocalPolicy | None = None,
    revision: str = "",
    secrets: SecretResolver | None = None,
    releases: ReleaseLookup | None = None,
    memo: PlacementMemo[Any] | None = None,
) -> Report:
    """Check a loaded revision, render it and check what it renders.

    With a ``memo`` (the plan's, across revisions), a pair whose inputs were rendered before
    is not rendered again (its findings are repeated), and the report has no placements:
    the memo has what it makes of each (:attr:`PlacementMemo.summaries`)."""
    fleet = loaded.fleet
    registry = registry or default_registry()
    policy = policy or PERMISSIVE_POLICY
    findings = Findings(loaded.diagnostics)
    parameters = ParameterChecks(fleet, findings)
    templates = TemplateChecks(findings)
    with bulk_allocation():  # every placement stays alive: see bulk_allocation
        # the documents
        references.check_sites(fleet, findings)
        references.check_targets(fleet, findings)
        references.check_components(fleet, findings)
        check_bindings(fleet, registry, policy, findings)
        parameters.check_sites()
        parameters.check_solutions()
        templates.check_solutions(fleet)
        pinned = references.pinned_releases(fleet, releases, findings)
        # an instance whose release cannot be had is checked against the head solution
        # but not rendered: what it would deploy is unknown
        checked = {name: pinned.get(name) or fleet.solutions.get(inst.solution)
                   for name, inst in fleet.instances.items()}
        references.check_instances(fleet, checked, findings)
        parameters.check_instances(checked)
        check_projects(fleet, loaded.manifest_files, findings)
        # the placements
        rendered = _rendered_solutions(fleet, pinned)
        if memo is not None:
            _check_pairs(loaded, rendered, memo, findings, (parameters, templates), registry,
                         policy, revision, secrets)
            return Report(fleet, findings.sorted(), {}, loaded.manifest_files)
        rendering = render_fleet(fleet, rendered, revision=revision, secrets=secrets)
        references.check_unplaced(rendering.unplaced, findings)
        providers = ProviderChecks(registry, PathChecks(fleet, findings), findings)
        projects = ProjectChecks(fleet, findings)
        for placement in rendering.pairs:
            parameters.check_placement(placement)
            templates.check_placement(placement)
            providers.check_placement(placement)
            projects.check_placement(placement)
    return Report(fleet, findings.sorted(), rendering.placements, loaded.manifest_files)


def _check_pairs(loaded: LoadResult, rendered: Mapping[str, Solution], memo: PlacementMemo[Any],
                 findings: Findings, checks: tuple[ParameterChecks, TemplateChecks],
                 registry: ProviderRegistry, policy: LocalPolicy, revision: str,
                 secrets: SecretResolver | None) -> None:
    """The placement stage through ``memo``: the same findings as rendering every pair."""
    fleet, fingerprints = loaded.fleet, loaded.fingerprints
    pairs, unplaced = fleet_pairs(fleet, rendered)
    references.check_unplaced(tuple(unplaced), findings)
    providers = ProviderChecks(registry, PathChecks(fleet, findings), findings)
    projects = ProjectChecks(fleet, findings)
    run = (checks[0].check_placement, checks[1].check_placement, providers.check_placement,
           projects.check_placement)
    memo.begin(fleet.root)
    context = memo.context(fleet, fingerprints,
                           (revision.encode(), str(id(registry)).encode(),
                            str(id(policy)).encode(), str(id(secrets)).encode()))
    cache = ParamCache()
    todo = [(memo.key(fleet, fingerprints, context, inst, target, solution),
             functools.partial(render_placement, fleet, inst, target, solution,
                               revision=revision, secrets=secrets, cache=cache))
            for inst, target, solution in pairs]
    memo.render_ahead(todo, findings, run)
    memo.solutions = dict(rendered)
    for (inst, target, _), (key, render) in zip(pairs, todo, strict=True):
        summary = memo.pair(key, findings, render, run)
        memo.summaries.setdefault(target.name, []).append((inst.name, summary))

def _rendered_solutions(fleet: Fleet, pinned: Mapping[str, Solution | None]
                        ) -> dict[str, Solution]:
    """Instance -> the solution it renders from: its pinned release, else the head one."""
    out: dict[str, Solution] = {}
    for name, inst in fleet.instances.items():
        solution = pinned[name] if name in pinned else fleet.solutions.get(inst.solution)
        if solution is not None:
            out[name] = solution
    return out


def validate_repository(
    root: Path,
    *,
    registry: ProviderRegistry | None = None,
    policy: LocalPolicy | None = None,
    revision: str = "",
    secrets: SecretResolver | None = None,
    releases: ReleaseLookup | None = None,
    cache: DocumentCache | None = None,
    memo: PlacementMemo[Any] | None = None,
) -> Report:
    """Load and validate the repository checked out at ``root`` (``cache`` and ``memo``:
    see :func:`~reconciler.core.loading.load_fleet` and :func:`validate_fleet`)."""
    return validate_fleet(
        load_fleet(root.resolve(), cache=cache),
        registry=registry,
        policy=policy,
        revision=revision,
        secrets=secrets,
        releases=releases,
        memo=memo,
    )
