"""Which errors stop a target: Report.errors_for, on real files with the real validator."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.validation import Report, validate_repository
from reconciler.gitops.releases import validate_checkout
from tests.unit.checkkit import commit_all, write


def pinned_to_a_missing_release(root: Path) -> Report:
    write(root, [("instances.yaml", "  solution: app\n", "  solution: app\n  version: 9.9.9\n")])
    commit_all(root, "fleet")
    return validate_checkout(root)


def test_an_instance_that_could_not_be_rendered_still_stops_the_targets_it_selects(
        tmp_path: Path) -> None:
    # a pinned release that does not exist: the instance renders nothing, so without its
    # error the engine would take its components for removed and prune them
    report = pinned_to_a_missing_release(tmp_path)
    assert "app" not in {p.instance.name for p in report.placements.get("t1", ())}
    errors = report.errors_for("t1")
    assert errors, [d.format() for d in report.errors]
    assert all(d.instance == "app" or not d.instance for d in errors)


def test_an_instance_error_does_not_stop_a_target_the_instance_does_not_select(
        tmp_path: Path) -> None:
    report = pinned_to_a_missing_release(tmp_path)
    others = [name for name in report.fleet.targets if name != "t1"]
    for name in others:
        assert [d for d in report.errors_for(name) if d.instance == "app"] == []


def test_a_valid_fleet_stops_nothing(tmp_path: Path) -> None:
    report = validate_repository(write(tmp_path))
    assert report.errors_for("t1") == []
