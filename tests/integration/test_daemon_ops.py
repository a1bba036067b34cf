"""Operating the site daemon, run as a real process (``reconciler run --config F``).

What an operator wires the daemon into, each checked against the real thing:

* systemd ``Type=notify`` with a watchdog: a unix datagram socket bound here stands in for
  systemd's notify socket and receives READY=1, WATCHDOG=1 about every second, STATUS= lines
  and STOPPING=1 on SIGTERM;
* push webhooks through the daemon's HTTP server: a signed GitHub push of the tracked branch
  makes the daemon apply the new commit at once; bad, missing or oversized deliveries are
  refused and pushes of other refs (the daemon's own status branches) are ignored, none of
  them causing a run; health, readiness and metrics answer;
* SIGHUP, and ``reconciler sync`` without ``--once`` (which sends it), run at once;
* ``reconciler config check`` lists every problem of a config file.

The fleet and daemon helpers come from ``test_faults.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.fleetkit import (
    FleetRepo,
    file_component,
    make_site,
    reconciler,
    solution,
    wait_for,
    write_config,
)
from tests.integration.test_faults import (
    LINE,
    TARGET,
    Daemon,
    cell_fleet,
    start_daemon,
)
from tests.integration.test_status_push import free_port

SECRET = b"s3cret-for-the-line"


def conf_fleet(root: Path) -> FleetRepo:
    return cell_fleet(root, [file_component("conf", "app.conf", "release A\n")])


def release(repo: FleetRepo, name: str) -> str:
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", f"release {name}\n")]))
    return repo.commit(f"release {name}")


# ---------------------------------------------------------------- 4. systemd notify

class NotifySocket:
    """A bound datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        # a short directory: unix socket paths are limited to 107 bytes
        self.directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
        self.path = self.directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.received: list[tuple[float, str]] = []

    def collect(self, until: float) -> None:
        """Receive datagrams until ``until`` (a monotonic time)."""
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.received.append((time.monotonic(), data.decode()))

    def wait_for(self, assignment: str, timeout: float) -> float:
        """Collect until a datagram carries ``assignment``; returns when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for at, message in self.received:
                if assignment in message.splitlines():
                    return at
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {assignment} within {timeout}s: {self.messages()}")
            self.collect(min(deadline, time.monotonic() + 0.2))

    def messages(self) -> list[str]:
        return [m for _, m in self.received]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


def test_systemd_notify_ready_watchdog_status_and_stopping(
        tmp_path: Path, daemons: list[Daemon], notify_socket: NotifySocket) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    d = start_daemon(daemons, s, env={"NOTIFY_SOCKET": str(notify_socket.path),
                                      "WATCHDOG_USEC": "2000000"}, drop=["WATCHDOG_PID"])

    ready = notify_socket.wait_for("READY=1", 15)
    assert notify_socket.messages()[0].splitlines()[0] == "READY=1"
    notify_socket.collect(time.monotonic() + 3.5)
    d.assert_alive()

    beats = [at for at, m in notify_socket.received if "WATCHDOG=1" in m.splitlines()]
    assert len(beats) >= 3, notify_socket.messages()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    # half of WATCHDOG_USEC, so systemd never sees a late beat
    assert all(0.5 < g < 1.6 for g in gaps), gaps
    assert beats[0] - ready < 1.6
    statuses = [line.removeprefix("STATUS=") for m in notify_socket.messages()
                for line in m.splitlines() if line.startswith("STATUS=")]
    assert any(LINE in st for st in statuses), statuses  # sent with READY=1
    head = repo.head()[:12]
    assert f"{head}: 1 Ready" in statuses, statuses  # the summary of the first run

    assert d.stop() == 0
    notify_socket.wait_for("STOPPING=1", 5)
    stopping = next(i for i, m in enumerate(notify_socket.messages()) if "STOPPING=1" in m)
    assert "READY=1" not in "".join(notify_socket.messages()[stopping:])


# ---------------------------------------------------------------- 5. webhooks

def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def github_push(port: int, ref: str, after: str, *, secret: bytes | None = SECRET,
                body: bytes | None = None) -> tuple[int, bytes]:
    """A push delivery as GitHub sends it; ``secret=None`` leaves the signature out."""
    body = body if body is not None else json.dumps({
        "ref": ref, "before": "0" * 40, "after": after,
        "repository": {"full_name": "factory/fleet"}}).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret, body,
                                                               hashlib.sha256).hexdigest()
    return request(port, "POST", "/hooks/git", body, headers)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_webhooks_through_the_daemon_trigger_only_signed_pushes_of_the_tracked_ref(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    port = free_port()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600,
                  listen={"address": "127.0.0.1", "port": port, "enabled": True},
                  webhook={"secretFile": str(secret_file)})
    d = start_daemon(daemons, s)
    conf = s.file(TARGET, "app.conf")

    wait_for(lambda: _alive_and(d, lambda: request(port, "GET", "/readyz")[0] == 200), 15,
             "/readyz to turn 200 after the first run")
    assert d.runs() and conf.read_text() == "release A\n"
    assert request(port, "GET", "/healthz")[0] == 200

    # a signed push of the tracked branch: accepted and applied at once
    release_b = release(repo, "B")
    sent = time.monotonic()
    code, body = github_push(port, "refs/heads/main", release_b)
    assert code == 202, body
    assert json.loads(body)["result"] == "triggered"
    wait_for(lambda: conf.read_text() == "release B\n", 3, "release B applied")
    assert time.monotonic() - sent < 3
    run = d.wait_runs(2, 5)[-1]
    assert run["revision"] == release_b[:12] and run["reason"].startswith("webhook github")

    # refused or ignored deliveries never cause a run, even with a new commit waiting
    release_c = release(repo, "C")
    runs_before = len(d.runs())
    code, _ = github_push(port, "refs/heads/main", release_c, secret=b"wrong secret")
    assert code == 401
    code, _ = github_push(port, "refs/heads/main", release_c, secret=None)
    assert code == 401
    padding = b" " * (1024 * 1024 + 1)
    big = json.dumps({"ref": "refs/heads/main", "after": release_c}).encode() + padding
    code, _ = github_push(port, "refs/heads/main", release_c, body=big)
    assert code == 413
    code, body = github_push(port, "refs/heads/reconciler-status/x", "1" * 40)
    assert code == 200 and json.loads(body)["result"] == "ignored", body
    time.sleep(1.5)
    d.assert_alive()
    assert len(d.runs()) == runs_before
    assert conf.read_text() == "release B\n"

    assert request(port, "GET", "/healthz")[0] == 200
    assert request(port, "GET", "/readyz")[0] == 200
    code, raw = request(port, "GET", "/metrics")
    assert code == 200
    text = raw.decode()
    assert (metric(text, "reconciler_run_duration_seconds_count") or 0) >= 2
    assert metric(text, "reconciler_target_phase", target=TARGET, phase="Ready") == 1
    assert metric(text, "reconciler_target_phase", target=TARGET, phase="Failed") == 0
    assert metric(text, "reconciler_revision_info", revision=release_b) == 1
    assert metric(text, "reconciler_git_fetch_errors_total") == 0
    assert metric(text, "reconciler_webhook_requests_total", result="unauthorized") == 2
    assert metric(text, "reconciler_webhook_requests_total", result="too_large") == 1
    assert d.stop() == 0
    # the secret never reaches the log
    assert SECRET.decode() not in d.text()


def _alive_and(d: Daemon, check: Callable[[], bool]) -> bool:
    d.assert_alive()
    try:
        return check()
    except OSError:  # not listening yet
        return False


# ---------------------------------------------------------------- 6. SIGHUP and `sync`

def test_sighup_and_sync_without_once_run_at_once(tmp_path: Path,
                                                  daemons: list[Daemon]) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    d = start_daemon(daemons, s)
    d.wait_runs(1, 15)
    conf = s.file(TARGET, "app.conf")

    release_b = release(repo, "B")
    d.signal(signal.SIGHUP)
    run = d.wait_runs(2, 3)[-1]
    assert run["reason"] == "SIGHUP" and run["revision"] == release_b[:12]
    assert conf.read_text() == "release B\n"

    release_c = release(repo, "C")
    asked = reconciler("sync", "--config", str(s.config), env=s.env())
    assert asked.returncode == 0, asked.describe()
    assert f"asked daemon {d.pid}" in asked.stdout
    run = d.wait_runs(3, 3)[-1]
    assert run["reason"] == "SIGHUP" and run["revision"] == release_c[:12]
    assert conf.read_text() == "release C\n"
    assert d.stop() == 0

    # with no daemon running, `sync` says so instead of signalling a stale pid
    gone = reconciler("sync", "--config", str(s.config), env=s.env())
    assert gone.returncode != 0, gone.describe()


# ---------------------------------------------------------------- 7. config check

def test_config_check_accepts_a_good_config(tmp_path: Path) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    secret = tmp_path / "site" / "webhook-secret"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    config = write_config(tmp_path / "site" / "config.yaml", repo=repo.url, site=LINE,
                          state_dir=tmp_path / "site" / "state",
                          webhook={"secretFile": str(secret)}, verify={"mode": "none"})
    result = reconciler("config", "check", "--config", str(config))
    assert result.returncode == 0, result.describe()
    assert "OK" in result.stdout and LINE in result.stdout


BAD_CONFIG = """\
repo:
  url: {url}
