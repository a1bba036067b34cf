"""The offline plan as Markdown for a pull-request comment, and as text for a terminal.

Markdown (:func:`review_markdown`): a headline with the counts, the new validation errors,
a summary table by site, then per target a folded ``<details>`` block with each component
change, a table of the parameter values that changed and where each is set (file and line,
hierarchy level, object), and the diff. Targets held by the head's errors get a section of
their own with those errors. A comment has a size limit (GitHub's is 65,536 characters), so
the text stops adding targets at ``limit`` characters and says how many it left out; the JSON
output (``--format json``) always has them all.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.diagnostics import Diagnostic
from reconciler.engine.review import ComponentChange, Review, TargetReview, ValueChange

__all__ = ["MARKDOWN_LIMIT", "review_markdown", "review_text"]

MARKDOWN_LIMIT = 60_000  # characters: under GitHub's 65,536 per comment, with room to spare
MAX_SITE_ROWS = 50  # rows of the summary table
MAX_NAMES = 30  # held targets named per group

_SYMBOL = {"add": "+", "change": "~", "remove": "-", "suspend": "#", "resume": ">"}


def _value(value: Any) -> str:
    if value is None:
        return "(not set)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _code(text: str) -> str:
    """Inline code that survives backticks and pipes inside a Markdown table."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _where(change: ValueChange) -> str:
    origin = change.set_by or change.was_set_by
    if origin is None:
        return ""
    at = f"{origin.path}:{origin.line}" if origin.line else origin.path
    prefix = "" if change.set_by is not None else "was "
    return f"{prefix}{_code(at)} ({origin.level}, {origin.obj})"


def _headline(review: Review) -> str:
    changed, held = review.changed, review.held
    parts = [f"{len(changed)} of {len(review.targets)} target(s) change"]
    counts = {a: sum(t.count(a) for t in changed) for a in _SYMBOL}
    parts += [f"{n} component(s) {word}" for a, word in (
        ("add", "added"), ("change", "changed"), ("remove", "removed"),
        ("suspend", "suspended"), ("resume", "resumed")) if (n := counts[a])]
    if held:
        parts.append(f"{len(held)} target(s) held by validation errors")
    return ", ".join(parts)


def _component_md(c: ComponentChange) -> list[str]:
    where = f" — defined at {_code(c.defined_at)}" if c.defined_at else ""
    project = f" — project `{c.project}`" if c.project else ""
    lines = [f"{_SYMBOL[c.action]} **{c.action}** `{c.key}` ({c.type}){project}{where}", ""]
    if c.values:
        lines += ["| parameter | before | after | set by |", "|---|---|---|---|"]
        lines += [f"| `{v.name}` | {_code(_value(v.before))} | {_code(_value(v.after))} | "
                  f"{_where(v)} |" for v in c.values]
        lines.append("")
    if c.files:
        lines += ["Files changed: " + ", ".join(_code(f) for f in c.files), ""]
    if c.diff:
        fence = "````" if "```" in c.diff else "```"
        lines += [f"{fence}diff", c.diff.rstrip("\n"), fence, ""]
    return lines


def _target_md(t: TargetReview) -> list[str]:
    note = " (new target)" if t.added else " (target removed)" if t.removed else ""
    counts = ", ".join(f"{_SYMBOL[a]}{n}" for a in _SYMBOL if (n := t.count(a)))
    lines = [f"<details><summary><code>{t.target}</code>{note} on {t.site}: "
             f"{counts or 'no component changes'}</summary>", ""]
    for c in t.changes:
        lines += _component_md(c)
    return [*lines, "</details>", ""]


def _held_groups(held: list[TargetReview]) -> list[tuple[tuple[Diagnostic, ...],
                                                          list[TargetReview]]]:
    """Held targets grouped by the errors that hold them (one broken solution holds many)."""
    groups: dict[tuple[Diagnostic, ...], list[TargetReview]] = {}
    for t in held:
        groups.setdefault(t.errors, []).append(t)
    return sorted(groups.items(), key=lambda g: (-len(g[1]), g[1][0].target))


