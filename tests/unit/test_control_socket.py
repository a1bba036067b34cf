"""The control socket itself: a real Unix socket in a temporary directory, served by
:class:`ControlServer` with the real actions over a real hold store, and asked through the
client the commands use (:func:`ask_daemon`) or through raw sockets for what a well-behaved
client never sends.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.errors import ConfigError, NoDaemonError, ReconcilerError
from reconciler.daemon.control import ask_daemon
from reconciler.daemon.control_requests import ControlActions
from reconciler.daemon.control_socket import ControlServer
from reconciler.engine.holds import HoldStore


class Site:
    """A state directory, its hold store and a server on ``<state>/control.sock``."""

    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir(parents=True)
        self.path = self.state / "control.sock"
        self.triggers: list[str] = []
        self.holds = HoldStore.load(self.state / "holds.json")
        actions = ControlActions(holds=self.holds, now=lambda: datetime.now(UTC),
                                 retry=lambda target: None, trigger=self.triggers.append,
                                 served=lambda: ("press-1",), state_dir=self.state,
                                 site="hq/line-1")
        self.server = ControlServer(self.path, actions.answer, timeout=1.0)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return ask_daemon([self.path], request, state_dir=self.state, timeout=10)

    def raw(self, data: bytes, *, close: bool = True) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(self.path))
            conn.sendall(data)
            if close:
                conn.shutdown(socket.SHUT_WR)
            answer: dict[str, Any] = json.loads(conn.makefile("rb").read())
            return answer


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    s.server.start()
    yield s
    s.server.stop()


def hold(until: datetime | None = None) -> dict[str, Any]:
    until = until or datetime.now(UTC) + timedelta(hours=2)
    return {"request": "hold", "target": "press-1", "until": until.isoformat(),
            "reason": "production run"}


def test_the_socket_is_for_the_daemons_group_only(site: Site) -> None:
    info = os.lstat(site.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_a_request_is_answered_and_the_asker_is_the_kernels_word(site: Site) -> None:
    answer = site.ask(hold())
    assert answer["ok"] is True and answer["pid"] == os.getpid()
    import pwd
    assert answer["hold"]["by"] == pwd.getpwuid(os.geteuid()).pw_name
    assert site.triggers == ["hold"]
    assert [h.target for h in site.holds.current(datetime.now(UTC))] == ["press-1"]


def test_a_refusal_is_raised_with_its_message(site: Site) -> None:
    with pytest.raises(ReconcilerError, match="serves no target named 'press-9'") as info:
        site.ask({**hold(), "target": "press-9"})
    assert info.value.reason == "UnknownTarget"


def test_garbage_gets_an_error_answer_and_the_channel_keeps_serving(site: Site) -> None:
    assert "not JSON" in site.raw(b"\xff\xfe not json")["error"]
    assert "JSON object" in site.raw(b"[1, 2]")["error"]
    assert "larger than" in site.raw(b"{" + b" " * 20000 + b"}")["error"]
    assert site.ask({"request": "holds"})["ok"] is True


def test_a_client_that_never_finishes_its_request_is_cut_off(site: Site) -> None:
    answer = site.raw(b'{"request": ', close=False)  # never shuts its side
    assert answer["ok"] is False and "no complete request within 1 s" in answer["error"]
    assert site.ask({"request": "sync"})["ok"] is True
    assert site.triggers == ["sync"]


def test_a_client_that_leaves_at_once_does_not_end_the_channel(site: Site) -> None:
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(site.path))
    assert site.ask({"request": "holds"})["ok"] is True


def test_stop_removes_the_socket_file(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.server.start()
    s.server.stop()
    assert not s.path.exists()
    with pytest.raises(NoDaemonError, match="no daemon is listening"):
        s.ask({"request": "holds"})


def test_a_socket_file_left_by_a_killed_daemon_is_replaced(tmp_path: Path) -> None:
    s = Site(tmp_path)
    # a process binds the path and is killed: the file stays, nobody listens
    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
            "s.listen(); print('bound', flush=True)")
    done = subprocess.run([sys.executable, "-c", code, str(s.path)], capture_output=True,
                          text=True, timeout=30, check=True)
    assert done.stdout.strip() == "bound" and stat.S_ISSOCK(os.lstat(s.path).st_mode)
    with pytest.raises(NoDaemonError):
        s.ask({"request": "holds"})
    s.server.start()
    try:
        assert s.ask({"request": "holds"})["ok"] is True
    finally:
        s.server.stop()


def test_a_socket_another_process_serves_is_not_taken_over(site: Site, tmp_path: Path) -> None:
    second = ControlServer(site.path, lambda payload, peer: {"ok": True})
    with pytest.raises(ConfigError, match="controlSocket: another process listens on"):
        second.start()
    assert site.ask({"request": "holds"})["ok"] is True  # the first still serves


def test_another_kind_of_file_at_the_path_is_left_alone(tmp_path: Path) -> None:
    s = Site(tmp_path)
    s.path.write_text("notes\n")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        s.server.start()
    assert s.path.read_text() == "notes\n"


def test_a_directory_other_users_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    server = ControlServer(shared / "control.sock", lambda payload, peer: {"ok": True})
    with pytest.raises(ConfigError, match="may be written by other users"):
        server.start()


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make a directory owned by another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    server = ControlServer(theirs / "control.sock", lambda payload, peer: {"ok": True})
    with pytest.raises(ConfigError, match="is not owned by the daemon's user"):
        server.start()


def test_a_missing_directory_is_made_for_the_daemon_alone(tmp_path: Path) -> None:
    path = tmp_path / "run" / "reconciler" / "control.sock"
    server = ControlServer(path, lambda payload, peer: {"ok": True, "echo": payload})
    server.start()
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o007 == 0
        answer = ask_daemon([path], {"request": "sync"}, state_dir=tmp_path)
        assert answer["echo"]["state_dir"] == str(tmp_path)
    finally:
        server.stop()


def test_the_client_skips_a_daemon_of_another_state_directory(site: Site,
                                                              tmp_path: Path) -> None:
    other = Site(tmp_path / "other")
    other.server.start()
    try:
        answer = ask_daemon([other.path, site.path], {"request": "sync"},
                            state_dir=site.state)
        assert answer["ok"] and site.triggers == ["sync"] and other.triggers == []
    finally:
        other.server.stop()
