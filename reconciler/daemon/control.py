"""Find the daemon running on a state directory from outside it, and ask it to run now.

While it runs, the daemon holds the flock on ``<stateDir>/lock`` and registers itself in
``<stateDir>/daemon.json`` (its pid and HTTP address). :func:`running_daemon` is how
``reconciler sync`` finds it: only a process that holds the lock *and* is the registered daemon
is ever signalled, never a pid merely written in a file (a lock file outlives a killed daemon,
and its pid may since belong to an unrelated process, which SIGHUP would end).

Kept apart from :mod:`reconciler.daemon.daemon` so that asking a daemon to run loads none of
what running one needs (the scheduler, the HTTP server, the engine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import DaemonAccessError, NoDaemonError
from reconciler.core.statefiles import read_json

__all__ = ["DAEMON_FILE", "RunningDaemon", "running_daemon", "signal_daemon"]

DAEMON_FILE = "daemon.json"  # in the state directory while a daemon runs there


def signal_daemon(state_dir: Path) -> int:
    """SIGHUP to the daemon that provably runs on ``state_dir``; its pid.

    Raises :class:`NoDaemonError` when none runs (or it stopped between the look and the
    signal), and :class:`ReconcilerError` when this user may not signal it. A signal, not an
    HTTP request: the daemon's HTTP server has no unauthenticated trigger (it may listen beyond
    loopback), while a signal needs the daemon's user or root.
    """
    daemon = running_daemon(state_dir)
    try:
        os.kill(daemon.pid, signal.SIGHUP)
    except ProcessLookupError:
        raise NoDaemonError(f"no daemon is running for {state_dir} (it stopped just now)"
                            ) from None
    except PermissionError:
        raise DaemonAccessError(f"not allowed to signal the daemon (pid {daemon.pid}); run "
                                "this as the daemon's user") from None
    return daemon.pid


@dataclass(frozen=True)
class RunningDaemon:
    """The daemon of a state directory, proven to run: it holds the lock right now."""

    pid: int
    url: str | None  # its HTTP server, when listening


def running_daemon(state_dir: Path) -> RunningDaemon:
    """The daemon running on ``state_dir``; raises :class:`NoDaemonError` saying why not.

    Proof, not a pid from a file: the process holding the flock on ``<stateDir>/lock`` (as
    the kernel lists it in ``/proc/locks``) must be the one registered in ``daemon.json``.
    Where ``/proc/locks`` does not list the lock (not Linux), a non-blocking shared flock
    tells whether anyone holds it, and the pid the holder wrote into the lock file stands in.
    """
    lock = state_dir / "lock"
    hint = "; `reconciler sync --once` reconciles without a daemon"
    try:
        fh = lock.open("r")
    except FileNotFoundError:
        raise NoDaemonError(f"no daemon is running for {state_dir} (no lock file){hint}"
                            ) from None
    except OSError as exc:
        raise NoDaemonError(f"cannot tell whether a daemon runs for {state_dir}: {lock}: "
                            f"{exc.strerror}") from None
    with fh:
        written = _pid_in(fh.read())
        holders = _flock_holders(os.fstat(fh.fileno()))
        if holders is None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holders = {written} if written else set()
            else:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                holders = set()
    if not holders:
        named = f": the lock file names pid {written}, which does not hold it" if written \
            else ""
        raise NoDaemonError(f"no daemon is running for {state_dir}{named}{hint}")
    registered = read_json(state_dir / DAEMON_FILE, {})
    pid = registered.get("pid") if isinstance(registered, dict) else None
    if not isinstance(pid, int) or pid not in holders:
        who = ", ".join(f"pid {p}" for p in sorted(holders))
        raise NoDaemonError(f"no daemon is running for {state_dir}: the state directory is in "
                            f"use by {who}, which is not a daemon (a `reconciler sync --once` "
                            "or a daemon still starting?); nothing was signalled")
    url = registered.get("url")
    return RunningDaemon(pid, url if isinstance(url, str) else None)


def _pid_in(text: str) -> int | None:
    """The pid of ``pid 1234`` (what the lock's holder writes), or None."""
    parts = text.split()
    if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit():
        return int(parts[1])
    return None


def _flock_holders(st: os.stat_result) -> set[int] | None:
    """Pids holding a flock on the file of ``st`` per ``/proc/locks``; None when that file
    cannot say (absent, or no lock on this inode: then it may be on another device id, as
    with some overlay filesystems, and the caller asks flock itself)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    holders: set[int] = set()
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2336996 0 EOF"; waiters have "->" after "1:"
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            if (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                    and int(minor, 16) == os.minor(st.st_dev)):
                holders.add(int(fields[4]))
    return holders or None