def _held_md(errors: tuple[Diagnostic, ...], targets: list[TargetReview]) -> list[str]:
    names = ", ".join(f"`{t.target}`" for t in targets[:MAX_NAMES])
    if len(targets) > MAX_NAMES:
        names += f" and {len(targets) - MAX_NAMES} more"
    lines = [f"<details><summary>{len(targets)} target(s) stay on their current state "
             f"({len(errors)} error(s))</summary>", "", f"Targets: {names}", ""]
    lines += [f"- {_code(d.format())}" for d in errors]
    return [*lines, "", "</details>", ""]


def review_markdown(review: Review, *, limit: int = MARKDOWN_LIMIT) -> str:
    lines = [f"## Fleet plan `{review.base[:12]}` → `{review.head[:12]}`", "",
             _headline(review), ""]
    if review.new_errors:
        lines.append(f"**{len(review.new_errors)} new validation error(s)** — the targets "
                     "they concern stay on their current state until they are fixed:")
        lines += [f"- {_code(d.format())}" for d in review.new_errors[:50]]
        if len(review.new_errors) > 50:
            lines.append(f"- … and {len(review.new_errors) - 50} more")
        lines.append("")
    if review.fixed_errors:
        lines += [f"{len(review.fixed_errors)} validation error(s) fixed.", ""]
    changed, held = review.changed, review.held
    if not changed and not held:
        lines.append("No target changes.")
        return "\n".join(lines) + "\n"
    sites = review.sites()
    lines += ["| site | targets changed | new | removed | held | + | ~ | - |",
              "|---|---|---|---|---|---|---|---|"]
    for s in sites[:MAX_SITE_ROWS]:
        c = s.components
        lines.append(f"| {s.site} | {s.changed} | {s.added} | {s.removed} | {s.held} | "
                     f"{c['add']} | {c['change']} | {c['remove']} |")
    if len(sites) > MAX_SITE_ROWS:
        lines.append(f"| … {len(sites) - MAX_SITE_ROWS} more site(s) | | | | | | | |")
    lines.append("")
    size = sum(len(line) + 1 for line in lines)
    left_out = 0
    groups = _held_groups(held)
    blocks = [_held_md(*g) for g in groups] + [_target_md(t) for t in changed]
    if groups:
        blocks[0] = ["### Held by validation errors", "", *blocks[0]]
    if changed:
        blocks[len(groups)] = ["### Changes", "", *blocks[len(groups)]]
    for block in blocks:
        cost = sum(len(line) + 1 for line in block)
        if left_out or size + cost > limit - 400:
            left_out += 1
            continue
        lines += block
        size += cost
    if left_out:
        lines.append(f"*{left_out} more block(s) of targets not shown: this comment is kept under "
                     f"{limit:,} characters. `reconciler plan --format json` lists them all.*")
    return "\n".join(lines) + "\n"


def _value_text(v: ValueChange) -> str:
    origin = v.set_by or v.was_set_by
    where = f" (set by {origin.format()})" if origin is not None and v.set_by is not None \
        else f" (was set by {origin.format()})" if origin is not None else ""
    return f"      {v.name}: {_value(v.before)} -> {_value(v.after)}{where}"


def review_text(review: Review) -> str:
    lines = [f"Plan {review.base[:12]} -> {review.head[:12]}: {_headline(review)}"]
    lines += [f"new error: {d.format()}" for d in review.new_errors]
    lines += [f"fixed: {d.format()}" for d in review.fixed_errors]
    changed = review.changed
    if not changed and not review.held:
        lines.append("no target changes")
    for errors, targets in _held_groups(review.held):
        lines.append("")
        lines.append(f"held on their current state by {len(errors)} error(s): "
                     + ", ".join(t.target for t in targets))
        lines += [f"  {d.format()}" for d in errors]
    for t in changed:
        note = " (new target)" if t.added else " (target removed)" if t.removed else ""
        lines.append("")
        lines.append(f"{t.target}{note}: {len(t.changes)} change(s)")
        for c in t.changes:
            project = f" [project {c.project}]" if c.project else ""
            lines.append(f"  {_SYMBOL[c.action]} {c.key} ({c.type}) {c.action}{project}")
            lines += [_value_text(v) for v in c.values]
            if c.diff:
                lines += ["      " + x for x in c.diff.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"
