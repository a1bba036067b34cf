"""Notifications at rest: the bounded on-disk queue of each sink, what each sink was last
told, and the rate limit of its deliveries.

Everything lives in ``<stateDir>/notifications/``:

* ``<sink>.<sequence>.json``: one queued delivery (:class:`QueuedDelivery`), written
  atomically when a run's changes are known and removed once delivered (or given up), so a
  sink that is offline, and a daemon restarted meanwhile, lose nothing; at most
  ``queueLimit`` per sink, the oldest dropped first (:meth:`DiskQueue.put` says how many);
* ``sent.json``: per sink, per target, the state last queued for it (:class:`SentStore`),
  compared with every run so that only changes are sent, and a restart sends nothing again.

The files sit one level below the state directory, where the state lock's sweep removes the
temporary files of a write that was killed. :class:`TokenBucket` is the rate limit.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.statefiles import read_json, write_json
from reconciler.daemon.notification_payloads import TargetState

__all__ = ["DiskQueue", "QueuedDelivery", "SentStore", "TokenBucket", "discard_unknown",
           "notifications_dir"]

_log = structlog.get_logger(__name__)
_FILE = re.compile(r"(?P<sink>[A-Za-z0-9][A-Za-z0-9_-]*)\.(?P<seq>\d{12})\.json")


def notifications_dir(state_dir: Path) -> Path:
    return state_dir / "notifications"


@dataclass(frozen=True)
class QueuedDelivery:
    """One request to make: ``path`` is appended to the sink's URL (empty for chat sinks);
    ``body`` is the JSON; ``event`` identifies the change it reports (repeated on retries)."""

    seq: int
    event: str
    created: str
    path: str
    body: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "event": self.event, "created": self.created,
                "path": self.path, "body": dict(self.body)}


class DiskQueue:
    """The deliveries waiting for one sink, oldest first; thread-safe."""

    def __init__(self, directory: Path, sink: str, limit: int) -> None:
        self.directory = directory
        self.sink = sink
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight: int | None = None
        self._seqs: list[int] = sorted(
            int(m["seq"]) for p in _list(directory)
            if (m := _FILE.fullmatch(p.name)) and m["sink"] == sink)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{self.sink}.{seq:012d}.json"

    def put(self, event: str, created: str, items: Iterable[tuple[str, Mapping[str, Any]]]
            ) -> int:
        """Queue ``(path, body)`` items in order; returns how many old ones were dropped to
        stay within the limit (never the one being delivered)."""
        dropped = 0
        with self._lock:
            for path, body in items:
                seq = (self._seqs[-1] + 1) if self._seqs else 1
                write_json(self._path(seq), QueuedDelivery(seq, event, created, path, body)
                           .as_json())
                self._seqs.append(seq)
                while len(self._seqs) > self.limit:
                    victim = next((s for s in self._seqs if s != self._in_flight), None)
                    if victim is None:
                        break
                    self._seqs.remove(victim)
                    with contextlib.suppress(FileNotFoundError):
                        self._path(victim).unlink()
                    dropped += 1
        return dropped

    def head(self) -> QueuedDelivery | None:
        """The oldest delivery, or None. A file that cannot be read (a disk fault) is
        removed, logged and skipped."""
        while True:
            with self._lock:
                if not self._seqs:
                    return None
                seq = self._seqs[0]
            raw = read_json(self._path(seq), None)
            if isinstance(raw, dict) and isinstance(raw.get("body"), dict):
                return QueuedDelivery(seq, str(raw.get("event", "")),
                                      str(raw.get("created", "")), str(raw.get("path", "")),
                                      raw["body"])
            with self._lock:
                if seq not in self._seqs:
                    continue  # dropped while we read it
            _log.warning("notification_unreadable", sink=self.sink, file=self._path(seq).name)
            self.done(seq)

    def claim(self, seq: int) -> bool:
        """Mark ``seq`` in flight, so that :meth:`put` does not drop it while it is sent;
        False when it was dropped since :meth:`head` returned it."""
        with self._lock:
            if seq not in self._seqs:
                return False
            self._in_flight = seq
            return True

    def release(self, seq: int) -> None:
        """Not delivered, still queued (a retry follows): droppable again while waiting."""
        with self._lock:
            if self._in_flight == seq:
                self._in_flight = None

    def done(self, seq: int) -> None:
        """Delivered or given up: forget it."""
        self.release(seq)
        with self._lock:
            if seq in self._seqs:
                self._seqs.remove(seq)
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()


def _list(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def discard_unknown(directory: Path, sinks: Iterable[str]) -> list[str]:
    """Remove queued deliveries of sinks no longer configured; returns their file names."""
    known = set(sinks)
    removed = []
    for path in _list(directory):
        match = _FILE.fullmatch(path.name)
        if match and match["sink"] not in known:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path.name)
    return sorted(removed)


class SentStore:
    """Per sink, the target states last queued for it, in ``sent.json``."""

    def __init__(self, directory: Path, sinks: Iterable[str]) -> None:
        self.path = directory / "sent.json"
        raw = read_json(self.path, {})
        raw = raw if isinstance(raw, dict) else {}
        self._states: dict[str, dict[str, TargetState]] = {}
        for sink in sinks:
            targets = raw.get(sink)
            self._states[sink] = {
                name: TargetState.from_record(name, value)
                for name, value in (targets.items() if isinstance(targets, dict) else ())
                if isinstance(value, dict)}

    def get(self, sink: str) -> dict[str, TargetState]:
        return dict(self._states.get(sink, {}))

    def set(self, updates: Mapping[str, Mapping[str, TargetState]]) -> None:
        """Replace the states of the sinks in ``updates`` and write the file once."""
        self._states.update({sink: dict(states) for sink, states in updates.items()})
        write_json(self.path, {sink: {name: s.record() for name, s in sorted(states.items())}
                               for sink, states in sorted(self._states.items())})


class TokenBucket:
    """At most ``burst`` deliveries at once, then one per ``interval`` seconds."""

    def __init__(self, interval: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def wait_time(self) -> float:
        """Seconds until a token is there (0: take one now with :meth:`take`)."""
        if self.interval <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) / self.interval)
        self._stamp = now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) * self.interval

    def take(self) -> None:
        if self.interval > 0:
            self._tokens = max(0.0, self._tokens - 1)
