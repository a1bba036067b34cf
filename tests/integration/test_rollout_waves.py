"""Progressive rollout across sites, coordinated through Git alone.

Three lines of plant ``fab``, one site daemon each (separate processes), one bare remote
behind a real ``git daemon`` on 127.0.0.1. Instance ``panels`` deploys to one panel per line
in three waves: ``canary`` (line-01), ``second`` (line-02) and the implicit last wave
(line-03). Each daemon decides alone, from the other sites' status branches, whether its
target may move to a new release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fleetkit import (
    CliResult,
    DaemonProcess,
    FleetRepo,
    Site,
    branch_head,
    component,
    file_binding,
    git,
    instance,
    make_site,
    reconciler,
    script_binding,
    settings,
    site,
    solution,
    status_files,
    target,
    wait_for,
)
from tests.integration.signkit import NEEDS_SIGNING_TOOLS, Keys, made_keys
from tests.integration.test_status_push import GitDaemon

pytestmark = pytest.mark.timeout(240)

LINES = ["line-01", "line-02", "line-03"]
ROLLOUT = {"waves": [{"name": "canary", "names": ["panel-line-01"]},
                     {"name": "second", "sites": ["fab/line-02"]}]}
# fails (65: not retried) when its first argument says so
APPLY = "#!/bin/sh\n[ \"$1\" = fail ] && { echo 'cannot start' >&2; exit 65; }\nexit 0\n"


def panel(release: str, *, broken: bool = False) -> dict[str, Any]:
    return solution("panel", [
        component("screen", "config-file", {"path": "screen.txt", "content": f"{release}\n"}),
        component("service", "service", {"apply": ["scripts/apply.sh",
                                                   "fail" if broken else release]},
                  ["screen"])])


def fleet(root: Path, rollout: dict[str, Any],
          config: dict[str, str] | None = None) -> FleetRepo:
    repo = FleetRepo(root)
    for key, value in (config or {}).items():  # e.g. commits signed by a trusted key
        git(repo.work, "config", key, value)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("fab"), *(site(line, "fab") for line in LINES)])
    repo.write("targets.yaml", [
        target(f"panel-{line}", line, bindings=[file_binding(f"panel-{line}"),
                                                script_binding(f"panel-{line}")])
        for line in LINES])
    repo.write("instances.yaml", instance("panels", "panel", selector={"sites": ["fab"]},
                                          rollout=rollout))
    repo.write("solutions/panel.yaml", panel("A"))
    repo.write("solutions/scripts/apply.sh", APPLY, executable=True)
    repo.commit("release A")
    return repo


@pytest.fixture
def served(tmp_path: Path) -> Iterator[GitDaemon]:
    daemon = GitDaemon(tmp_path / "fleet")
    (tmp_path / "fleet").mkdir()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def start(tmp_path: Path, url: str, lines: list[str], daemons: list[DaemonProcess],
          **config: Any) -> dict[str, Site]:
    sites = {}
    for line in lines:
        s = make_site(tmp_path / "sites", line, repo=url, site=f"fab/{line}", interval=2,
                      **config)
        sites[line] = s
        daemons.append(DaemonProcess(s, tmp_path / f"{line}.log").start())
    return sites


def rollout_status(repo: FleetRepo, *args: str) -> CliResult:
    return reconciler("rollout", "status", "panels", "--repo", str(repo.remote),
                      "--cache-dir", str(repo.root / "status-cache"), *args)


def screen(s: Site, line: str) -> str | None:
    path = s.file(f"panel-{line}", "screen.txt")
    return path.read_text().strip() if path.exists() else None


def status(repo: FleetRepo, line: str) -> dict[str, Any] | None:
    branch = f"reconciler-status/fab_{line}"
    if branch_head(repo.remote, branch) is None:
        return None
    files = status_files(repo.remote, branch)
    return files.get(f"status/fab/{line}/panel-{line}.yaml")


def phase(repo: FleetRepo, line: str) -> tuple[str, str]:
    """(phase of panels on the line's panel, its release)."""
    doc = status(repo, line)
    inst = (doc or {}).get("instances", {}).get("panels", {})
    return inst.get("phase", ""), inst.get("release", "")


def all_on(repo: FleetRepo, sites: dict[str, Site], content: str) -> bool:
    return all(screen(sites[line], line) == content and phase(repo, line)[0] == "Ready"
               for line in LINES)


def changed_at(repo: FleetRepo, line: str) -> datetime:
    doc = status(repo, line)
    assert doc is not None
    return datetime.fromisoformat(str(doc["lastChange"]))


def test_a_failed_canary_halts_the_rollout_and_a_fixed_release_reaches_every_wave(
        tmp_path: Path, served: GitDaemon, daemons: list[DaemonProcess]) -> None:
    repo = fleet(tmp_path / "fleet", ROLLOUT)
    sites = start(tmp_path, served.url("remote.git"), LINES, daemons)
    wait_for(lambda: all_on(repo, sites, "A"), 90, "release A on every line")

    # release B breaks: the canary rolls back, the later waves never apply it
    repo.write("solutions/panel.yaml", panel("B", broken=True))
    repo.commit("release B")
    wait_for(lambda: phase(repo, "line-01")[0] == "RolledBack", 60, "the canary to roll back")
    for d in daemons[1:]:  # several runs of the later waves after the halt
        d.wait_runs(len(d.runs()) + 3, 30)
    assert [screen(sites[line], line) for line in LINES] == ["A", "A", "A"]
    for line in LINES[1:]:
        doc = status(repo, line)
        assert doc is not None and doc["phase"] == "Waiting", doc
        assert "halted: panel-line-01 in wave canary" in doc["message"], doc["message"]
    # `rollout status` says the same, fleet-wide
    shown = rollout_status(repo, "--format", "json")
    assert shown.returncode == 2, shown.describe()
    report = json.loads(shown.stdout)
    assert [w["name"] for w in report["waves"]] == ["canary", "second", "rest"]
    assert report["waves"][0]["haltedBy"] == ["panel-line-01"]
    second = report["waves"][1]["targets"][0]
    assert second["target"] == "panel-line-02" and "halted" in second["waitingFor"]
    text = rollout_status(repo).stdout
    assert "HALTED by panel-line-01" in text and "wave second: 0/1 Ready" in text
    # and the fleet report lists the rollout as halted
    page = tmp_path / "fleet.html"
    written = reconciler("report", "--repo", str(repo.remote), "--html", str(page))
    assert written.returncode == 0, written.describe()
    html = page.read_text()
    rollouts = html[html.index('<section id="rollouts">'):html.index('<section id="history">')]
    assert 'data-rollout="panels"' in rollouts and "Halted" in rollouts, rollouts
    assert "halted by panel-line-01 in wave canary" in rollouts

    # release C fixes it: the rollout starts again and reaches every wave, in order
    repo.write("solutions/panel.yaml", panel("C"))
    repo.commit("release C")
    wait_for(lambda: all_on(repo, sites, "C"), 120, "release C on every line")
    times = [changed_at(repo, line) for line in LINES]
    assert times == sorted(times), times
    assert len({phase(repo, line)[1] for line in LINES}) == 1  # one release everywhere
    done = rollout_status(repo, "--format", "json")
    assert done.returncode == 0, done.describe()
    assert json.loads(done.stdout)["complete"]


def test_a_target_that_never_reported_blocks_its_successors(
        tmp_path: Path, served: GitDaemon, daemons: list[DaemonProcess]) -> None:
    repo = fleet(tmp_path / "fleet", ROLLOUT)
    # no daemon for line-01 (the canary): line-02 and line-03 wait for it
    sites = start(tmp_path, served.url("remote.git"), LINES[1:], daemons)
    for d in daemons:
        d.wait_runs(3, 30)
    assert screen(sites["line-02"], "line-02") is None
    doc = status(repo, "line-02")
    assert doc is not None and doc["phase"] == "Waiting", doc
    assert "wave canary: 0/1 targets Ready" in doc["message"], doc["message"]
    assert "waiting for panel-line-01" in doc["message"]

    # the canary's daemon starts: the rollout moves through every wave
    sites |= start(tmp_path, served.url("remote.git"), LINES[:1], daemons)
    wait_for(lambda: all_on(repo, sites, "A"), 90, "release A on every line")


def test_a_site_parameter_change_is_not_gated_by_waves(
        tmp_path: Path, served: GitDaemon, daemons: list[DaemonProcess]) -> None:
    repo = fleet(tmp_path / "fleet", ROLLOUT)
    repo.write("solutions/panel.yaml", solution("panel", [
        component("screen", "config-file", {"path": "screen.txt",
                                            "content": "A ${{ params.greeting }}\n"}),
        component("service", "service", {"apply": ["scripts/apply.sh", "A"]}, ["screen"])],
        parameters={"greeting": {"type": "string", "default": "hello"}}))
    repo.commit("release A, with a greeting")
    sites = start(tmp_path, served.url("remote.git"), LINES, daemons)
    wait_for(lambda: all_on(repo, sites, "A hello"), 90, "release A on every line")
    release = phase(repo, "line-03")[1]

    # the canary's daemon stops: a new release could not pass its wave any more; but
    # line-03's own parameter is no new release, so it goes at once
    daemons[0].stop()
    repo.write("sites.yaml", [site("fab"), site("line-01", "fab"), site("line-02", "fab"),
                              site("line-03", "fab", params={"greeting": "hi"})])
    repo.commit("line-03 says hi")
    wait_for(lambda: screen(sites["line-03"], "line-03") == "A hi", 30, "line-03's greeting")
    assert phase(repo, "line-03") == ("Ready", release)


def test_a_hold_on_a_wave_holds_the_waves_after_it(
        tmp_path: Path, served: GitDaemon, daemons: list[DaemonProcess]) -> None:
    repo = fleet(tmp_path / "fleet", ROLLOUT)
    sites = start(tmp_path, served.url("remote.git"), LINES, daemons)
    wait_for(lambda: all_on(repo, sites, "A"), 90, "release A on every line")
    held = reconciler("hold", "--for", "2h", "--reason", "changeover",
                      "--config", str(sites["line-02"].config), env={"SUDO_USER": "ann"})
    assert held.returncode == 0, held.describe()

    repo.write("solutions/panel.yaml", panel("B"))
    repo.commit("release B")
    wait_for(lambda: screen(sites["line-01"], "line-01") == "B", 60, "the canary to take B")
    for d in daemons[1:]:
        d.wait_runs(len(d.runs()) + 3, 30)
    assert [screen(sites[line], line) for line in LINES] == ["B", "A", "A"]
    second = status(repo, "line-02")
    assert second is not None and "held by ann" in second["message"], second
    third = status(repo, "line-03")
    assert third is not None and "wave second: 0/1 targets Ready" in third["message"], third
    report = json.loads(rollout_status(repo, "--format", "json").stdout)
    assert "held by ann" in report["waves"][1]["targets"][0]["waitingFor"]

    done = reconciler("unhold", "--config", str(sites["line-02"].config))
    assert done.returncode == 0, done.describe()
    wait_for(lambda: all_on(repo, sites, "B"), 60, "release B on every line")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with made_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


@NEEDS_SIGNING_TOOLS
def test_an_approval_gate_opens_only_for_a_signed_approval_by_an_approver(
        tmp_path: Path, served: GitDaemon, daemons: list[DaemonProcess], keys: Keys) -> None:
    gated = {"approvers": ["alice@example.org"],
             "waves": [{"name": "canary", "names": ["panel-line-01"]},
                       {"name": "second", "sites": ["fab/line-02"], "approval": True}]}
    repo = fleet(tmp_path / "fleet", gated, {**keys.config("alice"), "commit.gpgsign": "true"})
    sites = start(tmp_path, served.url("remote.git"), LINES, daemons,
                  verify={"mode": "commit", "allowedSigners": str(keys.allowed_signers)})
    wait_for(lambda: phase(repo, "line-01")[0] == "Ready", 60, "the canary")
    release = phase(repo, "line-01")[1]
    for d in daemons[1:]:
        d.wait_runs(len(d.runs()) + 2, 30)
    assert screen(sites["line-02"], "line-02") is None
    doc = status(repo, "line-02")
    assert doc is not None and "wave second waits for approval" in doc["message"], doc

    def approve(who: str) -> None:
        for key, value in keys.config(who).items():
            git(repo.work, "config", key, value)
        email = f"{who}@example.org"
        done = reconciler("approve", "panels", "--wave", "second", "--release", release,
                          "--repo", str(repo.work), "--push", str(repo.remote),
                          env={"GIT_COMMITTER_EMAIL": email, "GIT_AUTHOR_EMAIL": email})
        assert done.returncode == 0, done.describe()

    # mallory's key is trusted by the sites, but mallory is no approver of panels
    approve("mallory")
    for d in daemons[1:2]:
        d.wait_runs(len(d.runs()) + 3, 30)
    assert screen(sites["line-02"], "line-02") is None
    doc = status(repo, "line-02")
    assert doc is not None and "mallory" in doc["message"], doc["message"]
    assert "not an approver" in doc["message"] or "approver" in doc["message"]

    approve("alice")
    wait_for(lambda: all_on(repo, sites, "A"), 60, "the approved waves")
