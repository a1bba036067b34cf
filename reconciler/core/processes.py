"""Run one external command safely: argv only, own process group, timeout, capped output.

The one process runner of the project: providers run their child processes through it (the
``script`` and ``helm`` providers, through ``reconciler.core.provider_api``), and every git process
runs through it (``reconciler.gitops.gitrun``). The command never goes through a shell. It runs in a
new session so that a timeout or a cancellation can stop everything it started (``SIGTERM`` to
the group, ``SIGKILL`` after a grace period), not only the direct child. stdin is written and
stdout/stderr are read in one ``select`` loop, so a child that prints megabytes while we are
still writing its input cannot deadlock us; bytes beyond the cap are read and dropped, never
buffered.

Each call says what a cancellation may do to it (:class:`Interruption`). An interruptible
command (a query, a script) is killed as soon as ``cancelled()`` turns true: the caller stops
waiting for work nobody needs any more. A must-finish command (a helm upgrade, which killed
half-way leaves its release ``pending-upgrade``) is never killed for a newer revision: the
caller waits for it and uses its result. Only a shutdown (``stopping()``) bounds it: it gets
``shutdown_grace`` seconds more, then SIGTERM and ``grace`` seconds, then SIGKILL. Whatever
ends the caller's wait (an exception, Ctrl-C in the CLI) ends the process group too, and a
command still running when the program exits (waited for in a daemon thread) is ended then:
nothing this module starts outlives the call or the program.

Errors are the project's: a timeout or cancellation is a :class:`TransientError`, a program
that cannot be started is a :class:`PermanentError`. A non-zero exit is *not* an error here;
the caller decides what exit codes mean. This module depends on ``reconciler.core.errors`` only.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import errno
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import PermanentError, TransientError

__all__ = ["DEFAULT_OUTPUT_LIMIT", "SHUTDOWN_GRACE", "Interruption", "ProcessResult", "run"]

# Seconds a running must-finish operation (a helm upgrade or uninstall) may go on after the
# daemon was asked to stop; then it is terminated. docs/operations.md states the whole
# shutdown bound built on it, which the systemd unit's TimeoutStopSec exceeds.
SHUTDOWN_GRACE = 90.0
DEFAULT_OUTPUT_LIMIT = 1 << 20
TAIL_BYTES = 4096  # kept from the end of each stream for error messages
_READ_CHUNK = 1 << 16
_WRITE_CHUNK = 512  # PIPE_BUF: a write of this size never blocks once select says writable
_POLL = 0.1
# After the direct child exits, grandchildren that kept our pipes open get this long to
# finish writing before we stop reading (they are left running: a script may start a service).
_LINGER = 1.0


class Interruption(enum.Enum):
    """What a cancellation does to a running command."""

    # cancelled() (shutdown or a newer revision) kills it at once: stop waiting
    INTERRUPTIBLE = "interruptible"
    # a newer revision waits for it; a shutdown kills it only after shutdown_grace seconds
    MUST_FINISH = "must-finish"


@dataclass(frozen=True)
class ProcessResult:
    """What a finished command produced; stdout/stderr hold the head up to the cap."""

    argv: tuple[str, ...]
    returncode: int  # negative: killed by that signal (not by us: timeouts raise)
    stdout: bytes
    stderr: bytes
    stdout_dropped: int  # bytes beyond the cap that were read and discarded
    stderr_dropped: int
    stderr_tail: bytes  # the last bytes of stderr, whatever the cap
    duration: float

    @property
    def stdout_text(self) -> str:
        return _with_marker(self.stdout, self.stdout_dropped)

    @property
    def stderr_text(self) -> str:
        return _with_marker(self.stderr, self.stderr_dropped)

    def stderr_last_lines(self, count: int) -> list[str]:
        text = self.stderr_tail.decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()][-count:]


def _with_marker(head: bytes, dropped: int) -> str:
    text = head.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[output truncated: {dropped} more bytes not kept]\n"
    return text


class _Sink:
    """Keeps the first ``limit`` bytes and the last ``TAIL_BYTES`` of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))
        self.tail += data[-TAIL_BYTES:]
        del self.tail[:-TAIL_BYTES]


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies do not count.

    Orphaned grandchildren are reaped by init, which may take a while; waiting for that
    would stretch every timeout, so on Linux we look at the states in /proc instead.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _kill_group(proc: subprocess.Popen[bytes], grace: float,
                pause: Callable[[float], None], *, group: bool = True) -> bool:
    """SIGTERM the whole group, wait up to ``grace`` for it to empty, then SIGKILL it.

    ``pause`` waits while reading what the group still prints: a program that reports its
    cancellation on stdout (helm does) must not die of SIGPIPE before it has cleaned up.
    Without ``group`` (a command in the caller's session), only the command is signalled.
    True when SIGKILL was needed.
    """
    pgid = proc.pid  # start_new_session: the child leads its own group

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pgid, signum)
            else:
                proc.send_signal(signum)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    hard = False
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so a zombie does not keep the group alive
        if not (_group_alive(pgid) if group else proc.returncode is None):
            break
        pause(0.02)
    else:
        hard = True
        send(signal.SIGKILL)
    proc.wait()
    return hard


