"""reconciler.core.sharing: equal small values of the model are one object, values that only
look alike are not, and the tables stay bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reconciler.core import sharing
from reconciler.core.loading import load_fleet
from reconciler.core.sharing import shared_map, shared_text


def target(name: str, role: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "Target",
            "metadata": {"name": name, "labels": {"role": role}},
            "spec": {"site": "line", "params": params, "bindings": [
                {"role": "config-file", "provider": "file", "config": {"root": f"/srv/{name}"}}]}}


def test_targets_of_separate_documents_share_what_is_equal(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(target("t1", "gw", {"n": 1})))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump_all([target("t2", "gw", {"n": 1}),
                                                        target("t3", "hmi", {"n": True})]))
    targets = load_fleet(tmp_path).fleet.targets
    t1, t2, t3 = targets["t1"], targets["t2"], targets["t3"]
    assert t1.labels is t2.labels and t1.params is t2.params and t1.site is t2.site
    assert t3.labels == {"role": "hmi"} and t3.params == {"n": True}
    assert t3.params is not t1.params  # equal to Python (True == 1), not the same value
    assert t1.bindings[0].role is t3.bindings[0].role
    assert t1.bindings[0].provider is t2.bindings[0].provider
    assert t1.bindings[0].config is not t2.bindings[0].config


def test_only_values_that_can_be_keys_are_shared() -> None:
    one, two = {"k": [1]}, {"k": [1]}
    assert shared_map(one) is one and shared_map(two) is two
    assert shared_map({"k": (1, "x")}) is shared_map({"k": (1, "x")})
    assert shared_map({"a": 1.0}) is not shared_map({"a": 1})
    assert shared_map({"a": 1, "b": 2}) is not shared_map({"b": 2, "a": 1})  # order is kept
    assert shared_map({}) is shared_map({})
    odd: Any = ["not", "text"]
    assert shared_text(odd) is odd


def test_the_tables_are_bounded() -> None:
    for i in range(sharing.MAX_KEPT + 10):
        assert shared_text(f"text {i}") == f"text {i}"
        shared_map({"i": i})
    assert len(sharing._texts) <= sharing.MAX_KEPT
    assert len(sharing._maps) <= sharing.MAX_KEPT
