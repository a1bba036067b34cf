"""Run one external command safely: argv only, own process group, timeout, capped output.

Used by the ``script`` provider (and usable by any built-in provider that drives a CLI). The
command never goes through a shell. It runs in a new session so that a timeout or a
cancellation can kill everything it started (``SIGTERM`` to the group, ``SIGKILL`` after a
grace period), not only the direct child. stdin is written and stdout/stderr are read in one
``select`` loop, so a child that prints megabytes while we are still writing its input cannot
deadlock us; bytes beyond the cap are read and dropped, never buffered.

Errors are the project's: a timeout or cancellation is a :class:`TransientError`, a program
that cannot be started is a :class:`PermanentError`. A non-zero exit is *not* an error here;
the caller decides what exit codes mean.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError, TransientError

__all__ = ["DEFAULT_OUTPUT_LIMIT", "ProcessResult", "run"]

DEFAULT_OUTPUT_LIMIT = 1 << 20
TAIL_BYTES = 4096  # kept from the end of each stream for error messages
_READ_CHUNK = 1 << 16
_WRITE_CHUNK = 512  # PIPE_BUF: a write of this size never blocks once select says writable
_POLL = 0.1
# After the direct child exits, grandchildren that kept our pipes open get this long to
# finish writing before we stop reading (they are left running: a script may start a service).
_LINGER = 1.0


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


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the whole group, wait up to ``grace`` for it to empty, then SIGKILL it."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so a zombie does not keep the group alive
        if not _group_alive(pgid):
            break
        time.sleep(0.02)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, bytes],
           what: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), shell=False, start_new_session=True,
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
) -> ProcessResult:
    """Run ``argv`` to completion; ``what`` names the call in error messages.

    Raises TransientError when ``timeout`` seconds pass or ``cancelled()`` turns true (the
    process group is killed first), PermanentError when the program cannot be started.
    """
    started = time.monotonic()
    deadline = started + timeout
    proc = _start(argv, cwd, env, what)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): _Sink(output_limit), proc.stderr.fileno(): _Sink(output_limit)}
    pending = memoryview(stdin)
    stop: str | None = None
    linger_until: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        if pending:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                stop = "timeout"
                break
            if cancelled():
                stop = "cancelled"
                break
            if linger_until is None and proc.poll() is not None:
                linger_until = now + _LINGER
            if linger_until is not None and now >= linger_until:
                break
            for key, _ in selector.select(min(_POLL, deadline - now)):
                if key.fileobj is proc.stdin:
                    try:
                        written = os.write(proc.stdin.fileno(), pending[:_WRITE_CHUNK])
                    except BrokenPipeError:  # the command does not read its input: fine
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                fd = key.fd
                data = os.read(fd, _READ_CHUNK)
                if data:
                    sinks[fd].feed(data)
                else:
                    selector.unregister(key.fileobj)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            stream.close()
    if stop is None:
        remaining = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(remaining, 0.0))
        except subprocess.TimeoutExpired:
            stop = "timeout"
    if stop is not None:
        _kill_group(proc, grace)
        if stop == "timeout":
            raise TransientError(f"{what}: timed out after {timeout:g}s; its process group "
                                 "was killed", reason="CommandTimedOut")
        raise TransientError(f"{what}: cancelled (a newer revision arrived); its process "
                             "group was killed", reason="Cancelled")
    stdout_sink, stderr_sink = list(sinks.values())
    return ProcessResult(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=bytes(stdout_sink.head),
        stderr=bytes(stderr_sink.head),
        stdout_dropped=stdout_sink.dropped,
        stderr_dropped=stderr_sink.dropped,
        stderr_tail=bytes(stderr_sink.tail),
        duration=time.monotonic() - started,
    )
