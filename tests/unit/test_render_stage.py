"""reconciler.core.rendering.render_fleet, the render stage: every (instance, target) pair of a
revision rendered once, in a stable order, from the solution each instance is given."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.core.rendering import render_fleet
from reconciler.core.secrets import SecretReader
from tests.unit.checkkit import TARGETS, load

SOLUTION = "solutions/app/solution.yaml"
THREE_TARGETS = ("targets.yaml", TARGETS, "---\n".join(
    TARGETS.replace("t1", name) for name in ("t3", "t1", "t2")))
INSTANCES = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: zeta}
spec:
  solution: app
  targets: {names: [t2, t1]}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: alpha}
spec:
  solution: app
  targets: {selector: {sites: [eu]}}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: lonely}
spec:
  solution: app
  targets: {selector: {matchLabels: {role: none}}}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: ghost}
spec:
  solution: missing
  targets: {names: [t1]}
"""


def test_every_pair_once_by_instance_then_target(tmp_path: Path) -> None:
    fleet = load(tmp_path / "repo", [THREE_TARGETS], files={"instances.yaml": INSTANCES})
    solutions = {name: fleet.solutions["app"] for name in ("zeta", "alpha", "lonely")}
    rendering = render_fleet(fleet, solutions, revision="abc123")
    assert [(p.instance.name, p.target.name) for p in rendering.pairs] == [
        ("alpha", "t1"), ("alpha", "t2"), ("alpha", "t3"), ("zeta", "t1"), ("zeta", "t2")]
    assert {t: [p.instance.name for p in ps] for t, ps in rendering.placements.items()} == {
        "t1": ["alpha", "zeta"], "t2": ["alpha", "zeta"], "t3": ["alpha"]}
    assert list(rendering.placements) == ["t1", "t2", "t3"]
    # no solution given: not rendered; a solution but no target: unplaced
    assert [i.name for i in rendering.unplaced] == ["lonely"]
    first = rendering.pairs[0]
    assert [c.name for c in first.components] == ["conf", "extra"]
    assert {c.revision for p in rendering.pairs for c in p.components} == {"abc123"}
    assert first.components[1].properties["content"] == "Europe/Berlin:8080"


def test_secrets_are_read_with_the_resolver_given(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db").write_text("s3cret-value\n")
    fleet = load(tmp_path / "repo", [
        (SOLUTION, "    tz: {type: string, default: UTC}\n",
         "    tz: {type: string, default: UTC}\n    pw: {type: string}\n"),
        (SOLUTION, "${{ params.port }}", "${{ params.pw }}"),
        ("instances.yaml", "  solution: app\n",
         "  solution: app\n  params: {pw: {secretFrom: {file: db}}}\n"),
    ])
    solutions = {"app": fleet.solutions["app"]}
    read = render_fleet(fleet, solutions, secrets=SecretReader(secrets)).pairs[0]
    assert read.params["pw"].secret and read.values["pw"] == "s3cret-value"
    assert read.components[1].properties["content"] == "Europe/Berlin:s3cret-value"
    assert read.components[1].secret_params == frozenset({"pw"})
    # without a resolver the value stays unresolved and renders as a named placeholder
    unread = render_fleet(fleet, solutions).pairs[0]
    assert unread.params["pw"].unresolved
    assert unread.components[1].properties["content"] == "Europe/Berlin:<secret db>"


def test_a_release_renders_from_its_own_checkout(tmp_path: Path) -> None:
    released = load(tmp_path / "release", [(SOLUTION, "${{ params.tz }}:${{ params.port }}",
                                            "v1 ${{ params.tz }}")])
    fleet = load(tmp_path / "repo")
    solution = replace(released.solutions["app"], root=released.root, release="app/v1.0.0")
    placement = render_fleet(fleet, {"app": solution}).pairs[0]
    assert placement.solution.release == "app/v1.0.0"
    assert placement.components[1].properties["content"] == "v1 Europe/Berlin"
    assert {c.repo_root for c in placement.components} == {released.root}
    assert placement.components[0].base_dir == released.root / "solutions/app"
    assert placement.params["port"].origin.path == "app/v1.0.0:solutions/app/solution.yaml"
