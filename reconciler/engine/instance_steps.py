"""What each instance of a target does in a run: apply, wait, stay rolled back, or keep.

Every instance on a target is decided on its own (docs/failure-handling.md), from its
record in the state store (:class:`~reconciler.engine.state_store.InstanceRecord`) and the
digest of what the run's revision renders for it (:mod:`reconciler.engine.render_digest`):

- a **failed change** (the record has one whose digest is the digest at the run's revision,
  and no ``sync --retry`` asked for it) stays rolled back: the instance's last good revision
  is enforced (nothing of it when it has none), and the failed change is not applied again;
  a revision that renders differently for the instance clears it;
- a **change** (the digest differs from the one of the applied revision) is applied, unless
  a hold covers the target or a maintenance window that applies is closed: then it waits,
  and the applied revision stays enforced (drift is repaired) until the hold ends or the
  window opens (:attr:`InstanceStep.wake_at`);
- **no change**: the run's revision is enforced (the same render: drift repair).

Outside every window, with the site's ``repairOutsideWindows`` off, nothing of the instance
is touched at all (:attr:`Step.SKIP`), not even a rollback left by a restart. When the run's
revision cannot be used for the target (invalid, untrusted), every instance keeps its own
applied revision (:attr:`Step.KEEP`): instances that moved on separately are not taken back.
Used by :mod:`reconciler.engine.reconciling`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from reconciler.core.model import Fleet, Target
from reconciler.core.rendering import Placement
from reconciler.core.windows import WindowState, window_state
from reconciler.engine.holds import Hold
from reconciler.engine.render_digest import RenderDigests
from reconciler.engine.rollout_gate import GateVerdict
from reconciler.engine.state_store import InstanceRecord

__all__ = ["InstanceStep", "Step", "StepContext", "instance_steps"]


class Step(enum.Enum):
    APPLY = "apply"  # the run's revision (a change, or drift repair of the same render)
    WAIT = "wait"  # a change waits for a window or a hold: the applied revision stays
    ROLLED_BACK = "rolled-back"  # a failed change: the last good revision stays
    KEEP = "keep"  # the run's revision is unusable here: the applied revision stays
    BLOCKED = "blocked"  # commits of its project are not signed by its members (tenancy)
    SKIP = "skip"  # outside every window, repair off: nothing is touched


@dataclass(frozen=True)
class InstanceStep:
    """One instance's step in a run (see the module docstring)."""

    instance: str
    step: Step
    revision: str  # the revision enforced ("" for none)
    placement: Placement | None  # what that revision renders for it (None: nothing)
    record: InstanceRecord  # its record, bootstrapped or with a stale failure cleared
    digest: str = ""  # digest of the run's render of it ("" when it has none there)
    enforced_digest: str = ""  # digest of ``placement``
    on_failure: str = "rollback"
    waiting: str = ""  # why a change waits
    wake_at: datetime | None = None  # when it may go
    release: str = ""  # the release of the run's render of it


@dataclass(frozen=True)
class StepContext:
    """What the steps of one target are decided from."""

    target: Target
    revision: str  # the run's revision for the target ("" when none can be used)
    usable: bool  # whether ``revision`` is the run's newest and usable for the target
    fleet: Fleet | None  # the fleet at ``revision``
    placements: Sequence[Placement]  # at ``revision``
    records: dict[str, InstanceRecord]  # the target's instance records
    applied: str  # the target's applied revision (bootstraps records of older state files)
    placement_at: Callable[[str, str], Placement | None]  # (revision, instance) -> it
    digests: RenderDigests
    hold: Hold | None
    now: datetime
    repair_outside_windows: bool = True
    retry: bool = False
    present: frozenset[str] = frozenset()  # instances the target's inventory has
    # the release of a placement, and the rollout gate of a new release (None: no gate)
    release_of: Callable[[Placement], str] = lambda p: ""
    gate: Callable[[Placement], GateVerdict | None] = lambda p: None
    # instance -> why commits since its applied revision may not reach it (docs/tenancy.md)
    blocked: Mapping[str, str] = field(default_factory=dict)


