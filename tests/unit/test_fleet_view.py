"""The join of the fleet model with the status branches, table-driven: every target of the
model gets a row (Unknown when it never reported, Stale when its site is silent, Orphaned
when the model no longer has it), roll-ups per instance and per site, filters, ages."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.gitops.fleet_model import ExpectedTarget, FleetIndex, InstanceInfo, SiteInfo
from reconciler.gitops.fleet_status import FleetStatus, InstanceStatus, StatusEntry
from reconciler.gitops.fleet_view import FleetView, format_age, health, join

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
HEAD = "a" * 40
OLD = "b" * 40
HOUR = 3600.0


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def entry(site: str, target: str, phase: str = "Ready", *, seen: float | None = 60,
          applied: str = HEAD, release: str = "", error: str | None = None,
          inst_phase: str | None = None) -> StatusEntry:
    return StatusEntry(
        site=site, target=target, branch="reconciler-status/" + site.replace("/", "_"),
        path=f"status/{site}/{target}.yaml", phase=phase, message=f"{target} says {phase}",
        observed_revision=HEAD, applied_revision=applied, last_good_revision=applied,
        last_change=ago(seen) if seen is not None else None,
        last_seen=ago(seen) if seen is not None else None, error=error,
        instances=(InstanceStatus("telemetry-eu", "telemetry", inst_phase or phase, release),))


def index() -> FleetIndex:
    sites = (SiteInfo("eu", "region"), SiteInfo("eu/berlin", "plant"),
             SiteInfo("eu/berlin/line-1", "line"), SiteInfo("eu/paris", "plant"))
    targets = (
        ExpectedTarget("eu/berlin/line-1", "press-1", ("telemetry-eu",), ()),
        ExpectedTarget("eu/berlin/line-1", "press-2", ("telemetry-eu",), ()),
        ExpectedTarget("eu/berlin/line-1", "press-3", ("telemetry-eu",), ()),
        ExpectedTarget("eu/berlin/line-1", "press-4", ("telemetry-eu",), ()),
        ExpectedTarget("eu/paris", "oven", ("telemetry-eu",),
                       ("instances.yaml:3: Instance/telemetry-eu: params: bad",), 2),
    )
    return FleetIndex(HEAD, sites, targets,
                      {"telemetry-eu": InstanceInfo("telemetry-eu", "telemetry", "1.5.0")},
                      (), 3)


def status(*entries: StatusEntry) -> FleetStatus:
    return FleetStatus(entries=tuple(entries), branches={}, source="fleet.git")


def view_of(*entries: StatusEntry, stale_after: float = 3 * HOUR) -> FleetView:
    return join(index(), status(*entries), now=NOW, stale_after=stale_after)


@pytest.mark.parametrize(("reported", "state", "message"), [
    (entry("eu/paris", "oven"), "Ready", "oven says Ready"),
    (entry("eu/paris", "oven", "Failed"), "Failed", "oven says Failed"),
    (entry("eu/paris", "oven", seen=4 * HOUR), "Stale",
     "last report 4h00m ago (Ready): oven says Ready"),
    (entry("eu/paris", "oven", "Failed", seen=3 * 86400 + 7200), "Stale",
     "last report 3d02h ago (Failed): oven says Failed"),
    (entry("eu/paris", "oven", seen=None), "Stale", "no report time (Ready): oven says Ready"),
    (None, "Unknown",
     f"never reported; invalid at {HEAD[:12]}: instances.yaml:3: Instance/telemetry-eu: "
     "params: bad"),
    (StatusEntry(site="eu/paris", target="oven", branch="b", path="p",
                 error="not UTF-8 text (byte 0)"),
     "Unreadable", "error: not UTF-8 text (byte 0)"),
    (entry("eu/paris", "oven", error="field site is 'x' but the path says 'eu/paris'"),
     "Ready", "error: field site is 'x' but the path says 'eu/paris'"),
])
def test_the_state_of_one_target(reported: StatusEntry | None, state: str,
                                 message: str) -> None:
    rows = {r.target: r for r in view_of(*([reported] if reported else []))}

    oven = rows["oven"]
    assert (oven.state, oven.message) == (state, message)
    assert oven.errors == ("instances.yaml:3: Instance/telemetry-eu: params: bad",)
    assert oven.more_errors == 2
    assert len(rows) == 5  # every target of the model, reported or not


def test_a_target_with_a_problem_in_its_file_is_not_ready() -> None:
    view = view_of(entry("eu/paris", "oven", error="field lastChange 'x' is not a time"))

    (oven,) = [r for r in view if r.target == "oven"]
    assert oven.state == "Ready" and not oven.ready


def test_targets_the_model_does_not_have_are_orphaned() -> None:
    view = view_of(entry("eu/rome", "gone", "Ready"))

    (gone,) = [r for r in view if r.target == "gone"]
    assert gone.state == "Orphaned" and not gone.in_fleet
    assert gone.message == f"not in the fleet at {HEAD[:12]} (Ready): gone says Ready"


def test_without_a_model_the_reported_targets_are_the_rows() -> None:
    view = join(None, status(entry("eu/paris", "oven"), entry("eu/rome", "x", "Failed")),
                now=NOW, stale_after=HOUR)

    assert [(r.target, r.state, r.in_fleet) for r in view] == [
        ("oven", "Ready", True), ("x", "Failed", True)]
    assert view.instance_rollups()[0].summary() == "1/2 Ready, 1 Failed"


def test_rows_are_in_hierarchy_order_and_every_one_ready_is_ready() -> None:
    everything = [entry("eu/berlin/line-1", f"press-{n}") for n in (1, 2, 3, 4)]
    view = view_of(*everything, entry("eu/paris", "oven"))

    assert [r.key for r in view] == [("eu/berlin/line-1", f"press-{n}") for n in (1, 2, 3, 4)] \
        + [("eu/paris", "oven")]
    assert view.ready
    assert not view_of(*everything).ready  # oven never reported
    assert not join(None, status(), now=NOW, stale_after=HOUR).ready  # nothing at all


def test_instance_rollup_counts_what_runs_the_pinned_release() -> None:
    view = view_of(
        entry("eu/berlin/line-1", "press-1", release="1.5.0"),
        entry("eu/berlin/line-1", "press-2", release="1.4.0", applied=OLD),
        entry("eu/berlin/line-1", "press-3", "Failed"),
        entry("eu/berlin/line-1", "press-4", seen=5 * HOUR),
        # the target is Failed for another instance; this one is Ready on it
        entry("eu/paris", "oven", "Failed", inst_phase="Ready"),
    )

    (rollup,) = view.instance_rollups()
    assert rollup.summary() == ("2/5 Ready on 1.5.0, 1 Ready on another revision, 1 Failed, "
                                "1 Stale")
    assert rollup.total == 5 and rollup.version == "1.5.0"


def test_site_rollups_cover_each_subtree() -> None:
    view = view_of(entry("eu/berlin/line-1", "press-1"),
                   entry("eu/berlin/line-1", "press-2", "Failed"),
                   entry("eu/berlin/line-1", "press-3", seen=5 * HOUR))

    sites = {s.path: (s.level, s.summary(), s.health) for s in view.site_rollups()}
    assert sites == {
        "eu": ("region", "1/5 Ready, 1 Failed, 1 Stale, 2 Unknown", "failed"),
        "eu/berlin": ("plant", "1/4 Ready, 1 Failed, 1 Stale, 1 Unknown", "failed"),
        "eu/berlin/line-1": ("line", "1/4 Ready, 1 Failed, 1 Stale, 1 Unknown", "failed"),
        "eu/paris": ("plant", "0/1 Ready, 1 Unknown", "stale"),
    }


@pytest.mark.parametrize(("kwargs", "targets"), [
    ({"site": "eu/paris"}, ["oven"]),
    ({"site": "paris"}, ["oven"]),  # a site's name
    ({"site": "eu/berlin"}, ["press-1", "press-2", "press-3", "press-4"]),
    ({"site": "eu/ber"}, []),  # a path prefix is not a subtree
    ({"states": ["failed"]}, ["press-2"]),
    ({"states": ["Stale", "Unknown"]}, ["press-3", "press-4", "oven"]),
    ({"states": ["Ready"]}, ["press-1"]),
    ({"instance": "telemetry-eu", "states": ["ready"]}, ["press-1"]),
    ({"instance": "other"}, []),
])
def test_filters(kwargs: dict[str, object], targets: list[str]) -> None:
    view = view_of(entry("eu/berlin/line-1", "press-1"),
                   entry("eu/berlin/line-1", "press-2", "Failed"),
                   entry("eu/berlin/line-1", "press-3", seen=5 * HOUR))

    assert [r.target for r in view.filtered(**kwargs)] == targets  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (-5, "0s"), (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"),
    (3600, "1h00m"), (3 * 3600 + 5 * 60, "3h05m"), (86400, "1d00h"), (4 * 86400 + 7200, "4d02h"),
])
def test_ages(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(("counts", "colour"), [
    ({}, "empty"), ({"Ready": 3}, "ready"), ({"Ready": 3, "Progressing": 1}, "progressing"),
    ({"Ready": 3, "Unknown": 1}, "stale"), ({"Stale": 1, "Progressing": 2}, "stale"),
    ({"Stale": 1, "Failed": 1}, "failed"), ({"Invalid": 1}, "failed"), ({"Ready": 0}, "empty"),
])
def test_health_colours(counts: dict[str, int], colour: str) -> None:
    assert health(counts) == colour


def test_a_filtered_view_rolls_up_its_subtree_only() -> None:
    view = view_of(entry("eu/berlin/line-1", "press-1")).filtered(site="berlin")

    assert view.scope == ("eu/berlin",)
    assert [s.path for s in view.site_rollups()] == ["eu/berlin", "eu/berlin/line-1"]
    assert view.in_scope("eu/berlin/line-1") and not view.in_scope("eu/paris")


def test_a_target_whose_document_is_invalid_is_in_the_fleet_with_the_error() -> None:
    broken = FleetIndex(HEAD, (), (), {}, (), 1, broken=("ghost",))

    (row,) = join(broken, status(entry("eu/rome", "ghost")), now=NOW, stale_after=HOUR)

    assert row.in_fleet and row.state == "Ready"
    assert row.errors == (f"Target/ghost: its document is invalid at {HEAD[:12]}",)
