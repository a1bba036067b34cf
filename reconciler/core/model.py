"""The fleet model: validated, frozen values built by the loader.

Nothing past ``reconciler.core.loading`` sees raw YAML; it sees these. A :class:`Fleet` is one
revision of the fleet repository. Every object keeps its :class:`Source` (file and line
index) so that validation errors and parameter provenance can name the exact line.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from reconciler.core.line_index import compact_lines
from reconciler.core.projects import Project
from reconciler.core.rollouts import Rollout
from reconciler.core.sharing import shared_map, shared_text
from reconciler.core.target_selection import TargetIndex
from reconciler.core.windows import Window
from reconciler.core.yamlio import line_at

__all__ = [
    "API_VERSION",
    "KINDS",
    "Binding",
    "ComponentDef",
    "Defaults",
    "Fleet",
    "Instance",
    "ParameterDef",
    "Selector",
    "Settings",
    "Site",
    "Solution",
    "Source",
    "StatusLayout",
    "Target",
]

API_VERSION = "reconciler/v1"
KINDS = ("Settings", "Site", "Target", "Solution", "Instance", "Project")

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """Where an object is written: repository-relative file, first line, line index (kept
    compactly, see :mod:`reconciler.core.line_index`)."""

    path: str
    line: int
    lines: Mapping[FieldPath, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", compact_lines(self.lines))

    def line_of(self, *path: str | int) -> int:
        return line_at(self.lines, path, self.line)


class StatusLayout(enum.Enum):
    PER_SITE = "per-site"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class Defaults:
    interval: int = 180  # seconds between scheduled runs
    jitter: int = 30  # seconds of random delay added to each scheduled run
    retries: int = 3  # provider retries before a target is Failed
    retry_delay: float = 5.0  # first backoff delay, doubled each retry
    health_timeout: int = 300  # seconds a component may take to become healthy


@dataclass(frozen=True, slots=True)
class Settings:
    hierarchy: tuple[str, ...] = ("region", "site", "line")
    defaults: Defaults = Defaults()
    status_layout: StatusLayout = StatusLayout.PER_SITE
    status_branch: str = "reconciler-fleet-status"
    ignore: tuple[str, ...] = ()  # glob patterns of YAML files that are not manifests
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    labels: Mapping[str, str]
    parent: str | None
    params: Mapping[str, Any]
    solution_params: Mapping[str, Mapping[str, Any]]
    source: Source
    description: str = ""
    windows: tuple[Window, ...] = ()  # maintenance windows (docs/failure-handling.md)
    suspend: bool = False  # nothing under this site is changed


@dataclass(frozen=True, slots=True)
class Binding:
    role: str
    provider: str
    config: Mapping[str, Any]

    def __post_init__(self) -> None:
        # the few roles and providers of a fleet: one string each (reconciler.core.sharing)
        object.__setattr__(self, "role", shared_text(self.role))
        object.__setattr__(self, "provider", shared_text(self.provider))


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    labels: Mapping[str, str]
    site: str
    params: Mapping[str, Any]
    bindings: tuple[Binding, ...]
    source: Source
    description: str = ""
    windows: tuple[Window, ...] = ()
    suspend: bool = False

    def __post_init__(self) -> None:
        # what targets mostly have in common, one object (reconciler.core.sharing)
        object.__setattr__(self, "labels", shared_map(self.labels))
        object.__setattr__(self, "site", shared_text(self.site))
        object.__setattr__(self, "params", shared_map(self.params))

    def binding(self, role: str) -> Binding | None:
        return next((b for b in self.bindings if b.role == role), None)


@dataclass(frozen=True, slots=True)
class ParameterDef:
    name: str
    rules: Mapping[str, Any]  # cerberus rules, without our own keys
    editable_at: tuple[str, ...] | None  # None: settable at every level
    secret: bool = False
    description: str = ""

    @property
    def has_default(self) -> bool:
        return "default" in self.rules


@dataclass(frozen=True, slots=True)
class ComponentDef:
    name: str
    type: str
    properties: Mapping[str, Any]
    depends_on: tuple[str, ...]
    index: int  # position in spec.components, for line lookups


@dataclass(frozen=True, slots=True)
class Solution:
    name: str
    labels: Mapping[str, str]
    parameters: Mapping[str, ParameterDef]
    profiles: Mapping[str, Mapping[str, Any]]
    components: tuple[ComponentDef, ...]
    source: Source
    description: str = ""
    # set for a released version (tag <name>/v<version>): the checkout it was loaded from
    root: Path | None = None
    release: str = ""

    @property
    def directory(self) -> str:
        """Repository-relative directory of the file: relative paths resolve from here."""
        parent = str(Path(self.source.path).parent)
        return "" if parent == "." else parent


@dataclass(frozen=True, slots=True)
class Selector:
    sites: tuple[str, ...]
    match_labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    labels: Mapping[str, str]
    solution: str
    version: str | None
    names: tuple[str, ...]
    selector: Selector | None
    profile: str | None
    params: Mapping[str, Any]
    suspend: bool
    source: Source
    on_failure: str = "rollback"  # "rollback" | "stay": what a failed change leaves
    windows: tuple[Window, ...] = ()
    rollout: Rollout | None = None  # waves across its targets (docs/rollouts.md)


@dataclass(frozen=True)
class Fleet:
    """One revision of the fleet repository, validated object by object."""

    root: Path
    settings: Settings
    sites: Mapping[str, Site]
    targets: Mapping[str, Target]
    solutions: Mapping[str, Solution]
    instances: Mapping[str, Instance]
    # (kind, name) of documents that failed their schema: already reported, so references
    # to them are not reported a second time as unknown
    broken: frozenset[tuple[str, str]] = frozenset()
    projects: Mapping[str, Project] = field(default_factory=dict)  # tenants (docs/tenancy.md)

    @cached_property
    def site_chains(self) -> Mapping[str, tuple[Site, ...]]:
        """Each site's chain from its root down to itself (cycles cut, unknown parents end)."""
        chains: dict[str, tuple[Site, ...]] = {}
        for name in self.sites:
            chain: list[Site] = []
            seen: set[str] = set()
            current: str | None = name
            while current is not None and current in self.sites and current not in seen:
                seen.add(current)
                site = self.sites[current]
                chain.append(site)
                current = site.parent
            chains[name] = tuple(reversed(chain))
        return chains

    @cached_property
    def target_index(self) -> TargetIndex:
        """The targets by site and by label, for selecting the targets of instances (made
        on first use; not part of what is pickled, see __getstate__)."""
        return TargetIndex(self)

    @cached_property
    def _site_paths(self) -> dict[str, str]:
        return {}  # site -> its path, filled by site_path

    def __getstate__(self) -> dict[str, Any]:
        # what a stored revision keeps: the fields and the site chains, not the index or
        # the site paths, which are made again when they are asked for
        return {k: v for k, v in self.__dict__.items()
                if k not in ("target_index", "_site_paths")}

    def suspended(self, target: Target) -> bool:
        """True when ``target`` or a site above it has ``spec.suspend``."""
        return target.suspend or any(s.suspend for s in self.site_chains.get(target.site, ()))

    def window_levels(self, target: Target,
                      instance: Instance | None = None) -> tuple[tuple[Window, ...], ...]:
        """The maintenance windows that apply to ``target`` (and ``instance`` on it), one
        level per site from the root down, then the target, then the instance."""
        levels = [s.windows for s in self.site_chains.get(target.site, ())]
        levels.append(target.windows)
        if instance is not None:
            levels.append(instance.windows)
        return tuple(level for level in levels if level)

    def site_path(self, site: str) -> str:
        """``eu/berlin/line-1``: the names of the site's chain; one string per site (a
        daemon keeps it in the status of every target of the site)."""
        paths = self._site_paths
        found = paths.get(site)
        if found is None:
            found = paths[site] = "/".join(s.name for s in self.site_chains.get(site, ()))
        return found

    def site_level(self, site: str) -> str:
        depth = len(self.site_chains.get(site, ())) - 1
        levels = self.settings.hierarchy
        return levels[depth] if 0 <= depth < len(levels) else f"level{depth}"

    def find_site(self, ref: str) -> Site | None:
        """A site by name or by path (``eu/berlin``)."""
        name = ref.rstrip("/").rsplit("/", 1)[-1]
        site = self.sites.get(name)
        if site is None:
            return None
        if "/" in ref and self.site_path(name) != ref.strip("/"):
            return None
        return site

    def target_labels(self, target: Target) -> dict[str, str]:
        """Labels of the target's site chain (root first), overridden by its own."""
        labels: dict[str, str] = {}
        for site in self.site_chains.get(target.site, ()):
            labels.update(site.labels)
        labels.update(target.labels)
        return labels

    def site_labels(self, site: str) -> dict[str, str]:
        labels: dict[str, str] = {}
        for s in self.site_chains.get(site, ()):
            labels.update(s.labels)
        return labels

    def targets_under(self, site_ref: str) -> list[Target]:
        """Targets whose site is ``site_ref`` or below it."""
        site = self.find_site(site_ref)
        if site is None:
            return []
        return [t for t in self.targets.values()
                if any(s.name == site.name for s in self.site_chains.get(t.site, ()))]
