"""reconciler.core.validation: the checks that need more than one document.

The bad-input corpus (test_bad_input.py) proves that each single defect is named; these
tests vary each cross-check (where it applies, at which level, for which (instance, target)
pair, with which line) on a small valid fleet written to a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.diagnostics import Severity
from reconciler.core.validation import Report, validate_repository

SETTINGS = """\
apiVersion: reconciler/v1
kind: Settings
metadata: {name: fleet}
spec:
  hierarchy: [region, factory, line]
"""

SITES = """\
apiVersion: reconciler/v1
kind: Site
metadata: {name: eu}
spec:
  params:
    tz: Europe/Berlin
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: berlin}
spec:
  parent: eu
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: l1}
spec:
  parent: berlin
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: l2}
spec:
  parent: berlin
"""

TARGETS = """\
apiVersion: reconciler/v1
kind: Target
metadata: {name: gw1, labels: {role: gw}}
spec:
  site: l1
  bindings:
    - {role: config-file, provider: file, config: {root: /srv/gw1}}
---
apiVersion: reconciler/v1
kind: Target
metadata: {name: gw2, labels: {role: gw}}
spec:
  site: l2
  bindings:
    - {role: config-file, provider: file, config: {root: /srv/gw2}}
"""

SOLUTION = """\
apiVersion: reconciler/v1
kind: Solution
metadata: {name: app}
spec:
  parameters:
    tz: {type: string, default: UTC}
    replicas:
      type: integer
      min: 1
      max: 5
      default: 1
      editableAt: [factory, line, target, instance]
    mode: {type: string, allowed: [fast, safe], default: safe}
  profiles:
    big: {replicas: 4}
  components:
    - name: conf
      type: config-file
      properties:
        path: app/conf.txt
        template: conf.tmpl
    - name: extra
      type: config-file
      dependsOn: [conf]
      properties:
        path: app/extra.txt
        content: "${{ params.tz }} x${{ params.replicas }} ${{ params.mode }}"
"""

INSTANCES = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: app}
spec:
  solution: app
  targets:
    selector: {sites: [eu]}
"""

BASE = {
    "reconciler.yaml": SETTINGS,
    "sites.yaml": SITES,
    "targets.yaml": TARGETS,
    "solutions/app/solution.yaml": SOLUTION,
    "solutions/app/conf.tmpl": "tz=${{ params.tz }}\n",
    "instances.yaml": INSTANCES,
}

Edit = tuple[str, str, str]  # file, old text, new text


