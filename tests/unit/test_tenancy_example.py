"""The worked example of docs/tenancy.md (docs/examples/tenancy/) is a valid fleet of a platform
and three teams, and its CODEOWNERS follows the projects' paths."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.projects import Ownership
from reconciler.core.validation import validate_repository

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tenancy"


def test_the_example_validates_cleanly() -> None:
    report = validate_repository(EXAMPLE)
    assert [d.format() for d in report.diagnostics] == []
    assert sorted(report.fleet.projects) == ["energy", "line-ops", "platform", "quality"]
    assert sum(len(p) for p in report.placements.values()) == 9
    own = Ownership(report.fleet.projects)
    owners = {name: own.owners(inst.source.path)
              for name, inst in report.fleet.instances.items()}
    assert owners == {"line-monitor": ("line-ops",), "meter-exporter": ("energy",),
                      "node-agent": ("platform",), "vision-check": ("quality",)}


def test_codeowners_follows_the_projects() -> None:
    report = validate_repository(EXAMPLE)
    rules = [line.split() for line in (EXAMPLE / ".github" / "CODEOWNERS").read_text()
             .splitlines() if line.strip() and not line.startswith("#")]
    owned = {pattern.strip("/"): team.split("/")[-1] for pattern, team in rules}
    for project in report.fleet.projects.values():
        for glob in project.paths:
            assert owned[glob.removesuffix("/**")] == project.name, glob
    assert owned["projects"] == owned["reconciler.yaml"] == "platform"
