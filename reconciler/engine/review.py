"""Offline plan between two revisions of the fleet repository, for a pull request.

``reconciler plan --repo PATH --base REV [--head REV]`` validates both revisions and compares,
target by target, what each would deploy: components added, removed, changed (rendered
properties, resolved parameters, and the repository files a component names — templates,
manifests, charts, scripts — compared by content), suspended and resumed; for each changed
parameter value, the file, level and object that set it at either revision; and the validation
errors the head introduces or fixes. Nothing is contacted: this is what a CI job posts on a
pull request (:mod:`reconciler.engine.review_format` writes it as Markdown or text; the JSON
is :meth:`Review.to_dict`, its schema in docs/plan.md).

A target that the head's validation errors concern is *held*: as a daemon would, it stays on
its current state (the base's, as far as this plan can tell) and is shown with the errors,
not as losing its components.

Values are compared before anything is formatted: each revision is summed up as digests
(:mod:`reconciler.engine.review_sides`), and only the components whose digests differ are
described and formatted as diffs.
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.registry import ProviderRegistry, default_registry
from reconciler.core.rendering import Origin
from reconciler.engine.review_diff import changed_parts, cut, file_diff, yaml_lines
from reconciler.engine.review_sides import (
    ComponentView,
    Side,
    SideSummary,
    TargetSide,
    open_sides,
)

__all__ = ["ComponentChange", "Review", "SiteSummary", "TargetReview", "ValueChange",
           "review_revisions"]

SCHEMA_VERSION = 1  # of to_dict(): docs/plan.md
ACTIONS = ("add", "change", "remove", "suspend", "resume")

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, item)


@dataclass(frozen=True)
class ValueChange:
    """A resolved parameter whose value differs, and where each side's value was set."""

    name: str
    before: Any  # masked when secret; None when not set at the base
    after: Any  # None when not set at the head
    set_by: Origin | None  # where the head's value is set (None: no longer set)
    was_set_by: Origin | None  # where the base's value was set (None: newly set)
    secret: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "before": self.before, "after": self.after,
                "secret": self.secret, "setBy": _origin(self.set_by),
                "wasSetBy": _origin(self.was_set_by)}


@dataclass(frozen=True)
class ComponentChange:
    key: str  # "<instance>/<component>"
    action: str  # one of ACTIONS
    type: str
    diff: str = ""
    values: tuple[ValueChange, ...] = ()  # parameters whose values changed
    files: tuple[str, ...] = ()  # repository files it names whose content changed
    defined_at: str = ""  # "<solution file>:<line>" of the component's definition
    project: str = ""  # the project owning its instance's document ("": none declared)

    def to_dict(self) -> dict[str, Any]:
        instance, _, component = self.key.partition("/")
        return {"key": self.key, "instance": instance, "component": component,
                "action": self.action, "type": self.type, "project": self.project,
                "definedAt": self.defined_at,
                "values": [v.to_dict() for v in self.values], "files": list(self.files),
                "diff": self.diff}


@dataclass(frozen=True)
class TargetReview:
    target: str
    site: str
    changes: tuple[ComponentChange, ...]
    added: bool = False  # the target is new in head
    removed: bool = False  # the target is gone in head
    held: bool = False  # the head's errors concern it: it stays on its current state
    errors: tuple[Diagnostic, ...] = ()  # those errors

    @property
    def changed(self) -> bool:
        return bool(self.changes) or ((self.added or self.removed) and not self.held)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "site": self.site, "added": self.added,
                "removed": self.removed, "held": self.held,
                "errors": [d.to_dict() for d in self.errors],
                "changes": [c.to_dict() for c in self.changes]}


@dataclass(frozen=True)
class SiteSummary:
    """What changes under one site: targets by outcome, components by action."""

    site: str
    changed: int = 0
    added: int = 0
    removed: int = 0
    held: int = 0
    components: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "changed": self.changed, "added": self.added,
                "removed": self.removed, "held": self.held,
                "components": {a: self.components.get(a, 0) for a in ACTIONS}}


