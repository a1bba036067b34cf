"""The site daemon: schedule, triggers, health endpoints, systemd notify, clean shutdown.

Runs :class:`~reconciler.pipeline.Reconciler` on an apscheduler interval with jitter (default
from the repository's Settings, 180 s), and at once on a trigger: a webhook push of the tracked
ref, a file change in a local repository (watchdog), SIGHUP, or ``reconciler sync``. Triggers
coalesce: at most one run at a time, and any number of triggers during a run cause exactly one
more run after it. SIGTERM/SIGINT stop cleanly: the current step finishes (health waits and
backoff sleeps are abandoned), state files are never left half-written (they are written
atomically), and STOPPING=1 is sent to systemd. Called by ``reconciler run``.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler import notify
from reconciler.config import DaemonConfig
from reconciler.errors import ReconcilerError
from reconciler.httpserver import Health, HttpServer, HttpSettings, WebhookSettings
from reconciler.metrics import Metrics
from reconciler.pipeline import Reconciler, RunSummary
from reconciler.registry import ProviderRegistry
from reconciler.source import LocalWatcher
from reconciler.statefiles import StateLock
from reconciler.status import Phase
from reconciler.webhooks import RefFilter, load_secret

__all__ = ["Daemon"]

_log = structlog.get_logger(__name__)
DEFAULT_INTERVAL = 180


class Daemon:
    def __init__(self, config: DaemonConfig, registry: ProviderRegistry) -> None:
        self.config = config
        self.registry = registry
        self.metrics = Metrics(phases=[p.value for p in Phase])
        self.reconciler = Reconciler(config, registry, metrics=self.metrics)
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
        self._watcher: LocalWatcher | None = None
        self.log = _log.bind(site=config.site)

    # -- triggers ----------------------------------------------------------------------
    def trigger(self, reason: str, *, new_revision: bool = False) -> None:
        """Ask for a run now; coalesced with any run in progress or already pending."""
        if new_revision:
            self.reconciler.newer.set()  # abandons health waits of the current run
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
        try:
            self.last_summary = self.reconciler.run(reason)
        except ReconcilerError as exc:
            self.log.error("run_failed", error=exc.message)
        except Exception:  # never let one bad run end the daemon
            self.log.exception("run_crashed")
        finally:
            self.runs += 1
            with self._lock:
                self._running_since = None
                again = self._has_pending() and not self.stop_event.is_set()
            if self.runs == 1:
                self.health.mark_ready()
            self._adjust_interval()
            if again:
                self._wake()

    def _has_pending(self) -> bool:
        return self._pending is not None

    def _adjust_interval(self) -> None:
        """Follow the repository's Settings when the local config sets no interval."""
        if self.config.interval is not None:
            return
        report = self.reconciler._reports.get(self.reconciler._current)
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
            self.reconciler.stop_event.set()

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
            spec = self.reconciler.source.ref
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

    def _start_watcher(self) -> None:
        path = self.config.local_repo_path
        if path is None or not self.config.watch or not path.is_dir():
            return
        spec = self.reconciler.source.ref
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

    def run(self) -> int:
        lock = StateLock(self.config.state_dir)
        lock.acquire()
        try:
            self._signals()
            self._start_http()
            self.scheduler.add_job(self._job, IntervalTrigger(seconds=self.interval,
                                                              jitter=self.jitter or None),
                                   id="reconcile", max_instances=1, coalesce=True,
                                   misfire_grace_time=None, next_run_time=datetime.now(UTC))
            self.scheduler.start()
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
            self.reconciler.stop_event.set()
            self.scheduler.shutdown(wait=True)
            if self._watcher is not None:
                self._watcher.stop()
            if self._server is not None:
                self._server.stop()
            lock.release()
            self.log.info("daemon_stopped", runs=self.runs)