def make(tmp_path: Path, edits: list[Edit] = (),  # type: ignore[assignment]
         files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "repo"
    content = dict(BASE)
    for rel, old, new in edits:
        assert old in content[rel], (rel, old)
        content[rel] = content[rel].replace(old, new, 1)
    content.update(files or {})
    for rel, text in content.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def check(tmp_path: Path, edits: list[Edit] = (),  # type: ignore[assignment]
          files: dict[str, str] | None = None) -> Report:
    return validate_repository(make(tmp_path, edits, files))


def errors(report: Report) -> list[str]:
    return [d.format() for d in report.errors]


def assert_named(report: Report, expected: list[str]) -> None:
    lines = errors(report)
    for want in expected:
        assert any(want in line for line in lines), f"{want!r} not in {lines}"


def test_base_fleet_is_valid_and_places_both_targets(tmp_path: Path) -> None:
    report = check(tmp_path)
    assert [d.format() for d in report.diagnostics] == []
    assert sorted(report.placements) == ["gw1", "gw2"]
    assert report.ok


# -- references ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([("sites.yaml", "parent: eu", "parent: europe")],
                     "sites.yaml:12: Site/berlin: spec.parent: unknown parent site 'europe'",
                     id="site-parent"),
        pytest.param([("targets.yaml", "site: l2", "site: l3")],
                     "targets.yaml:13: Target/gw2: spec.site: unknown site 'l3'",
                     id="target-site-with-hint"),
        pytest.param([("instances.yaml", "solution: app", "solution: ap")],
                     "instances.yaml:5: Instance/app: spec.solution: unknown solution 'ap' "
                     "(did you mean 'app'?)", id="instance-solution"),
        pytest.param([("instances.yaml", "selector: {sites: [eu]}",
                       "names: [gw1, gw3]")],
                     "instances.yaml:7: Instance/app: spec.targets.names[1]: unknown target "
                     "'gw3'", id="target-name-second-in-list"),
        pytest.param([("instances.yaml", "sites: [eu]", "sites: [eu/munich]")],
                     "instances.yaml:7: Instance/app: spec.targets.selector.sites[0]: unknown "
                     "site 'eu/munich'", id="selector-site-path"),
        pytest.param([("instances.yaml", "sites: [eu]", "sites: [berlin/eu]")],
                     "unknown site 'berlin/eu'", id="selector-path-in-wrong-order"),
        pytest.param([("instances.yaml", "  solution: app\n",
                       "  solution: app\n  profile: huge\n")],
                     "instances.yaml:6: Instance/app: spec.profile: unknown profile 'huge' of "
                     "solution 'app'", id="instance-profile"),
        pytest.param([("sites.yaml", "  parent: eu\n", "  parent: eu\n  solutionParams:\n"
                       "    apps: {tz: UTC}\n")],
                     "sites.yaml:14: Site/berlin: spec.solutionParams.apps: unknown solution "
                     "'apps' (did you mean 'app'?)", id="site-solution-params"),
        pytest.param([("targets.yaml", "role: config-file, provider: file, config: "
                       "{root: /srv/gw2}", "role: config, provider: file, config: "
                       "{root: /srv/gw2}")],
                     "targets.yaml:14: Target/gw2: spec.bindings: no binding for role "
                     "'config-file' needed by component 'conf'", id="binding-role"),
        pytest.param([("targets.yaml", "provider: file, config: {root: /srv/gw1}",
                       "provider: fiel, config: {root: /srv/gw1}")],
                     "targets.yaml:7: Target/gw1: spec.bindings[0].provider: provider 'fiel' "
                     "is not installed", id="binding-provider"),
        pytest.param([("solutions/app/solution.yaml", "dependsOn: [conf]",
                       "dependsOn: [conf, confs]")],
                     "solutions/app/solution.yaml:24: Solution/app: "
                     "spec.components[1].dependsOn[1]: unknown component 'confs' (did you "
                     "mean 'conf'?)", id="depends-on"),
        pytest.param([("solutions/app/solution.yaml", "big: {replicas: 4}",
                       "big: {replica: 4}")],
                     "solutions/app/solution.yaml:15: Solution/app: spec.profiles.big.replica: "
                     "unknown parameter 'replica' (did you mean 'replicas'?)",
                     id="profile-parameter"),
    ],
)
def test_references(tmp_path: Path, edits: list[Edit], expected: str) -> None:
    report = check(tmp_path, edits)
    assert_named(report, [expected])


def test_reference_to_a_broken_document_is_reported_once(tmp_path: Path) -> None:
    # the solution fails its schema; instances naming it must not add "unknown solution"
    report = check(tmp_path, [("solutions/app/solution.yaml", "  components:\n",
                               "  colour: red\n  components:\n")])
    lines = errors(report)
    assert any("spec.colour: unknown field" in line for line in lines), lines
    assert not any("unknown solution" in line for line in lines), lines


# -- cycles --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([("sites.yaml", "metadata: {name: eu}\nspec:\n",
                       "metadata: {name: eu}\nspec:\n  parent: eu\n")],
                     "Site/eu: spec.parent: cycle in site parents: eu -> eu", id="self-parent"),
        pytest.param([("sites.yaml", "metadata: {name: eu}\nspec:\n",
                       "metadata: {name: eu}\nspec:\n  parent: l1\n")],
                     "spec.parent: cycle in site parents: berlin -> eu -> l1 -> berlin",
                     id="three-site-loop"),
        pytest.param([("solutions/app/solution.yaml", "dependsOn: [conf]",
                       "dependsOn: [extra]")],
                     "spec.components[1].dependsOn[0]: a component cannot depend on itself",
                     id="component-depends-on-itself"),
        pytest.param([("solutions/app/solution.yaml", "      properties:\n        path: "
                       "app/conf.txt", "      dependsOn: [last]\n      properties:\n        "
                       "path: app/conf.txt"),
                      ("solutions/app/solution.yaml", "  components:\n",
                       "  components:\n    - name: last\n      type: config-file\n"
                       "      dependsOn: [extra]\n      properties: {path: l, content: l}\n")],
                     "cycle in dependsOn: last -> extra -> conf -> last",
                     id="three-component-loop"),
    ],
)
def test_cycles(tmp_path: Path, edits: list[Edit], expected: str) -> None:
    report = check(tmp_path, edits)
    assert_named(report, [expected])
    # one finding: no per-site echo (depth, unknown parent) of the same loop
    assert len(errors(report)) == 1, errors(report)


# -- duplicate names -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"more.yaml": TARGETS.split("---\n")[1]},
                     "targets.yaml:11: Target/gw2: metadata.name: duplicate name: Target/gw2 is "
                     "already defined at more.yaml:3", id="target-in-two-files"),
        pytest.param({"instances.yaml": INSTANCES + "---\n" + INSTANCES},
                     "instances.yaml:11: Instance/app: metadata.name: duplicate name: "
                     "Instance/app is already defined at instances.yaml:3",
                     id="instance-twice-in-one-file"),
    ],
)
def test_duplicate_names(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert_named(check(tmp_path, files=files), [expected])


def test_same_name_in_different_kinds_is_allowed(tmp_path: Path) -> None:
    site = "apiVersion: reconciler/v1\nkind: Site\nmetadata: {name: app}\nspec: {parent: eu}\n"
    report = check(tmp_path, files={"extra-site.yaml": site})
    assert errors(report) == []
    assert "app" in report.fleet.sites and "app" in report.fleet.solutions


# -- editableAt ----------------------------------------------------------------------------

SET_REPLICAS = {
    "region": ("sites.yaml", "    tz: Europe/Berlin\n", "    tz: Europe/Berlin\n    replicas: 2\n"),
    "region-scoped": ("sites.yaml", "    tz: Europe/Berlin\n",
                      "    tz: Europe/Berlin\n  solutionParams:\n    app: {replicas: 2}\n"),
    "factory": ("sites.yaml", "  parent: eu\n", "  parent: eu\n  params: {replicas: 2}\n"),
    "factory-scoped": ("sites.yaml", "  parent: eu\n",
                       "  parent: eu\n  solutionParams:\n    app: {replicas: 2}\n"),
    "line": ("sites.yaml", "  parent: berlin\n", "  parent: berlin\n  params: {replicas: 2}\n"),
    "target": ("targets.yaml", "  site: l1\n", "  site: l1\n  params: {replicas: 2}\n"),
    "instance": ("instances.yaml", "  solution: app\n",
                 "  solution: app\n  params: {replicas: 2}\n"),
}


@pytest.mark.parametrize(
    ("editable", "where", "allowed"),
    [
        pytest.param("[factory, line, target, instance]", "region", False, id="region-refused"),
        pytest.param("[factory, line, target, instance]", "region-scoped", False,
                     id="region-scoped-refused"),
        pytest.param("[factory, line, target, instance]", "factory", True, id="factory-ok"),
        pytest.param("[factory, line, target, instance]", "factory-scoped", True,
                     id="factory-scoped-ok"),
        pytest.param("[factory, line, target, instance]", "line", True, id="line-ok"),
        pytest.param("[factory, line, target, instance]", "target", True, id="target-ok"),
        pytest.param("[factory, line, target, instance]", "instance", True, id="instance-ok"),
        pytest.param("[region]", "region", True, id="only-region-ok"),
        pytest.param("[region]", "factory-scoped", False, id="only-region-factory-refused"),
        pytest.param("[region]", "line", False, id="only-region-line-refused"),
        pytest.param("[region]", "target", False, id="only-region-target-refused"),
        pytest.param("[region]", "instance", False, id="only-region-instance-refused"),
        pytest.param("[]", "instance", False, id="empty-list-refuses-everything"),
    ],
)
def test_editable_at_levels(tmp_path: Path, editable: str, where: str, allowed: bool) -> None:
    report = check(tmp_path, [
        ("solutions/app/solution.yaml", "editableAt: [factory, line, target, instance]",
         f"editableAt: {editable}"),
        SET_REPLICAS[where],
    ])
    level = where.removesuffix("-scoped")
    refused = [e for e in errors(report) if f"cannot be set at level '{level}'" in e]
    if allowed:
        assert errors(report) == []
    else:
        assert len(refused) == 1, errors(report)
        file = SET_REPLICAS[where][0]
        text = (tmp_path / "repo" / file).read_text().splitlines()
        line = next(i for i, t in enumerate(text, 1) if "replicas: 2" in t)
        assert refused[0].startswith(f"{file}:{line}: "), refused


def test_profiles_are_not_a_level(tmp_path: Path) -> None:
    report = check(tmp_path, [("solutions/app/solution.yaml",
                               "editableAt: [factory, line, target, instance]",
                               "editableAt: [line]"),
                              ("instances.yaml", "  solution: app\n",
                               "  solution: app\n  profile: big\n")])
    assert errors(report) == []
    assert report.placements["gw1"][0].params["replicas"].value == 4


def test_unknown_level_in_editable_at(tmp_path: Path) -> None:
    report = check(tmp_path, [("solutions/app/solution.yaml",
                               "editableAt: [factory, line, target, instance]",
                               "editableAt: [factory, plant]")])
    assert_named(report, ["solutions/app/solution.yaml:12: Solution/app: "
                          "spec.parameters.replicas.editableAt: unknown level 'plant'"])


# -- schema of resolved values, per (instance, target) pair --------------------------------

def test_value_invalid_on_one_target_only_names_that_target(tmp_path: Path) -> None:
    report = check(tmp_path, [("sites.yaml", "  parent: berlin\n---",
                               "  parent: berlin\n  params: {replicas: 9}\n---")])
    bad = [d for d in report.errors]
    assert [d.format() for d in bad] == [
        "sites.yaml:19: Site/l1: spec.params.replicas: max value is 5 (value 9 for solution "
        "'app')"]
    assert (bad[0].target, bad[0].instance) == ("gw1", "app")
    assert [d.message for d in report.errors_for("gw1")] == [bad[0].message]
    assert report.errors_for("gw2") == []


def test_invalid_value_overridden_lower_down_is_not_an_error(tmp_path: Path) -> None:
    # the region sets an invalid mode, l1 fixes it: only gw2 (under l2) gets the bad value
    report = check(tmp_path, [
        ("sites.yaml", "    tz: Europe/Berlin\n", "    tz: Europe/Berlin\n    mode: turbo\n"),
        ("sites.yaml", "  parent: berlin\n---", "  parent: berlin\n  params: {mode: fast}\n---"),
    ])
    bad = report.errors
    assert len(bad) == 1, errors(report)
    assert bad[0].format().startswith("sites.yaml:7: Site/eu: spec.params.mode: unallowed "
                                      "value turbo")
    assert bad[0].target == "gw2"
    assert report.placements["gw1"][0].params["mode"].value == "fast"


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([("instances.yaml", "  solution: app\n",
                       "  solution: app\n  params: {replicas: '3'}\n")],
                     "instances.yaml:6: Instance/app: spec.params.replicas: must be of integer "
                     "type", id="wrong-type-from-instance"),
        pytest.param([("targets.yaml", "  site: l2\n", "  site: l2\n  params: {replicas: 0}\n")],
                     "targets.yaml:14: Target/gw2: spec.params.replicas: min value is 1",
                     id="below-min-from-target"),
        pytest.param([("solutions/app/solution.yaml", "big: {replicas: 4}",
                       "big: {replicas: 40}"),
                      ("instances.yaml", "  solution: app\n", "  solution: app\n  profile: big\n")],
                     "solutions/app/solution.yaml:15: Solution/app: spec.profiles.big.replicas: "
                     "max value is 5", id="profile-value"),
        pytest.param([("solutions/app/solution.yaml", "tz: {type: string, default: UTC}",
                       "tz: {type: string, required: true}"),
                      ("sites.yaml", "    tz: Europe/Berlin\n", "    other: 1\n")],
                     "Solution/app: spec.parameters.tz: required parameter has no value on "
                     "target 'gw1' (instance 'app')", id="required-missing-per-target"),
    ],
)
def test_resolved_value_schema(tmp_path: Path, edits: list[Edit], expected: str) -> None:
    assert_named(check(tmp_path, edits), [expected])


def test_secret_values_are_not_shown_in_errors(tmp_path: Path) -> None:
    report = check(tmp_path, [
        ("solutions/app/solution.yaml", "    mode: {type: string",
         "    token: {type: string, minlength: 20, secret: true}\n    mode: {type: string"),
        ("instances.yaml", "  solution: app\n", "  solution: app\n  params: {token: hunter2}\n"),
    ])
    # one finding per target it concerns, each hiding the value
    assert sorted(d.target for d in report.errors) == ["gw1", "gw2"]
    bad = set(errors(report))
    assert len(bad) == 1, bad
    text = bad.pop()
    assert "min length is 20" in text and "<secret>" in text and "hunter2" not in text


# -- templates -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("${{ params.timezone }}", "template names undefined parameter 'timezone'",
                     id="undefined-param-in-interpolation"),
        pytest.param("${{ parms.tz }}", "template names undefined 'parms'", id="misspelt-root"),
        pytest.param("${{ params.tz | default(params.zone) }}",
                     "template names undefined parameter 'zone'", id="undefined-in-filter-arg"),
        pytest.param("${{ site.labels.zone }}", "'zone' is undefined",
                     id="undefined-label-at-render-time"),
    ],
)
def test_undefined_template_names(tmp_path: Path, content: str, expected: str) -> None:
    report = check(tmp_path, [("solutions/app/solution.yaml",
                               '"${{ params.tz }} x${{ params.replicas }} ${{ params.mode }}"',
                               f'"{content}"')])
    bad = sorted({e for e in errors(report) if expected in e})
    assert bad, errors(report)
    assert len(bad) == 1
    # a template that is wrong in itself is reported once; one that fails only with some
    # target's values is reported for each target it stops
    matching = [d for d in report.errors if expected in d.message]
    static = "is undefined" not in expected
    assert sorted(d.target for d in matching) == ([""] if static else ["gw1", "gw2"])
    assert bad[0].startswith("solutions/app/solution.yaml:27: Solution/app: "
                             "spec.components[1].properties.content: ")


