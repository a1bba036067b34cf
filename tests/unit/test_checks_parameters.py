"""reconciler.core.checks.parameters, run directly on a small fleet written to a temporary
directory: declared names, ``editableAt`` levels and the rules applied to every placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.parameters import ParameterChecks
from reconciler.core.rendering import render_fleet
from reconciler.core.secrets import SecretReader
from reconciler.core.validation import validate_repository
from reconciler.gitops.releases import ReleaseResolver, local_exporter
from tests.unit.checkkit import Edit, commit_all, git, lines, load, write

SOLUTION = "solutions/app/solution.yaml"
PORT_RULE = ("port: {type: integer, min: 1, max: 65535, default: 8080, "
             "editableAt: [line, instance]}")


def with_params(text: str) -> Edit:
    return ("instances.yaml", "  solution: app\n", f"  solution: app\n  params: {text}\n")


def declare(text: str) -> Edit:
    return (SOLUTION, "    tz: {type: string, default: UTC}\n",
            f"    tz: {{type: string, default: UTC}}\n    {text}\n")


def documents(tmp_path: Path, edits: list[Edit]) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    checks = ParameterChecks(fleet, findings)
    checks.check_sites()
    checks.check_solutions()
    checks.check_instances({n: fleet.solutions.get(i.solution)
                            for n, i in fleet.instances.items()})
    return lines(findings)


def placements(tmp_path: Path, edits: list[Edit]) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    checks = ParameterChecks(fleet, findings)
    rendering = render_fleet(fleet, {n: fleet.solutions[i.solution]
                                     for n, i in fleet.instances.items()},
                             secrets=SecretReader(tmp_path / "secrets"))
    for placement in rendering.pairs:
        checks.check_placement(placement)
    return lines(findings)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([], [], id="valid"),
        pytest.param(
            [("sites.yaml", "  parent: eu\n",
              "  parent: eu\n  solutionParams:\n    app: {prot: 1}\n")],
            ["sites.yaml:13: Site/l1: spec.solutionParams.app.prot: unknown parameter 'prot' "
             "of solution 'app' (did you mean 'port'?)"],
            id="scoped-site-param-unknown"),
        pytest.param(
            [("sites.yaml", "  params: {tz: Europe/Berlin}\n",
              "  params: {tz: Europe/Berlin}\n  solutionParams:\n    app: {port: 1}\n")],
            ["sites.yaml:7: Site/eu: spec.solutionParams.app.port: parameter 'port' cannot be "
             "set at level 'region' (editableAt: line, instance)"],
            id="scoped-site-param-at-a-refused-level"),
        pytest.param(
            [("sites.yaml", "  parent: eu\n",
              "  parent: eu\n  solutionParams:\n    other: {port: 1}\n")],
            [], id="scoped-to-an-unknown-solution-is-a-reference-error"),
        pytest.param(
            [("sites.yaml", "{tz: Europe/Berlin}", "{tz: Europe/Berlin, colour: red}"),
             ("targets.yaml", "  site: l1\n", "  site: l1\n  params: {colur: red, tz: UTC}\n")],
            ["sites.yaml:5: Site/eu: spec.params.colour: warning: no solution declares this "
             "parameter",
             "targets.yaml:6: Target/t1: spec.params.colur: warning: no solution declares this "
             "parameter"],
            id="general-param-no-solution-declares"),
        pytest.param(
            [(SOLUTION, "editableAt: [line, instance]", "editableAt: [line, plant]")],
            ["solutions/app/solution.yaml:7: Solution/app: spec.parameters.port.editableAt: "
             "unknown level 'plant' (levels: region, line, instance, target)"],
            id="editable-at-unknown-level"),
        pytest.param(
            [(SOLUTION, "big: {port: 9000}", "big: {prt: 9000}")],
            ["solutions/app/solution.yaml:9: Solution/app: spec.profiles.big.prt: unknown "
             "parameter 'prt' (did you mean 'port'?)"],
            id="profile-sets-unknown-parameter"),
        pytest.param(
            [with_params("{tzz: UTC}")],
            ["instances.yaml:6: Instance/app: spec.params.tzz: unknown parameter 'tzz' of "
             "solution 'app' (did you mean 'tz'?) [/app]"],
            id="instance-param-unknown"),
        pytest.param(
            [(SOLUTION, "editableAt: [line, instance]", "editableAt: [line]"),
             with_params("{port: 1}")],
            ["instances.yaml:6: Instance/app: spec.params.port: parameter 'port' cannot be set "
             "at level 'instance' (editableAt: line) [/app]"],
            id="instance-param-at-a-refused-level"),
    ],
)
def test_document_checks(tmp_path: Path, edits: list[Edit], expected: list[str]) -> None:
    assert documents(tmp_path, edits) == expected


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([], [], id="valid"),
        pytest.param(
            [declare("key: {type: string, required: true}")],
            ["solutions/app/solution.yaml:7: Solution/app: spec.parameters.key: required "
             "parameter has no value on target 't1' (instance 'app') [t1/app]"],
            id="required-without-value"),
        pytest.param(
            [with_params("{port: 70000}")],
            ["instances.yaml:6: Instance/app: spec.params.port: max value is 65535 (value 70000 "
             "for solution 'app') [t1/app]"],
            id="value-breaks-rule"),
        pytest.param(
            [with_params("{port: 70000}"),
             ("sites.yaml", "  parent: eu\n", "  parent: eu\n  params: {port: 80}\n")],
            [], id="bad-value-overridden-lower-down"),
        pytest.param(
            [("sites.yaml", "{tz: Europe/Berlin}", "{tz: Europe/Berlin, port: 1}")],
            ["sites.yaml:5: Site/eu: spec.params.port: parameter 'port' cannot be set at level "
             "'region' (editableAt: line, instance)"],
            id="general-site-param-at-a-refused-level"),
        pytest.param(
            [("targets.yaml", "  site: l1\n", "  site: l1\n  params: {port: 1}\n")],
            ["targets.yaml:6: Target/t1: spec.params.port: parameter 'port' cannot be set at "
             "level 'target' (editableAt: line, instance)"],
            id="general-target-param-at-a-refused-level"),
        pytest.param(
            [declare("pw: {type: string, minlength: 20, secret: true}"),
             with_params("{pw: hunter2}")],
            ["instances.yaml:6: Instance/app: spec.params.pw: min length is 20 (value <secret> "
             "for solution 'app') [t1/app]"],
            id="secret-value-not-shown"),
        pytest.param(
            [declare("tls: {type: boolean, dependencies: [cert]}\n    cert: {type: string}"),
             with_params("{tls: true}")],
            ["instances.yaml:6: Instance/app: spec.params.tls: field 'cert' is required (value "
             "True for solution 'app') [t1/app]"],
            id="rule-relating-two-parameters"),
    ],
)
def test_placement_checks(tmp_path: Path, edits: list[Edit], expected: list[str]) -> None:
    assert placements(tmp_path, edits) == expected


def test_unreadable_secret_file_is_an_error_of_the_pair(tmp_path: Path) -> None:
    found = placements(tmp_path, [declare("pw: {type: string}"),
                                  with_params("{pw: {secretFrom: {file: db}}}")])
    assert found == [f"instances.yaml:6: Instance/app: spec.params.pw: secret 'db': no such "
                     f"file in the secrets directory {tmp_path / 'secrets'} [t1/app]"]


def test_a_general_param_refused_at_its_level_is_reported_once_for_all_pairs(
        tmp_path: Path) -> None:
    second = ("apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: app2}\n"
              "spec:\n  solution: app\n  targets: {names: [t1]}\n")
    edits = [("sites.yaml", "{tz: Europe/Berlin}", "{tz: Europe/Berlin, port: 1}"),
             ("instances.yaml", "    names: [t1]\n", "    names: [t1]\n---\n" + second)]
    assert placements(tmp_path, edits) == [
        "sites.yaml:5: Site/eu: spec.params.port: parameter 'port' cannot be set at level "
        "'region' (editableAt: line, instance)"]


TWO_INSTANCES = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: a-head}
spec:
  solution: app
  targets: {names: [t1]}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: b-pinned}
spec:
  solution: app
  version: 1.0.0
  params: {port: http}
  targets: {names: [t1]}
"""


