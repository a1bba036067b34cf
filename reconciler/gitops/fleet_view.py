"""The fleet as it should be joined with the fleet as it reports: one row per target.

:func:`join` puts the fleet model at the tracked revision (``reconciler.gitops.fleet_model``)
next to the status branches (``reconciler.gitops.fleet_status``). Every target the model
defines gets a row, with a ``state``:

* the phase its status file reports (``Ready``, ``Progressing``, ``Waiting``, ``Degraded``,
  ``RolledBack``, ``Failed``,
  ``Invalid``, ``Blocked``, ``Pending``), when the report is recent;
* ``Stale`` when the site was last heard from longer ago than ``stale_after`` (its daemon
  refreshes a heartbeat every ``status.heartbeat``, so a live site is never that old), or
  cannot say when;
* ``Unknown`` when no status file was ever found for it;
* ``Unreadable`` when its status file cannot be read.

A status file of a target the model does not define (a target removed, a site whose branch
was left behind) gets a row too, ``Orphaned``. Without a model (none could be read) the rows
are the reported targets alone. Roll-ups count states per instance ("telemetry-eu: 41/43
Ready on 1.5.0, 1 Failed, 1 Stale") and per site of the hierarchy, its subtree included.
Used by ``reconciler status`` and ``report``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from reconciler.gitops.fleet_model import FleetIndex, SiteInfo
from reconciler.gitops.fleet_status import FleetStatus, StatusEntry, order

__all__ = ["STATES", "FleetView", "InstanceRollup", "SiteRollup", "TargetView", "format_age",
           "health", "join"]

# from worst to best: roll-ups list states in this order, and a site's colour is its worst
STATES = ("Failed", "RolledBack", "Invalid", "Blocked", "Degraded", "Unreadable", "Stale",
          "Unknown", "Orphaned", "Progressing", "Waiting", "Pending", "Ready")
_RANK = {state: rank for rank, state in enumerate(STATES)}
_BAD = frozenset({"Failed", "RolledBack", "Invalid", "Blocked", "Degraded", "Unreadable"})
_SILENT = frozenset({"Stale", "Unknown", "Orphaned"})
# states that say nothing about one instance on the target: the target's state stands
_TARGET_WIDE = frozenset({"Stale", "Unknown", "Orphaned", "Unreadable", "Invalid", "Blocked",
                          "Pending"})


@dataclass(frozen=True, slots=True)
class InstanceOnTarget:
    name: str
    solution: str
    version: str  # what the model pins ("" : the solution as at the revision)
    state: str  # the instance's phase on the target, or the target's state
    release: str = ""  # the release the target reports running ("" : not reported)


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target's row (see the module docstring)."""

    site: str
    target: str
    state: str
    message: str
    entry: StatusEntry | None  # its status file (None: never reported)
    age: float | None = None  # seconds since the site was last heard from
    instances: tuple[InstanceOnTarget, ...] = ()
    errors: tuple[str, ...] = ()  # validation errors at the tracked revision
    more_errors: int = 0
    in_fleet: bool = True
    current: bool = False  # it runs the tracked revision

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.target)

    @property
    def phase(self) -> str:
        return self.entry.phase if self.entry is not None else ""

    @property
    def ready(self) -> bool:
        return self.state == "Ready" and (self.entry is None or self.entry.error is None)


@dataclass(frozen=True)
class InstanceRollup:
    name: str
    solution: str
    version: str
    label: str  # what "on ..." names: the version, else the tracked revision ("": neither)
    counts: Mapping[str, int]
    ready_on_version: int
    total: int

    def summary(self) -> str:
        parts = [f"{self.ready_on_version}/{self.total} Ready"
                 + (f" on {self.label}" if self.label else "")]
        other = self.counts.get("Ready", 0) - self.ready_on_version
        if other:
            parts.append(f"{other} Ready on another revision")
        parts += [f"{n} {state}" for state, n in _ordered(self.counts) if state != "Ready"]
        return ", ".join(parts)


@dataclass(frozen=True)
class SiteRollup:
    path: str
    level: str
    counts: Mapping[str, int]  # targets at or below the site, by state
    description: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def health(self) -> str:
        return health(self.counts)

    def summary(self) -> str:
        parts = [f"{self.counts.get('Ready', 0)}/{self.total} Ready"]
        parts += [f"{n} {state}" for state, n in _ordered(self.counts) if state != "Ready"]
        return ", ".join(parts)


