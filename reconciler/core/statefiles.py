"""Crash-safe state files, the project's temporary files, and the single-instance lock.

Every state file is written to a temporary file in the same directory, fsynced, renamed over
the old one, and the directory fsynced, so a crash or SIGKILL leaves either the old or the new
content, never half of one. Used by the inventory, the per-target state, the daemon and the
``file`` provider (for the files it writes under a site's file roots).

A write killed before its rename leaves its temporary file behind. Those files are named
unmistakably (``.reconciler-tmp.<16 hex digits>.<name>.tmp``) and held under an exclusive
``flock`` by their writer while it writes, so :func:`remove_leftovers` can tell a leftover of
a dead writer (removed) from a write in progress, possibly of another daemon sharing a file
root (kept), and from a user's file that merely looks similar (never touched). The lock holder
of a state directory removes its leftovers right after taking the lock (:class:`StateLock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import IO, Any

import structlog

from reconciler.core.errors import LockError

__all__ = [
    "TEMP_PREFIX",
    "StateLock",
    "create_temp",
    "file_signature",
    "is_temp_name",
    "read_json",
    "remove_leftovers",
    "write_atomic",
    "write_json",
]

TEMP_PREFIX = ".reconciler-tmp."
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{16}\..*\.tmp", re.DOTALL)
# enough of the final name to tell a human whose leftover it is, and short enough that the
# temporary name fits NAME_MAX (255 bytes) whatever the name's characters
_NAME_CHARS = 40

_log = structlog.get_logger(__name__)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` has exactly the shape of our temporary files."""
    return _TEMP_NAME.fullmatch(name) is not None


def create_temp(path: Path, mode: int = 0o600) -> tuple[int, Path]:
    """Create and lock a new temporary file next to ``path``; return its fd and path.

    The caller writes through the fd, renames the file (or unlinks it) and closes the fd,
    which releases the lock.
    """
    for _ in range(100):
        temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}.{path.name[:_NAME_CHARS]}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a sweep may have taken the lock between our create and flock and removed the
            # file: then write to another one
            if _same_file(os.stat(temp, follow_symlinks=False), os.fstat(fd)):
                return fd, temp
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def remove_leftovers(directory: Path, *, depth: int = 0) -> list[Path]:
    """Remove temporary files of killed writers in ``directory`` (and ``depth`` levels of
    subdirectories below it, ``-1``: all); return what was removed.

    Only regular files with exactly our name shape that no live writer holds are removed;
    symlinks are neither followed nor removed; unreadable directories are skipped.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        try:
            directory_entry = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if directory_entry:
            if depth != 0:
                removed.extend(remove_leftovers(Path(entry.path), depth=depth - 1))
        elif is_temp_name(entry.name) and _remove_if_abandoned(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # a symlink, gone, or not ours to read
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its writer is alive and still writing
        if not _same_file(os.stat(path, follow_symlinks=False), info):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) so that readers and a crash see
    either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
            os.replace(tmp, path)  # while we hold the lock: a sweep never sees it unlocked
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: a power cut must not bring back the old file."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        # some file systems refuse fsync on a directory; the rename itself has happened
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        # a state file we cannot read is treated as absent; the next run rebuilds it from
        # observation (providers report what exists), which is safe by construction
        return default


class StateLock:
    """An exclusive ``flock`` on ``<state dir>/lock``: one daemon per state directory.

    Acquiring it also removes the temporary files that killed writers left in the state
    directory and its direct subdirectories.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LockError(f"state directory {self.path.parent} is in use by {holder}; "
                            "one daemon per state directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        # only the holder writes state files: whatever temporary files are left were left by
        # a holder that was killed mid-write (state.json here, the inventory one level down)
        removed = remove_leftovers(self.path.parent, depth=1)
        if removed:
            _log.info("leftover_files_removed", directory=str(self.path.parent),
                      files=[str(p) for p in removed])

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of ``path``, None when it cannot be stat'ed: one stat
    that tells a file someone replaced, edited or removed since it was last seen."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns
