"""Fault tolerance of the site daemon, run as a real process (``reconciler run --config F``).

What an operator of an edge site relies on when things go wrong:

* the git server goes away: the daemon keeps enforcing its last revision (drift is repaired
  offline), backs off instead of hammering the server, queues its status commits locally, and
  when the server is back it fetches the new revision and delivers the queued status history;
* the daemon is killed with SIGKILL in the middle of an apply: the next daemon takes the lock,
  converges without applying anything twice, still knows every component it applied (so a
  later removal prunes it), and no state file is ever found half-written;
* SIGTERM during a long health wait or a long script: the daemon abandons the wait (or cancels
  the script's process group) and exits 0 within seconds;
* a second daemon on the same state directory refuses to start.

The git server is a real ``git daemon`` on 127.0.0.1 (``GitDaemon`` from
``test_status_push``), stopped and restarted on the same port. The helpers in the first section
are also used by ``test_daemon_ops.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fleetkit import (
    DaemonProcess,
    FleetRepo,
    Site,
    branch_head,
    clean_env,
    component,
    file_binding,
    file_component,
    git,
    instance,
    make_site,
    parse_events,
    reconciler,
    reconciler_args,
    script_binding,
    settings,
    site,
    solution,
    status_files,
    sync,
    target,
    wait_for,
)
from tests.integration.test_status_push import GitDaemon, free_port

# ---------------------------------------------------------------- helpers (used by both files)

LINE = "hq/line-1"
STATUS_BRANCH = "reconciler-status/hq_line-1"
STATUS_FILE = f"status/{LINE}/cell.yaml"
TARGET = "cell"

# every script runs with HOME = cwd = the target's workdir (<state>/work/cell)
APPLY_SH = """#!/bin/sh
set -eu
echo "apply $RECONCILER_COMPONENT $RECONCILER_REVISION" >> "$HOME/applies.log"
"""

# Degraded while the operator's marker file exists (a health check of the local machine)
HEALTH_SH = """#!/bin/sh
if [ -e "$HOME/degraded" ]; then
  echo "pump offline" >&2
  exit 1
