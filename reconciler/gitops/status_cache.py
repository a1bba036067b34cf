"""What ``reconciler status`` and ``report`` keep between runs, so a repeated call redoes
only what changed.

A cache directory holds ``repo.git`` (a bare repository: a later fetch transfers only new
objects), ``status.sqlite`` and ``lock``. The database remembers, per status branch, the
commit last read and the files it held (path and blob), and per blob what it says (the
fields of the fleet table, and the whole document as JSON for ``--format json`` and the
report); a branch whose commit did not move is not listed again, a blob already known is not
read or parsed again. It also keeps the index of the fleet model per commit of the tracked
ref (``reconciler.gitops.fleet_model``), so that a fleet is validated once per revision.

Only one command works in a directory at a time (``flock`` on ``lock``; a second one waits).
The database is a cache: one that cannot be opened or has another layout is deleted and
built again. Used by ``reconciler.gitops.fleet_status``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.errors import SourceError

__all__ = ["BlobFacts", "StatusCache", "default_cache_dir"]

_LAYOUT = "3"  # changes whenever the tables or what a row means change
_MODELS_KEPT = 4  # fleet model indexes kept (the newest by use)
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE branches(branch TEXT PRIMARY KEY, commit_id TEXT NOT NULL, time INTEGER NOT NULL);
CREATE TABLE files(branch TEXT NOT NULL, path TEXT NOT NULL, blob TEXT NOT NULL,
                   PRIMARY KEY(branch, path)) WITHOUT ROWID;
CREATE INDEX files_by_blob ON files(blob);
CREATE TABLE blobs(blob TEXT PRIMARY KEY, site TEXT, target TEXT, phase TEXT, message TEXT,
                   observed TEXT, applied TEXT, last_good TEXT, last_change TEXT,
                   heartbeat TEXT, problem TEXT, fatal INTEGER, instances TEXT,
                   errors INTEGER, document TEXT) WITHOUT ROWID;
CREATE TABLE models(commit_id TEXT PRIMARY KEY, used INTEGER NOT NULL, data TEXT NOT NULL);
"""

log = structlog.get_logger(__name__)


