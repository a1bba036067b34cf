"""The site heartbeat: a daemon's publisher refreshes ``status/<site>/.heartbeat`` at most once
per period (an idle run in between commits nothing), keeps its time across a restart, never
touches a target's own status file for it; and the fleet view reads it, so a site whose
targets have not changed for days is not Stale while its heartbeat is fresh.

Real git: a bare remote, the engine's StatusPublishing pushing to it over file://, the status
branches read back by the fleet reader. The clock is injected."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

from reconciler.core.model import StatusLayout
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.publishing import StatusPublishing
from reconciler.engine.state_store import StateStore
from reconciler.engine.status import StatusRenderer, TargetStatus, build_status
from reconciler.gitops.fleet_status import read_fleet_status
from reconciler.gitops.fleet_view import join
from tests.integration.test_status_push import files_on, git, make_remote

SITE = "eu/berlin"
BRANCH = "refs/heads/reconciler-status/eu_berlin"
BEAT = f"status/{SITE}/.heartbeat"
PRESS = f"status/{SITE}/press.yaml"
T0 = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
REV = "4f2c0d1e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def publishing(tmp_path: Path, remote: Path, clock: Clock, **kw: Any) -> StatusPublishing:
    settings = EngineSettings(repo_url=f"file://{remote}", site=SITE,
                              state_dir=tmp_path / "state", **kw)
    return StatusPublishing(settings, tmp_path / "state" / "repo.git", stop=threading.Event(),
                            renderer=StatusRenderer(), heartbeat=3600, clock=clock)


def statuses() -> list[TargetStatus]:
    return [build_status(target="press", site=SITE, observed=REV, applied=REV, last_good=REV,
                         result=None)]


def commits(remote: Path) -> int:
    return int(git(remote, "rev-list", "--count", BRANCH))


def test_the_heartbeat_is_refreshed_once_per_period_and_survives_a_restart(
        tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    store = StateStore.load(tmp_path / "state" / "state.json")
    clock = Clock(T0)
    pub = publishing(tmp_path, remote, clock)

    first, pushed = pub.publish(statuses(), store, None, REV, offline=False)
    assert pushed and commits(remote) == 1
    files = files_on(remote, BRANCH)
    assert set(files) == {BEAT, PRESS}
    assert b"heartbeat: '2026-11-30T10:00:00Z'" in files[BEAT]
    press = git(remote, "rev-parse", f"{BRANCH}:{PRESS}")

    clock.now = T0 + dt.timedelta(minutes=59)  # idle: no commit
    assert pub.publish(statuses(), store, None, REV, offline=False) == (first, True)
    assert commits(remote) == 1

    clock.now = T0 + dt.timedelta(minutes=59, seconds=30)  # a restart reads the time back
    restarted = publishing(tmp_path, remote, clock)
    assert restarted.publish(statuses(), store, None, REV, offline=False) == (first, True)
    assert commits(remote) == 1

    clock.now = T0 + dt.timedelta(minutes=61)  # the period is over: one small commit
    second, pushed = restarted.publish(statuses(), store, None, REV, offline=False)
    assert pushed and second != first and commits(remote) == 2
    assert b"heartbeat: '2026-11-30T11:01:00Z'" in files_on(remote, BRANCH)[BEAT]
    assert git(remote, "rev-parse", f"{BRANCH}:{PRESS}") == press  # the target's file as it was
    changed = git(remote, "diff", "--name-only", f"{BRANCH}~1", BRANCH).splitlines()
    assert changed == [BEAT]


def test_a_heartbeat_of_zero_writes_none(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    settings = EngineSettings(repo_url=f"file://{remote}", site=SITE, state_dir=tmp_path / "s")
    pub = StatusPublishing(settings, tmp_path / "s" / "repo.git", stop=threading.Event(),
                           renderer=StatusRenderer(), heartbeat=0, clock=Clock(T0))

    pub.publish(statuses(), StateStore.load(tmp_path / "s" / "state.json"), None, REV,
                offline=False)

    assert set(files_on(remote, BRANCH)) == {PRESS}


def test_a_fresh_heartbeat_keeps_a_quiet_site_from_being_stale(tmp_path: Path) -> None:
    # the shared branch: the time of its last commit says nothing about one site, only the
    # status file's lastChange and the site's heartbeat do
    remote = make_remote(tmp_path / "remote.git")
    store = StateStore.load(tmp_path / "state" / "state.json")
    store.status_seen("press", site=SITE, digest="d", now="2026-11-20T10:00:00+00:00")
    clock = Clock(T0)
    publishing(tmp_path, remote, clock, status_layout=StatusLayout.SHARED).publish(
        statuses(), store, None, REV, offline=False)
    shared = "refs/heads/reconciler-fleet-status"
    assert git(remote, "rev-parse", "--verify", shared)

    status = read_fleet_status(f"file://{remote}")
    (entry,) = status.entries
    assert entry.last_change == dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    assert entry.last_seen == T0  # the heartbeat, ten days newer than the last change

    fresh = join(None, status, now=T0 + dt.timedelta(hours=2), stale_after=3 * 3600)
    late = join(None, status, now=T0 + dt.timedelta(hours=4), stale_after=3 * 3600)
    assert [r.state for r in fresh] == ["Pending"]  # what the file says: no revision yet
    assert [(r.state, r.message.split(" (")[0]) for r in late] == [
        ("Stale", "last report 4h00m ago")]
