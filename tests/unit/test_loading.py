"""reconciler.core.loading: which YAML files are manifests, and what the loader builds from them.

Each test writes a small repository into a temporary directory and loads it for real.
The bad-input corpus (test_bad_input.py) covers single defects; these tests cover how files
are found and told apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.diagnostics import Severity
from reconciler.core.loading import field_path, load_fleet

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
  params: {tz: Europe/Berlin}
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: berlin}
spec:
  parent: eu
"""

TARGET = """\
apiVersion: reconciler/v1
kind: Target
metadata:
  name: gw
  labels: {role: gateway}
spec:
  site: berlin
  bindings:
    - role: config-file
      provider: file
      config: {root: /srv/gw}
"""

SOLUTION = """\
apiVersion: reconciler/v1
kind: Solution
metadata: {name: app}
spec:
  parameters:
    tz: {type: string, default: UTC}
  components:
    - name: conf
      type: config-file
      properties:
        path: app.conf
        template: templates/app.conf.yaml
    - name: more
      type: config-file
      properties:
        path: more.conf
        template: data
"""

INSTANCE = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: app}
spec:
  solution: app
  targets: {names: [gw]}
"""

# A file that looks exactly like one of our manifests, used as a component's data.
LOOKALIKE = """\
apiVersion: reconciler/v1
kind: Site
metadata: {name: not-a-site}
spec: {parent: nowhere}
"""

K8S = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"


def repo(tmp_path: Path, files: dict[str, str], *, base: bool = True) -> Path:
    root = tmp_path / "repo"
    content = {
        "reconciler.yaml": SETTINGS,
        "sites.yaml": SITES,
        "targets/gw.yaml": TARGET,
        "solutions/app/solution.yaml": SOLUTION,
        "solutions/app/templates/app.conf.yaml": "tz: ${{ params.tz }}\n",
        "solutions/app/data/one.yaml": LOOKALIKE,
        "instances.yaml": INSTANCE,
    } if base else {}
    content.update(files)
    for rel, text in content.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def messages(root: Path) -> list[str]:
    return [d.format() for d in load_fleet(root).diagnostics]


def test_base_repository_loads_without_findings(tmp_path: Path) -> None:
    loaded = load_fleet(repo(tmp_path, {}))
    assert [d.format() for d in loaded.diagnostics] == []
    fleet = loaded.fleet
    assert set(fleet.sites) == {"eu", "berlin"}
    assert set(fleet.targets) == {"gw"} and set(fleet.solutions) == {"app"}
    assert set(fleet.instances) == {"app"}
    assert fleet.settings.hierarchy == ("region", "factory", "line")
    assert sorted(loaded.manifest_files) == ["instances.yaml", "reconciler.yaml", "sites.yaml",
                                             "solutions/app/solution.yaml", "targets/gw.yaml"]


def test_multi_document_file_holds_every_kind(tmp_path: Path) -> None:
    together = "\n---\n".join([SITES, TARGET, SOLUTION, INSTANCE])
    root = repo(tmp_path, {"solutions/app/solution.yaml": "", "sites.yaml": "",
                           "targets/gw.yaml": "", "instances.yaml": "",
                           "solutions/app/all.yml": together})
    loaded = load_fleet(root)
    assert [d.format() for d in loaded.diagnostics] == []
    assert set(loaded.fleet.sites) == {"eu", "berlin"}
    assert loaded.fleet.targets["gw"].source.path == "solutions/app/all.yml"
    assert loaded.fleet.instances["app"].source.line > loaded.fleet.targets["gw"].source.line


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("x.yaml", id="top-level"),
        pytest.param("a/b/c/d/e/deep.yaml", id="deeply-nested"),
        pytest.param("solutions/app/extra.yml", id="yml-suffix-next-to-solution"),
        pytest.param("status-like/status/x.yaml", id="status-below-top-level-is-read"),
    ],
)
def test_manifests_are_found_anywhere(tmp_path: Path, where: str) -> None:
    site = "apiVersion: reconciler/v1\nkind: Site\nmetadata: {name: extra}\nspec: {parent: eu}\n"
    loaded = load_fleet(repo(tmp_path, {where: site}))
    assert "extra" in loaded.fleet.sites
    assert loaded.fleet.sites["extra"].source.path == where
    assert where in loaded.manifest_files


@pytest.mark.parametrize(
    ("files", "expected", "severity"),
    [
        pytest.param({"deploy/k8s.yaml": K8S},
                     "deploy/k8s.yaml: warning: not a reconciler manifest and not referenced",
                     Severity.WARNING, id="foreign-file-is-a-warning"),
        pytest.param({"ci.yaml": "stages: [build, test]\n"},
                     "ci.yaml: warning: not a reconciler manifest", Severity.WARNING,
                     id="plain-mapping-is-a-warning"),
        pytest.param({"list.yaml": "- a\n- b\n"},
                     "list.yaml: warning: not a reconciler manifest", Severity.WARNING,
                     id="top-level-list-is-a-warning"),
        pytest.param({"mixed.yaml": LOOKALIKE.replace("nowhere", "eu") + "---\n" + K8S},
                     "mixed.yaml:6: document is not a reconciler manifest", Severity.ERROR,
                     id="foreign-doc-in-manifest-file-is-an-error"),
        pytest.param({"typo.yaml": "apiVersion: reconciler/v2\nkind: Site\n"
                                   "metadata: {name: x}\n"},
                     "typo.yaml:1: Site/x: apiVersion: unknown apiVersion 'reconciler/v2'",
                     Severity.ERROR, id="our-prefix-unknown-version-is-an-error"),
        pytest.param({"near.yaml": "apiVersion: reconciller/v1\nkind: Site\n"
                                   "metadata: {name: x}\n"},
                     "near.yaml:1: apiVersion 'reconciller/v1' looks like a misspelt",
                     Severity.ERROR, id="near-miss-apiversion-is-an-error"),
        pytest.param({"nokind.yaml": "kind: Target\nmetadata: {name: x}\n"},
                     "nokind.yaml:1: kind 'Target' without apiVersion", Severity.ERROR,
                     id="our-kind-without-apiversion-is-an-error"),
        pytest.param({"key.yaml": "apiversion: reconciler/v1\nkind: Site\n"},
                     "key.yaml:1: key 'apiversion' looks like a misspelt 'apiVersion'",
                     Severity.ERROR, id="misspelt-key-is-an-error"),
        pytest.param({"broken.yaml": "a: [1\n"}, "broken.yaml:2: invalid YAML",
                     Severity.ERROR, id="unparsable-foreign-file-is-an-error"),
    ],
)
def test_foreign_yaml_is_told_from_ours(tmp_path: Path, files: dict[str, str], expected: str,
                                        severity: Severity) -> None:
    diags = load_fleet(repo(tmp_path, files)).diagnostics
    found = [d for d in diags if expected in d.format()]
    assert found, f"{expected!r} not in {[d.format() for d in diags]}"
    assert {d.severity for d in found} == {severity}
    assert len(diags) == 1, [d.format() for d in diags]


@pytest.mark.parametrize(
    ("files", "data_path"),
    [
        pytest.param({}, "solutions/app/templates/app.conf.yaml", id="file-named-by-template"),
        pytest.param({}, "solutions/app/data", id="directory-named-by-property"),
        pytest.param({"solutions/app/data/sub/deeper.yaml": LOOKALIKE + "---\n" + K8S},
                     "solutions/app/data", id="files-below-a-named-directory"),
        pytest.param({"solutions/app/data/broken.yaml": "a: [1\n"}, "solutions/app/data",
                     id="unparsable-data-is-not-reported"),
    ],
)
def test_files_referenced_by_components_are_data(tmp_path: Path, files: dict[str, str],
                                                 data_path: str) -> None:
    loaded = load_fleet(repo(tmp_path, files))
    assert [d.format() for d in loaded.diagnostics] == []
    assert data_path in loaded.data_paths
    assert "not-a-site" not in loaded.fleet.sites
    assert not any(f.startswith("solutions/app/data") or f.startswith("solutions/app/templates")
                   for f in loaded.manifest_files)


def test_templated_property_values_are_not_taken_as_paths(tmp_path: Path) -> None:
    solution = SOLUTION.replace("template: data", "content: 'data ${{ params.tz }}'")
    loaded = load_fleet(repo(tmp_path, {"solutions/app/solution.yaml": solution}))
    assert "solutions/app/data" not in loaded.data_paths
    # the lookalike is read as a manifest again, and its bad parent is the validator's job
    assert "not-a-site" in loaded.fleet.sites


@pytest.mark.parametrize(
    ("ignore", "path"),
    [
        pytest.param('"docs/**"', "docs/api/openapi.yaml", id="double-star-glob"),
        pytest.param('"*.example.yaml"', "config.example.yaml", id="suffix-glob"),
        pytest.param('"vendor/*"', "vendor/thing.yml", id="directory-glob"),
        pytest.param('"one.yaml"', "one.yaml", id="exact-name"),
    ],
)
def test_settings_ignore_globs_skip_files(tmp_path: Path, ignore: str, path: str) -> None:
    settings = SETTINGS + f"  ignore: [{ignore}]\n"
    loaded = load_fleet(repo(tmp_path, {"reconciler.yaml": settings, path: "a: [broken\n"}))
    assert [d.format() for d in loaded.diagnostics] == []
    assert loaded.fleet.settings.ignore == (ignore.strip('"'),)


def test_without_ignore_the_same_file_is_reported(tmp_path: Path) -> None:
    assert messages(repo(tmp_path, {"docs/api/openapi.yaml": "a: [broken\n"})) == [
        "docs/api/openapi.yaml:2: invalid YAML: did not find expected ',' or ']'"]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(".github/workflows/ci.yaml", id="hidden-top-level-dir"),
        pytest.param("solutions/.cache/x.yaml", id="hidden-nested-dir"),
        pytest.param(".hidden.yaml", id="hidden-file"),
        pytest.param("status/eu/berlin/gw.yaml", id="top-level-status-dir"),
        pytest.param("notes/readme.txt", id="not-yaml-suffix"),
    ],
)
def test_hidden_status_and_non_yaml_paths_are_skipped(tmp_path: Path, path: str) -> None:
    broken = LOOKALIKE.replace("not-a-site", "hidden") + "\nbad: [unclosed\n"
    loaded = load_fleet(repo(tmp_path, {path: broken}))
    assert [d.format() for d in loaded.diagnostics] == []
    assert "hidden" not in loaded.fleet.sites


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(TARGET.replace("      provider: file\n", "      provider: file\n"
                                    "      extra: 1\n"),
                     "targets/gw.yaml:11: Target/gw: spec.bindings[0].extra: unknown field",
                     id="unknown-field-in-list-item"),
        pytest.param(TARGET.replace("role: gateway", "role: 'bad value!'"),
                     "targets/gw.yaml:5: Target/gw: metadata.labels.role: 'bad value!' is not "
                     "a valid label value", id="label-value-in-flow-mapping"),
        pytest.param(TARGET.replace("site: berlin", "site: 42"),
                     "targets/gw.yaml:7: Target/gw: spec.site: must be of string type",
                     id="wrong-type-nested"),
        pytest.param(TARGET.replace("      config: {root: /srv/gw}\n",
                                    "      config: {root: /srv/gw}\n    - provider: file\n"),
                     "targets/gw.yaml:12: Target/gw: spec.bindings[1].role: required field",
                     id="missing-field-names-list-item-line"),
    ],
)
def test_diagnostics_name_the_line_of_the_field(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in messages(repo(tmp_path, {"targets/gw.yaml": text}))


def test_source_line_index_of_built_objects(tmp_path: Path) -> None:
    fleet = load_fleet(repo(tmp_path, {})).fleet
    gw = fleet.targets["gw"].source
    assert (gw.path, gw.line) == ("targets/gw.yaml", 1)
    assert gw.line_of("spec", "site") == 7
    assert gw.line_of("spec", "bindings", 0, "config", "root") == 11
    assert gw.line_of("spec", "nothing-here") == 6  # deepest known prefix: spec
    berlin = fleet.sites["berlin"].source
    assert (berlin.path, berlin.line, berlin.line_of("spec", "parent")) == ("sites.yaml", 7, 11)


def test_built_values_carry_the_documents_content(tmp_path: Path) -> None:
    fleet = load_fleet(repo(tmp_path, {})).fleet
    gw = fleet.targets["gw"]
    assert gw.site == "berlin" and dict(gw.labels) == {"role": "gateway"}
    assert gw.binding("config-file") is not None
    assert gw.binding("config-file").config == {"root": "/srv/gw"}  # type: ignore[union-attr]
    app = fleet.solutions["app"]
    assert [c.name for c in app.components] == ["conf", "more"]
    assert app.parameters["tz"].rules == {"type": "string", "default": "UTC"}
    assert app.directory == "solutions/app"
    assert fleet.site_path("berlin") == "eu/berlin"
    assert fleet.site_level("berlin") == "factory"


def test_documents_failing_their_schema_are_left_out_and_remembered(tmp_path: Path) -> None:
    loaded = load_fleet(repo(tmp_path, {"targets/gw.yaml": TARGET.replace("site: berlin",
                                                                          "site: [x]")}))
    assert "gw" not in loaded.fleet.targets
    assert ("Target", "gw") in loaded.fleet.broken


def test_symlinked_manifest_inside_the_repository_is_read_once(tmp_path: Path) -> None:
    root = repo(tmp_path, {})
    (root / "alias.yaml").symlink_to(root / "sites.yaml")
    loaded = load_fleet(root)
    assert [(d.path, d.severity) for d in loaded.diagnostics] == [("alias.yaml",
                                                                    Severity.WARNING)]
    assert loaded.fleet.sites["eu"].source.path == "sites.yaml"


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        pytest.param(("spec",), "spec", id="one-key"),
        pytest.param(("spec", "components", 1, "name"), "spec.components[1].name",
                     id="index-in-the-middle"),
        pytest.param(("a", 0, 1), "a[0][1]", id="nested-indexes"),
        pytest.param((), "", id="empty"),
    ],
)
def test_field_path(parts: tuple[str | int, ...], text: str) -> None:
    assert field_path(parts) == text


@pytest.mark.parametrize("enabled", [pytest.param(True, id="enabled"),
                                     pytest.param(False, id="disabled-by-the-host")])
def test_bulk_allocation_leaves_the_collector_as_it_was(enabled: bool) -> None:
    import gc

    from reconciler.core.loading import bulk_allocation

    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        with bulk_allocation():
            assert not gc.isenabled()
            with bulk_allocation():  # nested use does not re-enable early
                pass
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(ValueError), bulk_allocation():
            raise ValueError("restored on errors too")
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
