"""Mistakes in a site's local config are named where they are, once, before they cost anything.

* A ``site:`` that the tracked revision does not have: ``config check`` says so (with the
  nearest site names), and a daemon that serves no target says so in its log and answers
  ``/readyz`` with 503 and the reason, until a revision gives it something to serve.
* ``--config`` naming a file that does not exist is reported as such (not as missing fields).
* A bad ``RECONCILER_*`` value is blamed on the variable, not on a line of the file.
* A repository URL that is not a git repository is named in the error, and the error is
  printed once.

Everything runs the installed ``reconciler`` command (the daemon as a real process) against
real git repositories.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    RECONCILER,
    CliResult,
    FleetRepo,
    clean_env,
    file_component,
    make_site,
    reconciler,
    site,
    target,
    wait_for,
    write_config,
)
from tests.integration.test_faults import LINE, Daemon, cell_fleet, start_daemon
from tests.integration.test_status_push import free_port

GIT_MESSAGE = "does not appear to be a git repository"


@pytest.fixture
def repo(tmp_path: Path) -> FleetRepo:
    return cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])


def plain(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """The command as a user types it: no --log-level, no --log-format."""
    done = subprocess.run([str(RECONCILER), *args], env=clean_env(env), capture_output=True,
                          timeout=90)
    return CliResult(tuple(args), done.returncode, done.stdout.decode(errors="replace"),
                     done.stderr.decode(errors="replace"))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def readyz(port: int, status: int) -> str:
    """The body of ``/readyz`` once it answers ``status``."""
    def answered() -> str | None:
        code, body = get(f"http://127.0.0.1:{port}/readyz")
        return body if code == status else None

    body: str = wait_for(answered, 10, f"/readyz answering {status}")
    return body


# ---------------------------------------------------------------- 7. a site that does not exist

def test_config_check_names_a_site_the_tracked_revision_does_not_have(
        repo: FleetRepo, tmp_path: Path) -> None:
    config = write_config(tmp_path / "site" / "config.yaml", repo=repo.url, site="hq/lien-1",
                          state_dir=tmp_path / "site" / "state")

    result = plain("config", "check", "--config", str(config))

    assert result.returncode == 1, result.describe()
    out = result.stdout + result.stderr
    assert "site: no site 'hq/lien-1'" in out, out
    assert "did you mean 'hq/line-1'" in out, out
    assert repo.head()[:12] in out  # the revision that was looked at
    assert "OK" not in result.stdout
    assert not (tmp_path / "site" / "state").exists()  # the daemon's state is not touched

    # a one-shot run or plan of nothing is an error that says why, not "all Ready"
    for args in (("sync", "--once"), ("plan",)):
        ran = plain(*args, "--config", str(config))
        assert ran.returncode == 1, ran.describe()
        assert "no site 'hq/lien-1'" in ran.stderr and "hq/line-1" in ran.stderr, ran.describe()


def test_config_check_names_targets_the_site_does_not_have(repo: FleetRepo,
                                                           tmp_path: Path) -> None:
    config = write_config(tmp_path / "site" / "config.yaml", repo=repo.url, site=LINE,
                          state_dir=tmp_path / "site" / "state", targets=["cel"])
    result = plain("config", "check", "--config", str(config))
    assert result.returncode == 1, result.describe()
    assert "targets: no target 'cel' at site hq/line-1" in result.stdout, result.describe()
    assert "did you mean 'cell'" in result.stdout


def test_config_check_of_a_good_site_still_passes(repo: FleetRepo, tmp_path: Path) -> None:
    config = write_config(tmp_path / "site" / "config.yaml", repo=repo.url, site=LINE,
                          state_dir=tmp_path / "site" / "state")
    result = plain("config", "check", "--config", str(config))
    assert result.returncode == 0, result.describe()
    assert "1 target" in result.stdout and repo.head()[:12] in result.stdout


def test_config_check_names_notification_secret_files_it_cannot_use(
        repo: FleetRepo, tmp_path: Path) -> None:
    empty = tmp_path / "github.token"
    empty.write_text("\n")
    config = write_config(
        tmp_path / "site" / "config.yaml", repo=repo.url, site=LINE,
        state_dir=tmp_path / "site" / "state",
        notifications={"sinks": [
            {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook",
             "secretFile": str(tmp_path / "missing.key")},
            {"name": "forge", "type": "github", "repository": "acme/fleet",
             "tokenFile": str(empty)}]})
    result = plain("config", "check", "--config", str(config), "--offline")
    assert result.returncode == 1, result.describe()
    assert f"notifications.sinks[0].secretFile: {tmp_path / 'missing.key'}: No such file" \
        in result.stdout, result.describe()
    assert f"notifications.sinks[1].tokenFile: {empty} is empty" in result.stdout


def test_a_daemon_serving_nothing_says_so_in_its_log_and_readyz(
        repo: FleetRepo, tmp_path: Path, daemons: list[Daemon]) -> None:
    port = free_port()
    s = make_site(tmp_path, "site", repo=repo.url, site="hq/lien-1", interval=3600,
                  listen={"enabled": True, "address": "127.0.0.1", "port": port})
    d = start_daemon(daemons, s)
    d.wait_runs(1, 30)
    [said] = d.wait_event("no_targets_served", 10)
    assert said["level"] == "warning"
    assert "no site 'hq/lien-1'" in said["reason"] and "hq/line-1" in said["reason"], said

    answer = json.loads(readyz(port, 503))
    assert answer["ready"] is False and "no site 'hq/lien-1'" in answer["reason"], answer

    # the site appears in a later revision: the daemon serves it and is ready
    repo.write("more.yaml", [site("lien-1", "hq"), target("lien-cell", "lien-1")])
    repo.commit("the site the config names")
    d.signal(signal.SIGHUP)  # run now
    d.wait_runs(2, 30)
    assert json.loads(readyz(port, 200))["ready"] is True
    assert d.runs()[-1]["targets"] == 1
    assert d.stop() == 0


# ---------------------------------------------------------------- 8. files, variables, URLs

def test_config_check_of_a_missing_file_says_the_file_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = plain("config", "check", "--config", str(missing))
    assert result.returncode == 1, result.describe()
    out = result.stdout + result.stderr
    assert f"{missing}: no such file" in out, out
    assert "required field" not in out


def test_a_bad_environment_value_is_blamed_on_the_variable(repo: FleetRepo,
                                                           tmp_path: Path) -> None:
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    env = {**s.env(), "RECONCILER_INTERVAL": "soon"}

    checked = plain("config", "check", "--config", str(s.config), env=env)
    assert checked.returncode == 1, checked.describe()
    out = checked.stdout + checked.stderr
    assert "RECONCILER_INTERVAL: interval: must be of integer type (value 'soon')" in out, out
    assert f"{s.config}:" not in out  # no line of the file is to blame

    ran = plain("run", "--config", str(s.config), env=env)
    assert ran.returncode == 78, ran.describe()
    assert "RECONCILER_INTERVAL: interval: must be of integer type" in ran.stderr
    synced = plain("sync", "--once", "--config", str(s.config), env=env)
    assert synced.returncode == 1, synced.describe()
    assert "RECONCILER_INTERVAL: interval: must be of integer type" in synced.stderr
    assert not s.state.exists()


def test_a_variable_overriding_a_key_of_the_file_is_blamed_not_the_file(
        repo: FleetRepo, tmp_path: Path) -> None:
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)  # the file sets jitter: 0
    env = {**s.env(), "RECONCILER_JITTER": "-5"}
    checked = plain("config", "check", "--config", str(s.config), env=env)
    assert checked.returncode == 1, checked.describe()
    assert "RECONCILER_JITTER: jitter: min value is 0" in checked.stdout, checked.describe()
    assert f"{s.config}:" not in checked.stdout


@pytest.fixture
def not_git(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "not-a-repo"
    directory.mkdir()
    s = make_site(tmp_path, "site", repo=str(directory), site=LINE)
    return directory, s.config


def _once(text: str, needle: str) -> None:
    assert text.count(needle) == 1, f"{needle!r} {text.count(needle)} times in:\n{text}"


def test_config_check_names_a_url_that_is_not_a_git_repository_once(
        not_git: tuple[Path, Path]) -> None:
    directory, config = not_git
    result = plain("config", "check", "--config", str(config))
    assert result.returncode == 1, result.describe()
    out = result.stdout + result.stderr
    assert "<repo>" not in out
    _once(out, GIT_MESSAGE)
    assert f"'{directory}' {GIT_MESSAGE}" in out


def test_plan_and_sync_name_a_url_that_is_not_a_git_repository_once(
        not_git: tuple[Path, Path]) -> None:
    directory, config = not_git
    for args in (("plan", "--config", str(config)),
                 ("sync", "--once", "--config", str(config))):
        result = plain(*args)
        assert result.returncode == 1, result.describe()
        out = result.stdout + result.stderr
        assert "<repo>" not in out, out
        assert str(directory) in out
        _once(out, GIT_MESSAGE)
        assert "TARGET" not in result.stdout  # no empty table of nothing


def test_the_log_names_the_url(not_git: tuple[Path, Path]) -> None:
    directory, config = not_git
    result = reconciler("sync", "--once", "--config", str(config))
    failed = result.events("fetch_failed")
    assert failed and str(directory) in failed[0]["error"], result.describe()
    assert "<repo>" not in result.stderr