fi
exit 0
"""


def cell_fleet(root: Path, components: Sequence[Mapping[str, Any]],
               scripts: Mapping[str, str] | None = None) -> FleetRepo:
    """Plant ``hq``, line ``hq/line-1``, one target ``cell`` (file and script bindings) and
    one instance ``app`` of solution ``app`` made of ``components``; ``scripts`` are written
    executable under ``solutions/scripts/``."""
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [
        target(TARGET, "line-1", bindings=[file_binding(TARGET), script_binding(TARGET)]),
        instance("app", "app", names=[TARGET], onFailure="stay")])
    repo.write("solutions/app.yaml", solution("app", components))
    for name, text in (scripts or {}).items():
        repo.write(f"solutions/scripts/{name}", text, executable=True)
    repo.commit("initial fleet")
    return repo


def set_components(repo: FleetRepo, components: Sequence[Mapping[str, Any]],
                   message: str) -> str:
    repo.write("solutions/app.yaml", solution("app", components))
    return repo.commit(message)


class Daemon(DaemonProcess):
    """A daemon process whose environment can carry extra variables (systemd's)."""

    def __init__(self, site_: Site, log: Path, env: Mapping[str, str] | None = None,
                 drop: Sequence[str] = ()) -> None:
        super().__init__(site_, log)
        self.extra_env = dict(env or {})
        self.drop = tuple(drop)

    def start(self) -> Daemon:
        env = clean_env({**self.site.env(), **self.extra_env})
        for name in self.drop:
            env.pop(name, None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                reconciler_args("run", "--config", str(self.config)), env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def events_after(self, offset: int, name: str, **match: Any) -> list[dict[str, Any]]:
        """Events logged after character ``offset`` of the log (see :meth:`offset`)."""
        return parse_events(self.text()[offset:], name, **match)

    def offset(self) -> int:
        return len(self.text())

    def wait_event(self, name: str, timeout: float, *, after: int = 0, count: int = 1,
                   **match: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            self.assert_alive()
            events = self.events_after(after, name, **match)
            return events if len(events) >= count else None

        result: list[dict[str, Any]] = wait_for(found, timeout, f"{count} {name} event(s)")
        return result


def start_daemon(daemons: list[Daemon], s: Site, name: str = "daemon",
                 env: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> Daemon:
    d = Daemon(s, s.config.parent / f"{name}.log", env, drop).start()
    daemons.append(d)
    return d


def status_on_remote(repo: FleetRepo, branch: str = STATUS_BRANCH) -> dict[str, Any] | None:
    if branch_head(repo.remote, branch) is None:
        return None
    return status_files(repo.remote, branch).get(STATUS_FILE)


def json_files(root: Path) -> dict[str, Any]:
    """Every ``*.json`` under ``root`` parsed (a half-written one fails the test here)."""
    out = {}
    for path in sorted(root.rglob("*.json")):
        if ".git" in path.parts or path.parent.name.endswith(".git"):
            continue
        text = path.read_text()
        try:
            out[path.relative_to(root).as_posix()] = json.loads(text)
        except ValueError as exc:
            raise AssertionError(f"{path} is not valid JSON ({exc}): {text[:300]!r}") from None
    return out


def leftover_temp_files(root: Path) -> list[str]:
    """Temporary files of atomic writes (``.<name>.<random>``) left in the state directory."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*")
                  if p.is_file() and "repo.git" not in p.parts and "checkouts" not in p.parts
                  and p.name.count(".") >= 2 and not p.name.startswith(".git"))


def lock_holder(s: Site) -> str:
    return (s.state / "lock").read_text().strip()


def lock_is_free(s: Site) -> bool:
    with (s.state / "lock").open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True


# ---------------------------------------------------------------- 1. git server unreachable

def test_offline_daemon_keeps_enforcing_backs_off_queues_status_and_recovers(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    base = tmp_path / "git"
    repo = cell_fleet(base, [
        file_component("conf", "app.conf", "release A\n"),
        component("probe", "service", {"apply": ["scripts/apply.sh"],
                                       "health": ["scripts/health.sh"]}, ["conf"]),
    ], {"apply.sh": APPLY_SH, "health.sh": HEALTH_SH})
    release_a = repo.head()
    server = GitDaemon(base)
    server.start()
    try:
        s = make_site(tmp_path, "site", repo=server.url("remote.git"), site=LINE, interval=1)
        d = start_daemon(daemons, s)
        conf = s.file(TARGET, "app.conf")
        wait_for(lambda: (status_on_remote(repo) or {}).get("phase") == "Ready", 15,
                 "revision A applied and its status pushed")
        assert conf.read_text() == "release A\n"
        pushed_before = branch_head(repo.remote, STATUS_BRANCH)

        server.stop()
        stopped = time.monotonic()
        mark = d.offset()
        # while offline: drift is repaired, and the local health check turns the target
        # Degraded, a status change that must be committed and queued
        conf.write_text("tampered by hand\n")
        (s.work(TARGET) / "degraded").touch()
        wait_for(lambda: conf.read_text() == "release A\n", 5, "the hand edit repaired offline")
        d.wait_event("run_finished", 5, after=mark, phases={"Degraded": 1})
        time.sleep(max(0.0, 6.0 - (time.monotonic() - stopped)))

        runs = d.events_after(mark, "run_finished")
        failures = d.events_after(mark, "fetch_failed")
        assert len(runs) >= 4, runs
        # backoff: one attempt reached for the server, the other runs used the last fetch
        assert 1 <= len(failures) <= 2, failures
        assert failures[0]["retry_in"] >= 5, failures
        assert all(r["revision"] == release_a[:12] for r in runs)
        assert all(r["fetch_error"] for r in runs[1:]), runs
        # the status commit exists locally, the remote never received it
        local = git(s.state / "repo.git", "rev-parse",
                    f"refs/reconciler/status/{STATUS_BRANCH}")
        assert local != pushed_before
        assert branch_head(repo.remote, STATUS_BRANCH) == pushed_before
        queued = git(s.state / "repo.git", "show", f"{local}:{STATUS_FILE}")
        assert "phase: Degraded" in queued and "pump offline" in queued
        assert d.events_after(mark, "status_queued")  # committed locally, push deferred

        # the machine recovers, a new release is pushed to the server while it is still
        # down, then the server comes back on the same port
        (s.work(TARGET) / "degraded").unlink()
        repo.write("solutions/app.yaml", solution("app", [
            file_component("conf", "app.conf", "release B\n"),
            component("probe", "service", {"apply": ["scripts/apply.sh"],
                                           "health": ["scripts/health.sh"]}, ["conf"])]))
        release_b = repo.commit("release B")
        server.start()

        # no trigger: the daemon's own backoff lets it try again and it recovers
        wait_for(lambda: conf.read_text() == "release B\n", 20, "release B applied")
        d.wait_event("fetch_recovered", 5, after=mark)
        final = wait_for(lambda: (lambda st: st if st and st.get("appliedRevision") ==
                                  release_b and st.get("phase") == "Ready" else None)(
                             status_on_remote(repo)), 10, "status of release B pushed")
        assert final["observedRevision"] == release_b
        history = git(repo.remote, "rev-list", f"refs/heads/{STATUS_BRANCH}").split()
        assert local in history, "the status commit queued offline never reached the server"
        assert pushed_before in history  # a fast-forward, nothing rewritten
        # the script's inputs did not change between A and B: it ran once, at the start
        assert (s.work(TARGET) / "applies.log").read_text().count("apply probe") == 1
        d.assert_alive()
        assert d.stop() == 0
    finally:
        server.stop()


def test_sync_once_offline_enforces_the_last_fetch_and_names_the_queued_status_commit(
        tmp_path: Path) -> None:
    base = tmp_path / "git"
    repo = cell_fleet(base, [
        file_component("conf", "app.conf", "release A\n"),
        component("probe", "service", {"apply": ["scripts/apply.sh"],
                                       "health": ["scripts/health.sh"]}, ["conf"]),
    ], {"apply.sh": APPLY_SH, "health.sh": HEALTH_SH})
    server = GitDaemon(base)
    server.start()
    try:
        s = make_site(tmp_path, "site", repo=server.url("remote.git"), site=LINE)
        online = sync(s)
        assert "(pushed)" in online.stdout, online.describe()
    finally:
        server.stop()
    pushed_before = branch_head(repo.remote, STATUS_BRANCH)
    (s.work(TARGET) / "degraded").touch()
    s.file(TARGET, "app.conf").write_text("tampered\n")

    offline = sync(s, expect=1)  # Degraded: not every target is Ready

    assert s.file(TARGET, "app.conf").read_text() == "release A\n"
    assert "unable to connect" in offline.stderr or "unreachable" in offline.stderr
    local = git(s.state / "repo.git", "rev-parse", f"refs/reconciler/status/{STATUS_BRANCH}")
    assert local != pushed_before and branch_head(repo.remote, STATUS_BRANCH) == pushed_before
    # the operator is told which status commit waits for the server
    assert f"status commit {local[:12]} (queued locally)" in offline.stdout, offline.describe()


def test_fetch_backoff_doubles_and_scheduled_runs_do_not_reach_for_the_server(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    # nothing listens on this port: every fetch fails at once (connection refused)
    s = make_site(tmp_path, "site", repo=f"git://127.0.0.1:{free_port()}/remote.git",
                  site=LINE, interval=1)
    d = start_daemon(daemons, s)
    first = d.wait_event("fetch_failed", 10)
    time.sleep(2.5)
    # the schedule went on (runs ended with no revision) without asking the server again
    assert len(d.events("fetch_failed")) == 1
    assert len(d.events("run_failed")) >= 3

    # an explicit request (SIGHUP via `reconciler sync`) asks the server now, and each further
    # failure doubles the wait before the schedule tries by itself
    for count in (2, 3):
        asked = reconciler("sync", "--config", str(s.config), env=s.env())
        assert asked.returncode == 0, asked.describe()
        d.wait_event("fetch_failed", 5, count=count)
    delays = [e["retry_in"] for e in d.events("fetch_failed")]
    assert [e["failures"] for e in d.events("fetch_failed")] == [1, 2, 3]
    assert delays[0] == first[0]["retry_in"]
    assert delays[1] == 2 * delays[0] and delays[2] == 2 * delays[1], delays
    assert "unreachable" in d.events("run_failed")[-1]["error"] or \
        "127.0.0.1" in d.events("run_failed")[-1]["error"]
    assert d.stop() == 0


# ---------------------------------------------------------------- 2. crash safety

# the first apply of "slow" hangs (the daemon is killed meanwhile); later applies finish
SLOW_SH = """#!/bin/sh
set -eu
echo "start" >> "$HOME/applies.log"
if [ ! -e "$HOME/slept" ]; then
  : > "$HOME/slept"
  echo $$ > "$HOME/slow.pid"
  sleep 30
fi
echo "done" >> "$HOME/applies.log"
"""


def test_sigkill_mid_apply_then_restart_converges_without_duplicates_or_orphans(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    first = file_component("first", "first.conf", "first\n")
    slow = component("slow", "service", {"apply": ["scripts/slow.sh"]}, ["first"])
    repo = cell_fleet(tmp_path / "fleet", [first, slow], {"slow.sh": SLOW_SH})
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=2)
    work = s.work(TARGET)

    old = start_daemon(daemons, s, "before-crash")
    pid_file = work / "slow.pid"
    wait_for(pid_file.exists, 15, "the slow apply to start")
    assert lock_holder(s) == f"pid {old.pid}"
    # SIGKILL: no handler runs. systemd (KillMode=control-group) then kills what the daemon
    # started; the script runs in a session of its own, so that is done here by hand
    os.killpg(old.pid, signal.SIGKILL)
    old.proc.wait(timeout=10)  # type: ignore[union-attr]
    script = int(pid_file.read_text())
    os.killpg(script, signal.SIGKILL)

    state = json_files(s.state)
    assert sorted(state["inventory/cell.json"]["entries"]) == ["app/first"]
    assert leftover_temp_files(s.state) == []
    assert old.events("component_applied", component="first")

    new = start_daemon(daemons, s, "after-crash")
    wait_for(lambda: lock_holder(s) == f"pid {new.pid}", 10, "the new daemon to take the lock")
    done = new.wait_event("run_finished", 15, phases={"Ready": 1})
    assert done[0]["applied"] == 1
    # only the interrupted component was applied again; the file was found in sync
    assert [e["component"] for e in new.events("component_applied")] == ["slow"]
    assert (work / "applies.log").read_text().split() == ["start", "start", "done"]
    assert sorted(p.name for p in s.file(TARGET, "").iterdir()) == ["first.conf"]
    inventory = json_files(s.state)["inventory/cell.json"]["entries"]
    assert sorted(inventory) == ["app/first", "app/slow"]

    # the component applied by the killed daemon is pruned when the repository drops it
    mark = new.offset()
    set_components(repo, [component("slow", "service", {"apply": ["scripts/slow.sh"]})],
                   "drop first")
    pruned = new.wait_event("component_pruned", 10, after=mark)
    assert [e["component"] for e in pruned] == ["first"]
    assert not s.file(TARGET, "first.conf").exists()
    new.wait_event("run_finished", 5, after=mark)
    state = json_files(s.state)
    assert sorted(state["inventory/cell.json"]["entries"]) == ["app/slow"]
    assert state["state.json"]["targets"][TARGET]["applied"] == repo.head()
    assert leftover_temp_files(s.state) == []
    assert not new.events_after(mark, "component_applied")
    assert new.stop() == 0


# a health check that reports Progressing (exit 75) for ever
PROGRESSING_SH = """#!/bin/sh
echo "check" >> "$HOME/health.log"
echo "warming up"
exit 75
"""

LONG_SH = """#!/bin/sh
echo $$ > "$HOME/long.pid"
sleep 30
echo "finished" >> "$HOME/long.log"
"""


@pytest.mark.parametrize("case", ["health-wait", "long-script"])
def test_sigterm_during_a_long_step_exits_0_within_seconds(
        tmp_path: Path, daemons: list[Daemon], case: str) -> None:
    if case == "health-wait":
        comp = component("svc", "service", {"apply": ["scripts/apply.sh"],
                                            "health": ["scripts/health.sh"]})
        scripts = {"apply.sh": APPLY_SH, "health.sh": PROGRESSING_SH}
        busy = "health.log"
    else:
        comp = component("svc", "service", {"apply": ["scripts/long.sh"]})
        scripts = {"long.sh": LONG_SH}
        busy = "long.pid"
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "x\n"), comp],
                      scripts)
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, healthTimeout=120)
    d = start_daemon(daemons, s)
    wait_for(lambda: (s.work(TARGET) / busy).exists(), 15, f"{case} to begin")
    time.sleep(0.5)

    asked = time.monotonic()
    assert d.stop(timeout=10) == 0
    took = time.monotonic() - asked
    assert took < 5, f"SIGTERM took {took:.1f}s"
    assert d.events("daemon_stopped")
    state = json_files(s.state)
    entries = state["inventory/cell.json"]["entries"]
    assert "app/conf" in entries
    if case == "health-wait":
        # applied, then the wait was abandoned: the inventory knows it, the status says so
        assert "app/svc" in entries
        assert d.events("run_finished", phases={"Progressing": 1})
        # and the status was still written and pushed on the way out
        assert (status_on_remote(repo) or {}).get("phase") == "Progressing"
    else:
        # cancelled: its whole process group is gone and it never counted as applied
        pid = int((s.work(TARGET) / "long.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert "app/svc" not in entries
        assert not (s.work(TARGET) / "long.log").exists()
    assert leftover_temp_files(s.state) == []
    # the lock was released on the way out
    assert lock_is_free(s)


# ---------------------------------------------------------------- 3. single instance

def test_second_daemon_on_the_same_state_dir_refuses_to_start(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "x\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    first = start_daemon(daemons, s)
    first.wait_runs(1, 15)

    second = reconciler("run", "--config", str(s.config), env=s.env(), timeout=20)
    assert second.returncode not in (0, None), second.describe()
    message = second.stderr
    assert str(s.state) in message and f"pid {first.pid}" in message, second.describe()
    assert "one daemon per state directory" in message
    once = reconciler("sync", "--once", "--config", str(s.config), env=s.env(), timeout=20)
    assert once.returncode == 1 and f"pid {first.pid}" in once.stderr, once.describe()
    # the first daemon is unaffected and still holds the lock
    first.assert_alive()
    assert lock_holder(s) == f"pid {first.pid}"
    assert first.stop() == 0
