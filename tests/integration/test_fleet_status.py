"""read_fleet_status and the fleet table against real git repositories: status branches
written by real StatusPublishers, read over file://, a local path and a real git daemon."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from reconciler.cli.status_output import write_json, write_text
from reconciler.core.errors import SourceError
from reconciler.gitops.fleet_status import (
    FleetStatus,
    InstanceStatus,
    StatusReader,
    read_fleet_status,
)
from reconciler.gitops.fleet_view import join
from reconciler.gitops.status_push import Layout, StatusPublisher, site_id_for
from tests.integration.test_status_push import (
    GitDaemon,
    daemon,  # noqa: F401 - fixture
    free_port,
    git,
    make_remote,
)

# an hour after the status files below were written: nothing is stale yet
NOW = dt.datetime(2026, 11, 23, 5, 10, tzinfo=dt.UTC)
REV_A = "4f2c0d1e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
REV_B = "9e8f7a6b5c4d4f2c0d1e9a8b7c6d5e4f3a2b1c0d"


def status_yaml(site: str, target: str, *, phase: str = "Ready", rev: str = REV_A,
                when: str = "2026-11-23T04:10:00Z", message: str = "3 components in sync",
                ) -> bytes:
    return f"""apiVersion: reconciler/v1
kind: TargetStatus
metadata: {{name: {target}}}
site: {site}
target: {target}
phase: {phase}
message: "{message}"
observedRevision: {rev}
lastGoodRevision: {rev}
lastChange: "{when}"
instances: {{line-app: {{phase: {phase}}}}}
errors: []
""".encode()


def format_table(status: FleetStatus) -> str:
    """The table ``reconciler status`` prints for these status files (no fleet model)."""
    out = io.StringIO()
    write_text(join(None, status, now=NOW, stale_after=3 * 3600), out, source=status.source,
               ref="main", wide=False, colour=False)
    return out.getvalue()


def publish(remote: Path, tmp_path: Path, site: str, files: dict[str, bytes],
            layout: Layout = Layout.PER_SITE) -> None:
    name = f"{layout.value}-{site_id_for(site)}.git"
    pub = StatusPublisher(tmp_path / "state" / name, f"file://{remote}",
                          site_id=site_id_for(site), site_path=site, layout=layout)
    pub.publish({f"status/{site}/{t}.yaml": c for t, c in files.items()}, f"status: {site}")


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A remote with three per-site branches (including a/b and a/b/c) and a shared branch."""
    remote = make_remote(tmp_path / "remote.git")
    publish(remote, tmp_path, "eu/berlin/line-1", {
        "press-01": status_yaml("eu/berlin/line-1", "press-01"),
        "press-02": status_yaml("eu/berlin/line-1", "press-02", phase="Failed", rev=REV_B,
                                message="apply failed: timeout"),
    })
    publish(remote, tmp_path, "eu/berlin", {"gateway": status_yaml("eu/berlin", "gateway")})
    publish(remote, tmp_path, "eu/berlin-2", {"gateway": status_yaml("eu/berlin-2", "gateway")})
    publish(remote, tmp_path, "us/austin", {
        "oven": status_yaml("us/austin", "oven", phase="Progressing")})
    publish(remote, tmp_path, "asia/osaka", {
        "robot": status_yaml("asia/osaka", "robot", phase="Pending", rev="")},
        layout=Layout.SHARED)
    return remote


def test_reads_both_layouts_with_one_fetch(tmp_path: Path, fleet: Path,
                                           daemon: GitDaemon) -> None:  # noqa: F811
    before = daemon.requests("upload-pack")

    status = read_fleet_status(daemon.url("remote.git"))

    assert daemon.requests("upload-pack") - before == 1
    assert [e.key for e in status] == [
        ("asia/osaka", "robot"), ("eu/berlin", "gateway"), ("eu/berlin/line-1", "press-01"),
        ("eu/berlin/line-1", "press-02"), ("eu/berlin-2", "gateway"), ("us/austin", "oven")]
    assert set(status.branches) == {
        "reconciler-fleet-status", "reconciler-status/eu_berlin", "reconciler-status/eu_berlin-2",
        "reconciler-status/eu_berlin_line-1", "reconciler-status/us_austin"}
    press = status.get("eu/berlin/line-1", "press-02")
    assert press is not None and press.error is None
    assert press.phase == "Failed" and press.observed_revision == REV_B
    assert press.branch == "reconciler-status/eu_berlin_line-1"
    assert press.last_change is not None and press.last_change.isoformat() == (
        "2026-11-23T04:10:00+00:00")
    assert press.instances == (InstanceStatus("line-app", phase="Failed"),)
    robot = status.get("asia/osaka", "robot")
    assert robot is not None and robot.branch == "reconciler-fleet-status"


