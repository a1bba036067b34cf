"""One side of an offline plan: a revision validated, summed up compactly, described on demand.

The offline plan (:mod:`reconciler.engine.review`) compares what every target would deploy at
two revisions. Formatting every component of both revisions to compare the texts cost most of
its time at fleet scale, so each side is reduced first to a :class:`SideSummary`: per target,
its site, the validation errors that hold it back, and per component a digest of everything
the comparison looks at (type, ``dependsOn``, rendered properties, resolved parameter values,
the content of the repository files it names). Equal digests mean equal components; only the
components whose digests differ are described in full (:class:`ComponentView`: the masked
values, where each parameter was set, the files), so the cost after validation follows the
number of changed components, not the size of the fleet.

:func:`open_sides` validates the base, then the head, in this process, sharing what they
have in common (:class:`~reconciler.engine.review_digests.Shared`: documents by the content of
their file, placements by their inputs), so the head costs what differs from the base; with
two CPUs the base's placements are rendered by two processes at once. A side answers
``summary()`` and then ``describe(keys)`` for the components that differ. Secret values are
shown masked and compared by a digest keyed with a key of this plan only.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.loading import bulk_allocation
from reconciler.core.model import Fleet
from reconciler.core.projects import Ownership
from reconciler.core.provider_api import Component
from reconciler.core.registry import ProviderRegistry
from reconciler.core.rendering import (
    Origin,
    ParamCache,
    Placement,
    render_placement,
    select_targets,
)
from reconciler.core.secrets import MASK, mask
from reconciler.core.validation import Report, validate_repository
from reconciler.engine.review_digests import PairSummary, Shared, tree_digest
from reconciler.gitops.gitrun import Git
from reconciler.gitops.releases import ReleaseResolver
from reconciler.gitops.source import export

__all__ = ["ComponentView", "ParamView", "Side", "SideSummary", "TargetSide", "open_sides",
           "tree_digest"]

Key = tuple[str, str]  # (target, "<instance>/<component>")


@dataclass(frozen=True)
class TargetSide:
    """One target at one revision: its site path, the errors that hold it back there, and
    ``key -> (type, digest, suspended)`` for each of its components."""

    site: str
    errors: tuple[Diagnostic, ...]
    components: Mapping[str, tuple[str, bytes, bool]]


@dataclass(frozen=True)
class SideSummary:
    commit: str
    targets: Mapping[str, TargetSide]
    errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...]
    instance_errors: Mapping[str, tuple[Diagnostic, ...]]  # errors of one instance, by name
    instance_projects: Mapping[str, str] = field(default_factory=dict)  # none: no projects


@dataclass(frozen=True)
class ParamView:
    """A resolved parameter as the plan may show it: masked when secret; ``token`` tells two
    values apart without showing them (a keyed digest, for secrets only)."""

    value: Any
    origin: Origin
    secret: bool = False
    token: bytes = b""


@dataclass(frozen=True)
class ComponentView:
    """A component described in full for the plan (secrets masked)."""

    type: str
    shown: Mapping[str, Any]  # type, dependsOn, properties, params: what the diff shows
    params: Mapping[str, ParamView]
    files: Mapping[str, str]  # repository path it names -> the file or directory on disk
    defined_at: str  # "<solution file>:<line>" of the component's definition


class Side(Protocol):
    """One revision, validated: a summary first, then descriptions of chosen components."""

    def summary(self) -> SideSummary: ...

    def describe(self, keys: Sequence[Key]) -> dict[Key, ComponentView]: ...

    def close(self) -> None: ...


class _Revision:
    """A revision validated and summed up at once (where the side runs). Of the report it
    keeps the fleet and the solution each instance renders from: a description renders its
    (instance, target) pair again, as validation did; placements are never kept (the memo
    keeps each pair's summary)."""

    def __init__(self, git_dir: Path, commit: str, scratch: Path, shared: Shared) -> None:
        git = Git(git_dir)

        def exporter(rev: str) -> Path:  # into the plan's scratch directory, removed after
            dest = Path(tempfile.mkdtemp(prefix=f"{rev[:12]}-", dir=scratch))
            export(git, rev, dest)
            return dest

        self.digests = shared.digests
        report = validate_repository(exporter(commit), registry=shared.registry,
                                     releases=ReleaseResolver(git_dir, exporter),
                                     cache=shared.cache, memo=shared.memo)
        pairs, shared.memo.summaries = shared.memo.summaries, {}
        self.fleet = report.fleet
        self.solutions, shared.memo.solutions = shared.memo.solutions, {}
        self._summary = self._sum_up(commit, report, pairs)

    def summary(self) -> SideSummary:
        return self._summary

    def _sum_up(self, commit: str, report: Report,
                pairs: Mapping[str, list[tuple[str, PairSummary]]]) -> SideSummary:
        fleet = report.fleet
        held = _ErrorIndex(report.errors)
        unrendered = held.unrendered(fleet, self.solutions)
        targets: dict[str, TargetSide] = {}
        with bulk_allocation():
            for name, target in fleet.targets.items():
                placed = pairs.get(name, ())
                components: dict[str, tuple[str, bytes, bool]] = {}
                for _, found in placed:
                    components.update(found)
                instances = {i for i, _ in placed} | unrendered.get(name, set())
                targets[name] = TargetSide(fleet.site_path(target.site),
                                           held.of(name, instances), components)
        return SideSummary(commit, targets, tuple(report.errors),
                           tuple(d for d in report.diagnostics if not d.is_error),
                           held.by_instance, _projects(fleet))

    # -- descriptions --------------------------------------------------------------------
    def describe(self, keys: Sequence[Key]) -> dict[Key, ComponentView]:
        wanted: dict[str, set[str]] = {}
        for target, key in keys:
            wanted.setdefault(target, set()).add(key)
        out: dict[Key, ComponentView] = {}
        fleet = self.fleet
        cache = ParamCache()  # as validation renders the pairs
        for target, names in wanted.items():
            for instance in sorted({name.partition("/")[0] for name in names}):
                p = render_placement(fleet, fleet.instances[instance], fleet.targets[target],
                                     self.solutions[instance], cache=cache)
                for c in p.components:
                    if c.key in names:
                        out[(target, c.key)] = self._view(p, c)
        return out

    def _view(self, p: Placement, c: Component) -> ComponentView:
        secrets = {str(c.params[n]) for n in c.secret_params if n in c.params}
        params = {k: (MASK if k in c.secret_params else v) for k, v in c.params.items()}
        shown = {"type": c.type, "dependsOn": list(c.depends_on),
                 "properties": mask(dict(c.properties), secrets), "params": params}
        views = {}
        for name, rp in p.params.items():
            secret = name in c.secret_params
            token = self.digests.digest(rp.value) if secret else b""
            views[name] = ParamView(MASK if secret else params.get(name, rp.value),
                                    rp.origin, secret, token)
        solution = p.solution
        src = solution.source
        index = next((d.index for d in solution.components if d.name == c.name), 0)
        path = f"{solution.release}:{src.path}" if solution.release else src.path
        defined = f"{path}:{src.line_of('spec', 'components', index)}"
        files = {label: str(found) for label, found in self.digests.files(p.target, c)}
        return ComponentView(c.type, shown, views, files, defined)


class _ErrorIndex:
    """The errors that hold each target back, indexed once instead of a scan per target: as
    :meth:`Report.errors_for` finds them (global ones, the target's own, those of the
    instances placed on it), and also those of an instance that selects the target but could
    not be rendered (a release that cannot be had): without them the target would seem to
    lose that instance's components. :meth:`of_instances` adds those of the instances the
    target had at the other revision."""

    def __init__(self, errors: Iterable[Diagnostic]) -> None:
        self.everywhere: list[Diagnostic] = []
        self.by_target: dict[str, list[Diagnostic]] = {}
        self.by_instance: dict[str, tuple[Diagnostic, ...]] = {}
        for d in errors:
            if not d.target and not d.instance:
                self.everywhere.append(d)
            elif d.target:
                self.by_target.setdefault(d.target, []).append(d)
            else:
                self.by_instance[d.instance] = (*self.by_instance.get(d.instance, ()), d)

    def unrendered(self, fleet: Fleet, rendered: Iterable[str]) -> dict[str, set[str]]:
        """Target -> the instances with errors that select it but were not rendered."""
        out: dict[str, set[str]] = {}
        for name in sorted(set(self.by_instance) - set(rendered)):
            if name in fleet.instances:
                for target in select_targets(fleet, fleet.instances[name]):
                    out.setdefault(target.name, set()).add(name)
        return out

    def of(self, target: str, instances: Iterable[str]) -> tuple[Diagnostic, ...]:
        found = [*self.everywhere, *self.by_target.get(target, ())]
        for instance in set(instances):
            found += self.by_instance.get(instance, ())
        return tuple(sorted(set(found)))


def _projects(fleet: Fleet) -> dict[str, str]:
    """Instance -> the project owning its document ("" for none: an overlap); empty when
    the fleet declares no projects."""
    own = Ownership(fleet.projects)
    if not own.active:
        return {}
    return {name: project.name if (project := own.project_of(inst.source.path)) else ""
            for name, inst in fleet.instances.items()}



# -- where a side runs ---------------------------------------------------------------------

class _Here:
    """A side validated in this process."""

    def __init__(self, revision: _Revision) -> None:
        self.revision = revision

    def summary(self) -> SideSummary:
        return self.revision.summary()

    def describe(self, keys: Sequence[Key]) -> dict[Key, ComponentView]:
        return self.revision.describe(keys)

    def close(self) -> None:
        del self.revision


def open_sides(git_dir: Path, base: str, head: str, scratch: Path,
               registry: ProviderRegistry, *, parallel: bool | None = None
               ) -> tuple[Side, Side]:
    """Validate ``base``, then ``head`` for the cost of what differs (see the module
    docstring); exports go under ``scratch``, which the caller removes. ``parallel``: the
    pairs of the base are rendered by two processes at once (None: when two CPUs are
    there)."""
    if parallel is None:
        parallel = len(os.sched_getaffinity(0)) >= 2 \
            and "fork" in multiprocessing.get_all_start_methods()
    shared = Shared(registry, os.urandom(32), 2 if parallel else 1)
    first = _Here(_Revision(git_dir, base, scratch, shared))
    return first, _Here(_Revision(git_dir, head, scratch, shared))
