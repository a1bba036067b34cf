"""``reconciler hold``, ``unhold``, ``holds`` and ``sync --retry`` the way an operator runs
them: the installed command as a child process, against a real daemon process and its control
socket, or against the state directory when no daemon runs.

The tests run as root (as the sandbox does) with ``SUDO_USER=ann``, as under ``sudo``: the
daemon must record ann. Users outside the daemon's group are played by ``nobody`` through
``setpriv``; their files live in a directory tree anyone may traverse.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fleetkit import (
    CliResult,
    Site,
    file_component,
    make_site,
    reconciler,
    reconciler_args,
    solution,
    status_of,
    wait_for,
)
from tests.integration.fleetkit import clean_env as fleet_env
from tests.integration.test_faults import LINE, TARGET, Daemon, cell_fleet, start_daemon

SETPRIV = shutil.which("setpriv")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to act as sudo and nobody)")
needs_setpriv = pytest.mark.skipif(SETPRIV is None, reason="setpriv is not installed")


def cli(s: Site, *args: str, env: dict[str, str] | None = None,
        user: tuple[str, ...] = ()) -> CliResult:
    """``reconciler ARGS --config <site>`` as ann behind sudo, or as ``user`` (setpriv)."""
    extra = {**s.env(), "SUDO_USER": "ann", **(env or {})}
    if not user:
        return reconciler(*args, "--config", str(s.config), env=extra)
    done = subprocess.run([*user, *reconciler_args(*args, "--config", str(s.config))],
                          env=fleet_env(extra), capture_output=True, timeout=60)
    return CliResult(tuple(args), done.returncode, done.stdout.decode(errors="replace"),
                     done.stderr.decode(errors="replace"))


def holds_file(s: Site) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads((s.state / "holds.json").read_text())["holds"]
    return found


def expect(result: CliResult, code: int, *texts: str) -> CliResult:
    assert result.returncode == code, result.describe()
    for text in texts:
        assert text in result.stdout + result.stderr, (text, result.describe())
    return result


@pytest.fixture
def site(tmp_path: Path) -> Site:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    return make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user may traverse (pytest's own temporary root is private)."""
    root = Path(tempfile.mkdtemp(prefix="reconciler-holds-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def running(daemons: list[Daemon], s: Site, name: str = "daemon") -> Daemon:
    d = start_daemon(daemons, s, name)  # its own log: a restart's events are its own
    d.wait_runs(1, 60)
    d.wait_event("control_socket_listening", 30)
    return d


def run_reasons(d: Daemon) -> list[str]:
    return [str(r["reason"]) for r in d.runs()]


# -- through the daemon ----------------------------------------------------------------------

@as_root
def test_a_hold_set_with_sudo_records_the_operator_is_listed_and_ends(
        site: Site, daemons: list[Daemon]) -> None:
    d = running(daemons, site)
    socket_file = site.state / "control.sock"
    assert stat.S_IMODE(os.lstat(socket_file).st_mode) == 0o660

    held = expect(cli(site, "hold", "--target", TARGET, "--for", "2h", "--reason",
                      "production run"), 0, f"target {TARGET} held until", "by ann",
                  "production run", "(in 2h)")
    assert f"daemon {d.pid} runs now" in held.stdout
    [saved] = holds_file(site)
    assert (saved["target"], saved["by"], saved["reason"]) == (TARGET, "ann", "production run")
    until = datetime.fromisoformat(saved["until"]) - datetime.fromisoformat(saved["since"])
    assert timedelta(hours=2) - timedelta(seconds=5) < until <= timedelta(hours=2)
    d.wait_event("hold_set", 10, target=TARGET, by="ann")
    wait_for(lambda: "hold" in run_reasons(d), 60, "the run a hold triggers")

    listed = expect(cli(site, "holds", "--format", "json"), 0)
    report = json.loads(listed.stdout)
    assert report["source"] == "daemon" and report["served"] == [TARGET]
    assert [(h["target"], h["by"]) for h in report["holds"]] == [(TARGET, "ann")]
    expect(cli(site, "holds"), 0, "TARGET", TARGET, "ann", "production run")

    expect(cli(site, "unhold", "--target", TARGET), 0, f"ended: target {TARGET} held")
    assert holds_file(site) == []
    wait_for(lambda: "unhold" in run_reasons(d), 60, "the run an unhold triggers")
    expect(cli(site, "holds"), 0, f"no holds at site {LINE}")
    expect(cli(site, "unhold", "--target", TARGET), 0, "nothing to end")
    assert d.stop() == 0
    assert not socket_file.exists()  # removed on shutdown
    assert not d.events("run_crashed") and not d.events("control_request_crashed")


@as_root
def test_a_hold_survives_a_daemon_restart(site: Site, daemons: list[Daemon]) -> None:
    d = running(daemons, site)
    expect(cli(site, "hold", "--for", "3h", "--reason", "audit"), 0,
           "every target of this site held until")
    assert d.stop() == 0
    again = running(daemons, site, "restarted")
    report = json.loads(expect(cli(site, "holds", "--format", "json"), 0).stdout)
    assert report["source"] == "daemon"
    assert [(h["target"], h["by"], h["reason"]) for h in report["holds"]] == [
        ("", "ann", "audit")]
    expect(cli(site, "unhold", "--all"), 0, "ended: every target of this site")
    assert again.stop() == 0


@as_root
def test_a_target_the_daemon_does_not_serve_is_refused_by_name(
        site: Site, daemons: list[Daemon]) -> None:
    running(daemons, site)
    expect(cli(site, "hold", "--target", "cel", "--for", "1h", "--reason", "x"), 1,
           "serves no target named 'cel'", "did you mean 'cell'", f"it serves: {TARGET}")
    assert not (site.state / "holds.json").exists()
    expect(cli(site, "sync", "--retry", "--target", "press-9"), 1, "'press-9'")


@as_root
def test_sync_retry_reaches_the_daemon_and_runs_it(site: Site, daemons: list[Daemon]) -> None:
    d = running(daemons, site)
    expect(cli(site, "sync", "--retry", "--target", TARGET), 0,
           f"asked daemon {d.pid} to apply again the failed changes on target {TARGET}")
    d.wait_event("retry_requested", 10, target=TARGET, by="ann")
    wait_for(lambda: "retry" in run_reasons(d), 60, "the run a retry triggers")
    expect(cli(site, "sync", "--retry"), 0, "on every target")
    d.wait_event("retry_requested", 10, target="*")


# -- users -----------------------------------------------------------------------------------

@as_root
@needs_setpriv
def test_a_user_outside_the_daemons_group_cannot_reach_it(
        open_root: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(open_root / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(open_root, "site", repo=repo.url, site=LINE, interval=3600)
    s.config.chmod(0o644)
    running(daemons, s)
    assert SETPRIV is not None
    outsider = (SETPRIV, "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")
    expect(cli(s, "hold", "--target", TARGET, "--for", "1h", "--reason", "x", user=outsider),
           1, "permission denied on the daemon's control socket", "sudo",
           "member of the daemon's group 'root'")
    assert not (s.state / "holds.json").exists()  # and no way around it through the file
    expect(cli(s, "holds", user=outsider), 1, "permission denied")

    # a member of the group (here: root's group, the daemon's) may, and is recorded as
    # itself, whatever SUDO_USER says
    member = (SETPRIV, "--reuid", "nobody", "--regid", "root", "--clear-groups")
    expect(cli(s, "hold", "--target", TARGET, "--for", "1h", "--reason", "line trial",
               user=member), 0, "by nobody")
    assert [h["by"] for h in holds_file(s)] == ["nobody"]
    expect(cli(s, "sync", user=member), 0, "to reconcile now")


# -- no daemon -------------------------------------------------------------------------------

@as_root
def test_without_a_daemon_hold_and_unhold_write_the_state_directory(site: Site) -> None:
    site.state.mkdir(parents=True)
    expect(cli(site, "hold", "--target", TARGET, "--for", "90m", "--reason", "changeover"),
           0, "by ann", "holds.json", "no daemon is running", "not be checked")
    [saved] = holds_file(site)
    assert (saved["target"], saved["by"], saved["reason"]) == (TARGET, "ann", "changeover")
    report = json.loads(expect(cli(site, "holds", "--format", "json"), 0).stdout)
    assert report["source"].endswith("holds.json") and len(report["holds"]) == 1
    expect(cli(site, "unhold", "--target", TARGET), 0, "ended:")
    assert holds_file(site) == []


@as_root
def test_a_hold_written_without_a_daemon_is_handed_to_the_daemons_user(site: Site) -> None:
    site.state.mkdir(parents=True)
    os.chown(site.state, 65534, 65534)  # the daemon's user owns its state directory
    expect(cli(site, "hold", "--for", "1h", "--reason", "x"), 0)
    info = (site.state / "holds.json").stat()
    assert (info.st_uid, info.st_gid) == (65534, 65534)


def test_without_a_state_directory_the_hold_says_so(site: Site) -> None:
    expect(cli(site, "hold", "--for", "1h", "--reason", "x"), 1,
           "state directory", "does not exist")


def test_a_time_without_a_zone_is_local_time_of_the_machine(site: Site) -> None:
    site.state.mkdir(parents=True)
    year = datetime.now().year + 1
    expect(cli(site, "hold", "--until", f"{year}-01-15T06:00", "--reason", "x",
               env={"TZ": "Europe/Berlin"}), 0, f"{year}-01-15 06:00 CET")
    assert holds_file(site)[0]["until"] == f"{year}-01-15T06:00:00+01:00"
    expect(cli(site, "hold", "--until", "18:00", "--reason", "shift end",
               env={"TZ": "Europe/Berlin"}), 0, "18:00 CE")  # CET or CEST
    until = datetime.fromisoformat(holds_file(site)[0]["until"])
    assert timedelta(0) < until - datetime.now(until.tzinfo) <= timedelta(days=1)


@pytest.mark.parametrize(("args", "problem"), [
    (("hold", "--for", "1h"), "Missing option '--reason'"),
    (("hold", "--reason", "x"), "--until TIME or --for DURATION"),
    (("hold", "--for", "1h", "--until", "18:00", "--reason", "x"), "one of them"),
    (("hold", "--for", "soon", "--reason", "x"), "duration such as 90m"),
    (("hold", "--until", "2001-01-01T00:00", "--reason", "x"), "is not in the future"),
    (("hold", "--until", "next week", "--reason", "x"), "is not a time"),
    (("hold", "--for", "1h", "--reason", " "), "say why"),
    (("unhold", "--target", "a", "--all"), "not both"),
    (("sync", "--target", "a"), "--target goes with --retry"),
])
def test_usage_errors_exit_2_saying_what_is_wrong(site: Site, args: tuple[str, ...],
                                                  problem: str) -> None:
    expect(cli(site, *args), 2, problem)


# -- the end of a hold ---------------------------------------------------------------------------

@as_root
def test_a_change_held_back_is_applied_when_the_hold_ends_without_waiting_for_the_interval(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("conf", "app.conf", "A\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600)
    d = running(daemons, s)
    assert s.file(TARGET, "app.conf").read_text() == "A\n"
    expect(cli(s, "hold", "--target", TARGET, "--for", "6s", "--reason", "short run"), 0)
    wait_for(lambda: "hold" in run_reasons(d), 60, "the run a hold triggers")
    # the whole fleet sees the hold: who, until when and why
    held = status_of(repo.remote, LINE, TARGET)["hold"]
    assert (held["by"], held["reason"], held["target"]) == ("ann", "short run", TARGET)

    repo.write("solutions/app.yaml", solution("app", [file_component("conf", "app.conf",
                                                                     "B\n")]))
    repo.commit("release B")
    expect(cli(s, "sync"), 0)
    wait_for(lambda: "SIGHUP" in run_reasons(d), 60, "the run sync asks for")
    assert s.file(TARGET, "app.conf").read_text() == "A\n"  # held back
    assert status_of(repo.remote, LINE, TARGET)["phase"] == "Waiting"
    d.wait_event("wake_scheduled", 10)

    # the hold ends a few seconds later: the daemon runs then (the interval is an hour)
    wait_for(lambda: "window" in run_reasons(d), 60, "the run at the end of the hold")
    wait_for(lambda: s.file(TARGET, "app.conf").read_text() == "B\n", 30, "release B")
    after = status_of(repo.remote, LINE, TARGET)
    assert after["phase"] == "Ready" and "hold" not in after
