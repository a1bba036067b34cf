"""A running helm upgrade is never killed for a newer revision, and a shutdown waits for it
only so long.

No cluster: ``helm`` is a stand-in executable (a shell script configured as the binding's helm
binary, so a real process boundary) that answers ``version`` and, for ``upgrade`` and
``uninstall``, records that it started, then waits for a ``go`` file the test creates and
records how it ended: ``finished``, or ``terminated`` when it got SIGTERM (after printing, as
helm does, that the release was cancelled).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reconciler_providers.helm import HelmProvider

from reconciler.core.errors import TransientError
from reconciler.core.processes import Interruption, run
from reconciler.core.provider_api import Component, LocalPolicy, ProviderContext, Record

ROOT = Path(__file__).resolve().parents[2]
SOLUTION_DIR = ROOT / "example-repo" / "solutions" / "line-dashboard-helm"

pytestmark = pytest.mark.timeout(120)

_STAND_IN = """#!/bin/sh
marks={marks}
case "$1" in
  version) echo v3.17.2; exit 0 ;;
  upgrade|uninstall)
    # like helm: report the cancellation (stdout still read: no SIGPIPE), record, exit 1
    trap 'echo "Release has been cancelled."; echo "Error: context canceled" >&2;
          echo "$1" > "$marks/terminated"; exit 1' TERM
    echo "$1" > "$marks/started"
    n=0
    while [ ! -e "$marks/go" ]; do  # gives up after two minutes: never a stray process
      n=$((n + 1)); [ $n -gt 2400 ] && exit 3; sleep 0.05
    done
    echo "$1" > "$marks/finished"
    echo "Release has been upgraded. Happy Helming!"
    exit 0 ;;
esac
echo "stand-in helm: unexpected $*" >&2
exit 2
"""


@dataclass
class Signals:
    """The daemon's two events as the provider sees them, counting how often it looks."""

    newer: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_polls: int = 0

    def cancelled(self) -> bool:
        return self.newer.is_set() or self.stop.is_set()

    def stopping(self) -> bool:
        self.stop_polls += 1
        return self.stop.is_set()

    def seen(self) -> Callable[[], bool]:
        """True once the provider has looked at the events a few more times from now on (or,
        for a provider that never looks, after a while): it had its chance to act on them."""
        polls, since = self.stop_polls, time.monotonic()
        return lambda: self.stop_polls >= polls + 5 or time.monotonic() > since + 3


@dataclass
class StandIn:
    binary: Path
    marks: Path

    def mark(self, name: str) -> str | None:
        path = self.marks / name
        return path.read_text().strip() if path.exists() else None

    def go(self) -> None:
        (self.marks / "go").touch()


@pytest.fixture
def helm(tmp_path: Path) -> StandIn:
    marks = tmp_path / "marks"
    marks.mkdir()
    binary = tmp_path / "bin" / "helm"
    binary.parent.mkdir()
    binary.write_text(_STAND_IN.format(marks=marks))
    binary.chmod(0o755)
    return StandIn(binary, marks)


def _provider(helm: StandIn, tmp_path: Path, signals: Signals, grace: float) -> HelmProvider:
    context = ProviderContext(target="berlin-l7-k3s", binding="charts", policy=LocalPolicy(),
                              state_dir=tmp_path / "state", cancelled=signals.cancelled,
                              stopping=signals.stopping, shutdown_grace=grace)
    return HelmProvider({"helm": str(helm.binary), "namespace": "lines"}, context)


def _component() -> Component:
    return Component(
        name="dashboard", type="chart",
        properties={"chart": "chart", "release": "dash-l7", "values": {"lineId": "L7"}},
        params={}, instance="dash-eu", solution="line-dashboard-helm", target="berlin-l7-k3s",
        site="eu/berlin/line-7", revision="0123456789abcdef0123456789abcdef01234567",
        base_dir=SOLUTION_DIR, repo_root=ROOT / "example-repo")


RECORD = Record(provider="helm", binding="charts",
                data={"release": "dash-l7", "namespace": "lines"})


def _action(provider: HelmProvider, action: str) -> Callable[[], Any]:
    if action == "upgrade":
        return lambda: provider.apply(_component(), None)
    return lambda: provider.delete(RECORD)


@dataclass
class Call:
    """A provider call running in a thread, as the executor runs it."""

    result: Any = None
    error: BaseException | None = None
    ended: float = 0.0
    thread: threading.Thread | None = None

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=90)
        assert not self.thread.is_alive(), "the provider call did not return"


@pytest.fixture
def start() -> Iterator[Callable[[Callable[[], Any]], Call]]:
    calls: list[Call] = []

    def begin(fn: Callable[[], Any]) -> Call:
        call = Call()

        def body() -> None:
            try:
                call.result = fn()
            except BaseException as exc:  # handed to the test thread
                call.error = exc
            call.ended = time.monotonic()

        call.thread = threading.Thread(target=body, daemon=True)
        call.thread.start()
        calls.append(call)
        return call

    yield begin
    for call in calls:
        if call.thread is not None:
            call.thread.join(timeout=90)


