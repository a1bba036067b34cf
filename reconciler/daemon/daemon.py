"""The site daemon: schedule, triggers, health endpoints, systemd notify, clean shutdown.

Runs :class:`~reconciler.engine.pipeline.Reconciler` on an apscheduler interval with jitter (default
from the repository's Settings, 180 s), and at once on a trigger: a webhook push of the tracked
ref, a file change in a local repository (watchdog), SIGHUP, or ``reconciler sync``. Triggers
coalesce: at most one run at a time, and any number of triggers during a run cause exactly one
more run after it. SIGTERM/SIGINT stop cleanly: the current step finishes (health waits and
backoff sleeps are abandoned), state files are never left half-written (they are written
atomically), and STOPPING=1 is sent to systemd. Called by ``reconciler run``.

While it runs, the daemon holds the flock on ``<stateDir>/lock`` and registers itself in
``<stateDir>/daemon.json`` (its pid and HTTP address), which is how ``reconciler sync`` finds
and signals it (:mod:`reconciler.daemon.control`). It also serves its control socket
(:mod:`reconciler.daemon.control_socket`): ``hold``, ``unhold``, ``holds`` and ``sync
[--retry]`` from root or a member of its group; a hold, an unhold or a retry runs at once.

A run that leaves a change waiting for a window or a hold says when it may go; the daemon
runs again at that moment (:mod:`reconciler.daemon.wakeup`), not an interval later.

A run that serves no target (the ``site:`` of the config is not in the revision, or no
revision could be fetched) is said in the log (``no_targets_served``) and makes ``/readyz``
answer 503 with the reason, until a run serves something again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.core.registry import ProviderRegistry
from reconciler.core.statefiles import StateLock, write_json
from reconciler.daemon import notify
from reconciler.daemon.config import DaemonConfig, served_problems
from reconciler.daemon.control import DAEMON_FILE
from reconciler.daemon.control_requests import ControlActions
from reconciler.daemon.control_socket import ControlServer
from reconciler.daemon.httpserver import HttpServer, HttpSettings
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notifications import Notifier
from reconciler.daemon.wakeup import WakeUp
from reconciler.daemon.webhooks import RefFilter, load_secret
from reconciler.daemon.wsgi import Health, WebhookSettings
from reconciler.engine.pipeline import Reconciler, RunSummary
from reconciler.engine.status import Phase
from reconciler.gitops.source import LocalWatcher

__all__ = ["Daemon", "why_nothing_served"]

_log = structlog.get_logger(__name__)
DEFAULT_INTERVAL = 180


class Daemon:
    def __init__(self, config: DaemonConfig, registry: ProviderRegistry) -> None:
        self.config = config
        self.registry = registry
        self.metrics = Metrics(phases=[p.value for p in Phase])
        self.reconciler = Reconciler(config.engine_settings(), registry, observer=self.metrics)
        # alerts out (docs/notifications.md): reads the sinks' secret files now
        self.notifier = Notifier(config.notifications, state_dir=config.state_dir,
                                 site=config.site, metrics=self.metrics)
        self.stop_event = threading.Event()
        self.interval = config.interval or DEFAULT_INTERVAL
        self.jitter = config.jitter if config.jitter is not None else 20
        self.health = Health(max_age=3 * self.interval + 60)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.last_summary: RunSummary | None = None
        self.runs = 0
        self._lock = threading.Lock()
        self._running_since: float | None = None
        self._pending: str | None = None
        self._server: HttpServer | None = None
        self._control: ControlServer | None = None
        self._watcher: LocalWatcher | None = None
        # a change waiting for a window or a hold: run when it may go
        self.wakeup = WakeUp(self.scheduler, lambda: self.trigger("window"))
        self.log = _log.bind(site=config.site)

    # -- triggers ----------------------------------------------------------------------
    def trigger(self, reason: str, *, new_revision: bool = False) -> None:
        """Ask for a run now; coalesced with any run in progress or already pending."""
        if new_revision:
            self.reconciler.newer_revision()  # abandons health waits of the current run
        with self._lock:
            if self._running_since is not None or self._pending is not None:
                self._pending = self._pending or reason
                return
            self._pending = reason
        self._wake()

    def _wake(self) -> None:
        try:
            self.scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC))
        except Exception:  # the scheduler is shutting down
            return

    def _job(self) -> None:
        with self._lock:
            reason = self._pending or "schedule"
            self._pending = None
            self._running_since = time.monotonic()
        summary: RunSummary | None = None
        try:
            summary = self.last_summary = self.reconciler.run(reason)
        except ReconcilerError as exc:
            self.log.error("run_failed", error=exc.message)
        except Exception:  # never let one bad run end the daemon
            self.log.exception("run_crashed")
        finally:
            self.runs += 1
            with self._lock:
                self._running_since = None
                # a run given up for a newer revision found by its own look at the server
                # (no webhook, no pending trigger) goes on with that revision at once
                if self.reconciler.newer.is_set() and self._pending is None:
                    self._pending = "newer-revision"
                again = self._has_pending() and not self.stop_event.is_set()
            self._readiness(summary)
            if summary is not None:
                self.notifier.after_run(summary)  # queues; a sender thread delivers
            if not self.stop_event.is_set():
                self.wakeup.after_run(summary)
            self._adjust_interval()
            if again:
                self._wake()

    def _readiness(self, summary: RunSummary | None) -> None:
        """Ready when the run served at least one target; otherwise say why, in the log and
        in ``/readyz``: a daemon that silently serves nothing looks healthy and does nothing.
        """
        if summary is not None and summary.statuses:
            self.health.mark_ready()
            return
        if summary is None:  # the run crashed: keep what the last finished run said
            if self.runs == 1:
                self.health.mark_unready("the first run failed; see the log")
            return
        reason = why_nothing_served(self.reconciler, summary)
        self.log.warning("no_targets_served", reason=reason,
                         revision=summary.revision[:12] or None)
        self.health.mark_unready(reason)

    def _has_pending(self) -> bool:
        return self._pending is not None

    def served_targets(self) -> tuple[str, ...] | None:
        """The targets the last run served; None before a run had a revision to work from
        (then a name cannot be checked)."""
        summary = self.last_summary
        if summary is None or not summary.revision:
            return None
        return tuple(s.target for s in summary.statuses)

    def _adjust_interval(self) -> None:
        """Follow the repository's Settings when the local config sets no interval."""
        if self.config.interval is not None:
            return
        report = self.reconciler.current_report()
        wanted = report.fleet.settings.defaults.interval if report else DEFAULT_INTERVAL
        jitter = self.config.jitter if self.config.jitter is not None else (
            report.fleet.settings.defaults.jitter if report else self.jitter)
        if (wanted, jitter) != (self.interval, self.jitter):
            self.interval, self.jitter = wanted, jitter
            self.health.max_age = 3 * wanted + 60
            self.scheduler.reschedule_job("reconcile", trigger=IntervalTrigger(
                seconds=wanted, jitter=jitter or None))
            self.log.info("interval_changed", interval=wanted, jitter=jitter)

    # -- lifecycle ---------------------------------------------------------------------
    def _signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.log.info("shutdown_requested", signal=signal.Signals(signum).name)
            self.stop_event.set()
            self.reconciler.stop()

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.trigger("SIGHUP")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _start_http(self) -> None:
        if not self.config.listen_enabled:
            return
        webhook = None
        if self.config.webhook_secret_file is not None:
            spec = self.reconciler.tracked_ref
            refs = (RefFilter.tracking(branch=spec.value) if spec.kind == "branch" else
                    RefFilter.tracking(tag=spec.value) if spec.kind == "tag" else
                    RefFilter.tracking(tag_glob="*") if spec.kind == "semver" else
                    RefFilter.tracking(branch=spec.value, tag=spec.value))
            webhook = WebhookSettings(load_secret(self.config.webhook_secret_file), refs,
                                      lambda reason: self.trigger(reason, new_revision=True),
                                      trigger_interval=self.config.webhook_trigger_interval,
                                      trigger_burst=self.config.webhook_trigger_burst)
        self._server = HttpServer(HttpSettings(self.config.listen_address,
                                               self.config.listen_port),
                                  health=self.health, metrics=self.metrics, webhook=webhook)
        self._server.start()
        self.log.info("http_listening", url=self._server.url)

    def _start_control(self) -> None:
        """Serve the control socket. Where the config names its path, a socket that cannot
        be made there stops the daemon (exit 78: fix the config); at the default path the
        daemon runs on without it and says so (holds set with sudo still take effect)."""
        path = self.config.control_socket_path
        reconciler = self.reconciler
        actions = ControlActions(holds=reconciler.holds, now=reconciler.now,
                                 retry=reconciler.request_retry, trigger=self.trigger,
                                 served=self.served_targets, state_dir=self.config.state_dir,
                                 site=self.config.site)
        server = ControlServer(path, actions.answer)
        try:
            server.start()
        except ConfigError as exc:
            if self.config.control_socket_explicit:
                raise
            self.log.error("control_socket_unavailable", error=exc.message,
                           hint="set controlSocket in the config to a directory the daemon "
                                "owns; until then hold and unhold need sudo")
            return
        self._control = server
        self.log.info("control_socket_listening", path=str(path))

    def _start_watcher(self) -> None:
        path = self.config.local_repo_path
        if path is None or not self.config.watch or not path.is_dir():
            return
        spec = self.reconciler.tracked_ref
        self._watcher = LocalWatcher(
            path, lambda reason: self.trigger(reason, new_revision=True),
            branch=spec.value if spec.kind in ("branch", "auto") else None)
        self._watcher.start()
        self.log.info("watching_local_repository", path=str(path))

    def stuck(self) -> bool:
        """A run that lasts far longer than any run should: the loop is stuck."""
        started = self._running_since
        limit = 2 * self.interval + 4 * float(self.config.health_timeout or 300) + 600
        return started is not None and time.monotonic() - started > limit

    def _register(self) -> None:
        """Say which process is the daemon (read by ``control.running_daemon``)."""
        write_json(self.config.state_dir / DAEMON_FILE, {
            "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "url": self._server.url if self._server is not None else None})

    def run(self) -> int:
        lock = StateLock(self.config.state_dir)
        lock.acquire()
        try:
            self._signals()
            self._start_http()
            self._register()
            self.notifier.start()
            self.scheduler.add_job(self._job, IntervalTrigger(seconds=self.interval,
                                                              jitter=self.jitter or None),
                                   id="reconcile", max_instances=1, coalesce=True,
                                   misfire_grace_time=None, next_run_time=datetime.now(UTC))
            self.scheduler.start()
            self._start_control()
            self._start_watcher()
            notify.ready(f"serving {self.config.site}")
            self.log.info("daemon_started", interval=self.interval, repo=self.reconciler
                          .source.url_for_humans(), ref=self.config.ref)
            beat = notify.watchdog_interval() or 5.0
            while not self.stop_event.wait(min(beat, 5.0)):
                if not self.stuck():
                    self.health.beat()
                    notify.watchdog()
                summary = self.last_summary
                if summary is not None:
                    notify.status(f"{summary.revision[:12]}: " + ", ".join(
                        f"{n} {p}" for p, n in sorted(summary.counts().items())))
            return 0
        finally:
            notify.stopping()
            self.reconciler.stop()
            if self._control is not None:
                self._control.stop()
            if self.scheduler.running:  # not yet when the HTTP server could not start
                self.scheduler.shutdown(wait=True)
            self.notifier.stop()
            if self._watcher is not None:
                self._watcher.stop()
            if self._server is not None:
                self._server.stop()
            with contextlib.suppress(OSError):
                (self.config.state_dir / DAEMON_FILE).unlink()
            lock.release()
            self.log.info("daemon_stopped", runs=self.runs)


def why_nothing_served(reconciler: Reconciler, summary: RunSummary) -> str:
    """Why a run served no target: for the log and ``/readyz`` of the daemon, and for
    ``reconciler sync --once``."""
    if not summary.revision:
        return f"no revision of the repository: {summary.fetch_error or 'none fetched'}"
    # only a report the run made: a revision it did not read (not signed by a trusted key,
    # or not exported) is not read here either
    report = reconciler.report_of(summary.revision)
    if report is None:
        return (f"revision {summary.revision[:12]} could not be used (not trusted or not "
                "readable; see the log) and no earlier revision was applied")
    problems = served_problems(reconciler.settings, report.fleet, summary.revision)
    if problems:
        return "; ".join(problems)
    if report.errors:  # the revision is invalid and no earlier one was ever applied
        return (f"revision {summary.revision[:12]} is invalid and no valid revision was "
                f"applied before: {report.errors[0].format()}")
    return f"no target to serve in revision {summary.revision[:12]}"