def _bootstrap(ctx: StepContext, name: str) -> InstanceRecord:
    """The instance's record; for a state file written before instances had records, what
    the target's applied revision says."""
    record = ctx.records.get(name)
    if record is not None:
        return record
    if not ctx.applied:
        return InstanceRecord()
    old = ctx.placement_at(ctx.applied, name)
    digest = ctx.digests.of(old, ctx.applied) if old is not None else ""
    return InstanceRecord(ctx.applied, digest, ctx.applied, digest) if old is not None \
        else InstanceRecord()


def _at(ctx: StepContext, revision: str, name: str) -> Placement | None:
    if not revision:
        return None
    if revision == ctx.revision:
        return next((p for p in ctx.placements if p.instance.name == name), None)
    return ctx.placement_at(revision, name)


def instance_steps(ctx: StepContext) -> list[InstanceStep]:
    """The step of every instance of the target: those the run's revision places there and
    those the target still has from earlier revisions, by name."""
    current = {p.instance.name: p for p in ctx.placements} if ctx.usable else {}
    names = sorted(set(current) | set(ctx.records) | ctx.present | (
        {p.instance.name for p in ctx.placements} if not ctx.usable else set()))
    return [_step(ctx, name, current.get(name)) for name in names]


def _step(ctx: StepContext, name: str, new: Placement | None) -> InstanceStep:
    record = _bootstrap(ctx, name)
    if not ctx.usable:
        kept = _at(ctx, record.applied, name)
        return InstanceStep(name, Step.KEEP, record.applied if kept else "", kept, record,
                            enforced_digest=record.applied_digest)
    digest = ctx.digests.of(new, ctx.revision) if new is not None else ""
    on_failure = new.instance.on_failure if new is not None else "rollback"
    failed = record.failed
    if failed is not None and (ctx.retry or failed.digest != digest):
        record = replace(record, failed=None)  # a new render, or asked to retry
        failed = None
    changing = digest != record.applied_digest or (new is not None and not record.applied)
    # the windows matter to a change, or to anything at all when repairs wait for them too
    levels = ctx.fleet.window_levels(ctx.target, new.instance if new else None) \
        if ctx.fleet is not None and (changing or not ctx.repair_outside_windows) else ()
    state = window_state(levels, ctx.now) if levels else None
    closed = state is not None and not state.open
    if closed and not ctx.repair_outside_windows and (failed is not None
                                                      or digest == record.applied_digest):
        return InstanceStep(name, Step.SKIP, record.applied, None, record, digest,
                            on_failure=on_failure, waiting="outside every maintenance "
                            "window (repairOutsideWindows is off)",
                            wake_at=state.next_open if state else None)
    if failed is not None:
        good = _at(ctx, record.last_good, name)
        return InstanceStep(name, Step.ROLLED_BACK, record.last_good if good else "", good,
                            record, digest, record.good_digest, on_failure)
    release = ctx.release_of(new) if new is not None else ""
    if changing and name in ctx.blocked:  # stays where it is, whatever else it waits for
        kept = _at(ctx, record.applied, name)
        return InstanceStep(name, Step.BLOCKED, record.applied if kept else "", kept, record,
                            digest, record.applied_digest, on_failure, ctx.blocked[name],
                            release=release)
    if changing:
        why, wake = _gate(ctx, state)
        if not why and new is not None and release != record.release:
            verdict = ctx.gate(new)  # a new release moves in its rollout's waves
            if verdict is not None and not verdict.go:
                why, wake = verdict.reason, verdict.wake_at
        if why:
            kept = _at(ctx, record.applied, name)
            return InstanceStep(name, Step.WAIT, record.applied if kept else "", kept,
                                record, digest, record.applied_digest, on_failure, why, wake,
                                release)
    return InstanceStep(name, Step.APPLY, ctx.revision if new is not None else "", new,
                        record, digest, digest, on_failure, release=release)


def _gate(ctx: StepContext, state: WindowState | None) -> tuple[str, datetime | None]:
    """Why a change must wait now ("" when it may go), and until when."""
    if ctx.hold is not None:
        return ctx.hold.describe(), ctx.hold.until
    if state is not None and not state.open:
        opens = state.next_open
        return ("waiting for a maintenance window"
                + (f" (opens {opens.isoformat(timespec='seconds')})" if opens
                   else " (none opens within the search horizon)")), opens
    return "", None
