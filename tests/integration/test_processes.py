"""The process runner ends what it started when its caller stops waiting for any reason.

Its other behaviour (timeouts, output caps, must-finish calls and the shutdown grace) is
pinned by test_script_provider.py and test_helm_shutdown.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

import pytest

from reconciler.core.processes import run
from tests.integration.test_gitrun import processes_mentioning

pytestmark = pytest.mark.timeout(60)


class _Interrupted(Exception):
    """Raised by the test's timer signal, as Ctrl-C raises KeyboardInterrupt."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted


def test_an_exception_in_the_waiting_caller_ends_the_process_group(tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    # a child that starts a grandchild, both sleeping far longer than the test
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', "
              f"'{marker}']); time.sleep(300)")
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(_Interrupted):
            run([sys.executable, "-c", script, marker], cwd=tmp_path, env={}, stdin=b"",
                timeout=120, what="sleeper", grace=2.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    deadline = time.monotonic() + 10
    while processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(marker) == []


def test_a_command_still_running_when_the_program_exits_is_ended(tmp_path: Path) -> None:
    # a daemon thread waits on a sleeper (a look at a hung server); the program exits
    marker = f"marker-{uuid.uuid4().hex}"
    program = f"""
import sys, threading, time
from pathlib import Path
from reconciler.core.processes import run
argv = [sys.executable, "-c", "import time; time.sleep(300)", "{marker}"]
threading.Thread(target=run, args=(argv,), kwargs=dict(
    cwd=Path("{tmp_path}"), env={{}}, stdin=b"", timeout=120, what="sleeper"),
    daemon=True).start()
time.sleep(1.0)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr

    assert processes_mentioning(marker) == []
