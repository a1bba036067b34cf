"""The site daemon as a real process: ``reconciler run --config F``.

Covers what an operator relies on: a pushed commit is applied within an interval or two,
SIGHUP (and ``reconciler sync`` without ``--once``) runs at once, SIGTERM stops cleanly and
releases the state-directory lock, a second daemon on the same state directory refuses to
start, the HTTP endpoints answer, and a daemon watching a local working repository runs on a
new commit at once without ever triggering itself through its own status pushes.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.fleetkit import (
    DEMO_BRANCH,
    DEMO_SITE,
    DaemonProcess,
    FleetRepo,
    Site,
    branch_head,
    make_site,
    reconciler,
    status_of,
    sync,
    wait_for,
)
from tests.integration.test_status_push import free_port

INTERVAL = 2
LAYOUT = "dashboard/layout.json"


def start(daemons: list[DaemonProcess], s: Site, name: str = "daemon") -> DaemonProcess:
    d = DaemonProcess(s, s.config.parent / f"{name}.log").start()
    daemons.append(d)
    return d


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def refresh(s: Site) -> int:
    value: int = json.loads(s.file("demo-hmi", LAYOUT).read_text())["refreshSeconds"]
    return value


def test_daemon_applies_pushed_commits_answers_signals_and_stops_cleanly(
        tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    repo = FleetRepo.from_example(tmp_path / "fleet")
    port = free_port()
    s = make_site(tmp_path, "demo", repo=repo.url, site=DEMO_SITE, interval=INTERVAL,
                  listen={"enabled": True, "address": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    d = start(daemons, s)

    first = d.wait_runs(1, timeout=20)[0]
    assert first["reason"] == "schedule" and first["phases"] == {"Ready": 2}
    assert refresh(s) == 10

    # HTTP: alive, ready after the first run, metrics of that run
    code, body = get(base + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = get(base + "/readyz")
    assert code == 200 and json.loads(body)["ready"] is True
    code, body = get(base + "/metrics")
    assert code == 200
    assert 'reconciler_target_phase{phase="Ready",target="demo-hmi"} 1.0' in body
    assert "reconciler_run_duration_seconds_count" in body

    # one daemon per state directory
    second = reconciler("run", "--config", str(s.config), env=s.env(), timeout=30)
    assert second.returncode == 1, second.describe()
    assert "in use" in second.stderr and f"pid {d.pid}" in second.stderr
    d.assert_alive()

    # a pushed commit is picked up by the schedule within an interval or two
    repo.replace("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 30")
    changed = repo.commit("dashboard: refresh every 30 s")
    pushed_at = time.monotonic()
    wait_for(lambda: refresh(s) == 30, timeout=2 * INTERVAL + 4, what="the new layout")
    assert time.monotonic() - pushed_at <= 2 * INTERVAL + 4
    wait_for(lambda: status_of(repo.remote, DEMO_SITE, "demo-hmi")["observedRevision"]
             == changed, timeout=10, what="the status of the new revision")

    # SIGHUP runs at once; so does `reconciler sync` without --once (it sends SIGHUP)
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.events("run_finished", reason="SIGHUP"), timeout=INTERVAL + 3,
             what="a run triggered by SIGHUP")
    asked = reconciler("sync", "--config", str(s.config), env=s.env())
    assert asked.returncode == 0 and f"asked daemon {d.pid}" in asked.stdout, asked.describe()
    wait_for(lambda: len(d.events("run_finished", reason="SIGHUP")) >= 2,
             timeout=INTERVAL + 3, what="a run asked for by `reconciler sync`")

    # SIGTERM: exit 0, and the lock is free for the next process
    assert d.stop() == 0
    stopped = d.events("daemon_stopped")
    assert len(stopped) == 1 and stopped[0]["runs"] >= 4
    result = sync(s)
    assert "(pushed)" in result.stdout


def test_daemon_watching_a_local_repository_runs_on_commit_but_not_on_its_own_pushes(
        tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    repo = FleetRepo.from_example(tmp_path / "fleet")
    # the working repository itself, not the bare remote; an interval no test waits for
    s = make_site(tmp_path, "demo", repo=str(repo.work), site=DEMO_SITE, interval=3600,
                  watch=True)
    d = start(daemons, s)
    first = d.wait_runs(1, timeout=20)[0]
    assert first["revision"] == repo.head()[:12]
    # the first run pushed its status into the watched repository...
    wait_for(lambda: branch_head(repo.work, DEMO_BRANCH), timeout=5, what="a status branch")
    time.sleep(2)
    assert len(d.runs()) == 1  # ...and did not trigger a second run

    # an edit of the work tree is not a revision: only the commit triggers
    repo.replace("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 45")
    time.sleep(1)
    assert len(d.runs()) == 1
    changed = repo.commit("dashboard: refresh every 45 s")
    triggered = wait_for(lambda: d.events("run_finished", revision=changed[:12]),
                         timeout=8, what="a run of the new commit")
    assert triggered[0]["reason"] == "ref-change"
    assert refresh(s) == 45
    # that run pushed a new status commit; give a self-trigger ample time to show up
    assert status_of(repo.work, DEMO_SITE, "demo-hmi")["observedRevision"] == changed
    time.sleep(2)
    runs = d.runs()
    assert runs[-1]["revision"] == changed[:12]
    assert [r["reason"] for r in runs] == ["schedule", "ref-change"], runs
    assert d.stop() == 0