@dataclass(frozen=True)
class Review:
    base: str
    head: str
    targets: tuple[TargetReview, ...]  # every target of either revision, by name
    new_errors: tuple[Diagnostic, ...]
    fixed_errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...] = field(default=())

    @property
    def changed(self) -> list[TargetReview]:
        return [t for t in self.targets if t.changed]

    @property
    def held(self) -> list[TargetReview]:
        return [t for t in self.targets if t.held]

    def sites(self) -> list[SiteSummary]:
        """Per site, by site path, the sites where something changes or is held."""
        out: dict[str, dict[str, Any]] = {}
        for t in self.targets:
            if not (t.changed or t.held):
                continue
            row = out.setdefault(t.site, {"changed": 0, "added": 0, "removed": 0, "held": 0,
                                          "components": dict.fromkeys(ACTIONS, 0)})
            if t.held:
                row["held"] += 1
            elif t.added:
                row["added"] += 1
            elif t.removed:
                row["removed"] += 1
            else:
                row["changed"] += 1
            for c in t.changes:
                row["components"][c.action] += 1
        return [SiteSummary(site, **row) for site, row in sorted(out.items())]

    def to_dict(self) -> dict[str, Any]:
        changed, held = self.changed, self.held
        components = {a: sum(t.count(a) for t in changed) for a in ACTIONS}
        return {
            "schemaVersion": SCHEMA_VERSION,
            "base": self.base, "head": self.head,
            "summary": {"targets": len(self.targets), "changed": len(changed),
                        "added": sum(1 for t in changed if t.added),
                        "removed": sum(1 for t in changed if t.removed),
                        "held": len(held), "components": components},
            "newErrors": [d.to_dict() for d in self.new_errors],
            "fixedErrors": [d.to_dict() for d in self.fixed_errors],
            "sites": [s.to_dict() for s in self.sites()],
            "targets": [t.to_dict() for t in self.targets if t.changed or t.held],
        }


def _origin(origin: Origin | None) -> dict[str, Any] | None:
    if origin is None:
        return None
    return {"path": origin.path, "line": origin.line, "level": origin.level,
            "object": origin.obj, "field": origin.field}


# -- comparing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pending:
    """A component change found by its digests, to be described."""

    target: str
    key: str
    action: str
    type: str


def _compare_target(name: str, before: TargetSide | None, after: TargetSide | None,
                    instance_errors: Mapping[str, tuple[Diagnostic, ...]]
                    ) -> tuple[TargetReview | None, list[_Pending]]:
    """The review of a target that needs no description, or the components to describe.

    ``instance_errors`` are the head's errors by instance: those of an instance the target
    has now hold it too, whatever the head makes of that instance."""
    either = after or before
    site = either.site if either is not None else ""
    if after is not None:
        errors = set(after.errors)
        if before is not None and instance_errors:
            for instance in {key.partition("/")[0] for key in before.components}:
                errors.update(instance_errors.get(instance, ()))
        if errors:  # held on its current state
            return TargetReview(name, site, (), added=before is None, held=True,
                                errors=tuple(sorted(errors))), []
    old = before.components if before is not None else {}
    new = after.components if after is not None else {}
    pending: list[_Pending] = []
    for key in sorted(set(old) | set(new)):
        b, a = old.get(key), new.get(key)
        if a is None:
            assert b is not None
            pending.append(_Pending(name, key, "remove", b[0]))
        elif b is None:
            if not a[2]:  # a new component of a suspended instance is not applied
                pending.append(_Pending(name, key, "add", a[0]))
        elif a[2] and not b[2]:
            pending.append(_Pending(name, key, "suspend", a[0]))
        elif b[2] and not a[2]:
            pending.append(_Pending(name, key, "resume", a[0]))
        elif not a[2] and a[1] != b[1]:
            pending.append(_Pending(name, key, "change", a[0]))
    return None, pending


def _values(old: ComponentView, new: ComponentView) -> tuple[ValueChange, ...]:
    out = []
    for name in sorted(set(old.params) | set(new.params)):
        b, a = old.params.get(name), new.params.get(name)
        if a is not None and b is not None and a.value == b.value and a.token == b.token:
            continue
        out.append(ValueChange(name, b.value if b else None, a.value if a else None,
                               a.origin if a else None, b.origin if b else None,
                               bool((a and a.secret) or (b and b.secret))))
    return tuple(out)


