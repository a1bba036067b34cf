"""A validation report as stored bytes and back: every kind of value the model holds today
(windows with their triggers, rollouts, projects, pinned releases, diagnostics) comes back
equal, and nothing outside the allow-list is written or read."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.validation import Report, validate_repository
from reconciler.core.windows import Window, window_state
from reconciler.engine.revision_pickle import dump_report, load_report

API = "reconciler/v1"
BERLIN = {"schedule": "0 22 * * 1-5", "duration": "4h", "timezone": "Europe/Berlin"}


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def write(root: Path, rel: str, *docs: dict[str, Any]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.fixture
def report(tmp_path: Path) -> Report:
    """A fleet using windows at every level, a rollout, projects, and one error."""
    root = tmp_path / "fleet"
    write(root, "reconciler.yaml", doc("Settings", "fleet", {"hierarchy": ["plant", "line"]}))
    write(root, "sites/sites.yaml",
          doc("Site", "hq", {"windows": [BERLIN]}),
          *(doc("Site", f"line-{i}", {"parent": "hq"}) for i in (1, 2)))
    write(root, "sites/targets.yaml", *(
        doc("Target", f"t{i}", {"site": f"line-{i}", "windows": [{"schedule": "30 1 * * *",
                                                                  "duration": 3600}],
                                "bindings": [{"role": "config-file", "provider": "file",
                                              "config": {"root": f"files/t{i}"}}]})
        for i in (1, 2)))
    write(root, "teams/app/solution.yaml", doc("Solution", "app", {
        "parameters": {"level": {"type": "integer", "default": 1}},
        "components": [{"name": "conf", "type": "config-file",
                        "properties": {"path": "app.conf",
                                       "content": "level ${{ params.level }}\n"}}]}))
    write(root, "teams/app/instances.yaml",
          doc("Instance", "app", {"solution": "app", "targets": {"selector": {"sites": ["hq"]}},
                                  "windows": [BERLIN],
                                  "rollout": {"waves": [{"name": "canary", "names": ["t1"]}]}}),
          doc("Instance", "broken", {"solution": "missing", "targets": {"names": ["t2"]}}))
    write(root, "projects.yaml",
          doc("Project", "platform", {"platform": True, "paths": ["sites/**", "*.yaml"]}),
          doc("Project", "apps", {"paths": ["teams/app/**"], "providers": ["file"]}))
    found = validate_repository(root, revision="0" * 40)
    assert found.errors and found.placements, found.diagnostics
    return found


def windows(report: Report) -> list[Window]:
    fleet = report.fleet
    return [*(w for s in fleet.sites.values() for w in s.windows),
            *(w for t in fleet.targets.values() for w in t.windows),
            *(w for i in fleet.instances.values() for w in i.windows)]


def test_a_report_comes_back_equal(report: Report) -> None:
    back = load_report(dump_report(report))
    assert back.fleet == report.fleet
    assert back.placements == report.placements
    assert back.diagnostics == report.diagnostics
    assert back.manifest_files == report.manifest_files
    assert back.fleet.instances["app"].rollout == report.fleet.instances["app"].rollout
    assert back.fleet.projects == report.fleet.projects and back.fleet.projects


def test_windows_come_back_with_working_triggers(report: Report) -> None:
    before, after = windows(report), windows(load_report(dump_report(report)))
    assert len(after) == 4 and after == before
    for at in (datetime(2026, 3, 2, 21, 30, tzinfo=UTC), datetime(2026, 3, 29, 0, 45, tzinfo=UTC)):
        assert window_state([after], at) == window_state([before], at)


def test_a_report_holding_another_class_is_not_written(report: Report) -> None:
    with pytest.raises(pickle.PicklingError, match="builtins"):
        dump_report(dataclasses.replace(report, manifest_files=(os.system,)))  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [
    pickle.dumps(os.system), pickle.dumps(getattr), pickle.dumps(dataclasses.replace),
    pickle.dumps({"not": "a report"}),
])
def test_a_payload_naming_anything_else_is_refused(payload: bytes) -> None:
    with pytest.raises(pickle.UnpicklingError):
        load_report(payload)


def _core_objects() -> Counter[str]:
    """How many objects of each class of reconciler.core the collector tracks now."""
    return Counter(type(o).__qualname__ for o in gc.get_objects()
                   if str(type(o).__module__).startswith("reconciler.core."))


def test_a_report_read_back_holds_no_reference_cycles(report: Report) -> None:
    # load_report moves what is alive out of the collector's reach (gc.freeze): that leaks
    # nothing only while a report, once dropped, is freed by reference counting alone. The
    # model's classes keep no __weakref__ (slots), so what is freed is counted instead: no
    # collection runs, so no other garbage can make this flaky
    data = dump_report(report)
    gc.disable()
    try:
        gc.unfreeze()  # what an earlier load froze is counted too
        before = _core_objects()
        back = load_report(data)
        gc.unfreeze()
        loaded = _core_objects() - before
        assert {"Report", "Fleet", "Placement", "Target", "Component", "Origin"} <= set(loaded)
        del back
        assert _core_objects() == before  # without a collection
    finally:
        gc.enable()


def test_a_report_is_read_where_it_is_in_a_file(report: Report) -> None:
    data = b"reconciler-revision\n{}\n" + dump_report(report)
    back = load_report(data, offset=data.index(b"\n", 20) + 1)
    assert back.placements == report.placements and back.fleet == report.fleet
