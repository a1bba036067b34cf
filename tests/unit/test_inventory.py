"""reconciler.engine.inventory: what is read back is what was written, and inventories kept
in memory share what their entries have in common (names of fields, a component's own key,
small numbers, revisions, binding configs of one target)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.core.provider_api import Record
from reconciler.engine.inventory import Inventory

REV = "a" * 40


def data(target: str, name: str) -> dict[str, Any]:
    return {"component": f"app/{name}", "dirs": [f"/srv/{target}", f"/srv/{target}/app"],
            "mode": 420, "path": f"/srv/{target}/app/{name}.conf", "sha256": "0" * 64,
            "nested": {"list": [1, 2.5, None, True, {"k": "app/" + name}], "empty": {}},
            "big": 10 ** 30, "objects": []}


def fill(state: Path, target: str) -> Inventory:
    inventory = Inventory.load(state, target)
    for order, name in enumerate(("c0", "c1", "c2")):
        inventory.put(f"app/{name}", Record("file", "config-file", data(target, name)),
                      {"root": f"files/{target}"}, REV, order)
    return inventory


def test_read_back_is_what_was_written(tmp_path: Path) -> None:
    written = fill(tmp_path, "t1")
    raw = json.loads(written.path.read_text())
    back = Inventory.load(tmp_path, "t1")
    assert back.entries == written.entries
    assert [e.to_dict() for e in back] == [e.to_dict() for e in written]
    assert back.get("app/c1") is not None
    assert back.get("app/c1").record.data == data("t1", "c1")  # type: ignore[union-attr]
    back.save()
    assert json.loads(back.path.read_text()) == raw


def test_entries_share_what_they_have_in_common(tmp_path: Path) -> None:
    fill(tmp_path, "t1")
    fill(tmp_path, "t2")
    one, two = Inventory.load(tmp_path, "t1"), Inventory.load(tmp_path, "t2")
    a, b = one.entries["app/c0"], two.entries["app/c1"]
    # the names of fields are one string in every inventory
    assert next(k for k in a.record.data if k == "sha256") is \
        next(k for k in b.record.data if k == "sha256")
    # a value equal to the entry's key is the key
    assert a.record.data["component"] is a.key
    assert a.record.data["nested"]["list"][4]["k"] is a.key
    # small numbers, revisions, times: one object
    assert a.record.data["mode"] is b.record.data["mode"]
    assert a.revision is b.revision and a.record.provider is b.record.provider
    # the components of one binding share its config
    assert one.entries["app/c1"].binding_config is a.binding_config
    # types stay what JSON gives
    assert type(a.record.data["dirs"]) is list and type(a.record.data["nested"]) is dict
    assert a.record.data["dirs"] is not one.entries["app/c1"].record.data["dirs"]
