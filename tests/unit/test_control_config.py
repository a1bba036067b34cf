"""The local config keys of the control channel and of failure handling: ``controlSocket``,
``repairOutsideWindows`` and ``status.heartbeat``, their defaults, their ``RECONCILER_*``
overrides, the engine settings they become, and the errors a bad value gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.errors import ConfigError
from reconciler.daemon.config import DaemonConfig, load_config

MINIMAL = """\
repo:
  url: https://git.example.net/fleet.git
site: eu/berlin
stateDir: /srv/state
"""


def load(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> DaemonConfig:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINIMAL + extra)
    return load_config(path, environ=env or {})


def problems(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra, env)
    return list(info.value.problems)


# -- controlSocket ---------------------------------------------------------------------------

def test_control_socket_defaults_to_the_state_directory(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.control_socket_path == Path("/srv/state/control.sock")
    assert cfg.engine_settings().control_socket is None  # the default, as in EngineSettings


def test_under_systemd_the_socket_goes_to_the_runtime_directory(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={"RUNTIME_DIRECTORY": "/run/reconciler"})
    assert cfg.control_socket_path == Path("/run/reconciler/control.sock")
    assert cfg.engine_settings().control_socket == Path("/run/reconciler/control.sock")
    # several RuntimeDirectory= entries: systemd joins them with ':'; the first is ours
    cfg = load(tmp_path, env={"RUNTIME_DIRECTORY": "/run/reconciler:/run/other"})
    assert cfg.control_socket_path == Path("/run/reconciler/control.sock")


def test_an_explicit_control_socket_wins_and_relative_paths_follow_the_config(
        tmp_path: Path) -> None:
    cfg = load(tmp_path, "controlSocket: /run/site/ctl.sock\n",
               {"RUNTIME_DIRECTORY": "/run/reconciler"})
    assert cfg.control_socket_path == Path("/run/site/ctl.sock")
    assert cfg.control_socket_explicit
    cfg = load(tmp_path, "controlSocket: run/ctl.sock\n")
    assert cfg.control_socket_path == tmp_path / "etc" / "run" / "ctl.sock"
    cfg = load(tmp_path, env={"RECONCILER_CONTROLSOCKET": "/run/x.sock"})
    assert cfg.control_socket_path == Path("/run/x.sock")
    assert not load(tmp_path).control_socket_explicit


def test_a_bad_control_socket_names_the_file_and_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "controlSocket: 12\n")
    assert any("config.yaml:5: controlSocket: must be of string type" in p for p in found), found
    found = problems(tmp_path, "controlSocket: ''\n")
    assert any("controlSocket: empty values not allowed" in p for p in found), found
    long = "/run/" + "x" * 120 + ".sock"
    found = problems(tmp_path, f"controlSocket: {long}\n")
    assert any("controlSocket:" in p and "too long" in p for p in found), found


# -- repairOutsideWindows --------------------------------------------------------------------

def test_repair_outside_windows_defaults_to_true_and_reaches_the_engine(tmp_path: Path) -> None:
    assert load(tmp_path).engine_settings().repair_outside_windows is True
    cfg = load(tmp_path, "repairOutsideWindows: false\n")
    assert cfg.repair_outside_windows is False
    assert cfg.engine_settings().repair_outside_windows is False
    cfg = load(tmp_path, env={"RECONCILER_REPAIROUTSIDEWINDOWS": "false"})
    assert cfg.engine_settings().repair_outside_windows is False


def test_a_bad_repair_outside_windows_names_the_file_and_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "repairOutsideWindows: sometimes\n")
    assert any("config.yaml:5: repairOutsideWindows: must be of boolean type" in p
               for p in found), found


# -- status.heartbeat ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("1h", 3600.0), ("30m", 1800.0), ("1h30m", 5400.0), ("2d", 172800.0), ("900", 900.0),
    ("0", 0.0), ("45s", 45.0), ("0.5", 0.5), ("'600'", 600.0),
])
def test_status_heartbeat_takes_durations_or_seconds(tmp_path: Path, value: str,
                                                     seconds: float) -> None:
    cfg = load(tmp_path, f"status:\n  heartbeat: {value}\n")
    assert cfg.status_heartbeat == seconds
    assert cfg.engine_settings().status_heartbeat == seconds


def test_status_heartbeat_defaults_to_one_hour_and_can_come_from_the_environment(
        tmp_path: Path) -> None:
    assert load(tmp_path).engine_settings().status_heartbeat == 3600.0
    assert load(tmp_path, env={"RECONCILER_STATUS_HEARTBEAT": "6h"}).status_heartbeat == 21600.0
    assert load(tmp_path, env={"RECONCILER_STATUS_HEARTBEAT": "0"}).status_heartbeat == 0.0


@pytest.mark.parametrize("value", ["soon", "-5", "1x", "h", "true", "[1]", "1h30"])
def test_a_bad_status_heartbeat_names_the_file_the_key_and_the_spelling(
        tmp_path: Path, value: str) -> None:
    found = problems(tmp_path, f"status:\n  heartbeat: {value}\n")
    assert len(found) == 1, found
    assert "config.yaml:6: status.heartbeat:" in found[0], found


def test_a_bad_heartbeat_variable_is_blamed_on_the_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, env={"RECONCILER_STATUS_HEARTBEAT": "weekly"})
    assert found and found[0].startswith("RECONCILER_STATUS_HEARTBEAT: status.heartbeat:"), found
    assert "90m" in found[0]  # says how to spell one


# -- durations ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400.0), ("2h", 7200.0), ("1d", 86400.0), ("1h30m", 5400.0), ("45", 45.0),
    (" 2H ", 7200.0), (30, 30.0), (1.5, 1.5),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1", "1.2.3h", "m", "2 weeks", "nan", "inf"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration such as 90m"):
        parse_duration(text)


def test_zero_only_where_allowed() -> None:
    assert parse_duration("0", zero=True) == 0.0
    with pytest.raises(ValueError, match="more than 0"):
        parse_duration(0)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 45, 5400, 90000)] == ["0s", "45s", "1h30m",
                                                                  "1d1h"]


# -- config check --------------------------------------------------------------------------

def test_config_check_names_a_control_socket_directory_everyone_may_write(
        tmp_path: Path) -> None:
    from reconciler.daemon.config_check import check_config

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    load(tmp_path, f"controlSocket: {shared}/control.sock\n")  # loads: the daemon refuses it
    found = check_config(tmp_path / "etc" / "config.yaml", offline=True).problems
    assert found == (f"controlSocket: {shared} may be written by every user; the daemon will "
                     "not put its socket there (choose a directory only its user can write)",)
    load(tmp_path, f"controlSocket: {tmp_path}/run/control.sock\n")  # not made yet: fine
    assert check_config(tmp_path / "etc" / "config.yaml", offline=True).problems == ()
