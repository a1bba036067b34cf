"""The data of ``reconciler report``'s page, and the page rendered from it.

:func:`render_report` turns the joined fleet view (``reconciler.gitops.fleet_view``), its
recent status changes (``reconciler.gitops.fleet_history``) and the rollouts in progress into
one self-contained HTML page (``reconciler.cli.report_page``): the hierarchy as a tree of
sites, each with the colour of its worst target and its roll-up, sites with a problem
unfolded; per target its state, revision, instances and their releases, when the site was
last heard from, the last change, the message and the validation errors; the roll-up per
instance; the rollouts; and the recent changes. Failed and Stale targets are flagged (a mark,
a coloured edge, ``data-state``) so they stand out on screen and in print.

Rollouts are described by :class:`RolloutProgress` (made by ``reconciler.cli.fleet`` from
``reconciler.cli.rollout_progress``): every instance with ``spec.rollout`` whose release has
not reached all its targets yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from reconciler import __version__
from reconciler.cli.report_page import TEMPLATE
from reconciler.gitops.fleet_history import StatusChange
from reconciler.gitops.fleet_view import FleetView, TargetView, format_age, health
from reconciler.gitops.status_files import format_time

__all__ = ["RolloutProgress", "render_report"]

_FLAGGED = frozenset({"Failed", "RolledBack", "Invalid", "Blocked", "Degraded", "Unreadable",
                      "Stale"})
_SHOWN_FLEET_ERRORS = 10


@dataclass(frozen=True)
class RolloutProgress:
    """One rollout in progress, as the report shows it."""

    name: str
    solution: str
    version: str
    state: str  # e.g. Progressing, Paused, Failed, Done
    waves_done: int
    waves_total: int
    targets_ready: int
    targets_total: int
    message: str = ""


@dataclass
class _Node:
    path: str
    name: str
    level: str = ""
    health: str = "empty"
    summary: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)
    unfolded: bool = False  # shown open: something in the subtree wants a look


def render_report(view: FleetView, *, source: str, ref: str,
                  history: Sequence[StatusChange] = (),
                  rollouts: Sequence[RolloutProgress] = (),
                  model_error: str | None = None) -> str:
    """The page (see the module docstring)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    tree, site_count = _tree(view)
    index = view.index
    counts = sorted(view.counts().items(), key=lambda item: -item[1])
    return env.from_string(TEMPLATE).render(
        source=source, ref=ref, revision=view.revision, generated=format_time(view.now),
        stale_after=format_age(view.stale_after), rows=view.rows, counts=counts,
        model_error=model_error,
        fleet_errors=_fleet_errors(view),
        error_count=index.error_count if index is not None else 0,
        tree=tree, site_count=site_count, instances=view.instance_rollups(),
        rollouts=list(rollouts),
        history=[{"when": format_time(c.when), "site": c.site, "target": c.target,
                  "before": c.before, "after": c.after, "revision": c.revision,
                  "message": c.message} for c in history],
        version=__version__)


def _fleet_errors(view: FleetView) -> list[str]:
    """The first validation errors of the revision: the fleet's own, then the targets'."""
    if view.index is None:
        return []
    shown = list(dict.fromkeys([*view.index.errors,
                                *(e for t in view.index.targets for e in t.errors)]))
    return shown[:_SHOWN_FLEET_ERRORS]


def _tree(view: FleetView) -> tuple[list[_Node], int]:
    """The sites as nested nodes, each with its own targets' rows; and the number of sites."""
    nodes: dict[str, _Node] = {}
    for rollup in view.site_rollups():
        nodes[rollup.path] = _Node(rollup.path, rollup.path.rsplit("/", 1)[-1], rollup.level,
                                   rollup.health, rollup.summary())
    if view.index is not None:  # sites without a target show too, in grey
        for site in view.index.sites:
            if view.in_scope(site.path):
                nodes.setdefault(site.path, _Node(site.path, site.path.rsplit("/", 1)[-1],
                                                  site.level, health({}), "no targets"))
    for row in view.rows:
        nodes[row.site].rows.append(_row(row))
    roots: list[_Node] = []
    for path in sorted(nodes, key=lambda p: p.split("/")):
        parent = nodes.get(path.rsplit("/", 1)[0]) if "/" in path else None
        (parent.children if parent is not None else roots).append(nodes[path])
    for root in roots:
        _unfold(root)
    return roots, len(nodes)


def _unfold(node: _Node) -> bool:
    """Open every site whose subtree has a target that is not healthy or has validation
    errors; healthy subtrees stay folded. True when ``node`` was opened."""
    wanted = [_unfold(child) for child in node.children]  # every child, not the first only
    node.unfolded = node.health not in ("ready", "empty") or any(wanted) or any(
        row["errors"] for row in node.rows)
    return node.unfolded


def _row(row: TargetView) -> dict[str, Any]:
    entry = row.entry
    errors = list(row.errors)
    if row.more_errors:
        errors.append(f"and {row.more_errors} more")
    return {
        "site": row.site, "target": row.target, "state": row.state,
        "flagged": row.state in _FLAGGED or (entry is not None and entry.error is not None),
        "applied": entry.applied_revision if entry else "",
        "observed": entry.observed_revision if entry else "",
        "instances": row.instances,
        "seen": format_age(row.age) + (" ago" if row.age is not None else ""),
        "last_change": format_time(entry.last_change) if entry and entry.last_change else "-",
        "message": row.message, "errors": errors,
    }
