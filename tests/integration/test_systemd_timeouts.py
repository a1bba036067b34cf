"""The unit gives a shutdown more time than the daemon may take, and the docs say how long.

A shutdown may wait for a running helm upgrade or uninstall for ``SHUTDOWN_GRACE`` seconds,
then helm gets SIGTERM and ``TERM_GRACE_S`` seconds to roll back and record the release before
SIGKILL. systemd must not kill the daemon (and helm with it, ``KillMode=mixed``) before that:
``TimeoutStopSec`` exceeds the bound with room left to write state and status.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from reconciler_providers.helm_commands import SHUTDOWN_BOUND_S, TERM_GRACE_S

from reconciler.core.provider_api import SHUTDOWN_GRACE

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
OPERATIONS = ROOT / "docs" / "operations.md"
# what is left to do after the helm child ended: the run's state files and status commit
STATE_AND_STATUS_S = 30


def _service_values(unit: Path, key: str) -> list[str]:
    values, section = [], ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            name, _, value = line.partition("=")
            if name.strip() == key:
                values.append(value.strip())
    return values


def _seconds(value: str) -> float:
    """A systemd time span: ``120``, ``3min``, ``2min 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def test_the_bound_is_the_grace_and_helms_time_to_stop() -> None:
    assert SHUTDOWN_BOUND_S == SHUTDOWN_GRACE + TERM_GRACE_S


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_waits_longer_than_a_shutdown_may_take(unit: Path) -> None:
    values = _service_values(unit, "TimeoutStopSec")
    assert len(values) == 1, f"{unit.name}: TimeoutStopSec={values}"
    assert _service_values(unit, "KillMode") == ["mixed"]
    stop = _seconds(values[0])
    assert stop > SHUTDOWN_BOUND_S + STATE_AND_STATUS_S, (
        f"{unit.name}: TimeoutStopSec={values[0]} would kill a helm upgrade the daemon still "
        f"lets run (up to {SHUTDOWN_BOUND_S:g}s after SIGTERM)")


def test_operations_guide_states_the_bound_and_the_unit_timeout() -> None:
    text = " ".join(OPERATIONS.read_text().split())
    (unit,) = [u for u in UNITS if u.name == "reconciler.service"]
    (stop,) = _service_values(unit, "TimeoutStopSec")
    assert f"TimeoutStopSec={stop}" in text
    for seconds in (SHUTDOWN_GRACE, TERM_GRACE_S, SHUTDOWN_BOUND_S):
        assert f"{seconds:g} s" in text, f"docs/operations.md does not say {seconds:g} s"
    assert f"docker stop -t {stop}" in text
