"""reconciler.core.checks.paths, run directly on a fleet written to a temporary directory: a
property naming a repository path must name one that exists inside the repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.paths import PathChecks
from reconciler.core.model import Fleet
from reconciler.core.rendering import Placement
from tests.unit.checkkit import TARGETS, lines, load, render

WHERE = "solutions/app/solution.yaml:15: Solution/app: spec.components[0].properties.template: "
SECOND_TARGET = [
    ("targets.yaml", TARGETS, TARGETS + "---\n" + TARGETS.replace("t1", "t2")),
    ("instances.yaml", "names: [t1]", "names: [t1, t2]"),
]


def fleet_and_pairs(tmp_path: Path) -> tuple[Fleet, list[Placement]]:
    """The base fleet on two targets, with a scripts directory and two symlinks."""
    root = tmp_path / "repo"
    fleet = load(root, SECOND_TARGET)
    (root / "solutions/app/scripts").mkdir()
    (root / "solutions/app/scripts/run.sh").write_text("#!/bin/sh\n")
    os.symlink("/etc", root / "solutions/app/outside")
    os.symlink("scripts", root / "solutions/app/inside")
    return fleet, list(render(fleet).pairs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("conf.tmpl", [], id="file-next-to-the-solution"),
        pytest.param("scripts", [], id="directory"),
        pytest.param("inside/run.sh", [], id="symlink-inside-the-repository"),
        pytest.param("../app/conf.tmpl", [], id="dot-dot-that-stays-inside"),
        pytest.param("missing.tmpl", ["'missing.tmpl' does not exist"], id="missing"),
        pytest.param("/etc/hostname", ["'/etc/hostname' is absolute; paths are relative to "
                                       "solutions/app/solution.yaml"], id="absolute"),
        pytest.param("../../../etc/hostname", ["'../../../etc/hostname' leaves the repository"],
                     id="dot-dot-out"),
        pytest.param("outside/hostname", ["'outside/hostname' is a symlink that points outside "
                                          "the repository"], id="symlink-out"),
        pytest.param(["./scripts/run.sh", "--fast"], [], id="command-line-path"),
        pytest.param(["./scripts/nope.sh"], ["'./scripts/nope.sh' does not exist"],
                     id="command-line-missing-path"),
        pytest.param(["echo", "hello/world"], [], id="command-line-program-not-a-path"),
        pytest.param("https://charts.example.org/app", [], id="url"),
        pytest.param("", [], id="empty"),
        pytest.param(42, [], id="not-a-string"),
    ],
)
def test_path_checks(tmp_path: Path, value: Any, expected: list[str]) -> None:
    fleet, pairs = fleet_and_pairs(tmp_path)
    findings = Findings()
    PathChecks(fleet, findings).check(value, pairs[0], 0, "template")
    assert lines(findings) == [f"{WHERE}{message} [t1/app]" for message in expected]


def test_each_path_is_looked_up_once_and_reported_for_every_pair(tmp_path: Path) -> None:
    fleet, (first, second) = fleet_and_pairs(tmp_path)
    findings = Findings()
    checks = PathChecks(fleet, findings)
    checks.check("missing.tmpl", first, 0, "template")
    # the answer does not depend on the target: the second pair gets the first one's finding
    # even though the file now exists
    (fleet.root / "solutions/app/missing.tmpl").write_text("")
    checks.check("missing.tmpl", second, 0, "template")
    assert lines(findings) == [f"{WHERE}'missing.tmpl' does not exist [t1/app]",
                               f"{WHERE}'missing.tmpl' does not exist [t2/app]"]
