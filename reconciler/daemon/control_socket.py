"""The daemon's control socket: the local channel of ``hold``, ``unhold``, ``holds`` and
``sync`` (with or without ``--retry``).

A Unix stream socket at ``controlSocket`` (``$RUNTIME_DIRECTORY/control.sock`` under
systemd, ``<stateDir>/control.sock`` otherwise), created with mode 0660 and the daemon's
group, in a directory the daemon's user owns and nobody else may write: only root and
members of that group can connect. A socket file left by a daemon that was killed is
replaced; a socket another process still serves, or any other kind of file at that path, is
refused (``ConfigError``, named by its key). The file is removed on shutdown.

One thread accepts connections and serves them one at a time: one JSON request per
connection (read until the client shuts its side, at most ``REQUEST_LIMIT`` bytes, within
``timeout`` seconds), one JSON answer. Who is asking comes from the kernel (``SO_PEERCRED``),
never from the request; :class:`~reconciler.daemon.control_requests.ControlActions` decides
what the request does. Nothing a client sends ends the thread: a malformed request, one too
large or too slow gets an error answer (or, when the client is gone, none). Started and
stopped by :class:`~reconciler.daemon.daemon.Daemon`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.errors import ConfigError
from reconciler.daemon.control import REQUEST_LIMIT
from reconciler.daemon.control_requests import Peer

__all__ = ["ControlServer", "Handler"]

_log = structlog.get_logger(__name__)

Handler = Callable[[object, Peer], dict[str, Any]]
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MODE = 0o660


class ControlServer:
    """Serves ``handle`` on a Unix socket at ``path`` (see the module docstring)."""

    def __init__(self, path: Path, handle: Handler, *, timeout: float = 5.0,
                 limit: int = REQUEST_LIMIT) -> None:
        self.path = path
        self.handle = handle
        self.timeout = timeout
        self.limit = limit
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Bind and listen; raises :class:`ConfigError` naming ``controlSocket`` when the
        socket cannot be made where it should be."""
        self._check_directory()
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            # bind obeys the umask (0077 under the unit): open it to the group explicitly
            os.chmod(self.path, _MODE)
            os.chown(self.path, -1, os.getegid())
            info = os.lstat(self.path)
            sock.listen(16)
            sock.settimeout(0.2)  # the accept loop looks at the stop flag this often
        except OSError as exc:
            sock.close()
            raise ConfigError(f"controlSocket: cannot listen on {self.path}: "
                              f"{exc.strerror or exc}") from None
        self._sock, self._inode = sock, (info.st_dev, info.st_ino)
        self._thread = threading.Thread(target=self._serve, name="control-socket",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):  # wakes a waiting accept (Linux) at once
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 2)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:  # ours, not a successor's
                os.unlink(self.path)

    def _check_directory(self) -> None:
        """The socket's directory must be the daemon's own: anyone else who may write
        there could put another socket in its place."""
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            info = directory.stat()
        except OSError as exc:
            raise ConfigError(f"controlSocket: cannot create its directory {directory}: "
                              f"{exc.strerror or exc}") from None
        if info.st_uid != os.geteuid():
            raise ConfigError(f"controlSocket: {directory} is not owned by the daemon's user "
                              f"(uid {os.geteuid()}); choose a directory it owns (under "
                              "systemd: RuntimeDirectory=, see docs/operations.md)")
        if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP
                                           and info.st_gid != os.getegid()):
            raise ConfigError(f"controlSocket: {directory} may be written by other users; "
                              "choose a directory only the daemon's user can write")

    def _clear_stale(self) -> None:
        """Remove a socket file a killed daemon left; refuse a live one or another file."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ConfigError(f"controlSocket: {self.path} exists and is not a socket; "
                              "remove it or choose another path")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # nobody listens: left by a daemon that is gone
            except OSError as exc:
                raise ConfigError(f"controlSocket: cannot tell whether {self.path} is in "
                                  f"use: {exc.strerror or exc}") from None
            else:
                raise ConfigError(f"controlSocket: another process listens on {self.path} "
                                  "(a second daemon with the same controlSocket?)")
        _log.info("stale_control_socket_removed", path=str(self.path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- serving -----------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # closed under us, or out of descriptors: go on
                if self._stop.is_set():
                    return
                _log.warning("control_accept_failed", error=exc.strerror or str(exc))
                self._stop.wait(0.2)
                continue
            with conn:
                try:
                    self._one(conn)
                except Exception:  # never let one connection end the channel
                    _log.exception("control_request_crashed")

    def _one(self, conn: socket.socket) -> None:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        peer = Peer(*_PEERCRED.unpack(raw))
        conn.settimeout(self.timeout)
        try:
            data = self._read(conn)
        except TimeoutError:
            _log.warning("control_request_timed_out", uid=peer.uid, pid=peer.pid)
            self._send(conn, {"ok": False, "reason": "BadRequest",
                              "error": f"no complete request within {self.timeout:g} s"})
            return
        except (ConnectionResetError, BrokenPipeError):
            return
        if data is None:
            answer = {"ok": False, "reason": "BadRequest",
                      "error": f"request larger than {self.limit} bytes"}
        else:
            try:
                payload: object = json.loads(data)
            except ValueError:
                answer = {"ok": False, "reason": "BadRequest",
                          "error": "a request is one JSON object, and this is not JSON"}
            else:
                answer = self.handle(payload, peer)
        self._send(conn, answer)

    def _read(self, conn: socket.socket) -> bytes | None:
        """The request, up to EOF; None when larger than the limit. The deadline is for the
        whole request, not for each read (a client trickling bytes does not hold the
        channel longer)."""
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            conn.settimeout(left)
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)

    def _send(self, conn: socket.socket, answer: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(self.timeout)
            conn.sendall(json.dumps({**answer, "pid": os.getpid()}).encode() + b"\n")
