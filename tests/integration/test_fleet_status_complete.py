"""``reconciler status`` shows the whole fleet: every target of the model at the tracked ref,
joined with the status branches, through the installed command.

A fleet of one plant and four lines: two lines reconciled by real ``sync --once`` daemons
(one target Ready on each, one Failed by a failing script), a third whose branch was last
pushed two days ago (Stale), a fourth that never reported (Unknown), and a branch left by a
line the model no longer has (Orphaned). Checked: the table and its roll-ups, the JSON
document of docs/status.md, the filters and their exit codes, ``--wide``, colour only on a
terminal, one fetch per call, and a repeated call that reuses its cache.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    CliResult,
    FleetRepo,
    clean_env,
    component,
    file_binding,
    file_component,
    git,
    instance,
    make_site,
    reconciler,
    reconciler_args,
    script_binding,
    settings,
    site,
    solution,
    sync,
    target,
)
from tests.integration.test_status_push import GitDaemon

LINES = ["line-01", "line-02", "line-03", "line-04"]
FAIL_SH = "#!/bin/sh\necho 'pump offline: the coolant pressure sensor on the second " \
          "circuit reads zero' >&2\nexit 1\n"
TWO_DAYS_AGO = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)


@dataclass(frozen=True)
class Fleet:
    repo: FleetRepo
    head: str
    cache: Path  # a cache directory of its own per test (see status())


def status_file(site_path: str, name: str, phase: str, revision: str, when: dt.datetime,
                message: str) -> bytes:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"apiVersion: reconciler/v1\nkind: TargetStatus\nmetadata:\n  name: {name}\n"
            f"site: {site_path}\ntarget: {name}\nphase: {phase}\nmessage: {json.dumps(message)}\n"
            f"observedRevision: {revision}\nappliedRevision: {revision}\n"
            f"lastGoodRevision: {revision}\nlastChange: '{stamp}'\ninstances:\n"
            f"  panels:\n    solution: panel\n    phase: {phase}\n").encode()


def push_branch(remote: Path, site_path: str, files: dict[str, bytes],
                when: dt.datetime) -> None:
    """A status branch as a daemon long gone would have left it: committed at ``when``."""
    stamp = f"{int(when.timestamp())} +0000"
    env = clean_env({"GIT_DIR": str(remote), "GIT_COMMITTER_DATE": stamp,
                     "GIT_AUTHOR_DATE": stamp})
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")

        def run(*args: str, data: bytes = b"") -> str:
            return subprocess.run(["git", *args], env=env, input=data, capture_output=True,
                                  check=True, timeout=30).stdout.decode().strip()

        for name, content in files.items():
            blob = run("hash-object", "-w", "--stdin", data=content)
            run("update-index", "--add", "--cacheinfo", f"100644,{blob},status/{site_path}/"
                f"{name}")
        commit = run("commit-tree", run("write-tree"), data=b"status")
        run("update-ref", f"refs/heads/reconciler-status/{site_path.replace('/', '_')}", commit)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetRepo, str]:
    root = tmp_path_factory.mktemp("fleet")
    repo = FleetRepo.from_docs(root / "fleet", {
        "reconciler.yaml": settings(("plant", "line")),
        "sites.yaml": [site("fab"), *(site(line, "fab") for line in LINES)],
        "targets.yaml": [
            *(target(f"panel-{line}", line, labels={"role": "panel"}) for line in LINES),
            target("robot-line-02", "line-02", labels={"role": "robot"},
                   bindings=[file_binding("robot-line-02"), script_binding("robot-line-02")])],
        "solutions/panel.yaml": solution("panel", [
            file_component("screen", "screen.txt", "${{ site.name }}\n")]),
        "solutions/robot.yaml": solution("robot", [
            file_component("conf", "robot.conf", "arm\n"),
            component("probe", "service", {"apply": ["fail.sh"]}, ["conf"])]),
        "solutions/fail.sh": FAIL_SH,
        "instances.yaml": [instance("panels", "panel", selector={"matchLabels": {"role": "panel"}},
                                    onFailure="stay"),
                           instance("robots", "robot", names=["robot-line-02"],
                                    onFailure="stay")],
    })
    repo.write("solutions/fail.sh", FAIL_SH, executable=True)
    head = repo.commit("the failing script is executable")
    sites = root / "sites"
    sync(make_site(sites, "line-01", repo=repo.url, site="fab/line-01"))
    sync(make_site(sites, "line-02", repo=repo.url, site="fab/line-02"), expect=1)
    push_branch(repo.remote, "fab/line-03", {"panel-line-03.yaml": status_file(
        "fab/line-03", "panel-line-03", "Ready", head, TWO_DAYS_AGO, "1 component ready")},
        TWO_DAYS_AGO)
    push_branch(repo.remote, "fab/line-99", {"ghost.yaml": status_file(
        "fab/line-99", "ghost", "Ready", head, TWO_DAYS_AGO, "1 component ready")},
        dt.datetime.now(dt.UTC))
    return repo, head


@pytest.fixture
def fleet(built: tuple[FleetRepo, str], tmp_path: Path) -> Iterator[Fleet]:
    repo, head = built
    yield Fleet(repo, head, tmp_path / "cache")


def status(fleet: Fleet, *args: str, env: dict[str, str] | None = None) -> CliResult:
    return reconciler("status", "--repo", fleet.repo.url, "--cache-dir", str(fleet.cache),
                      *args, env=env)


def table(result: CliResult) -> dict[tuple[str, str], list[str]]:
    """(site, target) -> the other cells of the fleet table (the message cut to words)."""
    lines = result.stdout.split("\n\n")[0].splitlines()
    assert lines[0].split() == ["SITE", "TARGET", "PHASE", "REVISION", "SEEN", "LAST",
                                "CHANGE", "MESSAGE"], result.describe()
    return {(cells[0], cells[1]): cells[2:] for cells in (ln.split() for ln in lines[1:])}


def test_every_target_of_the_model_appears_with_its_state(fleet: Fleet) -> None:
    result = status(fleet)

    assert result.returncode == 2, result.describe()
    rows = table(result)
    assert {key: cells[0] for key, cells in rows.items()} == {
        ("fab/line-01", "panel-line-01"): "Ready",
        ("fab/line-02", "panel-line-02"): "Ready",
        ("fab/line-02", "robot-line-02"): "Failed",
        ("fab/line-03", "panel-line-03"): "Stale",
        ("fab/line-04", "panel-line-04"): "Unknown",
        ("fab/line-99", "ghost"): "Orphaned",
    }
    assert rows[("fab/line-01", "panel-line-01")][1] == fleet.head[:8]  # the applied revision
    stale = rows[("fab/line-03", "panel-line-03")]
    assert stale[2].startswith("2d") and "last report 2d" in " ".join(stale)
    assert rows[("fab/line-04", "panel-line-04")][1:] == ["-", "-", "-", "never", "reported"]
    text = result.stdout
    assert f"panels    panel     2/4 Ready on {fleet.head[:8]}, 1 Stale, 1 Unknown" in text
    assert f"robots    robot     0/1 Ready on {fleet.head[:8]}, 1 Failed" in text
    assert "fab          plant  2/6 Ready, 1 Failed, 1 Stale, 1 Unknown, 1 Orphaned" in text
    assert "fab/line-04  line   0/1 Ready, 1 Unknown" in text
    assert f"6 targets at {fleet.head[:12]} (main): 2 Ready" in text
    assert "\x1b[" not in text  # no colour into a pipe


def test_json_is_the_documented_document(fleet: Fleet) -> None:
    result = status(fleet, "--format", "json")

    assert result.returncode == 2, result.describe()
    data = json.loads(result.stdout)
    assert data["schemaVersion"] == 1 and data["revision"] == fleet.head
    assert data["ref"] == "main" and data["staleAfter"] == 3 * 3600 and not data["ready"]
    rows = {(t["site"], t["target"]): t for t in data["targets"]}
    assert len(rows) == 6
    failed = rows[("fab/line-02", "robot-line-02")]
    assert failed["state"] == failed["phase"] == "Failed"
    # it observed the tracked revision but never applied it cleanly: it runs nothing yet
    assert failed["observedRevision"] == fleet.head
    assert failed["appliedRevision"] is None and not failed["current"]
    assert rows[("fab/line-01", "panel-line-01")]["current"]
    assert failed["status"]["kind"] == "TargetStatus"
    # an instance that pins no version runs a release named by a digest (docs/rollouts.md)
    release = failed["instances"][0].pop("release")
    assert re.fullmatch(r"r-[0-9a-f]{12}", release), release
    assert failed["instances"] == [{"name": "robots", "solution": "robot", "version": None,
                                    "state": "Failed"}]
    stale = rows[("fab/line-03", "panel-line-03")]
    assert stale["state"] == "Stale" and stale["phase"] == "Ready"
    assert 2 * 86400 - 600 < stale["ageSeconds"] < 2 * 86400 + 600
    unknown = rows[("fab/line-04", "panel-line-04")]
    assert unknown["state"] == "Unknown" and unknown["status"] is None
    assert unknown["phase"] is None and unknown["inFleet"]
    assert not rows[("fab/line-99", "ghost")]["inFleet"]
    assert data["counts"] == {"Ready": 2, "Failed": 1, "Stale": 1, "Unknown": 1, "Orphaned": 1}
    sites = {s["path"]: s for s in data["sites"]}
    assert sites["fab"]["health"] == "failed" and sites["fab/line-01"]["health"] == "ready"
    assert sites["fab/line-03"]["health"] == "stale" and sites["fab"]["targets"] == 6
    instances = {i["name"]: i for i in data["instances"]}
    assert instances["panels"]["readyOnVersion"] == 2 and instances["panels"]["targets"] == 4


@pytest.mark.parametrize(("args", "code", "targets"), [
    (["--phase", "Ready"], 0, {"panel-line-01", "panel-line-02"}),
    (["--phase", "failed", "--phase", "STALE"], 2, {"robot-line-02", "panel-line-03"}),
    (["--site", "fab/line-02"], 2, {"panel-line-02", "robot-line-02"}),
    (["--site", "line-01"], 0, {"panel-line-01"}),  # a site's name
    (["--instance", "robots"], 2, {"robot-line-02"}),
    (["--instance", "panels", "--site", "line-02"], 0, {"panel-line-02"}),
    (["--stale-after", "3d", "--site", "line-03"], 0, {"panel-line-03"}),
    (["--stale-after", "1d"], 2, {"panel-line-01", "panel-line-02", "robot-line-02",
                                  "panel-line-03", "panel-line-04", "ghost"}),
])
def test_filters_and_their_exit_codes(fleet: Fleet, args: list[str], code: int,
                                      targets: set[str]) -> None:
    result = status(fleet, *args)

    assert result.returncode == code, result.describe()
    assert {target for _, target in table(result)} == targets


@pytest.mark.parametrize(("args", "says"), [
    (["--site", "fab/line-7"], "no site 'fab/line-7'"),
    (["--instance", "pannels"], "no instance 'pannels'"),
    (["--phase", "Broken"], "'Broken' is not one of"),
    (["--stale-after", "soon"], "not a duration"),
])
def test_mistakes_exit_1(fleet: Fleet, args: list[str], says: str) -> None:
    result = status(fleet, *args)

    assert result.returncode == 1, result.describe()
    assert says in result.stderr, result.describe()


def test_wide_shows_whole_messages_and_the_observed_revision(fleet: Fleet) -> None:
    narrow = status(fleet, "--site", "line-02", "--phase", "Failed")
    wide = status(fleet, "--site", "line-02", "--phase", "Failed", "--wide")

    assert "second circuit reads zero" not in narrow.stdout and "..." in narrow.stdout
    assert "second circuit reads zero" in wide.stdout, wide.describe()
    header = wide.stdout.splitlines()[0].split()
    assert header[:6] == ["SITE", "TARGET", "PHASE", "REVISION", "OBSERVED", "SEEN"]


def test_colour_on_a_terminal_only(fleet: Fleet) -> None:
    def on_terminal(env: dict[str, str]) -> str:
        leader, follower = pty.openpty()
        args = reconciler_args("status", "--repo", fleet.repo.url, "--cache-dir",
                               str(fleet.cache), log_level="error")
        proc = subprocess.Popen(args, stdout=follower, stderr=subprocess.DEVNULL,
                                env=clean_env(env))
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        assert proc.wait(timeout=60) == 2
        return out.decode()

    coloured = on_terminal({"TERM": "xterm"})
    assert "\x1b[" in coloured and "Failed" in coloured
    assert "\x1b[" not in on_terminal({"TERM": "xterm", "NO_COLOR": "1"})


def test_one_fetch_and_a_repeated_call_reuses_what_it_read(fleet: Fleet, tmp_path: Path) -> None:
    daemon = GitDaemon(fleet.repo.root)
    daemon.start()
    try:
        url = daemon.url("remote.git")
        first = reconciler("status", "--repo", url, "--cache-dir", str(fleet.cache))
        assert daemon.requests("upload-pack") == 1
        again = reconciler("status", "--repo", url, "--cache-dir", str(fleet.cache))
        assert daemon.requests("upload-pack") == 2
    finally:
        daemon.stop()

    assert first.returncode == again.returncode == 2, first.describe()
    assert first.events("fleet_model_indexing")  # validated once, in a child process
    (cached,) = first.events("fleet_status_cached")
    # 4 branches: 5 status files, and the heartbeats of the two sites that ran a daemon
    assert (cached["moved"], cached["parsed"]) == (4, 7)
    assert not again.events("fleet_model_indexing") and not again.events("fleet_status_cached")
    assert {k: c[0] for k, c in table(again).items()} == {
        k: c[0] for k, c in table(first).items()}

    push_branch(fleet.repo.remote, "fab/line-04", {"panel-line-04.yaml": status_file(
        "fab/line-04", "panel-line-04", "Ready", fleet.head, dt.datetime.now(dt.UTC),
        "1 component ready")}, dt.datetime.now(dt.UTC))
    try:
        third = status(fleet)
    finally:
        git(fleet.repo.remote, "update-ref", "-d", "refs/heads/reconciler-status/fab_line-04")
    (cached,) = third.events("fleet_status_cached")
    assert (cached["moved"], cached["parsed"]) == (1, 1)  # only the branch that moved
    assert table(third)[("fab/line-04", "panel-line-04")][0] == "Ready"


def test_without_a_fleet_at_the_ref_the_reported_targets_are_shown(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--bare", "--quiet", str(remote)], check=True)
    push_branch(remote, "eu/berlin", {"press.yaml": status_file(
        "eu/berlin", "press", "Ready", "a" * 40, dt.datetime.now(dt.UTC), "ok")},
        dt.datetime.now(dt.UTC))
    readme = subprocess.run(["git", "--git-dir", str(remote), "hash-object", "-w", "--stdin"],
                            input=b"a fleet, one day\n", capture_output=True, check=True)
    tree = subprocess.run(["git", "--git-dir", str(remote), "mktree"], capture_output=True,
                          check=True, input=f"100644 blob {readme.stdout.decode().strip()}\t"
                          "README.md\n".encode()).stdout.decode().strip()
    git(remote, "update-ref", "refs/heads/main",
        git(remote, "commit-tree", tree, "-m", "not a fleet yet"))

    result = reconciler("status", "--repo", str(remote), "--cache-dir", str(tmp_path / "c"))
    missing = reconciler("status", "--repo", str(remote), "--ref", "production",
                         "--cache-dir", str(tmp_path / "c"))

    assert result.returncode == 0, result.describe()  # all that is shown is Ready
    assert "warning: no fleet at" in result.stderr and "Settings" in result.stderr
    assert table(result) == {("eu/berlin", "press"): table(result)[("eu/berlin", "press")]}
    assert "(no fleet model)" in result.stdout
    assert missing.returncode == 0 and "production" in missing.stderr, missing.describe()


def test_a_reader_that_stops_early_gets_no_traceback(fleet: Fleet) -> None:
    args = " ".join(reconciler_args("status", "--repo", str(fleet.repo.url), "--cache-dir",
                                    str(fleet.cache), log_level="error"))
    # `true` has long exited when the command writes: every write meets a closed pipe
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {args} | true"],
                          env=clean_env(), capture_output=True, text=True, timeout=120)

    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    # the answer stands (not every target is Ready), not click's 1 for a closed pipe
    assert done.returncode == 2
