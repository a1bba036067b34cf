"""The render stage's sharing: every placement :func:`render_fleet` makes is equal, down to
the order of every dict, to the placement of that pair rendered on its own, and what pairs
have in common is one object (resolved parameters a target does not override, parts of the
template context, properties no template changes, equal sets of secret names). Target
selection through the fleet's index gives what comparing every target gives."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.loading import load_fleet
from reconciler.core.model import Fleet, Instance, Selector, Target
from reconciler.core.rendering import Placement, render_fleet, render_placement, select_targets

API = "reconciler/v1"
ROLES = ("gw", "hmi", "plc")


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
        ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def write(root: Path, rel: str, docs: list[dict[str, Any]]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def build(root: Path) -> Fleet:
    """Two regions of two lines each, three targets a line (some setting their own params),
    a suspended line, params and solution params at every level, a secret."""
    write(root, "reconciler.yaml", [doc("Settings", "fleet", {"hierarchy": ["region", "line"]})])
    sites: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for r in range(2):
        sites.append(doc("Site", f"r{r}", {
            "params": {"level": f"r{r}", "token": {"secretFrom": {"file": f"token-r{r}"}}},
            "solutionParams": {"app": {"size": r + 1}}}, {"region": f"r{r}", "tier": "gold"}))
        for line in range(2):
            name = f"r{r}-l{line}"
            spec: dict[str, Any] = {"parent": f"r{r}", "params": {"line": name}}
            if (r, line) == (1, 1):
                spec["suspend"] = True
            sites.append(doc("Site", name, spec, {"line": str(line)}
                             | ({"tier": "silver"} if line else {})))
            for t in range(3):
                tspec: dict[str, Any] = {"site": name, "bindings": [
                    {"role": "config-file", "provider": "file",
                     "config": {"root": f"/srv/{name}-t{t}"}}]}
                if t == 1:
                    tspec["params"] = {"size": 10 + r, "level": "own"}
                targets.append(doc("Target", f"{name}-t{t}", tspec, {"role": ROLES[t]}))
    write(root, "sites.yaml", sites)
    write(root, "targets.yaml", targets)
    write(root, "solutions/app/solution.yaml", [doc("Solution", "app", {
        "parameters": {
            "level": {"type": "string", "default": "none"},
            "line": {"type": "string"},
            "size": {"type": "integer", "default": 0},
            "token": {"type": "string", "secret": True},
            "tags": {"type": "list", "default": ["a", "b"]},
        },
        "profiles": {"big": {"size": 99}},
        "components": [
            {"name": "plain", "type": "config-file",
             "properties": {"path": "plain.conf", "content": "fixed\n",
                            "extra": {"list": [1, 2], "nested": {"k": "v"}}}},
            {"name": "conf", "type": "config-file", "dependsOn": ["plain"],
             "properties": {"path": "app.conf",
                            "content": "${{ target.name }} ${{ params.level }} "
                                       "${{ site.path }} ${{ params.size }}\n",
                            "extra": {"tags": "${{ params.tags }}", "fixed": [1, {"a": 1}]}}},
        ]}, {"team": "one"})])
    write(root, "instances.yaml", [
        doc("Instance", "by-site", {"solution": "app",
                                    "targets": {"selector": {"sites": ["r0"]}}}),
        doc("Instance", "by-label", {"solution": "app", "profile": "big",
                                     "targets": {"selector": {"matchLabels": {"role": "gw"}}},
                                     "params": {"level": "inst"}}, {"owner": "x"}),
        doc("Instance", "by-name", {"solution": "app",
                                    "targets": {"names": ["r1-l1-t1", "r0-l0-t2"]}}),
    ])
    loaded = load_fleet(root)
    assert [d.format() for d in loaded.diagnostics if d.is_error] == []
    return loaded.fleet


def alone(fleet: Fleet, p: Placement, secrets: Any) -> Placement:
    return render_placement(fleet, p.instance, p.target, p.solution, revision="abc",
                            secrets=secrets)


def orders(value: Any) -> Any:
    """The keys of every dict in ``value``, in order (equality of dicts ignores it)."""
    if isinstance(value, Mapping):
        return [(k, orders(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [orders(v) for v in value]
    return None


@pytest.mark.parametrize("secrets", [None, lambda ref: f"value of {ref['secretFrom']['file']}"])
def test_every_placement_is_the_pair_rendered_on_its_own(tmp_path: Path, secrets: Any) -> None:
    fleet = build(tmp_path)
    app = fleet.solutions["app"]
    rendering = render_fleet(fleet, {name: app for name in fleet.instances}, revision="abc",
                             secrets=secrets)
    assert len(rendering.pairs) == 6 + 4 + 2
    for p in rendering.pairs:
        own = alone(fleet, p, secrets)
        assert p == own
        assert orders(p.params) == orders(own.params)
        for c, o in zip(p.components, own.components, strict=True):
            assert (orders(c.params), orders(c.template_context), orders(c.properties)) == \
                (orders(o.params), orders(o.template_context), orders(o.properties))
    suspended = [p for p in rendering.pairs if p.instance.suspend]
    assert suspended and all(p.target.site == "r1-l1" for p in suspended)


def test_what_pairs_have_in_common_is_one_object(tmp_path: Path) -> None:
    fleet = build(tmp_path)
    app = fleet.solutions["app"]
    rendering = render_fleet(fleet, {name: app for name in fleet.instances})
    by_site = {(p.target.name, p.instance.name): p for p in rendering.pairs}
    t0, t1, t2 = (by_site[(f"r0-l0-t{t}", "by-site")] for t in range(3))
    # a target without params of its own resolves to what its site's targets resolve to
    assert t0.params is t2.params
    assert t0.components[0].params is t2.components[0].params
    # one that has them shares every parameter it does not set
    assert t1.params is not t0.params
    for name in ("line", "token", "tags"):
        assert t1.params[name] is t0.params[name]
    assert t1.params["size"] is not t0.params["size"]
    other_t1 = by_site[("r0-l1-t1", "by-site")]
    assert t1.params["size"].overridden is other_t1.params["size"].overridden
    assert t1.params["size"].origin.field is other_t1.params["size"].origin.field
    # equal origins are one object across sites
    other = by_site[("r0-l1-t0", "by-site")]
    assert other.params["tags"] is t0.params["tags"]
    assert other.params["level"].origin is t0.params["level"].origin
    # the template context: the parameters are the component's, the rest is per target,
    # site, instance and solution
    for p in (t0, t1):
        context = p.components[1].template_context
        assert context["params"] is p.components[1].params
        assert all(c.template_context is context for c in p.components)
    c0, c1 = (p.components[1].template_context for p in (t0, t1))
    for key in ("site", "instance", "solution"):
        assert c0[key] is c1[key]
    assert c0["target"]["labels"] is not c1["target"]["labels"]  # roles differ
    gw = [p for p in rendering.pairs if p.target.name == "r0-l0-t0"]
    assert len(gw) == 2 and gw[0].components[1].template_context["target"] is \
        gw[1].components[1].template_context["target"]
    # properties: what no template changes is the solution's own
    plain, conf = app.components
    assert t0.components[0].properties is plain.properties
    assert t0.components[1].properties is not conf.properties
    assert t0.components[1].properties["extra"]["fixed"] is conf.properties["extra"]["fixed"]
    assert t0.components[0].secret_params == {"token"}
    assert t0.components[0].secret_params is t1.components[0].secret_params
    assert t0.components[0].site is t2.components[0].site
    # a suspended line's placements share one suspended copy of the instance
    suspended = [p.instance for p in rendering.pairs
                 if p.instance.name == "by-site" and p.instance.suspend]
    assert suspended == [] or all(i is suspended[0] for i in suspended)
    held = [p.instance for p in rendering.pairs if p.target.site == "r1-l1"]
    assert len(held) == 2 and all(i.suspend for i in held)


def reference(fleet: Fleet, instance: Instance) -> list[Target]:
    """Target selection as the definition says: every target compared."""
    chosen = {n: fleet.targets[n] for n in instance.names if n in fleet.targets}
    sel = instance.selector
    if sel is not None and (sel.sites or sel.match_labels):
        roots = {s.name for ref in sel.sites if (s := fleet.find_site(ref)) is not None}
        for target in fleet.targets.values():
            if sel.sites and not any(s.name in roots
                                     for s in fleet.site_chains.get(target.site, ())):
                continue
            labels = fleet.target_labels(target)
            if any(labels.get(k) != v for k, v in sel.match_labels.items()):
                continue
            chosen[target.name] = target
    return sorted(chosen.values(), key=lambda t: t.name)


SITE_REFS = [(), ("r0",), ("r1-l1",), ("r0/r0-l1",), ("r1/r0-l1",), ("nowhere",),
             ("r0", "r1-l0")]
LABELS: list[dict[str, Any]] = [
    {}, {"role": "gw"}, {"tier": "silver"}, {"tier": "gold", "role": "plc"},
    {"region": "r1", "line": "1"}, {"role": "none"}, {"owner": None}, {"role": ["gw"]},
]


def test_selection_through_the_index_is_selection_by_comparison(tmp_path: Path) -> None:
    fleet = build(tmp_path)
    base = fleet.instances["by-site"]
    for sites, labels, names in itertools.product(SITE_REFS, LABELS,
                                                  [(), ("r1-l0-t2", "absent")]):
        instance = Instance(base.name, {}, "app", None, names, Selector(sites, labels), None,
                            {}, False, base.source)
        assert select_targets(fleet, instance) == reference(fleet, instance), (sites, labels)


def test_the_index_and_site_paths_are_made_again_not_stored(tmp_path: Path) -> None:
    fleet = build(tmp_path)
    chosen = select_targets(fleet, fleet.instances["by-label"])
    assert fleet.site_path("r1-l0") is fleet.site_path("r1-l0") == "r1/r1-l0"
    assert "target_index" in vars(fleet) and "_site_paths" in vars(fleet)
    back = pickle.loads(pickle.dumps(fleet))
    assert "target_index" not in vars(back) and "_site_paths" not in vars(back)
    assert back == fleet and back.site_path("r1-l0") == "r1/r1-l0"
    assert [t.name for t in select_targets(back, back.instances["by-label"])] == \
        [t.name for t in chosen]
