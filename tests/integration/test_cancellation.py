"""Shutdown and newer revisions are never held up by a git server that hangs.

The daemon looks at the git server during long health waits (is there a newer revision?) and
pushes its status after every run, retrying when the push is rejected. A server that accepts a
connection and never answers, or a status branch that stays locked, must not keep a health
wait from being abandoned for a newer revision, nor keep SIGTERM from ending the daemon, for
more than a few seconds; and no git process the daemon started outlives it.

The git server is a real ``git daemon`` on 127.0.0.1 behind :class:`StallingProxy`, a TCP
relay that passes some connections through and holds others open without a byte of answer
(what a hung server or a black-holed link looks like to git). The daemon is a real process
(``reconciler run``), driven by webhooks and signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.daemon.webhooks import sign
from tests.integration.fleetkit import (
    FleetRepo,
    Site,
    branch_head,
    component,
    file_component,
    git,
    make_site,
    wait_for,
)
from tests.integration.test_faults import (
    APPLY_SH,
    LINE,
    PROGRESSING_SH,
    STATUS_BRANCH,
    TARGET,
    Daemon,
    cell_fleet,
    start_daemon,
)
from tests.integration.test_status_push import GitDaemon, free_port

pytestmark = pytest.mark.timeout(180)

SECRET = b"webhook-secret-of-the-line"
# far longer than any deadline below: reaching a step within the deadline proves nothing
# waited for a git timeout
GIT_TIMEOUT = 60
# what "a few seconds" means here (a generous bound on a loaded 2-core machine)
PROMPT = 8.0


class StallingProxy:
    """A TCP relay to ``upstream_port``; connection number ``n`` (1-based) for which
    ``stall(n)`` is true is accepted and then never answered."""

    def __init__(self, upstream_port: int, stall: Callable[[int], bool]) -> None:
        self.upstream_port = upstream_port
        self.stall = stall
        self.connections = 0
        self.stalled: list[socket.socket] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._sockets.append(conn)
                if self.stall(number):
                    self.stalled.append(conn)
                    continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets.append(upstream)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            return

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitDaemon]:
    d = GitDaemon(tmp_path / "git")
    (tmp_path / "git").mkdir()
    d.start()
    yield d
    d.stop()


def waiting_fleet(root: Path) -> FleetRepo:
    """A file, then a service whose health check reports Progressing for ever."""
    return cell_fleet(root, [
        file_component("conf", "app.conf", "release A\n"),
        component("svc", "service", {"apply": ["scripts/apply.sh"],
                                     "health": ["scripts/health.sh"]}, ["conf"]),
    ], {"apply.sh": APPLY_SH, "health.sh": PROGRESSING_SH})


def git_timeout(s: Site, seconds: int) -> None:
    """Set ``repo.timeout`` (seconds for one git network operation) in the site's config."""
    data = yaml.safe_load(s.config.read_text())
    data["repo"]["timeout"] = seconds
    s.config.write_text(yaml.safe_dump(data, sort_keys=False))


