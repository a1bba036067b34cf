"""Reach the daemon running on a state directory from outside it: ask it to run now, and
ask it things through its control socket.

While it runs, the daemon holds the flock on ``<stateDir>/lock`` and registers itself in
``<stateDir>/daemon.json`` (its pid and HTTP address). :func:`running_daemon` is how
``reconciler sync`` finds it: only a process that holds the lock *and* is the registered daemon
is ever signalled, never a pid merely written in a file (a lock file outlives a killed daemon,
and its pid may since belong to an unrelated process, which SIGHUP would end).

The control socket (:mod:`reconciler.daemon.control_socket` serves it) is how ``hold``,
``unhold``, ``holds`` and ``sync --retry`` reach the daemon: a Unix socket that members of the
daemon's group and root may use, so an operator need not be the daemon's user.
:func:`ask_daemon` sends one request and returns the answer; who asks is told to the daemon by
the kernel (``SO_PEERCRED``), and by ``SUDO_USER`` only when the asker is root.

Kept apart from :mod:`reconciler.daemon.daemon` so that asking a daemon to run loads none of
what running one needs (the scheduler, the HTTP server, the engine).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.errors import DaemonAccessError, NoDaemonError, ReconcilerError
from reconciler.core.statefiles import read_json

__all__ = ["ANSWER_LIMIT", "DAEMON_FILE", "REQUEST_LIMIT", "SUN_PATH_MAX", "SYSTEMD_SOCKET",
           "RunningDaemon", "ask_daemon", "check_socket_path", "running_daemon",
           "signal_daemon", "socket_candidates"]

DAEMON_FILE = "daemon.json"  # in the state directory while a daemon runs there
SUN_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path[108], NUL included)
REQUEST_LIMIT = 16 * 1024  # bytes of one request; the daemon refuses more
ANSWER_LIMIT = 4 * 1024 * 1024
# where the packaged unit's RuntimeDirectory=reconciler puts the socket
SYSTEMD_SOCKET = Path("/run/reconciler/control.sock")


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


# -- the control socket, client side -----------------------------------------------------------

def check_socket_path(field: str, value: object, error: Any) -> None:
    """A cerberus ``check_with`` rule for ``controlSocket``: short enough for a socket."""
    if isinstance(value, str) and len(os.fsencode(value)) > SUN_PATH_MAX:
        error(field, f"too long for a Unix socket ({len(os.fsencode(value))} bytes, at most "
                     f"{SUN_PATH_MAX}): choose a shorter path")


def socket_candidates(configured: Path, *, explicit: bool,
                      environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a command looks for the daemon's socket, in order.

    The config's ``controlSocket`` when it sets one. Otherwise the daemon chose by its own
    environment (systemd's ``RUNTIME_DIRECTORY``), which a command run by an operator does
    not have: then the packaged unit's runtime directory is tried, then ``configured`` (the
    state directory). A socket of another daemon is never used: each request names the state
    directory it means, and a daemon on another one refuses it before doing anything.
    """
    if explicit:
        return [configured]
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    found = [Path(runtime) / configured.name] if runtime else []
    for path in (SYSTEMD_SOCKET, configured):
        if path not in found:
            found.append(path)
    return found


def ask_daemon(paths: Sequence[Path], request: Mapping[str, Any], *, state_dir: Path,
               timeout: float = 15.0) -> dict[str, Any]:
    """Send ``request`` to the daemon of ``state_dir`` at the first of ``paths`` where one
    answers; its answer (a mapping with ``ok: true``).

    Raises :class:`NoDaemonError` when no daemon listens at any of them,
    :class:`DaemonAccessError` when this user may not reach the socket (not root, not in the
    daemon's group), and :class:`ReconcilerError` when the daemon refused the request (its
    message says why) or did not answer.
    """
    body = dict(request)
    body["state_dir"] = os.path.normpath(os.path.abspath(state_dir))
    sudo_user = os.environ.get("SUDO_USER", "")
    if os.geteuid() == 0 and sudo_user:
        body["sudo_user"] = sudo_user  # only root may say on whose behalf it asks
    data = json.dumps(body).encode()
    denied: list[Path] = []
    for path in paths:
        try:
            answer = _exchange(path, data, timeout)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            continue  # nobody listens there (or a socket file a killed daemon left)
        except PermissionError:
            denied.append(path)
            continue
        if answer.get("ok") is True:
            return answer
        if answer.get("reason") == "OtherStateDir":
            continue  # the socket of a daemon serving another state directory
        message = answer.get("error")
        raise ReconcilerError(str(message or f"the daemon answered {answer!r}"),
                              reason=str(answer.get("reason") or "RequestRefused"))
    where = ", ".join(str(p) for p in paths)
    if denied:
        group = _group_of(denied[0])
        raise DaemonAccessError(
            f"permission denied on the daemon's control socket {denied[0]}: run this with "
            f"sudo, or as a member of the daemon's group{f' {group!r}' if group else ''} "
            f"(sudo usermod -aG {group or 'GROUP'} USER, then log in again)")
    raise NoDaemonError(f"no daemon is listening for {state_dir} (looked at {where})")


def _exchange(path: Path, data: bytes, timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            chunks: list[bytes] = []
            size = 0
            while chunk := conn.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > ANSWER_LIMIT:
                    raise ReconcilerError(f"the daemon at {path} sent an answer too large")
        except TimeoutError:
            raise ReconcilerError(f"the daemon at {path} did not answer within {timeout:g} s"
                                  ) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ReconcilerError(f"the daemon at {path} closed the connection: "
                                  f"{exc.strerror or exc}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ReconcilerError(f"the daemon at {path} gave no answer (is it this version?)")
    return answer


def _group_of(path: Path) -> str:
    """The group that may use the socket at ``path`` (or own its directory)."""
    for candidate in (path, path.parent):
        try:
            return grp.getgrgid(candidate.stat().st_gid).gr_name
        except (OSError, KeyError):
            continue
    return ""
