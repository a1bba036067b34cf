"""Prometheus metrics of one daemon, in a registry of its own.

The daemon creates one :class:`Metrics` and hands it to the engine, which calls it as runs
progress (``observe_run``, ``record_target``, ``forget_target``, ``fetch_failed``,
``revision``: the engine's ``reconciler.engine.run_observer.RunObserver``, which this class matches
without importing it); ``reconciler.daemon.httpserver`` records webhook requests and serves
:meth:`Metrics.exposition` on ``/metrics``; ``reconciler.daemon.notifications`` records the
deliveries of notifications. A dedicated
``CollectorRegistry`` (not prometheus_client's global one) lets tests and several daemons live
in one process without their metrics colliding.

Exposed (every name prefixed ``reconciler_``):

* ``run_duration_seconds`` histogram: one observation per reconcile run;
* ``last_run_timestamp_seconds``: when the last run ended;
* ``target_last_success_timestamp_seconds{target}``: when the target last reconciled cleanly;
* ``target_phase{target,phase}``: 1 for the target's current phase, 0 for every other known
  phase (the kube-state-metrics pattern, so ``reconciler_target_phase{phase="Failed"} == 1``
  is an alert rule);
* ``components_applied_total{target}``, ``components_failed_total{target}``,
  ``components_pruned_total{target}``: counters over all runs;
* ``components_drifted{target}``: components found drifted in the last run;
* ``git_fetch_errors_total``;
* ``revision_info{revision}`` (value 1): the revision the daemon last fetched;
* ``webhook_requests_total{result}``;
* ``notifications_sent_total{sink}``: notifications a sink accepted;
* ``notifications_failed_total{sink}``: delivery attempts that failed and are retried;
* ``notifications_dropped_total{sink,reason}``: notifications given up, ``queue_full`` (the
  oldest queued while the sink could not be reached, beyond ``notifications.queueLimit``) or
  ``rejected`` (the sink refused the request);
* ``notifications_queued{sink}``: notifications waiting on disk for the sink.

Plus the standard ``process_*`` and ``python_info`` collectors, registered on the same registry.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["DEFAULT_PHASES", "Metrics"]

# Phases a target's status can report; a phase not listed here is added the first time it is
# recorded, so a new phase in the status model never goes unexposed.
DEFAULT_PHASES: tuple[str, ...] = (
    "Pending",
    "Progressing",
    "Ready",
    "Degraded",
    "Failed",
    "Blocked",
    "RolledBack",
    "Suspended",
)

# Runs range from a second (nothing to do) to many minutes (Helm upgrades waiting for health).
_RUN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """The daemon's metrics; every method is thread-safe."""

    def __init__(self, phases: Iterable[str] = DEFAULT_PHASES, *,
                 process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._phases: list[str] = list(dict.fromkeys(phases))
        self._targets: set[str] = set()
        r = self.registry
        self._run_duration = Histogram(
            "reconciler_run_duration_seconds", "Duration of one reconcile run.",
            buckets=_RUN_BUCKETS, registry=r)
        self._last_run = Gauge(
            "reconciler_last_run_timestamp_seconds", "Unix time the last run ended.", registry=r)
        self._last_success = Gauge(
            "reconciler_target_last_success_timestamp_seconds",
            "Unix time the target last reconciled without error.", ["target"], registry=r)
        self._phase = Gauge(
            "reconciler_target_phase",
            "1 for the target's current phase, 0 for the others.", ["target", "phase"],
            registry=r)
        self._applied = Counter(
            "reconciler_components_applied", "Components applied.", ["target"], registry=r)
        self._failed = Counter(
            "reconciler_components_failed", "Components whose apply, health or delete failed.",
            ["target"], registry=r)
        self._pruned = Counter(
            "reconciler_components_pruned", "Components deleted because they left the repository.",
            ["target"], registry=r)
        self._drifted = Gauge(
            "reconciler_components_drifted",
            "Components found drifted from the desired state in the target's last run.",
            ["target"], registry=r)
        self._fetch_errors = Counter(
            "reconciler_git_fetch_errors", "Failed fetches of the fleet repository.", registry=r)
        self._revision = Info(
            "reconciler_revision", "The revision of the fleet repository last fetched.",
            registry=r)
        self._webhooks = Counter(
            "reconciler_webhook_requests", "Webhook requests by result.", ["result"], registry=r)
        self._notified = Counter(
            "reconciler_notifications_sent", "Notifications a sink accepted.", ["sink"],
            registry=r)
        self._notify_failed = Counter(
            "reconciler_notifications_failed",
            "Notification deliveries that failed and are retried.", ["sink"], registry=r)
        self._notify_dropped = Counter(
            "reconciler_notifications_dropped",
            "Notifications given up: queue_full (queue bound exceeded while the sink was "
            "unreachable) or rejected (refused by the sink).", ["sink", "reason"], registry=r)
        self._notify_queued = Gauge(
            "reconciler_notifications_queued", "Notifications waiting on disk for a sink.",
            ["sink"], registry=r)
        if process_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    def observe_run(self, duration: float) -> None:
        """One reconcile run of all targets ended after ``duration`` seconds."""
        self._run_duration.observe(max(0.0, duration))
        self._last_run.set(time.time())

    def record_target(self, target: str, phase: str | enum.Enum, *, applied: int = 0,
                      failed: int = 0, pruned: int = 0, drifted: int = 0,
                      success: bool) -> None:
        """The outcome of one target's run: counts are for this run only."""
        name = str(phase.value) if isinstance(phase, enum.Enum) else phase
        with self._lock:
            if name not in self._phases:
                self._phases.append(name)
                # A phase learnt late must read 0, not be absent, for targets recorded before.
                for other in self._targets:
                    self._phase.labels(other, name).set(0)
            self._targets.add(target)
            for known in self._phases:
                self._phase.labels(target, known).set(1 if known == name else 0)
        self._applied.labels(target).inc(max(0, applied))
        self._failed.labels(target).inc(max(0, failed))
        self._pruned.labels(target).inc(max(0, pruned))
        self._drifted.labels(target).set(max(0, drifted))
        if success:
            self._last_success.labels(target).set(time.time())

    def forget_target(self, target: str) -> None:
        """Drop every series of a target the daemon no longer serves."""
        with self._lock:
            self._targets.discard(target)
            phases = list(self._phases)
        for known in phases:
            _remove(self._phase, target, known)
        for metric in (self._applied, self._failed, self._pruned, self._drifted,
                       self._last_success):
            _remove(metric, target)

    def fetch_failed(self) -> None:
        self._fetch_errors.inc()

    def revision(self, sha: str) -> None:
        """The daemon now works from ``sha`` (replaces the previous revision's series)."""
        self._revision.info({"revision": sha})

    def webhook(self, result: str) -> None:
        """One request to the webhook endpoint ended with ``result`` (e.g. ``triggered``)."""
        self._webhooks.labels(result).inc()

    def notification_sent(self, sink: str) -> None:
        self._notified.labels(sink).inc()

    def notification_failed(self, sink: str) -> None:
        self._notify_failed.labels(sink).inc()

    def notification_dropped(self, sink: str, reason: str, count: int = 1) -> None:
        self._notify_dropped.labels(sink, reason).inc(count)

    def notifications_queued(self, sink: str, count: int) -> None:
        self._notify_queued.labels(sink).set(count)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _remove(metric: Counter | Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never recorded: nothing to drop
        metric.remove(*labels)
