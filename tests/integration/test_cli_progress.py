"""Progress of long commands: drawn on stderr when it is a terminal, never when it is piped.

The installed ``reconciler`` runs with its stderr on a real pseudo-terminal (the ``pty``
module) and its stdout on a pipe, as when a person runs ``reconciler plan > plan.md``; then
with both piped, as in CI. On the terminal the line ``targets done / total`` is drawn and
erased before the output; piped, stderr holds nothing of it and stdout is the same.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    FleetRepo,
    Site,
    clean_env,
    file_binding,
    file_component,
    instance,
    make_site,
    reconciler,
    reconciler_args,
    settings,
    site,
    solution,
    target,
)

TARGETS = ("cell-1", "cell-2", "cell-3")
ERASE = "\r\x1b[K"


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[FleetRepo, Site]:
    repo = FleetRepo(tmp_path / "fleet")
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target(name, "line-1", bindings=[file_binding(name)])
                                for name in TARGETS])
    repo.write("instances.yaml", [instance("app", "app", names=list(TARGETS))])
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", "release A\n")]))
    repo.commit("initial fleet")
    return repo, make_site(tmp_path, "site", repo=repo.url, site="hq/line-1")


def on_terminal(*args: str, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``reconciler`` with stderr on a pseudo-terminal and stdout on a pipe; returns the
    exit code, stdout and what the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    received = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        proc = subprocess.Popen(reconciler_args(*args, log_level="error"), stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.DEVNULL,
                                env=clean_env({**(env or {}), "TERM": "xterm"}), cwd=cwd)
        os.close(slave)
        stdout, _ = proc.communicate(timeout=90)
    finally:
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, stdout.decode(), received.decode(errors="replace")


def test_sync_once_draws_targets_done_on_a_terminal_only(fleet: tuple[FleetRepo, Site]) -> None:
    _, s = fleet
    code, stdout, terminal = on_terminal("sync", "--once", "--config", str(s.config),
                                         env=s.env())
    assert code == 0, (stdout, terminal)
    assert "sync: 3/3 targets (100%) cell-3" in terminal, terminal
    assert terminal.endswith(ERASE), terminal  # erased: the shell prompt starts clean
    assert "\r" not in stdout and "cell-3" in stdout

    piped = reconciler("sync", "--once", "--config", str(s.config), env=s.env(),
                       log_level="error")
    assert piped.returncode == 0, piped.describe()
    assert piped.stderr == ""
    assert "\r" not in piped.stdout and "targets (" not in piped.stdout


def test_live_plan_draws_targets_done_on_a_terminal_only(fleet: tuple[FleetRepo, Site]) -> None:
    _, s = fleet
    code, stdout, terminal = on_terminal("plan", "--config", str(s.config), env=s.env())
    assert code == 2, (stdout, terminal)
    assert "plan: 3/3 targets (100%) cell-3" in terminal, terminal
    assert "targets (" not in stdout and "\r" not in stdout

    piped = reconciler("plan", "--config", str(s.config), env=s.env(), log_level="error")
    assert piped.returncode == 2, piped.describe()
    assert piped.stderr == ""
    assert piped.stdout == stdout  # the same result, whether or not progress was drawn


def test_a_dumb_terminal_gets_no_progress(fleet: tuple[FleetRepo, Site]) -> None:
    _, s = fleet
    env = {**s.env(), "TERM": "dumb"}
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(reconciler_args("plan", "--config", str(s.config),
                                              log_level="error"),
                              stdout=subprocess.PIPE, stderr=slave,
                              env=clean_env(env), timeout=90)
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    try:
        received = os.read(master, 4096)
    except (BlockingIOError, OSError):
        received = b""
    os.close(master)
    assert proc.returncode == 2
    assert b"targets" not in received


def test_offline_plan_draws_its_stages_on_a_terminal_only(fleet: tuple[FleetRepo, Site]) -> None:
    repo, _ = fleet
    base = repo.head()
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", "release B\n")]))
    repo.commit("release B")
    args = ("plan", "--repo", str(repo.work), "--base", base, "--format", "markdown")
    code, stdout, terminal = on_terminal(*args)
    assert code == 2, (stdout, terminal)
    assert "validating both revisions…" in terminal, terminal
    assert "comparing: 3/3 targets (100%) cell-3" in terminal, terminal
    assert terminal.endswith(ERASE)

    piped = reconciler(*args, log_level="error")
    assert piped.returncode == 2, piped.describe()
    assert piped.stderr == ""
    assert piped.stdout == stdout
