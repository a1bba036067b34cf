"""sd_notify messages, received on real unix datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.daemon import notify


class Listener:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


@pytest.fixture
def path_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    # A short directory: unix socket paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield Listener(sock, str(path))
    finally:
        sock.close()
        path.unlink()
        directory.rmdir()


@pytest.fixture
def abstract_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    name = f"reconciler-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Listener:
    fixture = "path_listener" if request.param == "path" else "abstract_listener"
    result: Listener = request.getfixturevalue(fixture)
    return result


def test_lifecycle_messages_arrive(listener: Listener) -> None:
    assert notify.ready() is True
    assert listener.receive() == "READY=1"
    assert notify.watchdog() is True
    assert listener.receive() == "WATCHDOG=1"
    assert notify.status("3 targets in sync, revision da15608") is True
    assert listener.receive() == "STATUS=3 targets in sync, revision da15608"
    assert notify.stopping() is True
    assert listener.receive() == "STOPPING=1"


def test_ready_with_status_is_one_datagram(listener: Listener) -> None:
    assert notify.ready("serving eu/berlin") is True
    assert listener.receive() == "READY=1\nSTATUS=serving eu/berlin"
    assert listener.nothing_pending()


def test_status_stays_on_one_line(listener: Listener) -> None:
    notify.status("line-1 failed:\nPermanent: image missing\r\n")
    assert listener.receive() == "STATUS=line-1 failed: Permanent: image missing"


def test_everything_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.watchdog() is False
    assert notify.status("x") is False
    assert notify.stopping() is False


def test_unreachable_socket_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with capture_logs() as logs:
        assert notify.ready() is False
    assert [entry["event"] for entry in logs] == ["notify_failed"]


def test_unsupported_address_kind_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with capture_logs() as logs:
        assert notify.watchdog() is False
    assert logs[0]["event"] == "notify_socket_unsupported"


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("3000000", None, 1.5),
    ("3000000", "self", 1.5),
    ("3000000", "other", None),
    ("3000000", "garbage", None),
    ("0", None, None),
    ("-5", None, None),
    ("ten", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    values = {"self": str(os.getpid()), "other": str(os.getpid() + 1), "garbage": "x"}
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", values[pid])
    assert notify.watchdog_interval() == expected


CHILD = """
from reconciler.daemon import notify
notify.ready("child up")
notify.watchdog()
print(notify.watchdog_interval())
"""


@pytest.mark.parametrize(("watchdog_pid", "printed"), [(None, "0.5"), ("parent", "None")])
def test_a_child_process_notifies(path_listener: Listener, watchdog_pid: str | None,
                                  printed: str) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    if watchdog_pid == "parent":
        # Variables inherited from a watched parent must not make the child ping systemd.
        env["WATCHDOG_PID"] = str(os.getpid())
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                            text=True, timeout=30, check=True)
    assert result.stdout.strip() == printed
    assert path_listener.receive() == "READY=1\nSTATUS=child up"
    assert path_listener.receive() == "WATCHDOG=1"