def test_newest_entry_wins_when_a_target_is_on_several_branches(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    site = "eu/berlin"
    publish(remote, tmp_path, site, {
        "older-on-shared": status_yaml(site, "older-on-shared", when="2026-01-01T00:00:00Z"),
        "newer-on-shared": status_yaml(site, "newer-on-shared", phase="Failed",
                                       when="2026-03-01T00:00:00+00:00"),
        "same-time": status_yaml(site, "same-time", phase="Failed")},
        layout=Layout.SHARED)
    publish(remote, tmp_path, site, {
        "older-on-shared": status_yaml(site, "older-on-shared", phase="Failed",
                                       when="2026-02-01T00:00:00Z"),
        "newer-on-shared": status_yaml(site, "newer-on-shared", when="2026-02-01T01:00:00Z"),
        "same-time": status_yaml(site, "same-time")})

    status = read_fleet_status(str(remote))  # a plain path works as well as a URL

    phases = {e.target: (e.phase, e.branch) for e in status}
    assert phases == {
        "older-on-shared": ("Failed", "reconciler-status/eu_berlin"),
        "newer-on-shared": ("Failed", "reconciler-fleet-status"),
        "same-time": ("Ready", "reconciler-status/eu_berlin"),  # a tie goes to the site's own
    }


def test_malformed_files_become_entries_with_errors(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    site = "eu/berlin"
    publish(remote, tmp_path, site, {
        "good": status_yaml(site, "good"),
        "broken": b"phase: [Ready\n",
        "scalar": b"just words\n",
        "binary": b"\xff\xfe\x00",
        "bad-time": status_yaml(site, "bad-time", when="yesterday"),
        "moved": status_yaml("us/austin", "moved"),
    })

    status = read_fleet_status(f"file://{remote}")

    by_target = {e.target: e for e in status}
    assert by_target["good"].error is None
    for name in ("broken", "scalar", "binary", "bad-time", "moved"):
        assert by_target[name].error, name
        assert by_target[name].path == f"status/{site}/{name}.yaml"
    assert by_target["broken"].error.startswith("invalid YAML at line 2")  # type: ignore[union-attr]
    assert "not UTF-8" in str(by_target["binary"].error)
    assert "not a mapping" in str(by_target["scalar"].error)
    assert "lastChange" in str(by_target["bad-time"].error)
    assert "site is 'us/austin'" in str(by_target["moved"].error)
    table = format_table(status)
    assert "broken" in table and "error: invalid YAML at line 2" in table


def test_cache_dir_is_reused_and_deleted_branches_disappear(tmp_path: Path,
                                                            fleet: Path) -> None:
    cache = tmp_path / "cache.git"
    first = read_fleet_status(f"file://{fleet}", work_dir=cache)
    assert first.get("us/austin", "oven") is not None
    git(fleet, "update-ref", "-d", "refs/heads/reconciler-status/us_austin")

    second = read_fleet_status(f"file://{fleet}", work_dir=cache)

    assert second.get("us/austin", "oven") is None
    assert "reconciler-status/us_austin" not in second.branches
    assert len(second) == len(first) - 1


def test_only_the_exact_shared_branch_is_read(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    publish(remote, tmp_path, "x", {"t": status_yaml("x", "t")}, layout=Layout.SHARED)
    old = git(remote, "rev-parse", "refs/heads/reconciler-fleet-status")
    git(remote, "update-ref", "refs/heads/reconciler-fleet-status-archive", old)
    git(remote, "update-ref", "-d", "refs/heads/reconciler-fleet-status")

    assert len(read_fleet_status(f"file://{remote}")) == 0
    assert len(read_fleet_status(f"file://{remote}",
                                 shared_branch="reconciler-fleet-status-archive")) == 1


def test_table_is_sorted_and_shortens_revisions(fleet: Path) -> None:
    table = format_table(read_fleet_status(f"file://{fleet}"))

    lines = table.split("\n\n")[0].splitlines()  # the roll-ups follow the table
    assert lines[0].split() == ["SITE", "TARGET", "PHASE", "REVISION", "SEEN", "LAST",
                                "CHANGE", "MESSAGE"]
    assert [ln.split()[:3] for ln in lines[1:]] == [
        ["asia/osaka", "robot", "Pending"],
        ["eu/berlin", "gateway", "Ready"],
        ["eu/berlin/line-1", "press-01", "Ready"],
        ["eu/berlin/line-1", "press-02", "Failed"],
        ["eu/berlin-2", "gateway", "Ready"],
        ["us/austin", "oven", "Progressing"],
    ]
    press = lines[4]
    assert REV_B[:8] in press and REV_B[:9] not in press
    assert "2026-11-23T04:10:00Z" in press and press.endswith("apply failed: timeout")
    assert lines[1].split()[3] == "-"  # no revision observed yet
    # columns line up: every row's TARGET column starts at the same offset
    assert len({ln.index(ln.split()[1], len(ln.split()[0])) for ln in lines[1:]}) == 1


def test_json_dump_of_the_data(fleet: Path) -> None:
    out = io.StringIO()
    with StatusReader(f"file://{fleet}") as reader:
        status = reader.read()
        write_json(join(None, status, now=NOW, stale_after=3600), reader, out,
                   source=status.source, ref="main", branches=status.branches,
                   model_error=None)
    data = json.loads(out.getvalue())

    assert len(data["targets"]) == 6
    first = data["targets"][0]
    assert first["site"] == "asia/osaka" and first["lastChange"] == "2026-11-23T04:10:00Z"
    assert first["status"]["kind"] == "TargetStatus"


def test_an_empty_repository_has_no_status(tmp_path: Path) -> None:
    status = read_fleet_status(f"file://{make_remote(tmp_path / 'remote.git')}")

    assert len(status) == 0 and dict(status.branches) == {}
    assert "no status files found" in format_table(status)


def test_unreachable_repository_is_a_source_error_without_credentials() -> None:
    url = f"http://ops:hunter2@127.0.0.1:{free_port()}/fleet.git"

    with pytest.raises(SourceError) as caught:
        read_fleet_status(url)

    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)
