"""Offline plan between two revisions of the fleet repository, for a pull request.

``reconciler plan --repo PATH --base REV [--head REV]`` validates both revisions and compares,
target by target, what each would deploy: components added, removed and changed (rendered
properties, resolved parameters, and the repository files a component names — templates,
manifests, charts, scripts — compared by content), plus the validation errors the head
introduces. Nothing is contacted: this is what a CI job posts on a pull request, as Markdown.
Pure apart from reading the two exported revisions.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.provider_api import Component
from reconciler.core.registry import ProviderRegistry, default_registry
from reconciler.core.rendering import Placement
from reconciler.core.secrets import MASK, mask
from reconciler.core.validation import Report, validate_repository
from reconciler.gitops.releases import ReleaseResolver, local_exporter

__all__ = ["ComponentChange", "Review", "TargetReview", "review_revisions"]

MAX_DIFF = 8_000  # characters of diff shown per component


@dataclass(frozen=True)
class ComponentChange:
    key: str  # "<instance>/<component>"
    action: str  # "add", "remove", "change"
    type: str
    diff: str = ""


@dataclass(frozen=True)
class TargetReview:
    target: str
    site: str
    changes: tuple[ComponentChange, ...]
    added: bool = False  # the target is new in head
    removed: bool = False  # the target is gone in head


@dataclass(frozen=True)
class Review:
    base: str
    head: str
    targets: tuple[TargetReview, ...]
    new_errors: tuple[Diagnostic, ...]
    fixed_errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...] = field(default=())

    @property
    def changed(self) -> list[TargetReview]:
        return [t for t in self.targets if t.changes or t.added or t.removed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "head": self.head,
            "newErrors": [d.to_dict() for d in self.new_errors],
            "fixedErrors": [d.to_dict() for d in self.fixed_errors],
            "targets": [{"target": t.target, "site": t.site, "added": t.added,
                         "removed": t.removed,
                         "changes": [{"key": c.key, "action": c.action, "type": c.type,
                                      "diff": c.diff} for c in t.changes]}
                        for t in self.changed],
        }


def _tree_digest(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (a file: itself)."""
    out: dict[str, str] = {}
    if path.is_file():
        out["."] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            out[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def _referenced(comp: Component, path_props: frozenset[str]) -> Iterator[tuple[str, Path]]:
    for prop in sorted(path_props):
        value = comp.properties.get(prop)
        if isinstance(value, list):
            value = value[0] if value and isinstance(value[0], str) else None
        if not isinstance(value, str) or "://" in value or os.path.isabs(value):
            continue
        candidate = (comp.base_dir / value).resolve()
        if candidate.is_relative_to(comp.repo_root.resolve()) and candidate.exists():
            yield value, candidate


def _file_diff(label: str, old: Path | None, new: Path | None) -> str:
    """A unified diff of two repository files or directories (text files only)."""
    before = _tree_digest(old) if old is not None else {}
    after = _tree_digest(new) if new is not None else {}
    out: list[str] = []
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) == after.get(rel):
            continue
        name = label if rel == "." else f"{label}/{rel}"
        texts: list[list[str]] = []
        for root, table in ((old, before), (new, after)):
            if root is None or rel not in table:
                texts.append([])
                continue
            raw = (root if rel == "." else root / rel).read_bytes()
            try:
                texts.append(raw.decode("utf-8").splitlines(keepends=True))
            except UnicodeDecodeError:
                texts.append([f"<binary, {len(raw)} bytes, sha256 {table[rel][:12]}>\n"])
        out.extend(difflib.unified_diff(texts[0], texts[1], f"a/{name}", f"b/{name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _shown(comp: Component) -> dict[str, Any]:
    secrets = {str(comp.params[n]) for n in comp.secret_params if n in comp.params}
    params = {k: (MASK if k in comp.secret_params else v) for k, v in comp.params.items()}
    return {"type": comp.type, "dependsOn": list(comp.depends_on),
            "properties": mask(dict(comp.properties), secrets), "params": params}


def _yaml(value: Any) -> list[str]:
    return yaml.safe_dump(value, sort_keys=True, allow_unicode=True, width=100).splitlines(
        keepends=True)


def _components(placements: tuple[Placement, ...]) -> dict[str, Component]:
    return {c.key: c for p in placements if not p.instance.suspend for c in p.components}


def _compare(key: str, old: Component | None, new: Component | None,
             path_props: Mapping[str, frozenset[str]]) -> ComponentChange | None:
    if old is None and new is not None:
        return ComponentChange(key, "add", new.type, "".join(_yaml(_shown(new))))
    if new is None and old is not None:
        return ComponentChange(key, "remove", old.type)
    assert old is not None and new is not None
    diff = "".join(difflib.unified_diff(_yaml(_shown(old)), _yaml(_shown(new)),
                                        f"a/{key}", f"b/{key}"))
    props_old = dict(_referenced(old, path_props.get(old.type, frozenset())))
    props_new = dict(_referenced(new, path_props.get(new.type, frozenset())))
    for label in sorted(set(props_old) | set(props_new)):
        diff += _file_diff(label, props_old.get(label), props_new.get(label))
    if not diff:
        return None
    if len(diff) > MAX_DIFF:
        diff = diff[:MAX_DIFF] + f"\n[diff truncated: {len(diff)} characters in all]\n"
    return ComponentChange(key, "change", new.type, diff)


def _path_props(report: Report, registry: ProviderRegistry) -> dict[str, frozenset[str]]:
    """Component type (binding role) -> path properties of the provider bound to it."""
    out: dict[str, frozenset[str]] = {}
    for target in report.fleet.targets.values():
        for binding in target.bindings:
            cls = registry.get(binding.provider)
            if cls is not None:
                out[binding.role] = out.get(binding.role, frozenset()) | frozenset(
                    getattr(cls, "path_properties", frozenset()))
    return out


def review_revisions(git_dir: Path, base: str, head: str, *,
                     registry: ProviderRegistry | None = None) -> Review:
    """Compare what every target would deploy at ``base`` and at ``head``."""
    registry = registry or default_registry()
    export = local_exporter(git_dir)
    releases = ReleaseResolver(git_dir, export)
    before = validate_repository(export(base), registry=registry, releases=releases)
    after = validate_repository(export(head), registry=registry, releases=releases)
    paths = _path_props(before, registry) | _path_props(after, registry)
    reviews: list[TargetReview] = []
    for name in sorted(set(before.fleet.targets) | set(after.fleet.targets)):
        old = _components(before.placements.get(name, ()))
        new = _components(after.placements.get(name, ()))
        changes = [c for key in sorted(set(old) | set(new))
                   if (c := _compare(key, old.get(key), new.get(key), paths)) is not None]
        fleet = after.fleet if name in after.fleet.targets else before.fleet
        reviews.append(TargetReview(
            name, fleet.site_path(fleet.targets[name].site), tuple(changes),
            added=name not in before.fleet.targets, removed=name not in after.fleet.targets))

    def plain(d: Diagnostic) -> str:
        return d.format()

    old_errors = {plain(d) for d in before.errors}
    new_errors = {plain(d) for d in after.errors}
    return Review(
        base, head, tuple(reviews),
        tuple(d for d in after.errors if plain(d) not in old_errors),
        tuple(d for d in before.errors if plain(d) not in new_errors),
        tuple(d for d in after.diagnostics if not d.is_error))


def review_markdown(review: Review) -> str:
    lines = [f"## Fleet plan `{review.base[:12]}` → `{review.head[:12]}`", ""]
    if review.new_errors:
        lines.append(f"**{len(review.new_errors)} new validation error(s)** — sites will keep "
                     "their last good revision until they are fixed:")
        lines += [f"- `{d.format()}`" for d in review.new_errors]
        lines.append("")
    if review.fixed_errors:
        lines.append(f"{len(review.fixed_errors)} validation error(s) fixed.")
        lines.append("")
    changed = review.changed
    if not changed:
        lines.append("No target changes.")
        return "\n".join(lines) + "\n"
    lines += ["| target | site | added | changed | removed |", "|---|---|---|---|---|"]
    for t in changed:
        counts = {a: sum(1 for c in t.changes if c.action == a)
                  for a in ("add", "change", "remove")}
        note = " (new target)" if t.added else " (target removed)" if t.removed else ""
        lines.append(f"| `{t.target}`{note} | {t.site} | {counts['add']} | {counts['change']} "
                     f"| {counts['remove']} |")
    lines.append("")
    for t in changed:
        lines.append(f"<details><summary><code>{t.target}</code>: {len(t.changes)} "
                     "component change(s)</summary>")
        lines.append("")
        for c in t.changes:
            symbol = {"add": "+", "change": "~", "remove": "-"}[c.action]
            lines.append(f"{symbol} `{c.key}` ({c.type})")
            if c.diff:
                lines += ["", "```diff", c.diff.rstrip("\n"), "```", ""]
        lines += ["</details>", ""]
    return "\n".join(lines) + "\n"


def review_text(review: Review) -> str:
    lines = [f"Plan {review.base[:12]} -> {review.head[:12]}"]
    lines += [f"new error: {d.format()}" for d in review.new_errors]
    lines += [f"fixed: {d.format()}" for d in review.fixed_errors]
    changed = review.changed
    if not changed:
        lines.append("no target changes")
    for t in changed:
        note = " (new target)" if t.added else " (target removed)" if t.removed else ""
        lines.append("")
        lines.append(f"{t.target}{note}: {len(t.changes)} change(s)")
        for c in t.changes:
            symbol = {"add": "+", "change": "~", "remove": "-"}[c.action]
            lines.append(f"  {symbol} {c.key} ({c.type}) {c.action}")
            if c.diff:
                lines += ["      " + x for x in c.diff.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"
