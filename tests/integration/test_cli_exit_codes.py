"""Exit codes a script can rely on (the table in docs/cli.md), and ``validate`` of a directory
that holds no fleet.

``plan`` exits 0 when nothing would change, 2 when something would, 1 on any error (usage and
config errors included, so a CI gate never reads a typo as "changes"), in both modes: live
(``--config``, asking the site's providers) and offline (``--repo --base --head``).
``status`` exits 0 when every shown target is Ready, 2 when some are not, 1 when the fleet
cannot be read. ``history --target`` of an unknown target says so and exits 1.

Everything runs the installed ``reconciler`` command against real git repositories.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    CliResult,
    FleetRepo,
    Site,
    component,
    file_component,
    make_site,
    reconciler,
    solution,
    sync,
)
from tests.integration.test_faults import LINE, TARGET, cell_fleet

FAIL_SH = "#!/bin/sh\necho 'pump offline' >&2\nexit 1\n"


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[FleetRepo, Site]:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "release A\n")],
                      {"fail.sh": FAIL_SH})
    return repo, make_site(tmp_path, "site", repo=repo.url, site=LINE)


def release(repo: FleetRepo, content: str) -> str:
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", content)]))
    return repo.commit(f"release {content.strip()}")


def expect(result: CliResult, code: int, *texts: str) -> None:
    assert result.returncode == code, result.describe()
    for text in texts:
        assert text in result.stdout + result.stderr, (text, result.describe())


# ---------------------------------------------------------------- plan, live

def test_live_plan_exits_0_without_changes_and_2_with_changes(
        fleet: tuple[FleetRepo, Site]) -> None:
    repo, s = fleet
    sync(s)
    expect(reconciler("plan", "--config", str(s.config), env=s.env()), 0, "no changes")
    release(repo, "release B\n")
    for fmt in ("text", "json", "markdown"):
        expect(reconciler("plan", "--config", str(s.config), "--format", fmt, env=s.env()), 2)


def test_live_plan_exits_1_on_usage_and_config_errors(fleet: tuple[FleetRepo, Site],
                                                      tmp_path: Path) -> None:
    _, s = fleet
    expect(reconciler("plan", "--config", str(tmp_path / "missing.yaml")), 1, "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("repo: {url: /nowhere}\nintervall: 5\n")
    expect(reconciler("plan", "--config", str(bad)), 1, "intervall")
    expect(reconciler("plan", "--config", str(s.config), "--bogus", env=s.env()), 1,
           "--bogus")
    expect(reconciler("plan", "--config", str(s.config), "--format", "yaml", env=s.env()), 1)


def test_a_mistyped_command_name_is_not_read_as_changes() -> None:
    expect(reconciler("plna", "--repo", ".", "--base", "HEAD"), 1, "plna")


# ---------------------------------------------------------------- plan, offline

def test_offline_plan_exits_0_2_or_1(fleet: tuple[FleetRepo, Site]) -> None:
    repo, _ = fleet
    base = repo.head()
    work = str(repo.work)
    expect(reconciler("plan", "--repo", work, "--base", base), 0, "no target changes")
    release(repo, "release B\n")
    for fmt in ("text", "json", "markdown"):
        expect(reconciler("plan", "--repo", work, "--base", base, "--format", fmt), 2)
    repo.write("solutions/app.yaml", solution("app", [
        component("conf", "config-file", {"path": "app.conf", "contents": "typo\n"})]))
    repo.commit("a field that does not exist")
    expect(reconciler("plan", "--repo", work, "--base", base), 1, "new error")


def test_offline_plan_exits_1_on_usage_errors(fleet: tuple[FleetRepo, Site],
                                              tmp_path: Path) -> None:
    repo, _ = fleet
    work = str(repo.work)
    expect(reconciler("plan", "--repo", work), 1, "--base")
    expect(reconciler("plan", "--repo", work, "--base", "no-such-rev"), 1, "no-such-rev")
    plain = tmp_path / "plain"
    plain.mkdir()
    expect(reconciler("plan", "--repo", str(plain), "--base", "HEAD"), 1,
           "not a git repository")
    expect(reconciler("plan", "--repo", str(tmp_path / "nowhere"), "--base", "HEAD"), 1)


# ---------------------------------------------------------------- status

def test_status_exits_0_when_all_ready_2_when_not_1_when_unreadable(
        fleet: tuple[FleetRepo, Site], tmp_path: Path) -> None:
    repo, s = fleet
    sync(s)
    expect(reconciler("status", "--repo", repo.url), 0, "Ready")
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", "release B\n"),
        component("probe", "service", {"apply": ["scripts/fail.sh"]}, ["conf"])]))
    repo.commit("a service that fails")
    sync(s, expect=1)
    expect(reconciler("status", "--repo", repo.url), 2, "Failed")
    expect(reconciler("status", "--repo", repo.url, "--format", "json"), 2)
    expect(reconciler("status", "--repo", str(tmp_path / "nowhere")), 1)
    expect(reconciler("status", "--repo", repo.url, "--bogus"), 1, "--bogus")


def test_status_of_a_repository_without_status_is_not_all_ready(
        fleet: tuple[FleetRepo, Site]) -> None:
    repo, _ = fleet
    expect(reconciler("status", "--repo", repo.url), 2, "no status files")


# ---------------------------------------------------------------- history

def test_history_of_an_unknown_target_says_so_and_exits_1(
        fleet: tuple[FleetRepo, Site]) -> None:
    repo, s = fleet
    sync(s)
    known = reconciler("history", "--repo", str(repo.remote), "--target", TARGET)
    expect(known, 0, "Ready")
    typo = reconciler("history", "--repo", str(repo.remote), "--target", "cel")
    expect(typo, 1, "cel", "did you mean cell")


# ---------------------------------------------------------------- validate

def test_validate_of_a_directory_without_a_fleet_fails_and_says_what_it_looked_for(
        tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    expect(reconciler("validate", str(empty)), 1, "no Settings", "reconciler.yaml")
    other = tmp_path / "other"
    other.mkdir()
    (other / "docker-compose.yaml").write_text("services: {web: {image: nginx}}\n")
    expect(reconciler("validate", str(other)), 1, "no Settings")
    expect(reconciler("validate", "--format", "json", str(empty)), 1, '"valid": false')


def test_validate_of_a_fleet_repository_still_passes(fleet: tuple[FleetRepo, Site]) -> None:
    repo, _ = fleet
    expect(reconciler("validate", str(repo.work)), 0)


def test_sync_once_exits_1_on_a_config_error(tmp_path: Path) -> None:
    expect(reconciler("sync", "--once", "--config", str(tmp_path / "missing.yaml")), 1)
