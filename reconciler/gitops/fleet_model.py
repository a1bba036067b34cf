"""What the fleet model at the tracked revision says should exist, for the fleet views.

``reconciler status`` and ``report`` show every target the fleet repository defines, whether
or not it ever reported. :func:`index_revision` exports one commit, loads and validates it
(``reconciler.core.validation``, with the solutions' releases from the tags) and keeps what
the views need as a :class:`FleetIndex`: every site with its level, every target with its
site path, the instances that select it and the validation errors that stop it, and every
instance with its solution and pinned version.

Validating a large fleet costs seconds and hundreds of megabytes (50,000 targets: about
25 s and 800 MB), always the same for one commit. So :class:`IndexJob` keeps the index in
the status cache by commit, and computes a missing one in a child process: the command's
own memory stays small, and the child works while the command reads the status branches.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from reconciler.core.errors import ReconcilerError, SourceError
from reconciler.gitops.fleet_status import order
from reconciler.gitops.gitrun import Git
from reconciler.gitops.status_cache import StatusCache

if TYPE_CHECKING:  # the validation's modules are imported where a revision is indexed:
    # reading an index from the cache needs none of them (a tenth of a second to import)
    from reconciler.core.model import Fleet, Instance
    from reconciler.core.rollouts import Rollout
    from reconciler.core.validation import Report

__all__ = ["ExpectedTarget", "FleetIndex", "IndexJob", "InstanceInfo", "SiteInfo",
           "index_revision"]

MAX_TARGET_ERRORS = 20  # per target; the rest is counted
_FORMAT = 3

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExpectedTarget:
    site: str  # site path
    target: str
    instances: tuple[str, ...]  # instances that select the target
    errors: tuple[str, ...]  # validation errors of the target and its instances
    more_errors: int = 0  # errors not listed in ``errors``


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    name: str
    solution: str
    version: str  # the pinned release ("" : the solution as it is at the revision)
    suspended: bool = False
    release: str = ""  # its release at the revision (docs/rollouts.md)
    rollout: Rollout | None = None  # its waves' names, pauses, approvals (no selections)
    waves: Mapping[str, str] = field(default_factory=dict)  # target -> its wave


@dataclass(frozen=True, slots=True)
class SiteInfo:
    path: str
    level: str  # the hierarchy level: region, factory, line, ...
    description: str = ""


@dataclass(frozen=True)
class FleetIndex:
    """The fleet at one commit, as the views need it (see the module docstring)."""

    commit: str
    sites: tuple[SiteInfo, ...]
    targets: tuple[ExpectedTarget, ...]
    instances: Mapping[str, InstanceInfo]
    errors: tuple[str, ...]  # errors that stop every target (not of one target or instance)
    error_count: int  # every validation error of the revision
    broken: tuple[str, ...] = ()  # targets whose document is invalid: in the fleet, unplaced

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT, "commit": self.commit,
            "sites": [[s.path, s.level, s.description] for s in self.sites],
            "targets": [[t.site, t.target, list(t.instances), list(t.errors), t.more_errors]
                        for t in self.targets],
            "instances": [[i.name, i.solution, i.version, i.suspended, i.release,
                           _rollout_json(i.rollout), dict(i.waves)]
                          for i in self.instances.values()],
            "errors": list(self.errors), "errorCount": self.error_count,
            "broken": list(self.broken),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetIndex | None:
        """The index ``to_json`` wrote; None for another format."""
        if data.get("format") != _FORMAT:
            return None
        shared: dict[Any, Any] = {}  # 50,000 targets name a few thousand sites: one each
        share = shared.setdefault
        return cls(
            commit=data["commit"],
            sites=tuple(SiteInfo(*row) for row in data["sites"]),
            targets=tuple(ExpectedTarget(share(site, site), target,
                                         share(tuple(insts), tuple(insts)), tuple(errors), more)
                          for site, target, insts, errors, more in data["targets"]),
            instances={row[0]: InstanceInfo(row[0], row[1], row[2], row[3], row[4],
                                            _rollout_of(row[5]), row[6])
                       for row in data["instances"]},
            errors=tuple(data["errors"]), error_count=data["errorCount"],
            broken=tuple(data["broken"]))


def index_revision(git_dir: Path, commit: str) -> FleetIndex:
    """Export ``commit`` of the repository ``git_dir``, validate it and index it.
    :class:`SourceError` when it cannot be exported."""
    from reconciler.core.rendering import select_targets
    from reconciler.core.validation import validate_repository
    from reconciler.gitops.releases import ReleaseResolver
    from reconciler.gitops.source import export

    git = Git(git_dir)
    with tempfile.TemporaryDirectory(prefix="reconciler-model-") as tmp:
        exported: dict[str, Path] = {}

        def exporter(rev: str) -> Path:
            if rev not in exported:
                dest = Path(tmp) / rev
                dest.mkdir()
                export(git, rev, dest)
                exported[rev] = dest
            return exported[rev]

        report = validate_repository(exporter(commit), revision=commit,
                                     releases=ReleaseResolver(git_dir, exporter))
        releases = _releases(report)  # while the files are there
    fleet = report.fleet
    if not fleet.targets and report.errors:  # no fleet to speak of: say why
        raise _NoFleet(f"no fleet at {commit[:12]}: {report.errors[0].format()}")
    chosen: dict[str, list[str]] = {}
    for inst in sorted(fleet.instances.values(), key=lambda i: i.name):
        for target in select_targets(fleet, inst):
            chosen.setdefault(target.name, []).append(inst.name)
    general: list[str] = []
    by_target: dict[str, list[str]] = {}
    by_instance: dict[str, list[str]] = {}
    for d in report.errors:
        if d.target:
            by_target.setdefault(d.target, []).append(d.format())
        elif d.instance:
            by_instance.setdefault(d.instance, []).append(d.format())
        else:
            general.append(d.format())
    targets = []
    for target in fleet.targets.values():
        instances = tuple(chosen.get(target.name, ()))
        errors = by_target.get(target.name, []) + [
            e for name in instances for e in by_instance.get(name, ())]
        targets.append(ExpectedTarget(
            site=fleet.site_path(target.site) or target.site, target=target.name,
            instances=instances, errors=tuple(errors[:MAX_TARGET_ERRORS]),
            more_errors=max(0, len(errors) - MAX_TARGET_ERRORS)))
    sites = tuple(sorted((SiteInfo(fleet.site_path(name), fleet.site_level(name),
                                   site.description)
                          for name, site in fleet.sites.items() if fleet.site_path(name)),
                         key=lambda s: order(s.path, "")))
    return FleetIndex(
        commit=commit, sites=sites,
        targets=tuple(sorted(targets, key=lambda t: order(t.site, t.target))),
        instances={i.name: InstanceInfo(i.name, i.solution, i.version or "", i.suspend,
                                        releases.get(i.name, ""), i.rollout,
                                        _waves(fleet, i))
                   for i in sorted(fleet.instances.values(), key=lambda i: i.name)},
        errors=tuple(general), error_count=len(report.errors),
        broken=tuple(sorted(name for kind, name in fleet.broken if kind == "Target")))


class IndexJob:
    """The index of ``commit``: from the cache, or computed by a child process started at
    once (:meth:`result` waits for it and stores it in the cache)."""

    def __init__(self, cache: StatusCache, commit: str) -> None:
        self.cache = cache
        self.commit = commit
        self._index: FleetIndex | None = None
        self._child: multiprocessing.process.BaseProcess | None = None
        self._receive: Connection | None = None
        cached = cache.model(commit)
        if cached is not None:
            self._index = FleetIndex.from_json(cached)
        if self._index is None:
            # fork: the child has the parent's modules already (no start-up of its own) and
            # leaves by os._exit, so it closes nothing of the parent's (the cache database)
            context = multiprocessing.get_context("fork")
            receive, send = context.Pipe(duplex=False)
            self._child = context.Process(target=_index_in_child,
                                          args=(cache.git_dir, commit, send), daemon=True)
            self._child.start()
            send.close()
            self._receive = receive
            log.info("fleet_model_indexing", commit=commit[:12])

    @property
    def cached(self) -> bool:
        return self._child is None

    def result(self) -> FleetIndex:
        """The index; :class:`SourceError` when the child could not make it."""
        if self._index is not None:
            return self._index
        assert self._receive is not None and self._child is not None
        try:
            kind, payload = self._receive.recv()
        except EOFError:
            kind, payload = "error", (f"cannot validate the fleet at {self.commit[:12]}: the "
                                      "validating process ended without an answer")
        finally:
            self._receive.close()
            self._child.join()
        if kind != "index":
            raise SourceError(payload)
        self._index = FleetIndex.from_json(payload)
        assert self._index is not None
        self.cache.store_model(self.commit, payload)
        return self._index


class _NoFleet(SourceError):
    """The revision holds no fleet (no Settings, nothing loaded)."""


def _index_in_child(git_dir: Path, commit: str, send: Connection) -> None:
    failed = f"cannot validate the fleet at {commit[:12]}: "
    try:
        send.send(("index", index_revision(git_dir, commit).to_json()))
    except _NoFleet as exc:
        send.send(("error", exc.message))
    except ReconcilerError as exc:
        send.send(("error", failed + exc.message))
    except Exception as exc:  # sent to the parent, which says it
        send.send(("error", f"{failed}{type(exc).__name__}: {exc}"))
    finally:
        send.close()


def _releases(report: Report) -> dict[str, str]:
    """Each instance's release (the solution it renders from: a pinned one's release)."""
    from reconciler.core.rollouts import release_id

    out: dict[str, str] = {}
    solutions = {p.instance.name: p.solution for ps in report.placements.values() for p in ps}
    for inst in report.fleet.instances.values():
        solution = solutions.get(inst.name) or report.fleet.solutions.get(inst.solution)
        if solution is not None:
            out[inst.name] = release_id(inst, solution, report.fleet.root)
    return out


def _waves(fleet: Fleet, inst: Instance) -> dict[str, str]:
    from reconciler.core.rendering import select_targets
    from reconciler.core.rollouts import assign_waves

    if inst.rollout is None:
        return {}
    return assign_waves(inst.name, inst.rollout, [
        (t.name, fleet.site_path(t.site), fleet.target_labels(t))
        for t in select_targets(fleet, inst)])


def _rollout_json(rollout: Rollout | None) -> dict[str, Any] | None:
    if rollout is None:
        return None
    return {"waves": [[w.name, w.pause, w.approval] for w in rollout.waves],
            "approvers": list(rollout.approvers), "staleAfter": rollout.stale_after}


def _rollout_of(raw: Any) -> Rollout | None:
    if not isinstance(raw, dict):
        return None
    from reconciler.core.rollouts import Rollout, Wave

    return Rollout(tuple(Wave(name, pause=pause, approval=approval)
                         for name, pause, approval in raw["waves"]),
                   tuple(raw["approvers"]), raw["staleAfter"])
