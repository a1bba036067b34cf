"""The process runner ends what it started when its caller stops waiting for any reason.

Its other behaviour (timeouts, output caps, must-finish calls and the shutdown grace) is
pinned by test_script_provider.py and test_helm_shutdown.py.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

import pytest

from reconciler.processes import run
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
