"""One reconcile run of a site, as ordered steps with the status written in a ``finally``.

:meth:`Reconciler.run` is called for every trigger (the daemon's schedule, a webhook,
``sync --once``); runs are serialised. Its steps, each in the module named for it:

1. fetch the tracked ref, backing off from an unreachable server (``fetching``);
2. check the newest revision's signature, check it out and validate it
   (``revisions.RevisionReader``); a revision that fails is blocked or unusable, not fatal;
3. choose the fleet that says what this daemon serves (``revisions.serving_fleet``);
4. per served target, in name order: choose its revision, execute, record, build its status
   (``reconciling.TargetReconciler``); one target's failure never stops another's;
5. retire the targets that left this daemon: prune what was applied there;
6. ``finally``, whatever happened above, in the manner of Flux's deferred status patch:
   save the per-target state (``state_store``) and publish every served target's status
   (``publishing``); neither failing stops the other;
7. drop checkouts no longer in use; report the run (``run_observer``) and log one line.

The whole run carries a run id, the site and (once fetched) the revision as structlog
context variables, so every line logged during it, a provider's too, says which run it
belongs to. The engine takes its settings as values (:class:`EngineSettings`) and reports
through a :class:`RunObserver`; it imports nothing of the daemon.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog
from structlog.contextvars import bound_contextvars

from reconciler.core.backoff import Backoff
from reconciler.core.diagnostics import Diagnostic
from reconciler.core.errors import ReconcilerError, SourceError
from reconciler.core.model import Fleet, StatusLayout, Target
from reconciler.core.registry import ProviderRegistry
from reconciler.core.secrets import SecretReader
from reconciler.core.validation import Report
from reconciler.engine.cancellation import Cancellation
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.executing import RetryPolicy, TargetResult
from reconciler.engine.failures import describe
from reconciler.engine.fetching import Fetcher
from reconciler.engine.holds import HoldStore
from reconciler.engine.peer_status import PeerStatuses
from reconciler.engine.planning import TargetPlan
from reconciler.engine.publishing import StatusPublishing, site_paths
from reconciler.engine.reconciling import TargetReconciler
from reconciler.engine.revisions import RevisionReader, serving_fleet
from reconciler.engine.run_observer import NO_OBSERVER, RunObserver, target_done
from reconciler.engine.state_store import StateStore
from reconciler.engine.status import Phase, StatusRenderer, TargetStatus
from reconciler.gitops.approvals import approvals_for
from reconciler.gitops.source import GitSource, RefSpec
from reconciler.gitops.status_branches import DEFAULT_SHARED_BRANCH, Layout
from reconciler.gitops.tenancy import TenancyCheck, check_commits
from reconciler.gitops.verification import VerifyMode, VerifyPolicy

__all__ = ["EngineSettings", "Reconciler", "RunSummary"]

_log = structlog.get_logger(__name__)

# a push notification or an explicit request means the server is worth asking now
_FORCING_REASONS = ("webhook", "sync", "SIGHUP", "ref-change", "newer-revision")


@dataclass(frozen=True)
class RunSummary:
    revision: str
    statuses: tuple[TargetStatus, ...]
    duration: float
    status_commit: str | None = None
    status_pushed: bool = False
    fetch_error: str = ""
    results: tuple[TargetResult, ...] = field(default=(), compare=False)
    state_error: str = ""  # state.json could not be written (the statuses were)
    run_id: str = field(default="", compare=False)  # as bound in the run's log lines
    # the earliest time a change that waits (a window, a hold) may go: run again then
    wake_at: datetime | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return all(s.phase is Phase.READY for s in self.statuses)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.statuses:
            out[s.phase.value] = out.get(s.phase.value, 0) + 1
        return out


class Reconciler:
    """Runs reconciles for the targets one daemon serves (see the module docstring).

    ``settings`` are the engine's settings (the daemon makes them from its configuration);
    ``observer`` hears of every run's progress;
    ``clock`` (monotonic seconds) times the fetch backoff and the looks at the server.
    """

    def __init__(self, settings: EngineSettings, registry: ProviderRegistry,
                 *, observer: RunObserver | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        s = self.settings = settings
        self.registry = registry
        self.observer = observer if observer is not None else NO_OBSERVER
        self.clock = clock
        self.now = now  # wall-clock time, for windows and holds
        self.state_dir = s.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # the fetch and the looks at the server end soon after shutdown (see gitrun)
        self.source = GitSource(s.repo_url, s.ref, s.state_dir, ssh_key=s.ssh_key,
                                token_file=s.token_file, timeout=s.git_timeout,
                                stop=lambda: self.cancellation.stop_event.is_set())
        self.policy = replace(s.policy, base_dir=s.state_dir)
        self.store = StateStore.load(self.state_dir / "state.json")
        self.holds = HoldStore.load(self.state_dir / "holds.json")
        # (target or "" for every target) whose failed changes the next run applies again
        self._retries: set[str] = set()
        self.revisions = RevisionReader(
            self.source, registry, self.policy, secrets=SecretReader(s.secrets_dir),
            verify=VerifyPolicy(s.verify_mode, s.verify_allowed_signers,
                                s.verify_gpg_keyring), in_use=self.store.revisions_in_use)
        self.reports = self.revisions.reports
        self.fetcher = Fetcher(self.source, Backoff(s.fetch_backoff, s.fetch_backoff_cap),
                               observer=self.observer, clock=clock)
        self.cancellation = Cancellation(
            self.source, interval=s.remote_check_interval,
            reachable=lambda: self.fetcher.failures == 0, clock=clock)
        renderer = StatusRenderer()  # idle runs reuse the last run's YAML
        self.targets = TargetReconciler(
            s, registry, self.policy, reports=self.reports, store=self.store,
            cancellation=self.cancellation, renderer=renderer, observer=self.observer,
            now=now, holds=self.holds)
        self.peers = PeerStatuses(self.source, layout=self._layout,
                                  shared_branch=self._shared_branch)
        self.targets.rollouts.peers = self.peers
        self.targets.rollouts.approvals = self._approved
        self.targets.tenancy = self._tenancy
        self._tenancy_checks: dict[tuple[str, str], TenancyCheck] = {}
        self.status = StatusPublishing(s, self.source.git_dir,
                                       stop=self.cancellation.stop_event, renderer=renderer)
        self._renderer = renderer
        self._run_lock = threading.Lock()
        self._retry_lock = threading.Lock()

    # -- what the daemon asks ----------------------------------------------------------
    @property
    def stop_event(self) -> threading.Event:
        """Set on shutdown (see :meth:`stop`)."""
        return self.cancellation.stop_event

    @property
    def newer(self) -> threading.Event:
        """Set once a revision newer than the current run's is known."""
        return self.cancellation.newer

    def stop(self) -> None:
        """Shutdown: waits of the current run end, no new work starts."""
        self.cancellation.stop_event.set()

    def newer_revision(self) -> None:
        """A newer revision exists (a webhook said so): the current run stops waiting."""
        self.cancellation.newer.set()

    def request_retry(self, target: str = "") -> None:
        """``sync --retry``: the next run applies again the changes that failed (and were
        rolled back) on ``target`` ("" for every served target)."""
        with self._retry_lock:
            self._retries.add(target)

    def take_retries(self) -> frozenset[str]:
        """The retries asked for since the last run took them."""
        with self._retry_lock:
            taken, self._retries = frozenset(self._retries), set()
        return taken

    def cancelled(self) -> bool:
        return self.cancellation.cancelled()

    @property
    def tracked_ref(self) -> RefSpec:
        return self.source.ref

    @property
    def current_revision(self) -> str:
        """The revision the last (or current) run works from; "" before one fetched."""
        return self.cancellation.current

    def report_of(self, commit: str) -> Report | None:
        """The validation of ``commit`` if a run made it (never validates)."""
        return self.reports.known(commit)

    def current_report(self) -> Report | None:
        """The validation of :attr:`current_revision`, if it was validated."""
        return self.reports.known(self.cancellation.current)

    def report_for(self, commit: str) -> Report:
        """The validation of ``commit``, checked out and validated when not known."""
        return self.reports.get(commit)

    def served(self, fleet: Fleet) -> list[Target]:
        targets = fleet.targets_under(self.settings.site)
        if self.settings.targets:
            targets = [t for t in targets if t.name in self.settings.targets]
        return sorted(targets, key=lambda t: t.name)

    def site_path(self, fleet: Fleet) -> str:
        return site_paths(fleet, self.settings.site)[0]

    def retry_policy(self, fleet: Fleet) -> RetryPolicy:
        return self.targets.retry_policy(fleet)

    # -- the run -----------------------------------------------------------------------
    def run(self, reason: str = "schedule") -> RunSummary:
        with self._run_lock:
            run_id = secrets.token_hex(6)
            with bound_contextvars(run_id=run_id, site=self.settings.site):
                return self._run(reason, run_id)

    def _run(self, reason: str, run_id: str) -> RunSummary:
        started = time.monotonic()  # a duration, measured: not the injected clock
        self.cancellation.begin_run()
        self._renderer.next_run()
        fetched = self.fetcher.fetch(force=reason.startswith(_FORCING_REASONS))
        if fetched.revision is None:
            _log.error("run_failed", reason=reason, error=fetched.error)
            return RunSummary("", (), time.monotonic() - started, fetch_error=fetched.error,
                              run_id=run_id)
        commit = fetched.revision.commit
        self.cancellation.current = commit
        self.observer.revision(commit)
        with bound_contextvars(revision=commit[:12]):
            newest = self.revisions.newest(fetched.revision)
            fleet = serving_fleet(newest.report, self.store.last_good_revisions(),
                                  self.reports)
            statuses: list[TargetStatus] = []
            results: list[TargetResult] = []
            served = self.served(fleet) if fleet is not None else []
            retries = self.take_retries()
            self.targets.wake_at = None
            self.peers.begin_run()
            self.holds.refresh()
            try:
                for index, target in enumerate(served, 1):
                    status, result = self.targets.reconcile(
                        target, newest, retry="" in retries or target.name in retries)
                    statuses.append(status)
                    if result is not None:
                        results.append(result)
                    target_done(self.observer, target.name, index, len(served))
                # targets that left this daemon: prune everything applied there
                for gone in sorted(set(self.store) - {t.name for t in served}):
                    result = self.targets.retire(gone, commit)
                    if result is not None:
                        results.append(result)
            finally:
                self.peers.end_run()
                state_error = self._save_state(commit)
                status_commit, pushed = self.status.publish(
                    statuses, self.store, fleet, commit, offline=self.fetcher.offline)
            in_use = self.store.revisions_in_use() | {commit}
            self.source.prune_checkouts(in_use | self.revisions.releases.commits)
            self.targets.digests.keep(in_use)
            self.targets.rollouts.keep(in_use)
            summary = RunSummary(commit, tuple(statuses), time.monotonic() - started,
                                 status_commit, pushed, fetched.error or newest.unusable,
                                 tuple(results), state_error=state_error, run_id=run_id,
                                 wake_at=self.targets.wake_at)
            self.observer.observe_run(summary.duration)
            _log.info("run_finished", reason=reason, duration=round(summary.duration, 3),
                      targets=len(statuses), phases=summary.counts(),
                      applied=sum(r.applied for r in results),
                      pruned=sum(r.pruned for r in results),
                      failed=sum(r.failed for r in results),
                      drifted=sum(r.drifted for r in results),
                      status_commit=status_commit[:12] if status_commit else None,
                      fetch_error=summary.fetch_error or None,
                      state_error=state_error or None)
            return summary

    def _save_state(self, commit: str) -> str:
        """Write ``state.json``; returns why that failed ("" when written). The next run
        writes it again: until then a restart forgets this run's last good revisions."""
        try:
            self.store.save(commit)
        except Exception as exc:  # the statuses are written all the same
            error = f"cannot write {self.store.path}: {describe(exc)}"
            _log.error("state_write_failed", error=error)
            return error
        return ""

    def _tenancy(self, old: str, new: str) -> TenancyCheck | None:
        """The tenancy check of the commits ``old..new`` (docs/tenancy.md), made once per
        pair; None when verification is off. Raises what the check raises: the target then
        fails, nothing of it moves."""
        if self.settings.verify_mode is VerifyMode.NONE:
            return None
        found = self._tenancy_checks.get((old, new))
        if found is None:
            found = check_commits(self.source.git_dir, old, new,
                                  gpg_keyring=self.settings.verify_gpg_keyring,
                                  signed_merges=self.settings.verify_signed_merges)
            if len(self._tenancy_checks) > 64:
                self._tenancy_checks.clear()
            self._tenancy_checks[(old, new)] = found
            if not found.ok:
                _log.warning("tenancy_violations", old=old[:12], new=new[:12],
                             violations=[v.describe() for v in found.blocking[:5]])
        return found

    def _approved(self, instance: str, wave: str, release: str,
                  approvers: Sequence[str]) -> tuple[bool, str]:
        """Whether ``wave`` of ``instance`` is approved for ``release``: an approval tag
        (fetched with the tags) signed by one of ``approvers`` under the site's policy."""
        try:
            check = approvals_for(self.source.git_dir, instance, wave, release,
                                  policy=self.revisions.verify, approvers=approvers)
        except ReconcilerError as exc:
            return False, f"approvals cannot be checked: {exc.message}"
        return check.approved, check.reason

    def _layout(self) -> Layout:
        """The status layout the fleet's sites publish in (the other sites' too)."""
        report = self.current_report()
        layout = self.settings.status_layout or (
            report.fleet.settings.status_layout if report else StatusLayout.PER_SITE)
        return Layout.SHARED if layout is StatusLayout.SHARED else Layout.PER_SITE

    def _shared_branch(self) -> str:
        report = self.current_report()
        return self.settings.status_branch or (report.fleet.settings.status_branch if report
                                               else DEFAULT_SHARED_BRANCH)

    # -- plan --------------------------------------------------------------------------
    def plan(self) -> tuple[str, list[TargetPlan], list[Diagnostic]]:
        """Fetch, validate, and say per served target what a run would change."""
        fetched = self.fetcher.fetch()
        if fetched.revision is None:
            raise SourceError(fetched.error or "no revision")
        commit = fetched.revision.commit
        report = self.reports.get(commit)
        served = self.served(report.fleet)
        plans = []
        for index, target in enumerate(served, 1):
            plans.append(self.targets.plan(target, report.placements.get(target.name, ()),
                                           commit))
            target_done(self.observer, target.name, index, len(served))
        return commit, plans, report.errors
