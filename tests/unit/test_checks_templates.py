"""reconciler.core.checks.templates, run directly on a small fleet written to a temporary
directory: templates as written (once per solution) and what rendering each pair could not
do (once per pair, unless the template itself is wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.templates import TemplateChecks, contains_template
from reconciler.core.validation import validate_repository
from reconciler.gitops.releases import ReleaseResolver, local_exporter
from tests.unit.checkkit import Edit, commit_all, git, lines, load, render, write

SOLUTION = "solutions/app/solution.yaml"
CONTENT = 'content: "${{ params.tz }}:${{ params.port }}"'
WHERE = "solutions/app/solution.yaml:21: Solution/app: spec.components[1].properties.content: "


def content(text: str) -> list[Edit]:
    return [(SOLUTION, CONTENT, f"content: {text}")]


def check(tmp_path: Path, edits: list[Edit]) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    checks = TemplateChecks(findings)
    checks.check_solutions(fleet)
    for placement in render(fleet).pairs:
        checks.check_placement(placement)
    return lines(findings)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([], [], id="valid"),
        pytest.param(content('"${% if params.tz %}x${% endif %}"'), [], id="block-is-fine"),
        pytest.param(content('"${{ tenant.name }}"'),
                     [WHERE + "template names undefined 'tenant' (known: params, target, site, "
                      "instance, solution)"], id="undefined-root"),
        pytest.param(content('"${{ params.tzz }}"'),
                     [WHERE + "template names undefined parameter 'tzz' (did you mean 'tz'?)"],
                     id="undefined-parameter"),
        pytest.param(content('"${{ params.tz "'),
                     [WHERE + "template syntax error: unexpected end of template, expected "
                      "'end of print statement'."], id="syntax-error"),
        pytest.param(content('"${{ params.tz | nofilter }}"'),
                     [WHERE + "template syntax error: No filter named 'nofilter'."],
                     id="unknown-filter"),
        pytest.param([(SOLUTION, CONTENT, 'content: x\n        env: {A: ["${{ params.nope }}"]}')],
                     ["solutions/app/solution.yaml:22: Solution/app: "
                      "spec.components[1].properties.env.A[0]: template names undefined "
                      "parameter 'nope'"], id="nested-property"),
        pytest.param(content('"${{ target.labels.zone }}"'),
                     [WHERE + "'zone' is undefined [t1/app]"], id="render-fails-for-the-pair"),
        pytest.param(content('"${{ params.tz.upper() }}"'),
                     [WHERE + "not allowed in a sandboxed template: calls are not allowed in "
                      "templates [t1/app]"], id="call-refused-when-rendering"),
        pytest.param(content('"${{ target.labels.zone }}${{ params.nope }}"'),
                     [WHERE + "template names undefined parameter 'nope'"],
                     id="wrong-as-written-is-not-repeated-per-pair"),
    ],
)
def test_template_checks(tmp_path: Path, edits: list[Edit], expected: list[str]) -> None:
    assert check(tmp_path, edits) == expected


def test_unknown_filter_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", content('"${{ params.tz | nofilter }}"'))
    report = validate_repository(repo)
    assert [d.format() for d in report.errors] == [
        WHERE + "template syntax error: No filter named 'nofilter'."]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("plain", False, id="plain-string"),
        pytest.param("${{ params.x }}", True, id="expression"),
        pytest.param("${% if x %}y${% endif %}", True, id="block"),
        pytest.param({"a": [1, {"b": "x ${{ params.x }}"}]}, True, id="nested"),
        pytest.param({"${{ key }}": "value"}, False, id="keys-are-not-templated"),
        pytest.param(["a", 3, None], False, id="list-without"),
    ],
)
def test_contains_template(value: Any, expected: bool) -> None:
    assert contains_template(value) is expected


PINNED = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: b-pinned}
spec:
  solution: app
  version: 1.0.0
  targets: {names: [t1]}
"""


def test_a_release_that_cannot_render_is_reported_though_the_head_template_is_wrong(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # release 1.0.0 uses a label the target has at the tag
    write(repo, [*content('"${{ target.labels.zone }}"'),
                 ("targets.yaml", "{name: t1}", "{name: t1, labels: {zone: a}}")])
    commit_all(repo, "app 1.0.0")
    git(repo, "tag", "-a", "app/v1.0.0", "-m", "app 1.0.0")
    # the head: the label is gone, so only rendering the release finds it; the same property
    # of the head solution names an undeclared parameter, found as written
    write(repo, content('"${{ params.nope }}"'), files={"pinned.yaml": PINNED})
    commit_all(repo, "app: broken head")
    git_dir = repo / ".git"
    report = validate_repository(repo, releases=ReleaseResolver(git_dir, local_exporter(git_dir)))
    found = [(d.format(), d.target, d.instance) for d in report.errors]
    assert found == [
        (WHERE + "'zone' is undefined", "t1", "b-pinned"),
        (WHERE + "template names undefined parameter 'nope'", "", ""),
    ]