def _describe(p: _Pending, old: ComponentView | None, new: ComponentView | None
              ) -> ComponentChange | None:
    if p.action == "remove":
        return ComponentChange(p.key, "remove", p.type,
                               defined_at=old.defined_at if old else "")
    if p.action == "suspend":
        return ComponentChange(p.key, "suspend", p.type,
                               defined_at=new.defined_at if new else "")
    assert new is not None
    if p.action == "add" or old is None:
        return ComponentChange(p.key, p.action, p.type, cut("".join(yaml_lines(new.shown))),
                               defined_at=new.defined_at)
    diff = ""
    if old.shown != new.shown:
        before, after = changed_parts(old.shown, new.shown)
        diff = "".join(difflib.unified_diff(yaml_lines(before), yaml_lines(after),
                                            f"a/{p.key}", f"b/{p.key}"))
    files = []
    for label in sorted(set(old.files) | set(new.files)):
        was, now = old.files.get(label), new.files.get(label)
        text = file_diff(label, Path(was) if was else None, Path(now) if now else None)
        if text:
            files.append(label)
            diff += text
    values = _values(old, new)
    if not diff and not values and p.action == "change":
        return None  # equal after all (the digests differed by key order only)
    return ComponentChange(p.key, p.action, p.type, cut(diff), values, tuple(files),
                           new.defined_at)


def _project(key: str, before: SideSummary, after: SideSummary) -> str:
    instance = key.partition("/")[0]
    return after.instance_projects.get(instance) or before.instance_projects.get(instance, "")


def _compare(before: SideSummary, after: SideSummary, sides: tuple[Side, Side],
             progress: Progress) -> list[TargetReview]:
    names = sorted(set(before.targets) | set(after.targets))
    done: dict[str, TargetReview] = {}
    pending: dict[str, list[_Pending]] = {}
    for index, name in enumerate(names, 1):
        review, found = _compare_target(name, before.targets.get(name),
                                        after.targets.get(name), after.instance_errors)
        if review is not None:
            done[name] = review
        else:
            pending[name] = found
        progress("comparing", index, len(names), name)
    progress("describing the changes", 0, 0, "")
    old_keys = [(p.target, p.key) for ps in pending.values() for p in ps
                if p.action in ("change", "resume", "remove")]
    new_keys = [(p.target, p.key) for ps in pending.values() for p in ps if p.action != "remove"]
    old_views = sides[0].describe(old_keys) if old_keys else {}
    new_views = sides[1].describe(new_keys) if new_keys else {}
    for name, found in pending.items():
        side = after.targets.get(name) or before.targets[name]
        changes = [replace(c, project=_project(p.key, before, after)) for p in found
                   if (c := _describe(p, old_views.get((name, p.key)),
                                      new_views.get((name, p.key)))) is not None]
        done[name] = TargetReview(name, side.site, tuple(changes),
                                  added=name not in before.targets,
                                  removed=name not in after.targets)
    return [done[name] for name in names]


def review_revisions(git_dir: Path, base: str, head: str, *,
                     registry: ProviderRegistry | None = None,
                     progress: Progress | None = None,
                     parallel: bool | None = None) -> Review:
    """Compare what every target would deploy at ``base`` and at ``head``.

    ``progress`` hears of each stage and of each target compared; ``parallel`` chooses
    whether the revisions are validated in two child processes (None: when two CPUs are
    there)."""
    registry = registry or default_registry()
    report = progress or (lambda stage, done, total, item: None)
    with tempfile.TemporaryDirectory(prefix="reconciler-plan-") as scratch:
        report("validating both revisions", 0, 0, "")
        sides = open_sides(git_dir, base, head, Path(scratch), registry, parallel=parallel)
        try:
            before, after = sides[0].summary(), sides[1].summary()
            targets = _compare(before, after, sides, report)
        finally:
            for side in sides:
                side.close()

    def plain(d: Diagnostic) -> str:
        return d.format()

    old_errors = {plain(d) for d in before.errors}
    new_errors = {plain(d) for d in after.errors}
    return Review(
        base, head, tuple(targets),
        tuple(d for d in after.errors if plain(d) not in old_errors),
        tuple(d for d in before.errors if plain(d) not in new_errors),
        after.warnings)
