"""Run the instance steps of one target, roll back failed changes, keep the records.

For each :class:`~reconciler.engine.instance_steps.InstanceStep` of a target, in name order,
:func:`run_steps` reconciles the instance through the target's
:class:`~reconciler.engine.executing.Execution` and records the outcome in the state store,
step by step:

- an applied change that succeeded becomes the instance's applied and last good revision;
- an applied change that failed after its retries (apply error, health timeout, provider
  crash), on a revision that changed what the instance renders there, with
  ``onFailure: rollback`` (the default): the failed change is written to ``state.json`` at
  once (so a daemon restarted in the middle completes the rollback), then the instance is
  reconciled to its last good revision, which re-applies what the change altered, deletes
  what it created and restores what it removed; with no last good revision (a first
  deployment) everything of the instance is removed. The instance is ``RolledBack``; a
  rollback that fails too is ``Failed`` with both errors, and is tried again next run;
- a failure while repairing drift at the render that is already the last good one, or with
  ``onFailure: stay``, is ``Failed`` as before, and the next run tries again;
- a change that waits (window, hold) keeps the applied revision enforced: ``Waiting``.

:class:`InstanceView` is what the status file says of each instance beyond its components.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from reconciler.core.rendering import Placement
from reconciler.engine.executing import Execution, InstanceOutcome
from reconciler.engine.instance_steps import InstanceStep, Step
from reconciler.engine.state_store import FailedChange, InstanceRecord, StateStore

__all__ = ["InstanceView", "run_steps"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class InstanceView:
    """What the status says of one instance beyond its components' results."""

    phase: str = ""  # "RolledBack", "Waiting", "Failed" ("" for the components' roll-up)
    message: str = ""
    revision: str = ""  # the revision enforced
    details: Mapping[str, Any] = field(default_factory=dict)  # rolledBack / waiting
    release: str = ""  # the release enforced (docs/rollouts.md)

    def as_status(self) -> dict[str, Any]:
        """The keys it adds to the instance in the status file."""
        out: dict[str, Any] = {}
        if self.phase:
            out["phase"] = self.phase
        if self.message:
            out["message"] = self.message
        if self.revision:
            out["revision"] = self.revision
        if self.release:
            out["release"] = self.release
        out.update(self.details)
        return out

    def __hash__(self) -> int:  # compared as part of a status's inputs
        return hash((self.phase, self.message, self.revision, self.release,
                     repr(self.details)))


def _short(revision: str) -> str:
    return revision[:12] if revision else "nothing (no earlier good revision)"


def _failed_view(failed: FailedChange, to: str, release: str) -> InstanceView:
    details: dict[str, Any] = {"failedRevision": failed.revision,
                               "component": failed.component, "error": failed.error,
                               "to": to}
    if failed.release:
        details["failedRelease"] = failed.release
    if failed.rollback_error:
        details["rollbackError"] = failed.rollback_error
        return InstanceView(
            "Failed", f"change {failed.revision[:12]} failed at {failed.component}: "
            f"{failed.error}; rolling back to {_short(to)} failed too: "
            f"{failed.rollback_error}", to, {"rolledBack": details}, release)
    return InstanceView(
        "RolledBack", f"rolled back to {_short(to)}: change {failed.revision[:12]} failed "
        f"at {failed.component}: {failed.error}; not applied again until a revision renders "
        "differently for it or `reconciler sync --retry`", to, {"rolledBack": details},
        release)


def _error_of(outcome: InstanceOutcome) -> tuple[str, str]:
    bad = outcome.failure
    if bad is None:
        return "", "run interrupted"
    return bad.key, bad.message


PlacementAt = Callable[[str, str], Placement | None]  # (revision, instance) -> placement


def run_steps(execution: Execution, steps: Sequence[InstanceStep], store: StateStore,
              target: str, now: Callable[[], datetime],
              placement_at: PlacementAt) -> dict[str, InstanceView]:
    """Run ``steps`` on ``target`` (see the module docstring); ``placement_at`` finds what
    an instance's last good revision renders for a rollback. Returns each instance's view
    for its status."""
    views: dict[str, InstanceView] = {}
    for step in steps:
        views[step.instance] = _run(execution, step, store, target, now, placement_at)
    return views


def _save(store: StateStore, target: str, instance: str,
          record: InstanceRecord | None) -> None:
    if store.set_instance(target, instance, record):
        try:
            store.flush()  # step by step: a restart resumes where this run stopped
        except OSError as exc:  # the run's end writes it again and reports a failure
            _log.error("state_write_failed", error=str(exc))