@dataclass(frozen=True)
class FleetView:
    rows: tuple[TargetView, ...]
    revision: str  # the tracked commit ("" when the model could not be read)
    now: dt.datetime
    stale_after: float
    index: FleetIndex | None = field(default=None, repr=False)
    scope: tuple[str, ...] = ()  # the subtrees a filter kept (empty: the whole fleet)

    def __iter__(self) -> Iterator[TargetView]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ready(self) -> bool:
        """Every row Ready (and at least one row: no status at all is not "all Ready")."""
        return bool(self.rows) and all(row.ready for row in self.rows)

    def counts(self) -> Counter[str]:
        return Counter(row.state for row in self.rows)

    def filtered(self, *, site: str | None = None, instance: str | None = None,
                 states: Iterable[str] = ()) -> FleetView:
        """The rows of the subtree ``site`` (a path, or a site's name), selected by
        ``instance``, in one of ``states`` (in any case)."""
        rows: Iterable[TargetView] = self.rows
        scope = self.scope
        if site:
            scope = tuple(self.site_paths(site))
            rows = [r for r in rows if self.in_scope(r.site, scope)]
        if instance:
            rows = [r for r in rows if any(i.name == instance for i in r.instances)]
        wanted = {s.lower() for s in states}
        if wanted:
            rows = [r for r in rows if r.state.lower() in wanted]
        return FleetView(tuple(rows), self.revision, self.now, self.stale_after, self.index,
                         scope)

    def in_scope(self, path: str, scope: tuple[str, ...] | None = None) -> bool:
        """Whether the site ``path`` is in the subtrees of ``scope`` (default: the view's;
        an empty scope is the whole fleet)."""
        scope = self.scope if scope is None else scope
        return not scope or any(path == p or path.startswith(p + "/") for p in scope)

    def site_paths(self, site: str) -> list[str]:
        """The paths ``site`` names: itself when a path, every site of that name if not."""
        site = site.strip("/")
        if "/" in site or self.index is None:
            return [site]
        named = [s.path for s in self.index.sites if s.path.rsplit("/", 1)[-1] == site]
        return named or [site]

    def instance_rollups(self) -> list[InstanceRollup]:
        known = self.index.instances if self.index is not None else {}
        found: dict[str, list[tuple[InstanceOnTarget, TargetView]]] = {}
        for row in self.rows:
            for inst in row.instances:
                found.setdefault(inst.name, []).append((inst, row))
        out = []
        for name in sorted(found):
            pairs = found[name]
            info = known.get(name)
            version = info.version if info is not None else ""
            counts = Counter(i.state for i, _ in pairs)
            label = version or self.revision[:8]
            # Ready on what the model asks for: the release the target reports, else the
            # tracked revision applied (without a model: every Ready one)
            on_version = sum(1 for i, row in pairs if i.state == "Ready" and (
                not label or (i.release == version if i.release and version else row.current)))
            out.append(InstanceRollup(
                name=name, solution=info.solution if info else pairs[0][0].solution,
                version=version, label=label,
                counts=counts, ready_on_version=on_version, total=len(pairs)))
        return out

    def site_rollups(self) -> list[SiteRollup]:
        """Every site of the model (and every reported one) with targets at or below it,
        in hierarchy order; within the view's scope."""
        sites: dict[str, SiteInfo] = {}
        if self.index is not None:
            sites.update((s.path, s) for s in self.index.sites)
        own: dict[str, Counter[str]] = {}
        for row in self.rows:
            counted = own.get(row.site)
            if counted is None:
                counted = own[row.site] = Counter()
            counted[row.state] += 1
        counts: dict[str, Counter[str]] = {}
        for site, counted in own.items():  # each site's counts go to every site above it
            parts = site.split("/")
            for depth in range(1, len(parts) + 1):
                counts.setdefault("/".join(parts[:depth]), Counter()).update(counted)
        out = []
        for path in sorted(counts, key=lambda p: p.replace("/", "\0")):
            if not self.in_scope(path):
                continue  # a site above the subtree a filter kept: its counts are partial
            info = sites.get(path)
            out.append(SiteRollup(path, info.level if info else "",
                                  counts[path], info.description if info else ""))
        return out


def _ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(((s, n) for s, n in counts.items() if n),
                  key=lambda item: _RANK.get(item[0], len(STATES)))


def health(counts: Mapping[str, int]) -> str:
    """A colour for a group of targets: ``failed``, ``stale``, ``progressing``, ``ready``, or
    ``empty`` (no target)."""
    states = {s for s, n in counts.items() if n}
    if not states:
        return "empty"
    if states & _BAD:
        return "failed"
    if states & _SILENT:
        return "stale"
    if states - {"Ready"}:
        return "progressing"
    return "ready"