def _wait(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("action", ["upgrade", "uninstall"])
def test_a_newer_revision_never_interrupts_a_running_helm_change(
        helm: StandIn, tmp_path: Path, start: Callable[[Callable[[], Any]], Call],
        action: str) -> None:
    signals = Signals()
    provider = _provider(helm, tmp_path, signals, grace=1.0)
    call = start(_action(provider, action))
    _wait(lambda: helm.mark("started"), "helm to start")

    signals.newer.set()
    _wait(signals.seen(), "the provider to look at the events")
    assert helm.mark("terminated") is None
    helm.go()
    call.join()

    assert call.error is None, call.error
    assert helm.mark("finished") == action and helm.mark("terminated") is None
    if action == "upgrade":
        assert isinstance(call.result, Record) and call.result.data["release"] == "dash-l7"


@pytest.mark.parametrize("action", ["upgrade", "uninstall"])
def test_shutdown_lets_a_running_helm_change_finish_within_the_grace(
        helm: StandIn, tmp_path: Path, start: Callable[[Callable[[], Any]], Call],
        action: str) -> None:
    signals = Signals()
    provider = _provider(helm, tmp_path, signals, grace=60.0)
    call = start(_action(provider, action))
    _wait(lambda: helm.mark("started"), "helm to start")

    signals.stop.set()
    _wait(signals.seen(), "the provider to look at the events")
    helm.go()
    call.join()

    assert call.error is None, call.error
    assert helm.mark("finished") == action and helm.mark("terminated") is None


@pytest.mark.parametrize("action", ["upgrade", "uninstall"])
def test_shutdown_terminates_a_helm_change_still_running_after_the_grace(
        helm: StandIn, tmp_path: Path, start: Callable[[Callable[[], Any]], Call],
        action: str) -> None:
    signals = Signals()
    provider = _provider(helm, tmp_path, signals, grace=1.0)
    call = start(_action(provider, action))
    _wait(lambda: helm.mark("started"), "helm to start")

    stopped = time.monotonic()
    signals.stop.set()
    call.join()

    assert isinstance(call.error, TransientError), call.error
    assert call.error.reason == "ShutdownGraceExceeded"
    message = call.error.message
    assert f"helm {action} of release 'dash-l7'" in message
    assert "still running 1s after shutdown began" in message and "SIGTERM" in message
    assert helm.mark("terminated") == action and helm.mark("finished") is None
    assert call.ended - stopped >= 1.0  # it had its grace


def test_a_new_helm_change_does_not_start_during_shutdown(
        helm: StandIn, tmp_path: Path) -> None:
    signals = Signals()
    signals.stop.set()
    provider = _provider(helm, tmp_path, signals, grace=60.0)
    with pytest.raises(TransientError, match="not started"):
        provider.apply(_component(), None)
    assert helm.mark("started") is None


# ---------------------------------------------------------------- the process runner

_IGNORES_TERM = ("import signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                 "print('ready', flush=True)\n"
                 "time.sleep(120)\n")


def test_must_finish_command_that_ignores_sigterm_is_killed_after_the_grace(
        tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        run([sys.executable, "-c", _IGNORES_TERM], cwd=tmp_path, env={}, stdin=b"",
            timeout=100, grace=0.5, what="the change", stopping=lambda: True,
            cancelled=lambda: True, interruption=Interruption.MUST_FINISH,
            shutdown_grace=0.5)
    assert info.value.reason == "ShutdownGraceExceeded"
    assert ("the change: still running 0.5s after shutdown began: sent SIGTERM, then "
            "SIGKILL after 0.5s") in info.value.message
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(("stopping", "why"), [(False, "a newer revision arrived"),
                                             (True, "the daemon is shutting down")])
def test_interruptible_command_says_why_it_was_stopped(tmp_path: Path, stopping: bool,
                                                       why: str) -> None:
    with pytest.raises(TransientError) as info:
        run([sys.executable, "-c", "import time; time.sleep(120)"], cwd=tmp_path, env={},
            stdin=b"", timeout=100, grace=0.5, what="query", cancelled=lambda: True,
            stopping=lambda: stopping)
    assert info.value.reason == "Cancelled"
    assert f"query: cancelled ({why})" in info.value.message


def test_must_finish_command_outlives_a_newer_revision(tmp_path: Path) -> None:
    """An interruptible command would be killed at once: cancelled() is true from the start."""
    result = run([sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"],
                 cwd=tmp_path, env={}, stdin=b"x" * 100_000, timeout=100, what="the change",
                 cancelled=lambda: True, interruption=Interruption.MUST_FINISH)
    assert result.returncode == 0 and result.stdout_text.strip() == "100000"


def test_sigterm_reaches_the_whole_group_of_a_terminated_change(tmp_path: Path) -> None:
    """helm may start plugins or post-renderers: they are stopped with it."""
    pidfile = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(120)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
              f"time.sleep(120)\n")
    with pytest.raises(TransientError):
        run([sys.executable, "-c", script], cwd=tmp_path, env={}, stdin=b"", timeout=100,
            grace=5.0, what="the change", stopping=lambda: pidfile.exists(),
            interruption=Interruption.MUST_FINISH, shutdown_grace=0.2)
    pid = int(pidfile.read_text())
    _wait(lambda: not _running(pid), "the grandchild to end", timeout=30)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")

