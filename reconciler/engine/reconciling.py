"""One target's reconcile in a run: revision choice, execution, its record, its status.

:meth:`TargetReconciler.reconcile` is the step the pipeline runs for every served target:

1. choose the revision to enforce (``reconciler.engine.revisions``): the run's newest when usable
   for the target, else its last good one, else none;
2. execute it (``reconciler.engine.executing.reconcile_target``: observe, apply in dependency
   order, wait for health, prune), with the target's providers and inventory;
3. record the outcome in the state store: the applied revision, and the last good one when
   the newest revision reconciled cleanly;
4. build its status, whatever happened above: an error nobody planned for is the target's
   ``Failed`` status with the error, never an exception that costs another target its run.

While the target is reconciled, its name and the revision enforced are bound as structlog
context, so every line a provider logs says which target and revision it was about.
:meth:`TargetReconciler.retire` prunes a target the daemon no longer serves, and
:meth:`TargetReconciler.plan` says what a reconcile would change. Used by the pipeline;
tests call it directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, reset_contextvars

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import Fleet, Source, Target
from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import ProviderRegistry
from reconciler.core.rendering import Placement
from reconciler.engine.bindings import ProviderSet
from reconciler.engine.cancellation import Cancellation
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.executing import Execution, RetryPolicy, TargetResult, reconcile_target
from reconciler.engine.failures import describe
from reconciler.engine.holds import HoldStore
from reconciler.engine.instance_runs import InstanceView, run_steps
from reconciler.engine.instance_steps import InstanceStep, Step, StepContext, instance_steps
from reconciler.engine.inventory import Inventory
from reconciler.engine.planning import TargetPlan, plan_target
from reconciler.engine.render_digest import RenderDigests
from reconciler.engine.revisions import Basis, NewestRevision, ReportCache, choose_revision
from reconciler.engine.rollouts import Rollouts
from reconciler.engine.run_observer import NO_OBSERVER, RunObserver
from reconciler.engine.state_store import StateStore
from reconciler.engine.status import Phase, StatusRenderer, TargetStatus, build_status
from reconciler.gitops.tenancy import TenancyCheck

__all__ = ["TargetReconciler"]

_log = structlog.get_logger(__name__)
_SHARED_SLACK = 1024  # parts of statuses' inputs no status uses that may be kept (_shared)


class TargetReconciler:
    """Reconciles and retires single targets for the runs of one daemon."""

    def __init__(self, settings: EngineSettings, registry: ProviderRegistry,
                 policy: LocalPolicy, *, reports: ReportCache, store: StateStore,
                 cancellation: Cancellation, renderer: StatusRenderer,
                 observer: RunObserver = NO_OBSERVER,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 holds: HoldStore | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.policy = policy
        self.reports = reports
        self.store = store
        self.cancellation = cancellation
        self.renderer = renderer
        self.observer = observer
        self.now = now
        self.holds = holds
        self.digests = RenderDigests(settings.state_dir, registry)
        self.rollouts = Rollouts()  # its peers are set by the pipeline
        # (old, new) -> the tenancy check of the commits between (set by the pipeline)
        self.tenancy: Callable[[str, str], TenancyCheck | None] = lambda old, new: None
        self.wake_at: datetime | None = None  # the earliest a waiting change may go
        # kept between runs (see execute): per target, its provider set and the revision
        # it serves, its inventory, and its last status with what it was built from
        self._providers: dict[str, tuple[str, ProviderSet]] = {}
        self._inventories: dict[str, Inventory] = {}
        self._statuses: dict[str, tuple[tuple[object, ...], TargetStatus, str]] = {}
        self._retry: tuple[Fleet, RetryPolicy] | None = None
        self._same: dict[object, object] = {}  # parts of statuses' inputs, see _shared
        self._same_limit = _SHARED_SLACK

    def providers(self, name: str, revision: str = "") -> ProviderSet:
        """The provider set of target ``name`` for ``revision``: the one of the last run when
        it served the same revision, so a provider is built once per binding and revision
        (and whatever it worked out about its components is not worked out again)."""
        known = self._providers.get(name)
        if known is not None and known[0] == revision and revision:
            return known[1]
        c = self.cancellation
        providers = ProviderSet(name, self.registry, self.policy, self.settings.state_dir,
                                c.cancelled, stopping=c.stopping,
                                shutdown_grace=self.settings.shutdown_grace)
        if revision:
            self._providers[name] = (revision, providers)
        return providers

    def inventory(self, name: str) -> Inventory:
        """The target's inventory: read from its file once, then kept, since every change
        goes through it and is written at once. One whose last write failed, or whose file
        someone changed (restored, edited, removed), is read again."""
        known = self._inventories.get(name)
        if known is None or known.dirty or known.changed_on_disk():
            known = self._inventories[name] = Inventory.load(self.settings.state_dir, name)
        return known

    def retry_policy(self, fleet: Fleet) -> RetryPolicy:
        """The site's retry and health settings, the repository's defaults where unset."""
        known = self._retry
        if known is not None and known[0] is fleet:
            return known[1]
        d = fleet.settings.defaults
        s = self.settings
        policy = RetryPolicy(
            retries=s.retries if s.retries is not None else d.retries,
            delay=s.retry_delay if s.retry_delay is not None else d.retry_delay,
            max_delay=s.retry_max_delay,
            health_timeout=float(s.health_timeout if s.health_timeout is not None
                                 else d.health_timeout),
            health_poll=s.health_poll_interval)
        self._retry = (fleet, policy)  # the fleet of a revision: the same for every target
        return policy

    def plan(self, target: Target, placements: Sequence[Placement],
             revision: str) -> TargetPlan:
        """What reconciling ``target`` to ``revision`` would change (nothing is changed)."""
        providers = ProviderSet(target.name, self.registry, self.policy,
                                self.settings.state_dir, lambda: False)
        inventory = Inventory.load(self.settings.state_dir, target.name)
        return plan_target(target, placements, providers, inventory, revision)

    def placement_at(self, target: str) -> Callable[[str, str], Placement | None]:
        """(revision, instance) -> what ``revision`` renders for the instance on ``target``
        (None when nothing, or when the revision cannot be had any more)."""
        def find(revision: str, instance: str) -> Placement | None:
            try:
                report = self.reports.get(revision)
            except Exception as exc:  # checked out and validated once; gone from the server
                _log.warning("revision_unavailable", revision=revision[:12],
                             error=describe(exc))
                return None
            return next((p for p in report.placements.get(target, ())
                         if p.instance.name == instance), None)
        return find

    def blocked(self, applied: str, revision: str, fleet: Fleet) -> dict[str, str]:
        """Instance -> why the commits since ``applied`` may not reach it (docs/tenancy.md);
        nothing when tenancy is off, or the target has no applied revision yet (its first
        revision was trusted by the signature check of the whole revision)."""
        if not applied or applied == revision or not fleet.projects:
            return {}
        check = self.tenancy(applied, revision)
        if check is None or check.ok:
            return {}
        return {name: "blocked: " + found[0].describe()
                for name, found in check.blocked_instances(fleet).items()}

    def run_instances(self, target: Target, newest: NewestRevision, use: str,
                      usable: bool, retry: bool) -> tuple[TargetResult, dict[str, InstanceView],
                                                        list[InstanceStep]]:
        """Decide and run every instance's step on ``target`` (``instance_steps`` and
        ``instance_runs``)."""
        report = (newest.report if use == newest.commit and newest.report
                  else self.reports.get(use)) if use else None
        placements = report.placements.get(target.name, ()) if report is not None else ()
        known = report.fleet.targets.get(target.name, target) if report is not None \
            else target
        policy = self.retry_policy(report.fleet) if report is not None else RetryPolicy()
        inventory = self.inventory(target.name)
        record = self.store.get(target.name)
        now = self.now()
        find = self.placement_at(target.name)
        steps = instance_steps(StepContext(
            target=known, revision=use, usable=usable,
            fleet=report.fleet if report is not None else None, placements=placements,
            records=dict(record.instances), applied=record.applied, placement_at=find,
            digests=self.digests, hold=self.holds.active(target.name, now) if self.holds
            else None, now=now, repair_outside_windows=self.settings.repair_outside_windows,
            retry=retry, present=frozenset(e.key.partition("/")[0]
                                           for e in inventory.entries.values()),
            release_of=self.rollouts.release_of,
            blocked=self.blocked(record.applied, use, report.fleet)
            if report is not None and usable else {},
            gate=lambda p: self.rollouts.gate(p, report.fleet, use, now)
            if report is not None else None))
        execution = Execution(known, self.providers(target.name, use), inventory,
                              retry=policy, cancelled=self.cancellation.cancelled,
                              concurrency=self.settings.apply_concurrency)
        views = run_steps(execution, steps, self.store, target.name, self.now, find)
        return execution.result(use), views, steps

    def reconcile(self, target: Target, newest: NewestRevision,
                  retry: bool = False) -> tuple[TargetStatus, TargetResult | None]:
        """Steps 1-4 of the module docstring for ``target``; never raises for the target.
        ``retry``: changes that failed on it are applied again (``sync --retry``)."""
        choice = choose_revision(target.name, newest.commit,
                                 last_good=self.store.touch(target.name).last_good,
                                 report=newest.report, blocked=newest.blocked,
                                 unusable=newest.unusable,
                                 errors=newest.errors_for(target.name))
        use = choice.revision
        usable = choice.basis is Basis.NEWEST
        result: TargetResult | None = None
        views: dict[str, InstanceView] = {}
        steps: list[InstanceStep] = []
        solutions: dict[str, str] = {}
        failures = [newest.unusable] if newest.unusable else []
        if use or self.store.get(target.name).instances:
            # bound for the provider's lines; the run's own revision is restored after
            bound = bind_contextvars(target=target.name, revision=use[:12])
            try:
                result, views, steps = self.run_instances(target, newest, use, usable, retry)
                solutions = {s.instance: s.placement.solution.name for s in steps
                             if s.placement is not None}
            except ReconcilerError as exc:
                failures.append(exc.message)
                _log.error("target_failed", target=target.name, error=exc.message,
                           reason=exc.reason)
            except Exception as exc:  # this target's failure, never another target's
                failures.append(describe(exc))
                _log.exception("target_crashed", target=target.name)
            finally:
                reset_contextvars(**bound)
        clean = result is not None and result.succeeded and all(
            s.step is Step.APPLY for s in steps) and not any(v.phase for v in views.values())
        if clean and use:
            self.store.reconciled(target.name, use, newest=usable)
        wakes = [s.wake_at for s in steps if s.wake_at is not None]
        self.wake_at = min([*wakes, *([self.wake_at] if self.wake_at else [])]) \
            if wakes else self.wake_at
        status, result = self._status(target, newest, choice.errors, result, solutions,
                                      "; ".join(failures), views)
        self.observer.record_target(
            target.name, status.phase.value,
            applied=result.applied if result else 0, failed=result.failed if result else 0,
            pruned=result.pruned if result else 0, drifted=result.drifted if result else 0,
            success=status.phase is Phase.READY)
        return status, result

    def _status(self, target: Target, newest: NewestRevision, errors: Sequence[Diagnostic],
                result: TargetResult | None, solutions: dict[str, str],
                failure: str, views: dict[str, InstanceView]
                ) -> tuple[TargetStatus, TargetResult | None]:
        """The target's status, and ``result`` holding the component results kept with it
        (those of the last run when they are equal, so an idle run keeps one set of them,
        not two; those of another target when they are equal, see _shared)."""
        fleet = newest.report.fleet if newest.report is not None \
            and target.name in newest.report.fleet.targets else None
        record = self.store.get(target.name)
        site = fleet.site_path(target.site) if fleet is not None else record.site
        # an idle run builds the status it built last time: built and digested only when
        # one of its inputs changed (results compare by value; durations are not in them)
        hold = self.holds.active(target.name, self.now()) if self.holds else None
        inputs: tuple[object, ...] = (
            site, newest.commit, record.applied, record.last_good, newest.blocked, failure,
            tuple(errors), tuple(solutions.items()), tuple(views.items()), hold,
            (result.revision, result.components, result.cancelled)
            if result is not None else None)
        known = self._statuses.get(target.name)
        if known is not None and known[0] == inputs:
            inputs, status, digest = known
        else:
            inputs = self._shared(inputs)
            status = build_status(target=target.name, site=site, observed=newest.commit,
                                  applied=record.applied, last_good=record.last_good,
                                  result=result, errors=errors, blocked=newest.blocked,
                                  solutions=solutions, failure=failure,
                                  instances={k: v.as_status() for k, v in views.items()},
                                  hold=hold.to_json() if hold is not None else None)
            digest = self.renderer.digest(status)
            self._statuses[target.name] = (inputs, status, digest)
        last = inputs[-1]
        if result is not None and isinstance(last, tuple) and last[1] is not result.components:
            result = replace(result, components=last[1])
        # the time is only kept when the status changed
        now = record.last_change if digest == record.digest \
            else self.now().isoformat(timespec="seconds")
        self.store.status_seen(target.name, site=site, digest=digest, now=now)
        return status, result

    def _shared(self, inputs: tuple[object, ...]) -> tuple[object, ...]:
        """``inputs`` with each part that is equal to a part of another target's inputs
        that very object: targets at one revision with the same results have equal
        results, solutions and views (their keys name instances and components, not
        targets), and the targets of a site the same site path. What no status uses any
        more is dropped once it is as much as what they use (the table is made again from
        the statuses kept)."""
        same = self._same
        if len(same) > self._same_limit:
            self._same = same = {}
            for known, _, _ in self._statuses.values():
                for part in known:
                    with contextlib.suppress(TypeError):
                        same.setdefault(part, part)
            self._same_limit = 2 * len(same) + _SHARED_SLACK
        parts: list[object] = []
        for part in inputs:
            try:
                parts.append(same.setdefault(part, part))
            except TypeError:  # a part that cannot be a key: kept as it is
                parts.append(part)
        return tuple(parts)

    def retire(self, name: str, commit: str) -> TargetResult | None:
        """A target no longer served: prune what was applied there, then forget it (kept
        for the next run when that fails). Never raises: the served targets' statuses are
        written all the same."""
        try:
            with bound_contextvars(target=name):
                return self._retire(name, commit)
        except Exception as exc:
            _log.error("target_retire_failed", target=name, error=describe(exc))
            return None

    def _retire(self, name: str, commit: str) -> TargetResult | None:
        self._providers.pop(name, None)
        self._statuses.pop(name, None)
        inventory = self.inventory(name)
        result = None
        if len(inventory):
            retired = Target(name, {}, self.store.get(name).site, {}, (), Source("", 0))
            s = self.settings
            retry = RetryPolicy(retries=s.retries or 0, delay=s.retry_delay or 1.0)
            result = reconcile_target(retired, (), self.providers(name), inventory, commit,
                                      retry=retry, cancelled=self.cancellation.cancelled)
            _log.info("target_retired", target=name, pruned=result.pruned,
                      failed=result.failed)
        if not len(inventory):
            self.store.forget(name)
            self._inventories.pop(name, None)
            inventory.path.unlink(missing_ok=True)
            self.observer.forget_target(name)
        return result