def format_age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h05m``, ``4d02h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def join(index: FleetIndex | None, status: FleetStatus, *, now: dt.datetime,
         stale_after: float) -> FleetView:
    """The rows of every target (see the module docstring)."""
    reported = {(entry.site, entry.target): entry for entry in status}
    rows: list[TargetView] = []
    revision = index.commit if index is not None else ""
    make = _Rows(now, stale_after, revision)
    if index is not None:
        known = index.instances
        placed: dict[tuple[str, ...], tuple[tuple[str, str, str], ...]] = {}
        for expected in index.targets:
            entry = reported.pop((expected.site, expected.target), None)
            names = expected.instances
            if names not in placed:
                placed[names] = tuple((n, known[n].solution, known[n].version)
                                      for n in names if n in known)
            rows.append(make.row(expected.site, expected.target, entry, placed[names],
                                 expected.errors, expected.more_errors, in_fleet=True))
    broken = frozenset(index.broken) if index is not None else frozenset()
    for entry in reported.values():
        # without a model, what the file reports; with one, the target is in no instance
        # (a target whose document is invalid is in the fleet, but nothing is placed on it)
        invalid = (f"Target/{entry.target}: its document is invalid at {revision[:12]}",) \
            if entry.target in broken else ()
        rows.append(make.row(entry.site, entry.target, entry,
                             tuple((i.name, i.solution, "") for i in entry.instances)
                             if index is None else (), invalid, 0,
                             in_fleet=index is None or bool(invalid)))
    if reported or index is None:  # the model's targets come in order; the others do not
        rows.sort(key=lambda r: order(r.site, r.target))
    return FleetView(tuple(rows), revision, now, stale_after, index)


class _Rows:
    """Makes the rows of one view; the instance entries, which repeat across a fleet, are
    made once each."""

    def __init__(self, now: dt.datetime, stale_after: float, revision: str) -> None:
        self.now = now
        self.stale_after = stale_after
        self.revision = revision
        self._shared: dict[tuple[str, str, str, str, str], InstanceOnTarget] = {}

    def instance(self, name: str, solution: str, version: str, state: str,
                 release: str) -> InstanceOnTarget:
        key = (name, solution, version, state, release)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = InstanceOnTarget(*key)
        return found

    def row(self, site: str, target: str, entry: StatusEntry | None,
            instances: tuple[tuple[str, str, str], ...], errors: tuple[str, ...],
            more_errors: int, *, in_fleet: bool) -> TargetView:
        return _row(self, site, target, entry, instances, errors, more_errors,
                    in_fleet=in_fleet)


def _row(make: _Rows, site: str, target: str, entry: StatusEntry | None,
         instances: tuple[tuple[str, str, str], ...], errors: tuple[str, ...],
         more_errors: int, *, in_fleet: bool) -> TargetView:
    now, stale_after, revision = make.now, make.stale_after, make.revision
    if entry is None:
        message = "never reported"
        if errors:
            message += f"; invalid at {revision[:12]}: {errors[0]}"
        return TargetView(site, target, "Unknown", message, None, errors=errors,
                          more_errors=more_errors,
                          instances=tuple(make.instance(n, s, v, "Unknown", "")
                                          for n, s, v in instances))
    age = (now - entry.last_seen).total_seconds() if entry.last_seen is not None else None
    message = entry.message
    if entry.error is not None and not entry.phase:
        state, message = "Unreadable", f"error: {entry.error}"
    elif not in_fleet:
        state = "Orphaned"
        message = f"not in the fleet at {revision[:12]} ({entry.phase}): {message}"
    elif age is None or age > stale_after:
        state = "Stale"
        heard = f"last report {format_age(age)} ago" if age is not None else "no report time"
        message = f"{heard} ({entry.phase or '?'}): {message}"
    else:
        state = entry.phase or "Pending"
        if entry.error is not None:
            message = f"error: {entry.error}"
    reported = {i.name: i for i in entry.instances}
    shown = []
    for name, solution, version in instances:
        got = reported.get(name)
        inst_state = state if state in _TARGET_WIDE or got is None or not got.phase \
            else got.phase
        shown.append(make.instance(name, solution or (got.solution if got else ""),
                                   version, inst_state, got.release if got else ""))
    return TargetView(site, target, state, message, entry, age, tuple(shown), errors,
                      more_errors, in_fleet,
                      current=bool(revision) and entry.applied_revision == revision)
