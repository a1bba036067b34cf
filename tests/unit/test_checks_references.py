"""reconciler.core.checks.references, run directly on a small fleet written to a temporary
directory: every name leads somewhere, nothing loops, and pinned releases are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.checks import references
from reconciler.core.checks.findings import Findings
from reconciler.core.loading import load_fleet
from reconciler.gitops.releases import ReleaseResolver, local_exporter
from tests.unit.checkkit import Edit, commit_all, git, lines, load, render, write

SOLUTION = "solutions/app/solution.yaml"
BOUND = "    - {role: config-file, provider: file, config: {root: /srv/t1}}\n"


def check(tmp_path: Path, edits: list[Edit]) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    references.check_sites(fleet, findings)
    references.check_targets(fleet, findings)
    references.check_components(fleet, findings)
    references.check_instances(
        fleet, {n: fleet.solutions.get(i.solution) for n, i in fleet.instances.items()}, findings)
    references.check_unplaced(render(fleet).unplaced, findings)
    return lines(findings)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([], [], id="valid"),
        pytest.param([("sites.yaml", "parent: eu", "parent: europe")],
                     ["sites.yaml:11: Site/l1: spec.parent: unknown parent site 'europe'"],
                     id="unknown-parent"),
        pytest.param([("sites.yaml", "metadata: {name: eu}\nspec:\n",
                       "metadata: {name: eu}\nspec:\n  parent: l1\n")],
                     ["sites.yaml:5: Site/eu: spec.parent: cycle in site parents: eu -> l1 -> eu"],
                     id="parent-cycle-reported-once"),
        pytest.param([("reconciler.yaml", "[region, line]", "[region]")],
                     ["sites.yaml:11: Site/l1: spec.parent: site is 2 levels deep but the "
                      "hierarchy has 1 (region)"], id="deeper-than-hierarchy"),
        pytest.param([("sites.yaml", "  parent: eu\n",
                       "  parent: eu\n  solutionParams:\n    ap: {tz: UTC}\n")],
                     ["sites.yaml:13: Site/l1: spec.solutionParams.ap: unknown solution 'ap' "
                      "(did you mean 'app'?)"], id="scoped-params-of-unknown-solution"),
        pytest.param([("targets.yaml", "site: l1", "site: l2")],
                     ["targets.yaml:5: Target/t1: spec.site: unknown site 'l2'"],
                     id="target-site"),
        pytest.param([("targets.yaml", BOUND, BOUND + BOUND.replace("/srv/t1", "/srv/t2"))],
                     ["targets.yaml:8: Target/t1: spec.bindings[1].role: role 'config-file' "
                      "bound twice"], id="role-bound-twice"),
        pytest.param([(SOLUTION, "    - name: extra\n", "    - name: conf\n")],
                     ["solutions/app/solution.yaml:16: Solution/app: spec.components[1].name: "
                      "duplicate component name 'conf'",
                      "solutions/app/solution.yaml:18: Solution/app: "
                      "spec.components[1].dependsOn[0]: a component cannot depend on itself"],
                     id="duplicate-component"),
        pytest.param([(SOLUTION, "dependsOn: [conf]", "dependsOn: [cnf]")],
                     ["solutions/app/solution.yaml:18: Solution/app: "
                      "spec.components[1].dependsOn[0]: unknown component 'cnf' (did you mean "
                      "'conf'?)"], id="depends-on-unknown"),
        pytest.param([(SOLUTION, "      type: config-file\n      properties:\n        path: "
                       "app/conf.txt", "      type: config-file\n      dependsOn: [extra]\n"
                       "      properties:\n        path: app/conf.txt")],
                     ["solutions/app/solution.yaml:13: Solution/app: "
                      "spec.components[0].dependsOn: cycle in dependsOn: conf -> extra -> conf"],
                     id="depends-on-cycle"),
        pytest.param([("instances.yaml", "solution: app", "solution: apq")],
                     ["instances.yaml:5: Instance/app: spec.solution: unknown solution 'apq' "
                      "(did you mean 'app'?) [/app]"], id="instance-solution"),
        pytest.param([("instances.yaml", "names: [t1]", "names: [t1, t2]")],
                     ["instances.yaml:7: Instance/app: spec.targets.names[1]: unknown target "
                      "'t2' [/app]"], id="instance-target-name"),
        pytest.param([("instances.yaml", "names: [t1]", "selector: {sites: [eu/l2]}")],
                     ["instances.yaml:6: Instance/app: spec.targets: warning: selects no target "
                      "[/app]",
                      "instances.yaml:7: Instance/app: spec.targets.selector.sites[0]: unknown "
                      "site 'eu/l2' [/app]"], id="selector-site-and-nothing-selected"),
        pytest.param([("instances.yaml", "names: [t1]", "selector: {sites: [eu/l1]}")],
                     [], id="selector-site-path"),
        pytest.param([("instances.yaml", "  solution: app\n",
                       "  solution: app\n  profile: bog\n")],
                     ["instances.yaml:6: Instance/app: spec.profile: unknown profile 'bog' of "
                      "solution 'app' (did you mean 'big'?) [/app]"], id="instance-profile"),
    ],
)
def test_reference_checks(tmp_path: Path, edits: list[Edit], expected: list[str]) -> None:
    assert check(tmp_path, edits) == expected


def test_a_broken_document_is_not_reported_again_as_unknown(tmp_path: Path) -> None:
    # the solution fails its schema and is left out of the fleet: naming it is no new error
    repo = write(tmp_path / "repo", [(SOLUTION, "  components:\n", "  colour: red\n"
                                      "  components:\n")])
    fleet = load_fleet(repo.resolve()).fleet
    findings = Findings()
    references.check_instances(fleet, {"app": None}, findings)
    assert lines(findings) == []


PINNED = ("instances.yaml", "  solution: app\n", "  solution: app\n  version: 1.2.0\n")


def test_versions_without_the_tags_are_warned_and_left_to_the_head(tmp_path: Path) -> None:
    fleet = load(tmp_path / "repo", [PINNED])
    findings = Findings()
    assert references.pinned_releases(fleet, None, findings) == {}
    assert lines(findings) == [
        "instances.yaml:6: Instance/app: spec.version: warning: version 1.2.0 not checked (the "
        "repository's tags are not available here); the head solution is shown [/app]"]


@pytest.mark.parametrize(
    ("tag", "found"),
    [
        pytest.param("app/v1.2.0", True, id="released"),
        pytest.param("app/v1.1.0", False, id="not-released"),
    ],
)
def test_pinned_releases_from_the_tags(tmp_path: Path, tag: str, found: bool) -> None:
    repo = write(tmp_path / "repo")
    commit = commit_all(repo, "app")
    git(repo, "tag", "-a", tag, "-m", tag)
    write(repo, [PINNED])
    commit_all(repo, "pin app 1.2.0")
    fleet = load(repo, [PINNED])
    resolver = ReleaseResolver(repo / ".git", local_exporter(repo / ".git"))
    findings = Findings()
    pinned = references.pinned_releases(fleet, resolver, findings)
    if found:
        solution = pinned["app"]
        assert solution is not None and solution.release == "app/v1.2.0"
        assert lines(findings) == []
        assert resolver.commits == {commit}
    else:
        assert pinned == {"app": None}
        assert lines(findings) == [
            "instances.yaml:6: Instance/app: spec.version: no release 1.2.0 of solution 'app' "
            "(tag app/v1.2.0); released: 1.1.0 [/app]"]