def default_cache_dir(url: str) -> Path:
    """``$XDG_CACHE_HOME/reconciler/status/<hash of url>`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(base) / "reconciler" / "status" / digest


@dataclass(frozen=True, slots=True)
class BlobFacts:
    """What one status file (or a site's heartbeat file) says, as the fleet table needs it.

    ``site`` and ``target`` are the file's own fields ("" when it has none); ``problem`` is
    what is wrong with the file ("" when nothing), ``fatal`` when it could not be read at all
    (the other fields are then empty); ``instances`` is a JSON
    list of ``[name, solution, phase, release]``; ``errors`` counts the validation errors the
    file reports; ``document`` is the whole file as JSON ("" for a file that is not a
    mapping)."""

    site: str = ""
    target: str = ""
    phase: str = ""
    message: str = ""
    observed: str = ""
    applied: str = ""
    last_good: str = ""
    last_change: str = ""
    heartbeat: str = ""
    problem: str = ""
    fatal: bool = False
    instances: str = "[]"
    errors: int = 0
    document: str = ""


_FACTS = ("site", "target", "phase", "message", "observed", "applied", "last_good",
          "last_change", "heartbeat", "problem", "fatal", "instances", "errors")


class StatusCache:
    """The cache in ``directory`` (see the module docstring); use it as a context manager:
    entering takes the lock and opens the database."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.git_dir = self.directory / "repo.git"
        self._db_path = self.directory / "status.sqlite"
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> StatusCache:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SourceError(f"cannot use the cache directory {self.directory}: "
                              f"{exc.strerror}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)  # another status command works here: wait for it
        self._lock_fd = fd
        try:
            self._db = self._open()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the status cache is used outside its with block")
        return self._db

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(self._db_path, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                found = db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone()
                if found is None:
                    with _transaction(db):
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                db.execute(statement)
                        db.execute("INSERT INTO meta VALUES ('layout', ?)", (_LAYOUT,))
                    return db
                layout = db.execute("SELECT value FROM meta WHERE key='layout'").fetchone()
                if layout is not None and layout[0] == _LAYOUT:
                    return db
                db.close()
                log.info("status_cache_reset", path=str(self._db_path), reason="layout")
            except sqlite3.DatabaseError as exc:
                if attempt == 2:
                    raise SourceError(f"cannot use the status cache {self._db_path}: {exc}") \
                        from None
                log.warning("status_cache_reset", path=str(self._db_path), error=str(exc))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._db_path}{suffix}").unlink(missing_ok=True)
        raise SourceError(f"cannot use the status cache {self._db_path}")

    # ---------------------------------------------------------------- branches and files

    def branches(self) -> dict[str, str]:
        """Status branch -> the commit last read."""
        return dict(self.db.execute("SELECT branch, commit_id FROM branches"))

    def known_blobs(self, blobs: Iterable[str]) -> set[str]:
        """The blobs of ``blobs`` the cache has read already."""
        wanted = list(blobs)
        known: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(row[0] for row in self.db.execute(
                f"SELECT blob FROM blobs WHERE blob IN ({marks})", chunk))  # noqa: S608
        return known

    def update(self, *, moved: Mapping[str, tuple[str, int, Sequence[tuple[str, str]]]],
               gone: Iterable[str], facts: Mapping[str, BlobFacts]) -> None:
        """Record what was read, in one transaction: ``moved`` maps each branch read anew to
        (commit, commit time, its files as (path, blob)); ``gone`` are branches that no
        longer exist; ``facts`` holds every blob read for the first time."""
        db = self.db
        with _transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO blobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                ((blob, *(getattr(f, name) for name in _FACTS), f.document)
                 for blob, f in facts.items()))
            for branch in [*gone, *moved]:
                db.execute("DELETE FROM files WHERE branch=?", (branch,))
                db.execute("DELETE FROM branches WHERE branch=?", (branch,))
            for branch, (commit, when, files) in moved.items():
                db.execute("INSERT INTO branches VALUES (?,?,?)", (branch, commit, when))
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?)",
                               ((branch, path, blob) for path, blob in files))
            if moved or gone:
                # blobs no file names any more: superseded statuses
                db.execute("DELETE FROM blobs WHERE blob NOT IN (SELECT blob FROM files)")

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """(branch, commit time, path, blob, *facts) of every file of every branch."""
        columns = ", ".join(f"b.{name}" for name in _FACTS)
        yield from self.db.execute(
            f"SELECT f.branch, r.time, f.path, f.blob, {columns} FROM files f "  # noqa: S608
            "JOIN blobs b ON b.blob = f.blob JOIN branches r ON r.branch = f.branch")

    def documents(self, blobs: Sequence[str]) -> dict[str, str]:
        """The JSON documents of ``blobs`` (at most a few hundred at a time)."""
        marks = ",".join("?" * len(blobs))
        return dict(self.db.execute(
            f"SELECT blob, document FROM blobs WHERE blob IN ({marks})", blobs))  # noqa: S608

    # ---------------------------------------------------------------- fleet model indexes

    def model(self, commit: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM models WHERE commit_id=?", (commit,)).fetchone()
        if row is None:
            return None
        with _transaction(self.db):
            self.db.execute("UPDATE models SET used=? WHERE commit_id=?",
                            (time.time_ns(), commit))
        data: dict[str, Any] = json.loads(row[0])
        return data

    def store_model(self, commit: str, data: Mapping[str, Any]) -> None:
        db = self.db
        with _transaction(db):
            db.execute("INSERT OR REPLACE INTO models VALUES (?,?,?)",
                       (commit, time.time_ns(), json.dumps(data, separators=(",", ":"))))
            db.execute("DELETE FROM models WHERE commit_id NOT IN (SELECT commit_id FROM "
                       "models ORDER BY used DESC LIMIT ?)", (_MODELS_KEPT,))


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on an error) on a connection in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
