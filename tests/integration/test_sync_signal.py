"""``reconciler sync`` without ``--once`` reaches a daemon only when one provably runs.

The command signals the process that holds the state directory's lock and has registered
itself as the daemon, never a pid merely written in a file: a lock file left behind by a
daemon that is gone may name a process that has nothing to do with us, and SIGHUP ends most
processes. Each case uses real processes: an unrelated ``sleep``, a lock held by another
process, and a real daemon (``reconciler run``).
"""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fleetkit import file_component, make_site, reconciler, solution
from tests.integration.test_faults import LINE, Daemon, cell_fleet, start_daemon


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that has nothing to do with the reconciler (and dies of SIGHUP)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _assert_alive(proc: subprocess.Popen[bytes]) -> None:
    # a signal already sent is delivered within microseconds; two seconds is generous
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=2)


def test_a_stale_lock_naming_an_unrelated_process_does_not_get_it_killed(
        tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    s.state.mkdir(parents=True)
    lock = s.state / "lock"
    lock.write_text(f"pid {bystander.pid}\n")  # what a daemon killed with SIGKILL leaves

    result = reconciler("sync", "--config", str(s.config), env=s.env())

    assert result.returncode == 1, result.describe()
    assert "no daemon is running" in result.stderr, result.describe()
    assert "--once" in result.stderr  # and what to do instead
    _assert_alive(bystander)
    assert lock.read_text() == f"pid {bystander.pid}\n"  # only looked at, never taken


def test_without_a_lock_file_sync_says_no_daemon_is_running(tmp_path: Path) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)

    result = reconciler("sync", "--config", str(s.config), env=s.env())

    assert result.returncode == 1, result.describe()
    assert "no daemon is running" in result.stderr, result.describe()
    assert not (s.state / "lock").exists()


def test_a_lock_held_by_a_process_that_is_not_the_daemon_is_not_signalled(
        tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    """E.g. a ``sync --once`` holds the lock: signalling it would end it mid-apply."""
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    s.state.mkdir(parents=True)
    with (s.state / "lock").open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid {bystander.pid}\n")
        held.flush()

        result = reconciler("sync", "--config", str(s.config), env=s.env())

    assert result.returncode == 1, result.describe()
    assert "no daemon is running" in result.stderr, result.describe()
    assert "in use by" in result.stderr  # says who holds the directory instead
    _assert_alive(bystander)


def test_with_a_daemon_running_sync_triggers_a_run_even_if_the_lock_file_was_rewritten(
        tmp_path: Path, daemons: list[Daemon], bystander: subprocess.Popen[bytes]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    d = start_daemon(daemons, s)
    d.wait_runs(1, 30)

    repo.write("solutions/app.yaml", solution("app", [file_component("conf", "app.conf",
                                                                     "B\n")]))
    second = repo.commit("release B")
    asked = reconciler("sync", "--config", str(s.config), env=s.env())
    assert asked.returncode == 0, asked.describe()
    assert f"asked daemon {d.pid}" in asked.stdout
    run = d.wait_runs(2, 30)[-1]
    assert run["reason"] == "SIGHUP" and run["revision"] == second[:12]
    assert s.file("cell", "app.conf").read_text() == "B\n"

    # someone overwrote the pid in the lock file: the daemon is still the one signalled
    (s.state / "lock").write_text(f"pid {bystander.pid}\n")
    asked = reconciler("sync", "--config", str(s.config), env=s.env())
    assert asked.returncode == 0, asked.describe()
    assert f"asked daemon {d.pid}" in asked.stdout
    d.wait_runs(3, 30)
    _assert_alive(bystander)
    d.assert_alive()
    assert d.stop() == 0
    assert not d.events("run_crashed")


def test_sync_after_the_daemon_stopped_says_no_daemon_is_running(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    d = start_daemon(daemons, s)
    d.wait_runs(1, 30)
    assert d.stop() == 0
    gone = reconciler("sync", "--config", str(s.config), env=s.env())
    assert gone.returncode == 1, gone.describe()
    assert "no daemon is running" in gone.stderr
