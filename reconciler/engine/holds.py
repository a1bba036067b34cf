"""Local holds: the operator at the site defers changes to a target until a time.

A :class:`Hold` says that, until ``until``, no change reaches a target ("" for every target
the daemon serves): what is applied there stays enforced (drift is repaired), new revisions
wait. It carries the reason and who set it, and both are written into the target's status
file, so the whole fleet sees why a line is behind.

Holds live in ``<state dir>/holds.json``, written atomically after every change, so they
survive a restart. The running daemon is their only writer (``reconciler hold`` reaches it
through its control socket); with no daemon running the CLI writes the file itself, and a
daemon or ``sync --once`` reads it again when it changed. Expired holds are dropped when the
file is next written. Thread-safe: the control socket changes holds while a run reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.statefiles import file_signature, read_json, write_json

__all__ = ["Hold", "HoldStore"]

_log = structlog.get_logger(__name__)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Hold:
    """Changes to ``target`` ("" for every served target) wait until ``until``."""

    target: str
    until: datetime  # timezone-aware
    reason: str
    by: str  # the user who set it
    since: datetime  # timezone-aware

    def covers(self, target: str, now: datetime) -> bool:
        return (not self.target or self.target == target) and self.until > now

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "until": self.until.isoformat(timespec="seconds"),
                "reason": self.reason, "by": self.by,
                "since": self.since.isoformat(timespec="seconds")}

    @classmethod
    def from_json(cls, raw: object) -> Hold | None:
        """The hold in ``raw``; None when it is not one (a hand-edited file)."""
        if not isinstance(raw, Mapping):
            return None
        until, since = _time(raw.get("until")), _time(raw.get("since"))
        target, reason, by = raw.get("target", ""), raw.get("reason", ""), raw.get("by", "")
        if until is None or not all(isinstance(v, str) for v in (target, reason, by)):
            return None
        return cls(str(target), until, str(reason), str(by), since or until)

    def describe(self) -> str:
        """One line for a status message: "held by ann until 2026-12-01T06:00:00+00:00:
        production run"."""
        return (f"held by {self.by or 'unknown'} until "
                f"{self.until.isoformat(timespec='seconds')}"
                + (f": {self.reason}" if self.reason else ""))


class HoldStore:
    """The holds of one state directory (see the module docstring)."""

    def __init__(self, path: Path, holds: tuple[Hold, ...] = ()) -> None:
        self.path = path
        self._holds = list(holds)
        self._lock = threading.Lock()
        self._signature = file_signature(path)

    @classmethod
    def load(cls, path: Path) -> HoldStore:
        store = cls(path)
        store._read()
        return store

    def _read(self) -> None:
        raw = read_json(self.path, {})
        if not raw and self.path.exists() and self.path.stat().st_size:
            # read_json counts an unreadable file as absent; say so, holds matter
            _log.warning("holds_unreadable", path=str(self.path))
        items = raw.get("holds") if isinstance(raw, dict) else None
        holds = [h for item in (items if isinstance(items, list) else [])
                 if (h := Hold.from_json(item)) is not None]
        self._holds = holds
        self._signature = file_signature(self.path)

    def _refresh(self) -> None:
        if file_signature(self.path) != self._signature:
            self._read()

    def _save(self, now: datetime) -> None:
        self._holds = [h for h in self._holds if h.until > now]
        write_json(self.path, {"holds": [h.to_json() for h in self._holds]})
        self._signature = file_signature(self.path)

    # -- changing ------------------------------------------------------------------------
    def add(self, hold: Hold, now: datetime | None = None) -> None:
        """Set ``hold``, replacing a hold on the same target; raises OSError when the file
        cannot be written (the hold is then not kept)."""
        with self._lock:
            self._refresh()
            before = list(self._holds)
            self._holds = [h for h in self._holds if h.target != hold.target] + [hold]
            try:
                self._save(now or datetime.now(UTC))
            except OSError:
                self._holds = before
                raise

    def remove(self, target: str | None, now: datetime | None = None) -> list[Hold]:
        """End the holds on ``target`` ("" for the site-wide one, None for every hold);
        returns those ended."""
        with self._lock:
            self._refresh()
            ended = [h for h in self._holds if target is None or h.target == target]
            if ended:
                before = list(self._holds)
                self._holds = [h for h in self._holds if h not in ended]
                try:
                    self._save(now or datetime.now(UTC))
                except OSError:
                    self._holds = before
                    raise
            return ended

    # -- reading -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the file again when someone else wrote it (``reconciler hold`` with no daemon
        running); a run calls it once at its start."""
        with self._lock:
            self._refresh()

    def active(self, target: str, now: datetime) -> Hold | None:
        """The hold on ``target`` at ``now`` (the one lasting longest when several cover
        it), None when it is not held. As of the last :meth:`refresh` or change."""
        with self._lock:
            if not self._holds:
                return None
            covering = [h for h in self._holds if h.covers(target, now)]
        return max(covering, key=lambda h: h.until) if covering else None

    def current(self, now: datetime) -> list[Hold]:
        """Every hold in force at ``now``, by target."""
        with self._lock:
            self._refresh()
            return sorted((h for h in self._holds if h.until > now), key=lambda h: h.target)

    def to_json(self, now: datetime) -> list[dict[str, Any]]:
        return [h.to_json() for h in self.current(now)]
