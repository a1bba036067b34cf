"""Plan: what a reconcile of one target would change, without changing anything.

For every desired component (instances in name order, components in ``dependsOn`` order) the
provider's ``observe`` compares desired and live state; every inventory entry that is no longer
desired is a prune, in reverse apply order. Used by ``reconciler plan``; the executor makes the
same decisions one component at a time, interleaved with applies.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import Target
from reconciler.core.rendering import Placement
from reconciler.engine.bindings import ProviderSet
from reconciler.engine.inventory import Entry, Inventory

__all__ = ["Action", "Change", "TargetPlan", "desired_keys", "plan_target", "prunes"]


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    NOOP = "in-sync"
    PRUNE = "prune"
    SUSPENDED = "suspended"
    ERROR = "error"


@dataclass(frozen=True)
class Change:
    key: str
    action: Action
    provider: str
    diff: str = ""
    message: str = ""


@dataclass(frozen=True)
class TargetPlan:
    target: str
    revision: str
    changes: tuple[Change, ...]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action not in (Action.NOOP, Action.SUSPENDED)]


def desired_keys(placements: Sequence[Placement]) -> set[str]:
    """Keys that must not be pruned: every component of every placement, suspended too."""
    return {c.key for p in placements for c in p.components}


def prunes(inventory: Inventory, placements: Sequence[Placement]) -> list[Entry]:
    """Inventory entries no longer desired, in reverse apply order."""
    keep = desired_keys(placements)
    return [e for e in reversed(list(inventory)) if e.key not in keep]


def plan_target(target: Target, placements: Sequence[Placement], providers: ProviderSet,
                inventory: Inventory, revision: str) -> TargetPlan:
    changes: list[Change] = []
    for placement in placements:
        for comp in placement.components:
            binding = target.binding(comp.type)
            if placement.instance.suspend:
                changes.append(Change(comp.key, Action.SUSPENDED, binding.provider if binding
                                      else "", message="instance suspended"))
                continue
            if binding is None:
                changes.append(Change(comp.key, Action.ERROR, "", message=f"no binding for "
                                      f"role '{comp.type}'"))
                continue
            entry = inventory.get(comp.key)
            try:
                provider = providers.for_binding(binding)
                record = entry.record if entry and entry.record.provider == binding.provider \
                    else None
                obs = provider.observe(comp, record)
            except ReconcilerError as exc:
                changes.append(Change(comp.key, Action.ERROR, binding.provider,
                                      message=f"cannot observe: {exc.message}"))
                continue
            if obs.in_sync and entry is not None:
                action = Action.NOOP
            else:
                action = Action.UPDATE if obs.exists else Action.CREATE
            changes.append(Change(comp.key, action, binding.provider, obs.diff, obs.message))
    for entry in prunes(inventory, placements):
        changes.append(Change(entry.key, Action.PRUNE, entry.record.provider,
                              message=f"applied at {entry.revision[:12]}, removed since"))
    return TargetPlan(target.name, revision, tuple(changes))