def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, bytes],
           what: str, own_session: bool) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), shell=False, start_new_session=own_session,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        detail = "is not executable" if isinstance(exc, PermissionError) else "was not found"
        raise PermanentError(f"{what}: {argv[0]} {detail} ({exc.strerror})",
                             reason="CommandNotRunnable") from None
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:
            raise PermanentError(f"{what}: {argv[0]} is not a runnable program (missing "
                                 "#! line?)", reason="CommandNotRunnable") from None
        raise TransientError(f"{what}: could not start {argv[0]}: {exc.strerror}",
                             reason="CommandNotStarted") from None


class _Pipes:
    """The child's stdin, stdout and stderr, served by one ``select`` loop."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes, output_limit: int) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._stdin = proc.stdin
        self._streams = (proc.stdin, proc.stdout, proc.stderr)
        self.stdout = _Sink(output_limit)
        self.stderr = _Sink(output_limit)
        self._sinks = {proc.stdout.fileno(): self.stdout, proc.stderr.fileno(): self.stderr}
        self._pending = memoryview(stdin)
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stdout, selectors.EVENT_READ)
        self._selector.register(proc.stderr, selectors.EVENT_READ)
        if self._pending:
            self._selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()

    @property
    def open(self) -> bool:
        return bool(self._selector.get_map())

    def pump(self, timeout: float) -> None:
        """Write and read what is ready within ``timeout`` seconds (a plain wait once every
        pipe is closed)."""
        if not self.open:
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._stdin:
                try:
                    written = os.write(self._stdin.fileno(), self._pending[:_WRITE_CHUNK])
                except BrokenPipeError:  # the command does not read its input: fine
                    written = len(self._pending)
                self._pending = self._pending[written:]
                if not self._pending:
                    self._selector.unregister(self._stdin)
                    self._stdin.close()
                continue
            data = os.read(key.fd, _READ_CHUNK)
            if data:
                self._sinks[key.fd].feed(data)
            else:
                self._selector.unregister(key.fileobj)

    def close(self) -> None:
        self._selector.close()
        for stream in self._streams:
            with contextlib.suppress(OSError):
                stream.close()


class _Stops:
    """When a running command must be stopped, and why (the keys of :func:`_stopped_error`)."""

    def __init__(self, deadline: float, interruption: Interruption,
                 cancelled: Callable[[], bool], stopping: Callable[[], bool],
                 shutdown_grace: float) -> None:
        self.deadline = deadline
        self.interruption = interruption
        self.cancelled = cancelled
        self.stopping = stopping
        self.shutdown_grace = shutdown_grace
        self.shutdown_deadline: float | None = None

    def why(self, now: float) -> str | None:
        if now >= self.deadline:
            return "timeout"
        if self.interruption is Interruption.INTERRUPTIBLE:
            if self.stopping():
                return "shutdown"
            return "newer" if self.cancelled() else None
        # must finish: a newer revision (cancelled()) waits; a shutdown starts the grace
        if self.shutdown_deadline is None and self.stopping():
            self.shutdown_deadline = now + self.shutdown_grace
        if self.shutdown_deadline is not None and now >= self.shutdown_deadline:
            return "shutdown-grace"
        return None


class _Running:
    """The commands running now, ended when the program exits.

    A command waited for in a daemon thread (a look at the server) would otherwise outlive a
    program that exits before the thread ends it: Python stops daemon threads where they are.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, tuple[subprocess.Popen[bytes], bool]] = {}
        atexit.register(self.end_all)

    def add(self, proc: subprocess.Popen[bytes], group: bool) -> None:
        with self._lock:
            self._procs[proc.pid] = (proc, group)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def end_all(self) -> None:
        with self._lock:
            left = list(self._procs.values())
        for proc, group in left:
            if proc.poll() is None:
                _kill_group(proc, _EXIT_GRACE, time.sleep, group=group)


