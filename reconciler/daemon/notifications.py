"""Alerts out: after every run, tell each configured sink what changed, without ever making
the run wait for a server.

The daemon builds one :class:`Notifier` from ``notifications:`` of its config (reading the
sinks' secret files, so a missing one stops the start-up), calls :meth:`Notifier.start` once
it holds the state lock, :meth:`Notifier.after_run` with every run's summary and
:meth:`Notifier.stop` on shutdown.

``after_run`` compares the run's target states with what each sink was last told
(``notification_queue.SentStore``, kept in the state directory, so a restart sends nothing
again), builds the sink's requests for what changed (``notification_payloads``), and puts
them in the sink's queue on disk; that is all the run's thread does. One sender thread per
sink then delivers its queue in order (``notification_sinks.Sink.send``): at most
``rateBurst`` at once and one per ``rateInterval`` seconds after that; a failure that may pass
is retried after a delay doubling from ``retryDelay`` to ``retryMaxDelay`` (with jitter, and
at least the server's ``Retry-After``), for as long as the delivery is queued; an answer that
refuses the request is logged and the delivery dropped. While a sink cannot be reached its
queue grows up to ``queueLimit``, then the oldest deliveries are dropped, counted in
``reconciler_notifications_dropped_total{sink,reason="queue_full"}``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.backoff import Backoff
from reconciler.core.secrets import redact_value
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notification_payloads import (
    Event,
    TargetState,
    commit_statuses,
    forge_request,
    phase_changes,
    slack_body,
    state_of,
    teams_body,
    webhook_body,
)
from reconciler.daemon.notification_queue import (
    DiskQueue,
    SentStore,
    TokenBucket,
    discard_unknown,
    notifications_dir,
)
from reconciler.daemon.notification_settings import NotificationSettings, SinkKind
from reconciler.daemon.notification_sinks import Result, Sink
from reconciler.engine.pipeline import RunSummary
from reconciler.gitops.status_branches import site_id_for

__all__ = ["Notifier"]

_log = structlog.get_logger(__name__)
_IDLE_WAIT = 60.0  # a sender with nothing queued looks again this often, woken or not
_CHAT_BODIES: dict[SinkKind, Callable[[Event], dict[str, Any]]] = {
    SinkKind.WEBHOOK: webhook_body, SinkKind.SLACK: slack_body, SinkKind.TEAMS: teams_body}


class _Sender:
    """The thread that delivers one sink's queue (see the module docstring)."""

    def __init__(self, sink: Sink, queue: DiskQueue, settings: NotificationSettings,
                 metrics: Metrics, stop: threading.Event,
                 clock: Callable[[], float]) -> None:
        self.sink = sink
        self.queue = queue
        self.metrics = metrics
        self.stop = stop
        self.wake = threading.Event()
        self.backoff = Backoff(settings.retry_delay, settings.retry_max_delay, jitter=True)
        self.bucket = TokenBucket(settings.rate_interval, settings.rate_burst, clock=clock)
        self.log = _log.bind(sink=sink.name, kind=sink.kind.value, host=sink.host)
        self.thread = threading.Thread(target=self._loop, name=f"notify-{sink.name}",
                                       daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self._deliver()
            except Exception:  # a fault of ours (a disk error): the thread must live on
                self.log.exception("notification_sender_failed")
                self.stop.wait(self.backoff.cap)

    def _deliver(self) -> None:
        """Deliver the queue until it is empty or the daemon stops."""
        failures = 0
        while not self.stop.is_set():
            self.wake.clear()  # before looking: a put after this look sets it again
            item = self.queue.head()
            if item is None:
                self.wake.wait(_IDLE_WAIT)
                continue
            wait = self.bucket.wait_time()
            if wait > 0:
                self.stop.wait(wait)
                continue
            if not self.queue.claim(item.seq):
                continue  # dropped for a newer one while we looked
            self.bucket.take()
            outcome = self.sink.send(item)
            if outcome.result is Result.RETRY:
                self.queue.release(item.seq)
                failures += 1
                delay = max(self.backoff.delay(failures),
                            min(outcome.retry_after, self.backoff.cap))
                self.metrics.notification_failed(self.sink.name)
                self.log.warning("notification_failed", notification=item.event,
                                 error=outcome.detail, attempt=failures,
                                 retry_in=round(delay, 2), queued=len(self.queue))
                self.stop.wait(delay)
                continue
            self.queue.done(item.seq)
            if outcome.result is Result.DELIVERED:
                self.metrics.notification_sent(self.sink.name)
                self.log.info("notification_sent", notification=item.event,
                              status=outcome.status, attempts=failures + 1)
            else:
                self.metrics.notification_dropped(self.sink.name, "rejected")
                self.log.error("notification_rejected", notification=item.event,
                               error=outcome.detail, status=outcome.status)
            failures = 0
            self.metrics.notifications_queued(self.sink.name, len(self.queue))


class Notifier:
    """The daemon's sinks, their queues and sender threads (see the module docstring)."""

    def __init__(self, settings: NotificationSettings, *, state_dir: Path, site: str,
                 metrics: Metrics, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.directory = notifications_dir(state_dir)
        self.site = site
        self.site_id = site_id_for(site)
        self.metrics = metrics
        self.clock = clock
        self.now = now
        self.sinks = [Sink(s) for s in settings.sinks]  # reads the secret files
        self.stop_event = threading.Event()
        self._senders: dict[str, _Sender] = {}
        self._sent: SentStore | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Load the queues and what was sent, and start one sender per sink. Call it while
        holding the state lock: the files are the lock holder's."""
        if not self.sinks:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        names = [s.name for s in self.sinks]
        for name in discard_unknown(self.directory, names):
            _log.warning("notification_discarded", file=name,
                         reason="its sink is no longer configured")
        self._sent = SentStore(self.directory, names)
        for sink in self.sinks:
            queue = DiskQueue(self.directory, sink.name, self.settings.queue_limit)
            sender = _Sender(sink, queue, self.settings, self.metrics, self.stop_event,
                             self.clock)
            self._senders[sink.name] = sender
            self.metrics.notifications_queued(sink.name, len(queue))
            sender.thread.start()
        _log.info("notifications_started", sinks=names,
                  queued={n: len(s.queue) for n, s in self._senders.items()})

    def after_run(self, summary: RunSummary) -> None:
        """Queue what changed in this run for every sink; never raises, never waits for a
        server. A run that served nothing (no statuses) says nothing about the targets."""
        if self._sent is None or not summary.statuses:
            return
        try:
            with self._lock:
                self._queue_changes(summary)
        except Exception:  # an alert must never cost the daemon its loop
            _log.exception("notifications_not_queued")

    def _queue_changes(self, summary: RunSummary) -> None:
        assert self._sent is not None
        current = {s.target: state_of(s) for s in summary.statuses}
        event = secrets.token_hex(16)
        created = self.now().isoformat(timespec="seconds")
        updates: dict[str, dict[str, TargetState]] = {}
        for name, sender in self._senders.items():
            before = self._sent.get(name)
            items = self._requests(sender.sink, before, current, summary, event, created)
            if items:
                dropped = sender.queue.put(event, created, items)
                if dropped:
                    self.metrics.notification_dropped(name, "queue_full", dropped)
                    sender.log.warning("notification_dropped", reason="queue_full",
                                       dropped=dropped, limit=self.settings.queue_limit)
                self.metrics.notifications_queued(name, len(sender.queue))
                sender.log.info("notification_queued", notification=event, requests=len(items),
                                queued=len(sender.queue))
                sender.wake.set()
            if _records(before) != _records(current):
                updates[name] = current
        if updates:
            self._sent.set(updates)

    def _requests(self, sink: Sink, before: Mapping[str, TargetState],
                  current: Mapping[str, TargetState], summary: RunSummary, event: str,
                  created: str) -> list[tuple[str, dict[str, Any]]]:
        if sink.kind.is_forge:
            return [_masked(forge_request(sink.settings, status, self.site_id))
                    for status in commit_statuses(sink.kind, before, current)]
        changes = phase_changes(before, current)
        if not changes:
            return []
        body = _CHAT_BODIES[sink.kind](Event(event, created, self.site, self.site_id, changes,
                                             summary.counts()))
        return [_masked(("", body))]

    def stop(self, timeout: float = 5.0) -> None:
        """End the sender threads; a delivery in flight stays queued for the next start."""
        self.stop_event.set()
        for sender in self._senders.values():
            sender.wake.set()
        deadline = time.monotonic() + timeout
        for sender in self._senders.values():
            sender.thread.join(max(0.0, deadline - time.monotonic()))


def _records(states: Mapping[str, TargetState]) -> dict[str, dict[str, str]]:
    return {name: s.record() for name, s in states.items()}


def _masked(request: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """No secret value known to the daemon leaves in a notification (status messages can
    quote a component's output)."""
    path, body = request
    masked: dict[str, Any] = redact_value(body)
    return path, masked
