"""What ``reconciler status`` and ``report`` keep between runs, so a repeated call redoes
only what changed.

A cache directory holds ``repo.git`` (a bare repository: a later fetch transfers only new
objects), ``status.sqlite`` and ``lock``. The database remembers, per status branch, the
commit last read and its files, each with what it says (:class:`BlobFacts`: the fields of
the fleet table), as one row per branch (ten thousand branches are ten thousand rows, not
fifty thousand); and, per blob, the whole document as JSON for ``--format json`` and the
report, when a call asked for it. A branch whose commit did not move is not listed again, a
file whose blob did not change is not read or parsed again. It also keeps the index of the
fleet model per commit of the tracked ref (``reconciler.gitops.fleet_model``), so that a
fleet is validated once per revision.

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

__all__ = ["BlobFacts", "DocumentStore", "StatusCache", "default_cache_dir"]

_LAYOUT = "6"  # changes whenever the tables or what a row means change
_MODELS_KEPT = 4  # fleet model indexes kept (the newest by use)
_WAIT = 120.0  # seconds a writer waits for another's transaction
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE branches(branch TEXT PRIMARY KEY, commit_id TEXT NOT NULL, time INTEGER NOT NULL,
                      files TEXT NOT NULL);
CREATE TABLE documents(blob TEXT PRIMARY KEY, document TEXT NOT NULL);
CREATE TABLE models(commit_id TEXT PRIMARY KEY, used INTEGER NOT NULL, data TEXT NOT NULL);
"""
# one file of a branch: (path, blob, the fields of BlobFacts but the document)
FileFacts = tuple[Any, ...]

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
    (the other fields are then empty); ``instances`` is a JSON list of ``[name, solution,
    phase, release, failed release]``; ``errors`` counts the validation errors the file
    reports; ``document`` is the whole file as JSON when it was kept."""

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
    document: str = ""  # "" : not kept (made when asked for)


    def row(self) -> tuple[Any, ...]:
        """The facts as a file's record keeps them (all but the document)."""
        return (self.site, self.target, self.phase, self.message, self.observed, self.applied,
                self.last_good, self.last_change, self.heartbeat, self.problem, self.fatal,
                self.instances, self.errors)


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
                # a cache: a database a crash leaves broken is deleted and built again
                db.execute("PRAGMA synchronous=OFF")
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

    def files(self, branches: Iterable[str]) -> dict[str, list[FileFacts]]:
        """The files recorded for ``branches`` (those the cache knows)."""
        wanted = list(branches)
        out: dict[str, list[FileFacts]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update((branch, json.loads(files)) for branch, files in self.db.execute(
                f"SELECT branch, files FROM branches WHERE branch IN ({marks})",  # noqa: S608
                chunk))
        return out

    def update(self, *, moved: Mapping[str, tuple[str, int, Sequence[FileFacts]]],
               gone: Iterable[str], documents: Mapping[str, str],
               dropped: Iterable[str]) -> None:
        """Record what was read, in one transaction: ``moved`` maps each branch read anew to
        (commit, commit time, its files); ``gone`` are branches that no longer exist;
        ``documents`` are the documents kept of the blobs read now, ``dropped`` the blobs
        no longer on the branches that moved or went."""
        db = self.db
        with _transaction(db):
            db.executemany("DELETE FROM branches WHERE branch=?", ((b,) for b in gone))
            db.executemany("INSERT OR REPLACE INTO branches VALUES (?,?,?,?)",
                           ((branch, commit, when, json.dumps(files, separators=(",", ":")))
                            for branch, (commit, when, files) in moved.items()))
            db.executemany("DELETE FROM documents WHERE blob=?", ((b,) for b in dropped))
            db.executemany("INSERT OR REPLACE INTO documents VALUES (?,?)", documents.items())

    def records(self, skip: Mapping[str, object]) -> Iterator[tuple[str, int, list[FileFacts]]]:
        """(branch, commit time, files) of every branch recorded, but those in ``skip``."""
        for branch, when, files in self.db.execute("SELECT branch, time, files FROM branches"):
            if branch not in skip:
                yield branch, when, json.loads(files)

    def documents(self, blobs: Sequence[str]) -> dict[str, str]:
        """The JSON documents of ``blobs`` that were kept (at most a few hundred at a
        time)."""
        marks = ",".join("?" * len(blobs))
        return dict(self.db.execute(
            f"SELECT blob, document FROM documents WHERE blob IN ({marks})",  # noqa: S608
            blobs))

    def store_documents(self, documents: Mapping[str, str]) -> None:
        with _transaction(self.db):
            self.db.executemany("INSERT OR REPLACE INTO documents VALUES (?,?)",
                                documents.items())

    def document_store(self) -> DocumentStore:
        """A store of documents with a connection of its own, for a reader that stores them
        while this cache's connection is idle (another thread, a forked process)."""
        return DocumentStore(self._db_path)

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


class DocumentStore:
    """Stores documents (blob -> JSON) in the cache's database through a connection of its
    own, opened in the process that first stores (a forked child opens one of its own and
    never touches its parent's). Writers take turns: each waits for the other's
    transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def __call__(self, documents: Mapping[str, str]) -> None:
        if not documents:
            return
        if self._db is None or self._pid != os.getpid():
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=_WAIT,
                                       check_same_thread=False)
            self._db.execute("PRAGMA synchronous=OFF")
            self._pid = os.getpid()
        with _transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO documents VALUES (?,?)",
                                 documents.items())

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on an error) on a connection in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