_EXIT_GRACE = 1.0  # seconds a command gets after SIGTERM when the program exits
_running = _Running()


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, bytes],
    stdin: bytes,
    timeout: float,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    grace: float = 5.0,
    what: str,
    cancelled: Callable[[], bool] = lambda: False,
    stopping: Callable[[], bool] = lambda: False,
    interruption: Interruption = Interruption.INTERRUPTIBLE,
    shutdown_grace: float = SHUTDOWN_GRACE,
    own_session: bool = True,
) -> ProcessResult:
    """Run ``argv`` to completion; ``what`` names the call in error messages.

    Raises TransientError when ``timeout`` seconds pass, when an interruptible command is
    cancelled (``cancelled()`` or ``stopping()`` turns true), or when a must-finish command
    still runs ``shutdown_grace`` seconds after ``stopping()`` turned true; the process group
    is stopped first (SIGTERM, SIGKILL after ``grace`` seconds). Raises PermanentError when
    the program cannot be started.

    ``own_session=False`` keeps the command in the caller's session, for a command a person
    runs from a terminal (a ``git push`` that may ask for a password on ``/dev/tty``): the
    terminal's Ctrl-C reaches it, and only the command itself is signalled when it must end.
    """
    started = time.monotonic()
    stops = _Stops(started + timeout, interruption, cancelled, stopping, shutdown_grace)
    proc = _start(argv, cwd, env, what, own_session)
    _running.add(proc, own_session)
    pipes = _Pipes(proc, stdin, output_limit)
    stop: str | None = None
    linger_until: float | None = None
    try:
        while pipes.open:
            now = time.monotonic()
            stop = stops.why(now)
            if stop is not None:
                break
            if linger_until is None and proc.poll() is not None:
                linger_until = now + _LINGER
            if linger_until is not None and now >= linger_until:
                break
            pipes.pump(min(_POLL, stops.deadline - now))
        # the direct child may close its pipes before it ends: wait for it, still watching
        while stop is None:
            try:
                proc.wait(timeout=max(min(stops.deadline - time.monotonic(), _POLL), 0.0))
                break
            except subprocess.TimeoutExpired:
                stop = stops.why(time.monotonic())
        if stop is not None:
            hard = _kill_group(proc, grace, pipes.pump, group=own_session)
            raise _stopped_error(stop, what, timeout=timeout, shutdown_grace=shutdown_grace,
                                 after_term=f"SIGKILL after {grace:g}s" if hard else "it ended")
    except BaseException:
        # the caller stops waiting (KeyboardInterrupt, a failing read): the command, which
        # runs in a session of its own that no terminal signal reaches, must not outlive it
        if proc.returncode is None:
            _kill_group(proc, grace, time.sleep, group=own_session)
        raise
    finally:
        pipes.close()
        _running.discard(proc)
    return ProcessResult(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=bytes(pipes.stdout.head),
        stderr=bytes(pipes.stderr.head),
        stdout_dropped=pipes.stdout.dropped,
        stderr_dropped=pipes.stderr.dropped,
        stderr_tail=bytes(pipes.stderr.tail),
        duration=time.monotonic() - started,
    )


def _stopped_error(stop: str, what: str, *, timeout: float, shutdown_grace: float,
                   after_term: str) -> TransientError:
    if stop == "timeout":
        return TransientError(f"{what}: timed out after {timeout:g}s; its process group was "
                              "killed", reason="CommandTimedOut")
    if stop == "shutdown-grace":
        return TransientError(f"{what}: still running {shutdown_grace:g}s after shutdown "
                              f"began: sent SIGTERM, then {after_term}",
                              reason="ShutdownGraceExceeded")
    why = "the daemon is shutting down" if stop == "shutdown" else "a newer revision arrived"
    return TransientError(f"{what}: cancelled ({why}); its process group was killed",
                          reason="Cancelled")