def test_a_release_is_checked_against_its_own_rules_not_the_heads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # release 1.0.0 of app: the port is a service name
    write(repo, [(SOLUTION, PORT_RULE,
                  "port: {type: string, default: http, editableAt: [line, instance]}")])
    commit_all(repo, "app 1.0.0")
    git(repo, "tag", "-a", "app/v1.0.0", "-m", "app 1.0.0")
    # the head: the port is a number; one instance follows the head, one stays on 1.0.0
    write(repo, files={"instances.yaml": TWO_INSTANCES})
    commit_all(repo, "app: numeric port")
    git_dir = repo / ".git"
    report = validate_repository(repo, releases=ReleaseResolver(git_dir, local_exporter(git_dir)))
    assert [d.format() for d in report.diagnostics] == []
    values = {p.instance.name: p.values["port"] for p in report.placements["t1"]}
    assert values == {"a-head": 8080, "b-pinned": "http"}


def test_list_values_are_checked_for_each_pair_by_their_content(tmp_path: Path) -> None:
    # t1 and t3 share the default list, t2 sets one that breaks the rule, t3 an equal one
    second = ("\n---\napiVersion: reconciler/v1\nkind: Target\nmetadata: {{name: {name}}}\n"
              "spec:\n  site: l1\n  params: {{tags: {tags}}}\n  bindings:\n"
              "    - {{role: config-file, provider: file, config: {{root: /srv/{name}}}}}\n")
    found = placements(tmp_path, [
        declare("tags: {type: list, schema: {type: string}, default: [a, b], "
                "editableAt: [target]}"),
        ("targets.yaml", "root: /srv/t1}}\n", "root: /srv/t1}}\n"
         + second.format(name="t2", tags="[a, 1]") + second.format(name="t3", tags="[a, b]")),
        ("instances.yaml", "names: [t1]", "names: [t1, t2, t3]"),
    ])
    assert found == ["targets.yaml:15: Target/t2: spec.params.tags: must be of string type "
                     "(value ['a', 1] for solution 'app') [t2/app]"]
