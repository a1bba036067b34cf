"""``signal_daemon``: SIGHUP to the daemon of a state directory, or an error saying why not.

The function behind ``reconciler sync`` (without ``--once``), called here directly. The
"daemon" is a real process that does what ``reconciler run`` does to be found: it holds the
flock on ``<stateDir>/lock`` and registers its pid in ``<stateDir>/daemon.json``; on SIGHUP
it writes a file, so the test sees the signal arrive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.errors import NoDaemonError, ReconcilerError
from reconciler.daemon.control import signal_daemon
from tests.integration.fleetkit import wait_for

# holds the lock and registers like the daemon; "orphan" then hands the lock to a child that
# outlives it and exits, as a daemon that stops between the look and the signal would
_HOLDER = """
import fcntl, json, os, signal, subprocess, sys
state = sys.argv[1]
fh = open(os.path.join(state, "lock"), "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
fh.write(f"pid {os.getpid()}\\n"); fh.flush()
with open(os.path.join(state, "daemon.json"), "w") as out:
    json.dump({"pid": os.getpid(), "url": None}, out)
if sys.argv[2] == "orphan":
    child = subprocess.Popen(["sleep", "60"], pass_fds=(fh.fileno(),), start_new_session=True)
    print(child.pid, flush=True)
    sys.exit(0)
signal.signal(signal.SIGHUP, lambda *_: open(os.path.join(state, "hup"), "w").close())
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def _hold(state: Path, procs: list[subprocess.Popen[str]], mode: str = "serve") -> str:
    state.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(state), mode],
                            stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_the_registered_lock_holder_gets_sighup_and_its_pid_is_returned(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    assert _hold(state, procs) == "ready"

    assert signal_daemon(state) == procs[0].pid

    wait_for(lambda: (state / "hup").exists(), 10, "the SIGHUP to arrive")
    assert procs[0].poll() is None  # handled, not killed


def test_no_lock_file_is_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(NoDaemonError, match=r"no daemon is running .*no lock file"):
        signal_daemon(tmp_path)


def test_a_daemon_gone_between_the_look_and_the_signal_is_no_daemon(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    heir = int(_hold(state, procs, "orphan"))
    try:
        assert procs[0].wait(timeout=10) == 0  # reaped: its pid is free, the lock still held
        with pytest.raises(NoDaemonError, match=r"no daemon is running for .* \(it stopped "
                                                r"just now\)"):
            signal_daemon(state)
    finally:
        os.kill(heir, 9)


def _as_nobody(state: Path) -> str:
    """What ``signal_daemon(state)`` raises when called by user nobody: in a forked child
    that drops root (the interpreter is loaded already, so nobody needs no access to it)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of pytest's teardown
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            try:
                signal_daemon(state)
                said = "signalled"
            except ReconcilerError as exc:
                said = f"{type(exc).__name__}: {exc.message}"
            os.write(write, said.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as said_:
        said = said_.read()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to call it as another user")
def test_a_daemon_this_user_may_not_signal_is_not_signalled_and_that_is_said(
        procs: list[subprocess.Popen[str]]) -> None:
    # not under pytest's tmp_path: user nobody must be able to read the state directory
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        state = Path(tmp) / "state"
        assert _hold(state, procs) == "ready"

        said = _as_nobody(state)

        assert said == (f"DaemonAccessError: not allowed to signal the daemon (pid "
                        f"{procs[0].pid}); run this as the daemon's user")
        assert not (state / "hup").exists()