def _run(execution: Execution, step: InstanceStep, store: StateStore, target: str,
         now: Callable[[], datetime], placement_at: PlacementAt) -> InstanceView:
    record, name = step.record, step.instance
    if step.step is Step.SKIP:
        _save(store, target, name, record)
        return InstanceView("Waiting", step.waiting, record.applied,
                            {"waiting": _waiting(step)}, record.release)
    if step.step is Step.BLOCKED:
        if step.placement is not None:  # what it has stays enforced
            execution.instance(name, step.placement, step.revision)
        _save(store, target, name, record)
        return InstanceView("Blocked", step.waiting, step.revision, {"blocked": step.waiting},
                            record.release)
    if step.step in (Step.WAIT, Step.KEEP) and step.placement is None:
        # nothing applied yet, or its revision is gone: nothing to enforce, nothing pruned
        _save(store, target, name, record)
        return InstanceView("Waiting", step.waiting, "", {"waiting": _waiting(step)}) \
            if step.step is Step.WAIT else InstanceView(revision="")
    outcome = execution.instance(name, step.placement, step.revision)
    suspended = step.placement is not None and step.placement.instance.suspend
    if step.step is Step.WAIT:
        _save(store, target, name, record)
        return InstanceView("Waiting", step.waiting, step.revision,
                            {"waiting": _waiting(step)}, record.release)
    if step.step is Step.KEEP:
        return InstanceView(revision=step.revision, release=record.release)
    if step.step is Step.ROLLED_BACK:
        return _after_rollback(outcome, step, record, store, target)
    # APPLY
    if outcome.succeeded and not suspended:
        if step.placement is None:  # the instance is gone from the target
            _save(store, target, name, None)
            return InstanceView()
        _save(store, target, name, InstanceRecord(step.revision, step.digest, step.revision,
                                                  step.digest, release=step.release,
                                                  good_release=step.release))
        return InstanceView(revision=step.revision, release=step.release)
    if outcome.failure is None or suspended:  # abandoned for a newer revision, or shutdown
        _save(store, target, name, record)
        return InstanceView(revision=step.revision, release=step.release)
    changed = step.placement is not None and step.digest != record.good_digest
    # a state file the OS refuses is the site's fault, not the change's: no rollback
    local = outcome.failure.reason == "StateWriteFailed"
    if step.on_failure != "rollback" or not changed or local:
        _save(store, target, name, record)
        # Failed, from its components
        return InstanceView(revision=step.revision, release=step.release)
    component, error = _error_of(outcome)
    failed = FailedChange(step.revision, step.digest, component, error,
                          at=now().isoformat(timespec="seconds"), release=step.release)
    _save(store, target, name, replace(record, failed=failed))
    _log.warning("instance_rolling_back", instance=name, failed_revision=step.revision[:12],
                 to=record.last_good[:12] or None, component=component, error=error)
    placement = placement_at(record.last_good, name) if record.last_good else None
    good = record.last_good if placement is not None else ""
    rollback = replace(step, step=Step.ROLLED_BACK, revision=good, placement=placement)
    outcome = execution.instance(name, placement, good)
    return _after_rollback(outcome, rollback, replace(record, failed=failed), store, target)


def _after_rollback(outcome: InstanceOutcome, step: InstanceStep, record: InstanceRecord,
                    store: StateStore, target: str) -> InstanceView:
    failed = record.failed
    assert failed is not None
    if outcome.succeeded:
        failed = replace(failed, rollback_error="")
        record = replace(record, applied=step.revision, applied_digest=record.good_digest
                         if step.revision else "", release=record.good_release
                         if step.revision else "", failed=failed)
    elif outcome.failure is not None:
        component, error = _error_of(outcome)
        failed = replace(failed, rollback_error=f"{component}: {error}")
        record = replace(record, failed=failed)
    _save(store, target, step.instance, record)
    if outcome.failure is None and not outcome.succeeded:  # interrupted: tried again
        return InstanceView("Progressing", "rollback interrupted", step.revision,
                            {"rolledBack": {"failedRevision": failed.revision}},
                            record.good_release)
    return _failed_view(failed, step.revision, record.good_release if step.revision else "")


def _waiting(step: InstanceStep) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": step.waiting}
    if step.wake_at is not None:
        out["until"] = step.wake_at.isoformat(timespec="seconds")
    return out