def test_undefined_name_in_a_nested_property(tmp_path: Path) -> None:
    report = check(tmp_path, [("solutions/app/solution.yaml", "        path: app/conf.txt\n",
                               "        path: app/conf.txt\n        mode: '${{ params.perm }}'\n")])
    assert_named(report, ["solutions/app/solution.yaml:21: Solution/app: "
                          "spec.components[0].properties.mode: template names undefined "
                          "parameter 'perm'"])


# -- repository paths ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("template", "extra", "expected"),
    [
        pytest.param("../../shared/conf.tmpl", {"shared/conf.tmpl": "x\n"}, None,
                     id="dotdot-inside-the-repository-is-fine"),
        pytest.param("sub/../conf.tmpl", {}, None, id="dotdot-back-into-the-same-dir"),
        pytest.param("../../../outside.tmpl", {}, "'../../../outside.tmpl' leaves the repository",
                     id="dotdot-one-level-too-far"),
        pytest.param("/etc/hostname", {}, "'/etc/hostname' is absolute", id="absolute"),
        pytest.param("missing.tmpl", {}, "'missing.tmpl' does not exist", id="missing"),
    ],
)
def test_repository_paths(tmp_path: Path, template: str, extra: dict[str, str],
                          expected: str | None) -> None:
    if template == "sub/../conf.tmpl":
        extra = {"solutions/app/sub/keep.txt": ""}
    report = check(tmp_path, [("solutions/app/solution.yaml", "template: conf.tmpl",
                               f"template: {template}")], extra)
    if expected is None:
        assert errors(report) == []
    else:
        assert_named(report, [f"solutions/app/solution.yaml:21: Solution/app: "
                              f"spec.components[0].properties.template: {expected}"])


