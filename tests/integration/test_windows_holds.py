"""Maintenance windows and local holds, as one site's engine applies them.

The engine runs in this process with an injected wall clock (``now``), against a real
repository and real files: a change pushed while every window that applies is closed waits
(``Waiting`` with the time the window opens, and the run's ``wake_at`` says when to run
again), drift of what is applied is still repaired, and the change is applied by the first
run at the opening. Windows are intersected along the chain (site, target, instance) and
united within one level; one in another time zone is followed across a DST change. A hold
set while a change arrives keeps it out until the hold ends, and the status file says who
holds the line, why and until when.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import default_registry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.holds import Hold
from reconciler.engine.pipeline import Reconciler
from tests.integration.fleetkit import (
    FleetRepo,
    file_component,
    instance,
    settings,
    site,
    solution,
    status_of,
    target,
)

pytestmark = pytest.mark.timeout(120)

NIGHTLY = {"schedule": "0 22 * * *", "duration": "4h", "timezone": "UTC"}  # 22:00-02:00 UTC


class WallClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def fleet(root: Path, *, site_windows: list[dict[str, Any]] | None = None,
          target_windows: list[dict[str, Any]] | None = None,
          instance_windows: list[dict[str, Any]] | None = None) -> FleetRepo:
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    hq = site("hq")
    if site_windows:
        hq["spec"]["windows"] = site_windows
    repo.write("sites.yaml", [hq])
    cell = target("cell", "hq")
    if target_windows:
        cell["spec"]["windows"] = target_windows
    extra = {"windows": instance_windows} if instance_windows else {}
    repo.write("targets.yaml", [cell, instance("app", "app", names=["cell"], **extra)])
    repo.write("solutions/app.yaml", solution("app", [file_component("conf", "app.conf",
                                                                     "v1\n")]))
    repo.commit("v1")
    return repo


def change(repo: FleetRepo, content: str) -> str:
    repo.write("solutions/app.yaml", solution("app", [file_component("conf", "app.conf",
                                                                     content)]))
    return repo.commit(f"app.conf {content.strip()}")


def engine(repo: FleetRepo, state: Path, clock: WallClock, **overrides: Any) -> Reconciler:
    config = EngineSettings(repo_url=repo.url, site="hq", state_dir=state, retries=0,
                            health_poll_interval=0.05,
                            policy=LocalPolicy(file_roots=(state / "files",)), **overrides)
    return Reconciler(config, default_registry(), now=clock)


def conf(state: Path) -> str:
    return (state / "files" / "cell" / "app.conf").read_text()


def test_a_change_waits_for_the_window_and_goes_when_it_opens(tmp_path: Path) -> None:
    # the first deployment goes in a window; v2 is pushed at noon, outside it
    repo = fleet(tmp_path / "fleet", site_windows=[NIGHTLY])
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    rec = engine(repo, state, clock)
    assert rec.run().ok and conf(state) == "v1\n"

    clock.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    v2 = change(repo, "v2\n")
    summary = rec.run()
    assert conf(state) == "v1\n"  # nothing of v2 applied
    status = summary.statuses[0]
    assert status.phase.value == "Waiting", status
    assert "2026-12-02T22:00:00+00:00" in status.message
    assert summary.wake_at == datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    doc = status_of(repo.remote, "hq", "cell")
    assert doc["instances"]["app"]["waiting"]["until"] == "2026-12-02T22:00:00+00:00"
    assert doc["instances"]["app"]["revision"] != v2

    # drift of what is applied is repaired outside the window (the default)
    (state / "files" / "cell" / "app.conf").write_text("edited by hand\n")
    clock.now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    rec.run()
    assert conf(state) == "v1\n"

    # the run at the opening applies v2
    clock.now = summary.wake_at
    opened = rec.run()
    assert conf(state) == "v2\n"
    assert opened.statuses[0].phase.value == "Ready"
    assert opened.statuses[0].applied_revision == v2


def test_repair_off_touches_nothing_outside_the_window(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", target_windows=[NIGHTLY])
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    rec = engine(repo, state, clock, repair_outside_windows=False)
    rec.run()
    (state / "files" / "cell" / "app.conf").write_text("edited by hand\n")
    clock.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    summary = rec.run()
    assert conf(state) == "edited by hand\n"
    assert summary.statuses[0].phase.value == "Waiting"
    clock.now = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)
    rec.run()
    assert conf(state) == "v1\n"


def test_windows_intersect_along_the_chain_and_unite_within_a_level(tmp_path: Path) -> None:
    # site: nights 22:00-02:00; target: Wednesdays all day OR Saturdays all day (UTC);
    # so changes go from Wednesday 00:00 to 02:00, from Wednesday 22:00 to 24:00, and the
    # same on Saturdays
    wednesday = {"schedule": "0 0 * * 3", "duration": "1d", "timezone": "UTC"}
    saturday = {"schedule": "0 0 * * 6", "duration": "1d", "timezone": "UTC"}
    repo = fleet(tmp_path / "fleet", site_windows=[NIGHTLY],
                 target_windows=[wednesday, saturday])
    state = tmp_path / "state"
    # Tuesday 2026-12-01 23:00: the site's window is open, the target's is not
    clock = WallClock(datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    rec = engine(repo, state, clock)
    first = rec.run()
    assert not (state / "files" / "cell" / "app.conf").exists()
    assert first.statuses[0].phase.value == "Waiting"
    assert first.wake_at == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)  # Wednesday begins
    clock.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # Wednesday noon: site closed
    noon = rec.run()
    assert noon.statuses[0].phase.value == "Waiting"
    assert noon.wake_at == datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    clock.now = noon.wake_at
    assert rec.run().ok and conf(state) == "v1\n"


def test_an_instance_window_narrows_the_site_window(tmp_path: Path) -> None:
    early = {"schedule": "0 23 * * *", "duration": "30m", "timezone": "UTC"}
    repo = fleet(tmp_path / "fleet", site_windows=[NIGHTLY], instance_windows=[early])
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 22, 10, tzinfo=UTC))
    rec = engine(repo, state, clock)
    summary = rec.run()
    assert summary.wake_at == datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    clock.now = datetime(2026, 12, 1, 23, 29, tzinfo=UTC)
    assert rec.run().ok


def test_a_window_in_another_time_zone_across_the_dst_change(tmp_path: Path) -> None:
    # 22:00 in Berlin: 21:00Z in winter, 20:00Z in summer (the change: 2026-03-29)
    berlin = {"schedule": "0 22 * * *", "duration": "1h", "timezone": "Europe/Berlin"}
    repo = fleet(tmp_path / "fleet", target_windows=[berlin])
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 3, 28, 21, 30, tzinfo=UTC))  # winter: open
    rec = engine(repo, state, clock)
    assert rec.run().ok
    change(repo, "v2\n")
    clock.now = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    summary = rec.run()
    assert summary.wake_at == datetime(2026, 3, 29, 20, 0, tzinfo=UTC)  # summer time now
    clock.now = datetime(2026, 3, 29, 19, 59, tzinfo=UTC)
    rec.run()
    assert conf(state) == "v1\n"
    clock.now = summary.wake_at
    rec.run()
    assert conf(state) == "v2\n"


def test_a_hold_keeps_a_change_out_until_it_ends_and_says_so(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet")
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    rec = engine(repo, state, clock)
    rec.run()
    until = clock.now + timedelta(hours=6)
    rec.holds.add(Hold("cell", until, "production run of order 4711", "ann", clock.now),
                  now=clock.now)
    change(repo, "v2\n")
    clock.now += timedelta(hours=1)
    summary = rec.run()
    assert conf(state) == "v1\n"
    status = summary.statuses[0]
    assert status.phase.value == "Waiting"
    assert "held by ann" in status.message and "production run of order 4711" in status.message
    assert summary.wake_at == until
    doc = status_of(repo.remote, "hq", "cell")
    assert doc["hold"]["by"] == "ann" and doc["hold"]["reason"] == "production run of order 4711"
    assert doc["hold"]["until"] == until.isoformat(timespec="seconds")

    # a held target keeps enforcing its current state
    (state / "files" / "cell" / "app.conf").write_text("edited by hand\n")
    rec.run()
    assert conf(state) == "v1\n"

    # the hold survives a restart of the engine (holds.json), and ends on time
    again = engine(repo, state, clock)
    assert again.run().statuses[0].phase.value == "Waiting"
    clock.now = until
    done = again.run()
    assert conf(state) == "v2\n" and done.ok
    assert "hold" not in status_of(repo.remote, "hq", "cell")


def test_unhold_lets_the_change_go_at_the_next_run(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet")
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    rec = engine(repo, state, clock)
    rec.run()
    rec.holds.add(Hold("", clock.now + timedelta(days=1), "stocktaking", "ben", clock.now),
                  now=clock.now)
    change(repo, "v2\n")
    assert rec.run().statuses[0].phase.value == "Waiting"
    assert rec.holds.remove("", now=clock.now)
    assert rec.run().ok and conf(state) == "v2\n"


def test_suspend_on_a_site_suspends_every_instance_below_it(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet")
    state = tmp_path / "state"
    clock = WallClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    rec = engine(repo, state, clock)
    rec.run()
    hq = site("hq")
    hq["spec"]["suspend"] = True
    repo.write("sites.yaml", [hq])
    repo.commit("suspend hq")
    change(repo, "v2\n")
    summary = rec.run()
    assert conf(state) == "v1\n"
    components = summary.statuses[0].instances["app"]["components"]
    assert components["conf"]["phase"] == "Suspended"