site: hq/line-1
stateDir: state
interval: soon
colour: blue
webhook:
  secretFile: missing-secret
verify:
  mode: sometimes
"""


def test_config_check_lists_every_problem(tmp_path: Path) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    config = tmp_path / "site" / "config.yaml"
    config.parent.mkdir()
    config.write_text(BAD_CONFIG.format(url=repo.url))

    result = reconciler("config", "check", "--config", str(config))

    assert result.returncode == 1, result.describe()
    out = result.stdout + result.stderr
    lines = out.splitlines()

    def line_with(*words: str) -> str:
        found = [ln for ln in lines if all(w in ln for w in words)]
        assert found, f"no line naming {words}:\n{out}"
        return found[0]

    assert f"{config}:6" in line_with("colour", "unknown")
    assert f"{config}:5" in line_with("interval", "integer")
    assert "sometimes" in line_with("verify.mode")
    assert "missing-secret" in line_with("webhook.secretFile")


def test_config_check_reports_missing_files_of_a_well_formed_config(tmp_path: Path) -> None:
    repo = conf_fleet(tmp_path / "fleet")
    config = write_config(tmp_path / "site" / "config.yaml", repo=repo.url, site=LINE,
                          state_dir=tmp_path / "site" / "state",
                          webhook={"secretFile": "missing-secret"})
    data = yaml.safe_load(config.read_text())
    data["repo"]["tokenFile"] = "no-token"
    config.write_text(yaml.safe_dump(data))
    result = reconciler("config", "check", "--config", str(config))
    assert result.returncode == 1, result.describe()
    lines = result.stdout.splitlines()
    assert any("webhook.secretFile" in ln and "missing-secret" in ln for ln in lines), lines
    assert any("repo.tokenFile" in ln and "no-token" in ln for ln in lines), lines
    assert not os.path.exists(tmp_path / "site" / "state" / "lock")


def test_run_exits_78_on_a_bad_config_so_systemd_does_not_restart_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    binary = str(Path(sys.executable).parent / "reconciler")
    bad = tmp_path / "config.yaml"
    bad.write_text("repo: {url: /nowhere}\nintervall: 5\n")
    out = subprocess.run([binary, "run", "--config", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 78
    assert f"{bad}:1: site: required field" in out.stderr
    assert "intervall: unknown field (did you mean 'interval'?)" in out.stderr
    missing = subprocess.run([binary, "run", "--config", str(tmp_path / "none.yaml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 78 and "no config file" in missing.stderr