def test_symlinked_directory_leaving_the_repository(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "conf.tmpl").write_text("secret\n")
    root = make(tmp_path, [("solutions/app/solution.yaml", "template: conf.tmpl",
                            "template: linked/conf.tmpl")])
    os.symlink(outside, root / "solutions/app/linked")
    assert_named(validate_repository(root), [
        "spec.components[0].properties.template: 'linked/conf.tmpl' is a symlink that points "
        "outside the repository"])


def test_symlink_inside_the_repository_is_fine(tmp_path: Path) -> None:
    root = make(tmp_path, [("solutions/app/solution.yaml", "template: conf.tmpl",
                            "template: alias.tmpl")])
    os.symlink("conf.tmpl", root / "solutions/app/alias.tmpl")
    assert errors(validate_repository(root)) == []


# -- report --------------------------------------------------------------------------------

def test_warnings_do_not_make_a_report_invalid(tmp_path: Path) -> None:
    report = check(tmp_path, [("instances.yaml", "sites: [eu]", "sites: [l1]"),
                              ("instances.yaml", "selector: {sites: [l1]}",
                               "selector: {sites: [l1], matchLabels: {role: none}}")])
    assert report.ok
    assert [(d.severity, d.message) for d in report.diagnostics] == [
        (Severity.WARNING, "selects no target")]
    assert report.placements == {}


def test_diagnostics_are_sorted_and_unique(tmp_path: Path) -> None:
    report = check(tmp_path, [("targets.yaml", "site: l2", "site: l9"),
                              ("sites.yaml", "parent: eu", "parent: europe")])
    keys = [(d.path, d.line) for d in report.diagnostics]
    assert keys == sorted(keys)
    assert len(set(report.diagnostics)) == len(report.diagnostics)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param("{cert: /c.pem}", "field 'tls' is required", id="dependency-missing"),
        pytest.param("{cert: /c.pem, tls: true}", None, id="dependency-present"),
    ],
)
def test_rules_relating_two_parameters(tmp_path: Path, params: str,
                                       expected: str | None) -> None:
    # dependencies/excludes need the whole set of values, not one parameter at a time
    report = check(tmp_path, [
        ("solutions/app/solution.yaml", "    mode: {type: string",
         "    tls: {type: boolean}\n    cert: {type: string, dependencies: tls}\n"
         "    mode: {type: string"),
        ("instances.yaml", "  solution: app\n", f"  solution: app\n  params: {params}\n"),
    ])
    if expected is None:
        assert errors(report) == []
    else:
        assert {e.split(" (value")[0] for e in errors(report)} == {
            f"instances.yaml:6: Instance/app: spec.params.cert: {expected}"}


def test_same_value_checked_once_is_reported_for_every_pair(tmp_path: Path) -> None:
    # the check is cached per (rules, value): each target still gets its own finding
    report = check(tmp_path, [("instances.yaml", "  solution: app\n",
                               "  solution: app\n  params: {mode: turbo}\n")])
    assert sorted((d.target, d.line) for d in report.errors) == [("gw1", 6), ("gw2", 6)]


def test_benchmark_fleet_generator_writes_a_valid_fleet(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    fleetgen = importlib.import_module("fleetgen")
    shape = fleetgen.FleetShape(regions=2, factories=1, lines=2, targets_per_line=5,
                                solutions=3, components=4, instances=6, names_per_instance=3)
    fleetgen.generate(tmp_path / "fleet", shape,
                      binding_config=fleetgen.file_binding(str(tmp_path / "out")))
    report = validate_repository(tmp_path / "fleet")
    assert errors(report) == []
    assert len(report.fleet.targets) == shape.targets == 20
    assert len(report.fleet.instances) == 6
    placed = [p for ps in report.placements.values() for p in ps]
    assert placed and all(len(p.components) == 4 for p in placed)
    # names and selectors both place something; every parameter level is used
    assert {p.instance.name.split("-")[1] for p in placed} == {"sel", "named"}
    levels = {o.level for p in placed for r in p.params.values()
              for o in (*r.overridden, r.origin)}
    assert {"default", "profile:small", "profile:large", "instance", "region", "factory",
            "line", "target"} <= levels
    conf = placed[0].components[0]
    assert conf.properties["template"] == "base.conf.tmpl"
    assert "line = " in placed[0].components[1].properties["content"]
