"""One reconcile run of a site: fetch -> verify -> load + validate -> per target: plan,
apply, prune -> status in Git.

The :class:`Reconciler` is built once per daemon (or per ``sync --once``) and ``run()`` is
called for every trigger. Per target it decides which revision to enforce: the newest one when
it is valid for that target, otherwise the target's last good revision (so drift is still
repaired while a bad commit waits to be fixed), and nothing at all for a target that never had
a good revision. Status is written for every served target whatever happened, in the manner of
a deferred status update: a failed step never skips it. One target's failure never stops
another's: an error nobody planned for (the OS refusing to write a state file) is that
target's ``Failed`` status with the error.

While a run waits (health checks, retry backoff), :meth:`Reconciler.cancelled` tells it to
stop on shutdown or once a newer revision exists. It only reads flags: the look at the server
for a newer revision runs in a background thread, one at a time, and ends at once on
shutdown, so a hung git server never holds up a wait, a newer revision or the way out.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from reconciler.bindings import ProviderSet
from reconciler.config import DaemonConfig, site_id
from reconciler.diagnostics import Diagnostic
from reconciler.errors import ReconcilerError, SourceError, StatusPushError, VerificationError
from reconciler.executing import RetryPolicy, TargetResult, reconcile_target
from reconciler.inventory import Inventory
from reconciler.metrics import Metrics
from reconciler.model import Fleet, Source, StatusLayout, Target
from reconciler.planning import TargetPlan, plan_target
from reconciler.provider_api import LocalPolicy
from reconciler.registry import ProviderRegistry
from reconciler.releases import ReleaseResolver
from reconciler.rendering import Placement
from reconciler.secrets import SecretReader
from reconciler.source import GitSource, Revision
from reconciler.statefiles import read_json, write_json
from reconciler.status import Phase, StatusRenderer, TargetStatus, build_status, status_path
from reconciler.status_push import Layout, StatusPublisher, run_interruptible
from reconciler.validation import Report, validate_repository
from reconciler.verification import VerifyMode, VerifyPolicy, verify_revision

__all__ = ["Reconciler", "RunSummary"]

_log = structlog.get_logger(__name__)


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

    @property
    def ok(self) -> bool:
        return all(s.phase is Phase.READY for s in self.statuses)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.statuses:
            out[s.phase.value] = out.get(s.phase.value, 0) + 1
        return out


class Reconciler:
    """Runs reconciles for the targets one daemon serves."""

    def __init__(self, config: DaemonConfig, registry: ProviderRegistry, *,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.source = GitSource(config.repo_url, config.ref, config.state_dir,
                                ssh_key=config.ssh_key, token_file=config.token_file,
                                timeout=config.git_timeout)
        self.policy = LocalPolicy(
            allowed_providers=config.policy.allowed_providers,
            file_roots=config.policy.file_roots, allow_scripts=config.policy.allow_scripts,
            namespaces=config.policy.namespaces, base_dir=config.state_dir)
        self.verify = VerifyPolicy(VerifyMode(config.verify_mode),
                                   config.verify_allowed_signers, config.verify_gpg_keyring)
        self.secrets = SecretReader(config.secrets_dir)
        self.releases = ReleaseResolver(self.source.git_dir, self.source.checkout)
        self.stop_event = threading.Event()
        self.newer = threading.Event()  # set when a newer revision is known to exist
        self._reports: dict[str, Report] = {}
        self._publisher: StatusPublisher | None = None
        self._state_path = self.state_dir / "state.json"
        self._state: dict[str, Any] = read_json(self._state_path, {"targets": {}})
        self._state.setdefault("targets", {})
        self._run_lock = threading.Lock()
        self._status_text = StatusRenderer()  # idle runs reuse the last run's YAML
        self._published: tuple[str, str, bool] | None = None  # files digest, commit, pushed
        self._current = ""
        self._run_number = 0  # a look at the server answers only the run that started it
        self._last_remote_check = 0.0
        self._looking = threading.Lock()  # held while a look at the server is under way
        self._fetch_failures = 0
        self._next_fetch = 0.0
        self.log = _log.bind(site=config.site)

    # -- cancellation ------------------------------------------------------------------
    REMOTE_CHECK_INTERVAL = 30.0  # seconds between looks at the server during a run

    def cancelled(self) -> bool:
        """True on shutdown, or once a revision newer than the one being applied exists.

        Called from wait loops (health polls, backoff sleeps), so it never waits itself: now
        and then it starts a look at the server in the background (see the module docstring).
        """
        if self.stop_event.is_set() or self.newer.is_set():
            return True
        now = time.monotonic()
        # not while the server is known to be unreachable: each look would wait for a timeout
        if (self._current and not self._fetch_failures
                and now - self._last_remote_check > self.REMOTE_CHECK_INTERVAL
                and self._looking.acquire(blocking=False)):  # one look at a time
            self._last_remote_check = now
            threading.Thread(target=self._look_for_newer,
                             args=(self._current, self._run_number),
                             name="remote-check", daemon=True).start()
        return False

    def _look_for_newer(self, current: str, run_number: int) -> None:
        try:
            remote = self._remote_commit()
        except Exception:  # a look that fails is a look not taken: the next run fetches
            self.log.exception("remote_check_crashed")
            remote = None
        finally:
            self._looking.release()
        # only news for the run that asked counts: a later run fetched for itself
        if remote and remote != current and run_number == self._run_number \
                and not self.stop_event.is_set():
            self.log.info("newer_revision_arrived", revision=remote[:12])
            self.newer.set()

    def _remote_commit(self) -> str | None:
        """The tracked ref's commit on the server (one ``git ls-remote``), or None.

        The same question as ``GitSource.remote_commit``, asked through
        :func:`run_interruptible` so that shutdown ends it: GitPython's runner can only be
        ended by its own timeout, and its timer thread would keep the process from exiting
        until then.
        """
        spec = self.source.ref
        if spec.kind == "semver":
            return None
        refs = [f"refs/heads/{spec.value}"] if spec.kind in ("branch", "auto") else []
        if spec.kind in ("tag", "auto"):
            # an annotated tag lists its tag object; "^{}" lists the commit it points at
            refs += [f"refs/tags/{spec.value}", f"refs/tags/{spec.value}^{{}}"]
        try:
            env = {**os.environ, **self.source.env()}
            done = run_interruptible(["git", "ls-remote", self.source.url, *refs], env=env,
                                     timeout=float(self.config.git_timeout),
                                     stop=self.stop_event)
        except (ReconcilerError, OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        found: dict[str, str] = {}
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            sha, _, name = line.partition("\t")
            if name:
                found[name] = sha
        for ref in (refs[0] if spec.kind in ("branch", "auto") else None,
                    f"refs/tags/{spec.value}^{{}}", f"refs/tags/{spec.value}"):
            if ref is not None and ref in found:
                return found[ref]
        return None

    # -- revisions ---------------------------------------------------------------------
    def report_for(self, commit: str) -> Report:
        found = self._reports.get(commit)
        if found is None:
            root = self.source.checkout(commit)
            found = validate_repository(root, registry=self.registry, policy=self.policy,
                                        revision=commit, secrets=self.secrets,
                                        releases=self.releases)
            self._reports[commit] = found
            # keep the reports of the revisions still in use, drop the rest
            keep = self._revisions_in_use() | {commit}
            for old in [c for c in self._reports if c not in keep]:
                del self._reports[old]
        return found

    def _revisions_in_use(self) -> set[str]:
        keep = {self._state.get("revision", "")}
        for t in self._state["targets"].values():
            keep.add(t.get("lastGood", ""))
            keep.add(t.get("applied", ""))
        keep.discard("")
        return keep

    def served(self, fleet: Fleet) -> list[Target]:
        targets = fleet.targets_under(self.config.site)
        if self.config.targets:
            targets = [t for t in targets if t.name in self.config.targets]
        return sorted(targets, key=lambda t: t.name)

    def site_path(self, fleet: Fleet) -> str:
        site = fleet.find_site(self.config.site)
        return fleet.site_path(site.name) if site else self.config.site

    # -- the run -----------------------------------------------------------------------
    FETCH_BACKOFF = 10.0  # first delay after a failed fetch, doubled each time
    FETCH_BACKOFF_CAP = 900.0

    def fetch(self, *, force: bool = False) -> tuple[Revision | None, str]:
        """Fetch (unless backing off from an unreachable server) and resolve the ref.

        While the server is unreachable, runs go on with the last fetched commit, so the
        last good revision stays enforced and drift is still repaired.
        """
        now = time.monotonic()
        if self._fetch_failures and now < self._next_fetch and not force:
            error = (f"git server unreachable ({self._fetch_failures} failed fetches); next "
                     f"attempt in {self._next_fetch - now:.0f}s")
        else:
            try:
                self.source.fetch()
            except SourceError as exc:
                self._fetch_failures += 1
                delay = min(self.FETCH_BACKOFF_CAP,
                            self.FETCH_BACKOFF * 2 ** (self._fetch_failures - 1))
                self._next_fetch = time.monotonic() + delay
                if self.metrics is not None:
                    self.metrics.fetch_failed()
                self.log.warning("fetch_failed", error=exc.message,
                                 failures=self._fetch_failures, retry_in=delay)
                error = exc.message
            else:
                if self._fetch_failures:
                    self.log.info("fetch_recovered", after_failures=self._fetch_failures)
                self._fetch_failures = 0
                error = ""
        try:
            return self.source.resolve(), error
        except SourceError as exc:
            return None, error or exc.message

    def retry_policy(self, fleet: Fleet) -> RetryPolicy:
        d = fleet.settings.defaults
        c = self.config
        return RetryPolicy(
            retries=c.retries if c.retries is not None else d.retries,
            delay=c.retry_delay if c.retry_delay is not None else d.retry_delay,
            max_delay=c.retry_max_delay,
            health_timeout=float(c.health_timeout if c.health_timeout is not None
                                 else d.health_timeout),
            health_poll=c.health_poll_interval)

    def run(self, reason: str = "schedule") -> RunSummary:
        with self._run_lock:
            return self._run(reason)

    def _run(self, reason: str) -> RunSummary:
        started = time.monotonic()
        self._run_number += 1
        self.newer.clear()
        self._status_text.next_run()
        # a push notification or an explicit request means the server is worth asking now
        forced = reason.startswith(("webhook", "sync", "SIGHUP", "ref-change"))
        revision, fetch_error = self.fetch(force=forced)
        log = self.log.bind(reason=reason)
        if revision is None:
            log.error("run_failed", error=fetch_error)
            return RunSummary("", (), time.monotonic() - started, fetch_error=fetch_error)
        commit = revision.commit
        self._current = commit
        if self.metrics is not None:
            self.metrics.revision(commit)
        log = log.bind(revision=commit[:12])
        blocked = ""  # the revision is not signed by a trusted key
        unusable = ""  # the revision could not be checked out or validated
        report: Report | None = None
        try:
            if self.verify.mode is not VerifyMode.NONE:
                tags = self.source.tags_at(commit) if self.verify.mode is VerifyMode.TAG else []
                tag = revision.ref.removeprefix("refs/tags/") \
                    if revision.ref.startswith("refs/tags/") else (tags[0] if tags else None)
                verify_revision(self.source.git_dir, commit, policy=self.verify, tag=tag)
            report = self.report_for(commit)
        except VerificationError as exc:
            blocked = exc.message
            log.warning("revision_blocked", error=blocked)
        except SourceError as exc:
            unusable = f"revision {commit[:12]} cannot be used: {exc.message}"
            log.error("checkout_failed", error=exc.message)
        except Exception as exc:  # a validation bug must not cost the targets their status
            unusable = f"revision {commit[:12]} cannot be used: {_describe(exc)}"
            log.exception("validation_crashed")
        # which fleet says what this daemon serves: the new one when usable, else last good
        fleet = report.fleet if report is not None and not _global_errors(report) else None
        if fleet is None:
            fleet = self._fallback_fleet()
        statuses: list[TargetStatus] = []
        results: list[TargetResult] = []
        served = self.served(fleet) if fleet is not None else []
        names = {t.name for t in served}
        state_error = ""
        commit_sha: str | None = None
        pushed = False
        try:
            for target in served:
                status, result = self._target(target, commit, report, blocked, unusable)
                statuses.append(status)
                if result is not None:
                    results.append(result)
            # targets that left this daemon: prune everything applied there
            for gone in sorted(set(self._state["targets"]) - names):
                result = self._retire(gone, commit)
                if result is not None:
                    results.append(result)
        finally:
            # whatever happened above, the state and the status of every target are written
            # (Flux's deferred status patch); neither failing stops the other
            state_error = self._save_state(commit)
            site_path = self.site_path(fleet) if fleet is not None else self.config.site
            site_paths = sorted({fleet.site_path(s.name) for s in fleet.sites.values()
                                 if fleet.site_path(s.name) == site_path
                                 or fleet.site_path(s.name).startswith(site_path + "/")}) \
                if fleet is not None else [site_path]
            commit_sha, pushed = self._publish(statuses, site_path, site_paths, commit, fleet)
        self.source.prune_checkouts(self._revisions_in_use() | {commit}
                                    | self.releases.commits)
        summary = RunSummary(commit, tuple(statuses), time.monotonic() - started, commit_sha,
                             pushed, fetch_error or unusable, tuple(results),
                             state_error=state_error)
        if self.metrics is not None:
            self.metrics.observe_run(summary.duration)
        log.info("run_finished", duration=round(summary.duration, 3), targets=len(statuses),
                 phases=summary.counts(),
                 applied=sum(r.applied for r in results), pruned=sum(r.pruned for r in results),
                 failed=sum(r.failed for r in results), drifted=sum(r.drifted for r in results),
                 status_commit=commit_sha[:12] if commit_sha else None,
                 fetch_error=fetch_error or unusable or None, state_error=state_error or None)
        return summary

    def _save_state(self, commit: str) -> str:
        """Write ``state.json``; returns why that failed ("" when written). The next run
        writes it again: until then a restart forgets this run's last good revisions."""
        self._state["revision"] = commit
        try:
            write_json(self._state_path, self._state)
        except Exception as exc:  # the statuses are written all the same
            error = f"cannot write {self._state_path}: {_describe(exc)}"
            self.log.error("state_write_failed", error=error)
            return error
        return ""

    def _fallback_fleet(self) -> Fleet | None:
        for info in self._state["targets"].values():
            good = info.get("lastGood")
            if good:
                try:
                    return self.report_for(good).fleet
                except Exception as exc:  # another target's last good revision may serve
                    self.log.warning("last_good_unusable", revision=good[:12],
                                     error=_describe(exc))
        return None

    def _target(self, target: Target, commit: str, report: Report | None, blocked: str,
                unusable: str = "") -> tuple[TargetStatus, TargetResult | None]:
        info = self._state["targets"].setdefault(target.name, {})
        last_good = info.get("lastGood", "")
        errors: list[Diagnostic] = report.errors_for(target.name) if report is not None else []
        use = commit if (not blocked and not unusable and not errors) else last_good
        result: TargetResult | None = None
        solutions: dict[str, str] = {}
        failures = [unusable] if unusable else []
        if use:
            try:
                use_report = report if use == commit and report is not None \
                    else self.report_for(use)
                placements = use_report.placements.get(target.name, ())
                solutions = {p.instance.name: p.solution.name for p in placements}
                use_target = use_report.fleet.targets.get(target.name, target)
                result = self._execute(use_target, placements, use, use_report.fleet)
            except ReconcilerError as exc:
                failures.append(exc.message)
                self.log.error("target_failed", target=target.name, error=exc.message,
                               reason=exc.reason)
            except Exception as exc:  # this target's failure, never another target's
                failures.append(_describe(exc))
                self.log.exception("target_crashed", target=target.name)
        if result is not None and result.succeeded:
            info["applied"] = use
            if use == commit:
                info["lastGood"] = commit
        fleet = report.fleet if report is not None and target.name in report.fleet.targets \
            else None
        site = fleet.site_path(target.site) if fleet is not None else info.get("site", "")
        info["site"] = site
        status = build_status(target=target.name, site=site, observed=commit,
                              applied=info.get("applied", ""),
                              last_good=info.get("lastGood", ""), result=result,
                              errors=errors, blocked=blocked, solutions=solutions,
                              failure="; ".join(failures))
        digest = self._status_text.digest(status)
        if info.get("digest") != digest:
            info["digest"] = digest
            info["lastChange"] = datetime.now(UTC).isoformat(timespec="seconds")
        if self.metrics is not None:
            self.metrics.record_target(
                target.name, status.phase.value,
                applied=result.applied if result else 0,
                failed=result.failed if result else 0, pruned=result.pruned if result else 0,
                drifted=result.drifted if result else 0,
                success=status.phase is Phase.READY)
        return status, result

    def _execute(self, target: Target, placements: Sequence[Placement], revision: str,
                 fleet: Fleet) -> TargetResult:
        providers = ProviderSet(target.name, self.registry, self.policy, self.state_dir,
                                self.cancelled, stopping=self.stop_event.is_set,
                                shutdown_grace=self.config.shutdown_grace)
        inventory = Inventory.load(self.state_dir, target.name)
        return reconcile_target(target, placements, providers, inventory, revision,
                                retry=self.retry_policy(fleet), cancelled=self.cancelled)

    def _retire(self, name: str, commit: str) -> TargetResult | None:
        """A target no longer served: prune what was applied there, then forget it (kept
        for the next run when that fails)."""
        try:
            return self._retire_target(name, commit)
        except Exception as exc:  # the served targets' statuses are written all the same
            self.log.error("target_retire_failed", target=name, error=_describe(exc))
            return None

    def _retire_target(self, name: str, commit: str) -> TargetResult | None:
        inventory = Inventory.load(self.state_dir, name)
        info = self._state["targets"].get(name, {})
        result = None
        if len(inventory):
            retired = Target(name, {}, info.get("site", ""), {}, (), Source("", 0))
            providers = ProviderSet(name, self.registry, self.policy, self.state_dir,
                                    self.cancelled, stopping=self.stop_event.is_set,
                                    shutdown_grace=self.config.shutdown_grace)
            result = reconcile_target(retired, (), providers, inventory, commit,
                                      retry=RetryPolicy(retries=self.config.retries or 0,
                                                        delay=self.config.retry_delay or 1.0),
                                      cancelled=self.cancelled)
            self.log.info("target_retired", target=name, pruned=result.pruned,
                          failed=result.failed)
        if not len(inventory):
            self._state["targets"].pop(name, None)
            inventory.path.unlink(missing_ok=True)
            if self.metrics is not None:
                self.metrics.forget_target(name)
        return result

    # -- status ------------------------------------------------------------------------
    def publisher(self, site_path: str, fleet: Fleet | None) -> StatusPublisher:
        if self._publisher is None:
            layout = self.config.status_layout or (fleet.settings.status_layout if fleet
                                                   else StatusLayout.PER_SITE)
            branch = self.config.status_branch
            if layout is StatusLayout.SHARED and branch is None and fleet is not None:
                branch = fleet.settings.status_branch
            self._publisher = StatusPublisher(
                self.source.git_dir, self.config.repo_url, site_id=site_id(site_path),
                site_path=site_path,
                layout=Layout.SHARED if layout is StatusLayout.SHARED else Layout.PER_SITE,
                branch=branch, push=self.config.status_push, stop=self.stop_event)
        return self._publisher

    def _publish(self, statuses: list[TargetStatus], site_path: str, site_paths: list[str],
                 commit: str, fleet: Fleet | None) -> tuple[str | None, bool]:
        files: dict[str, bytes] = {}
        for status in statuses:
            info = self._state["targets"].get(status.target, {})
            files[status_path(status.site or site_path, status.target)] = self._status_text.render(
                status, info.get("lastChange", ""))
        # An idle run has the file set of the run before. When that is on the remote (or
        # pushing is off) the publisher would build the same tree and change nothing, after
        # writing every file as a blob through a temporary file: most of a no-op run.
        key = _files_digest(files, site_paths)
        last, self._published = self._published, None
        if last is not None and last[0] == key and (last[2] or not self.config.status_push):
            self._published = last
            return last[1], last[2]
        # while the git server is unreachable (fetch backing off), commit locally only: the
        # queued commit is pushed by the first run after the server answers again
        offline = self._fetch_failures > 0 and time.monotonic() < self._next_fetch
        publisher: StatusPublisher | None = None
        try:
            publisher = self.publisher(site_path, fleet)
            publisher.set_sites(site_paths)
            result = publisher.publish(files, f"status: {self.config.site} at {commit[:12]}",
                                       push=not offline)
        except StatusPushError as exc:
            self.log.warning("status_push_failed", error=exc.message)
            # the commit is queued locally: report it
            return (publisher.head() if publisher is not None else None), False
        except ReconcilerError as exc:
            self.log.error("status_failed", error=exc.message)
            return None, False
        except Exception as exc:  # e.g. no space left for the temporary files of git
            self.log.error("status_failed", error=_describe(exc))
            return None, False
        if result.error:
            self.log.warning("status_push_failed", error=result.error)
        elif offline and publisher.pending():
            self.log.info("status_queued", commit=(result.commit or "")[:12])
        if result.commit is not None:
            self._published = (key, result.commit, result.pushed)
        return result.commit, result.pushed

    # -- plan --------------------------------------------------------------------------
    def plan(self) -> tuple[str, list[TargetPlan], list[Diagnostic]]:
        revision, fetch_error = self.fetch()
        if revision is None:
            raise SourceError(fetch_error or "no revision")
        report = self.report_for(revision.commit)
        plans = []
        for target in self.served(report.fleet):
            providers = ProviderSet(target.name, self.registry, self.policy, self.state_dir,
                                    lambda: False)
            inventory = Inventory.load(self.state_dir, target.name)
            plans.append(plan_target(target, report.placements.get(target.name, ()), providers,
                                     inventory, revision.commit))
        return revision.commit, plans, report.errors


def _files_digest(files: dict[str, bytes], site_paths: list[str]) -> str:
    digest = hashlib.sha256("\0".join(sorted(site_paths)).encode() + b"\0\0")
    for path in sorted(files):
        data = files[path]
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    """An unexpected error as a status message: what the OS said, or the exception."""
    if isinstance(exc, ReconcilerError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"unexpected error: {type(exc).__name__}: {exc}"


def _global_errors(report: Report) -> bool:
    return any(not d.target and not d.instance for d in report.errors)