def post_webhook(url: str) -> int:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    request = urllib.request.Request(
        url + "/hooks/git", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "X-Reconciler-Signature": "sha256=" + sign(SECRET, body)})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def processes_mentioning(text: str) -> list[str]:
    """``pid command`` of every live process whose command line contains ``text`` (a git
    process talking to a server names its URL), this test process aside."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            out.append(f"{entry.name} {cmdline}")
    return out


def timed_stop(d: Daemon) -> float:
    """SIGTERM; the seconds until the daemon exited (at most 40, then the test fails)."""
    asked = time.monotonic()
    try:
        code = d.stop(timeout=40)
    except Exception as exc:  # still running: report how long it held on
        raise AssertionError(f"the daemon did not exit within 40 s of SIGTERM: {exc}") from None
    took = time.monotonic() - asked
    assert code == 0, d.text()[-4000:]
    return took


# ---------------------------------------------------------------- the remote check

def test_a_hung_remote_check_delays_neither_the_health_wait_nor_a_newer_revision(
        tmp_path: Path, server: GitDaemon, daemons: list[Daemon]) -> None:
    repo = waiting_fleet(server.base)
    # connection 1 is the first fetch; 2, the first look for a newer revision, hangs
    proxy = StallingProxy(server.port, lambda n: n == 2)
    try:
        secret = tmp_path / "webhook.secret"
        secret.write_bytes(SECRET)
        # the look comes once the run has lasted remoteCheckInterval
        s = make_site(tmp_path, "site", repo=proxy.url("remote.git"), site=LINE,
                      interval=3600, healthTimeout=120, remoteCheckInterval=1,
                      listen={"enabled": True, "address": "127.0.0.1", "port": free_port()},
                      webhook={"secretFile": str(secret)})
        git_timeout(s, GIT_TIMEOUT)
        started = time.monotonic()
        d = start_daemon(daemons, s)
        health_log = s.work(TARGET) / "health.log"
        wait_for(health_log.exists, 20, "the health wait to begin")
        assert time.monotonic() - started < 20
        wait_for(lambda: proxy.stalled, 5, "the look for a newer revision to reach the server")
        # the health wait goes on, polling, while the look at the server hangs
        polls = len(health_log.read_text().splitlines())
        wait_for(lambda: len(health_log.read_text().splitlines()) >= polls + 5, 5,
                 "health polls while the remote check hangs")
        assert d.runs() == []

        # a newer revision announced by webhook ends the wait at once and is applied
        repo.replace("solutions/app.yaml", "release A", "release B")
        repo.commit("release B")
        url = d.events("http_listening")[0]["url"]
        sent = time.monotonic()
        assert post_webhook(url) == 202
        first = d.wait_runs(1, PROMPT)[0]
        assert time.monotonic() - sent < PROMPT
        assert first["phases"] == {"Progressing": 1}
        conf = s.file(TARGET, "app.conf")
        wait_for(lambda: conf.read_text() == "release B\n", PROMPT, "release B applied")
        assert time.monotonic() - sent < PROMPT

        # and the hung look at the server does not hold up the way out either, nor outlive it
        assert processes_mentioning(proxy.url("remote.git"))
        assert timed_stop(d) < PROMPT
        assert processes_mentioning(proxy.url("remote.git")) == []
    finally:
        proxy.close()


def test_sigterm_ends_the_daemon_within_seconds_while_the_git_server_hangs(
        tmp_path: Path, server: GitDaemon, daemons: list[Daemon]) -> None:
    repo = waiting_fleet(server.base)
    # the first fetch gets through; every later connection (remote checks, the status
    # push on the way out) hangs
    proxy = StallingProxy(server.port, lambda n: n >= 2)
    try:
        s = make_site(tmp_path, "site", repo=proxy.url("remote.git"), site=LINE,
                      interval=3600, healthTimeout=120, remoteCheckInterval=1)
        git_timeout(s, GIT_TIMEOUT)
        d = start_daemon(daemons, s)
        wait_for((s.work(TARGET) / "health.log").exists, 20, "the health wait to begin")
        wait_for(lambda: proxy.stalled, 5, "a git connection to hang")

        took = timed_stop(d)

        assert took < PROMPT, f"SIGTERM took {took:.1f}s"
        # no git process the daemon started is left behind, hung or not
        assert processes_mentioning(proxy.url("remote.git")) == []
        # the run's status was committed on the way out and waits for the server
        assert d.events("run_finished", phases={"Progressing": 1})
        local = git(s.state / "repo.git", "rev-parse", f"refs/reconciler/status/{STATUS_BRANCH}")
        assert local and branch_head(repo.remote, STATUS_BRANCH) is None
        assert d.events("daemon_stopped")
    finally:
        proxy.close()


# ---------------------------------------------------------------- the status push

def test_sigterm_stops_the_status_push_retries_of_a_locked_branch(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "x\n")])
    # a stale lock of the status branch on the server: every push is rejected as a race
    # ("failed to update ref"), which the publisher retries with backoff
    lock = repo.remote / "refs" / "heads" / f"{STATUS_BRANCH}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    git_timeout(s, GIT_TIMEOUT)
    d = start_daemon(daemons, s)
    d.wait_event("status_push_rejected", 20, count=3)

    took = timed_stop(d)

    assert took < PROMPT, f"SIGTERM took {took:.1f}s"
    attempts = d.events("status_push_rejected")
    assert len(attempts) < 30
    assert d.events("run_finished")
    assert processes_mentioning(str(repo.remote)) == []
    queued = git(s.state / "repo.git", "rev-parse", f"refs/reconciler/status/{STATUS_BRANCH}")
    assert branch_head(repo.remote, STATUS_BRANCH) is None

    # the lock is cleared: the next daemon delivers the queued status
    lock.unlink()
    again = start_daemon(daemons, s, "after")
    wait_for(lambda: branch_head(repo.remote, STATUS_BRANCH) is not None, 20,
             "the queued status pushed")
    history = git(repo.remote, "rev-list", f"refs/heads/{STATUS_BRANCH}").split()
    assert queued in history
    assert timed_stop(again) < PROMPT



def test_sigterm_ends_the_daemon_within_seconds_while_its_fetch_hangs(
        tmp_path: Path, server: GitDaemon, daemons: list[Daemon]) -> None:
    waiting_fleet(server.base)
    # connection 1, the daemon's first fetch, hangs
    proxy = StallingProxy(server.port, lambda n: n == 1)
    try:
        s = make_site(tmp_path, "site", repo=proxy.url("remote.git"), site=LINE,
                      interval=3600)
        git_timeout(s, GIT_TIMEOUT)
        d = start_daemon(daemons, s)
        wait_for(lambda: proxy.stalled, 10, "the fetch to reach the server")

        took = timed_stop(d)

        assert took < PROMPT, f"SIGTERM took {took:.1f}s"
        assert processes_mentioning(proxy.url("remote.git")) == []
    finally:
        proxy.close()


def test_a_newer_revision_found_by_the_runs_own_look_is_applied_at_once(
        tmp_path: Path, server: GitDaemon, daemons: list[Daemon]) -> None:
    """No webhook, no watcher, an hour's interval: the look at the server during a health
    wait finds the newer commit, the run gives up its wait, and the next run starts at once
    rather than at the next scheduled time."""
    repo = waiting_fleet(server.base)
    s = make_site(tmp_path, "site", repo=server.url("remote.git"), site=LINE,
                  interval=3600, healthTimeout=600, remoteCheckInterval=1)
    d = start_daemon(daemons, s)
    health_log = s.work(TARGET) / "health.log"
    wait_for(health_log.exists, 30, "the health wait to begin")

    repo.replace("solutions/app.yaml", "release A", "release B")
    repo.commit("release B")
    pushed = time.monotonic()
    conf = s.file(TARGET, "app.conf")
    wait_for(lambda: conf.read_text() == "release B\n", 30, "release B applied")
    assert time.monotonic() - pushed < 30
    assert d.events("newer_revision_arrived")
    first = d.wait_runs(1, PROMPT)[0]
    assert first["reason"] == "schedule"
    assert timed_stop(d) < PROMPT
