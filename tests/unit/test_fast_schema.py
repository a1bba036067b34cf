"""reconciler.core.fast_schema: its yes is always cerberus's yes, and it says yes to the
documents of the example fleet (so that the loader's quick path is taken).

Every document of ``example-repo/``, then many broken variants of
each (a field removed, set to None, to another type, to a bad name, an unknown field added),
are checked both ways.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cerberus
import pytest
import yaml

from reconciler.core.fast_schema import conforms
from reconciler.core.schemas import KIND_SCHEMAS, document_schema

ROOT = Path(__file__).resolve().parents[2]


def documents() -> list[dict[str, Any]]:
    out = []
    for path in sorted((ROOT / "example-repo").rglob("*.yaml")):
        try:
            found = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # a chart's templates
        out += [doc for doc in found if isinstance(doc, dict)
                and str(doc.get("apiVersion", "")).startswith("reconciler/")
                and doc.get("kind") in KIND_SCHEMAS]
    return out


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*at, k)
            yield from paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*at, i)
            yield from paths(v, (*at, i))


REPLACEMENTS: list[Any] = [None, "", "Bad Name!", 0, -1, True, 3.5, [], {}, ["x"], {"x": 1},
                           "x" * 300]


def variants(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for where in paths(doc):
        parent_path, last = where[:-1], where[-1]
        for replacement in [*REPLACEMENTS, "remove", "extra"]:
            broken = copy.deepcopy(doc)
            parent: Any = broken
            for step in parent_path:
                parent = parent[step]
            if replacement == "remove":
                del parent[last]
            elif replacement == "extra":
                if isinstance(parent, list):
                    continue
                parent["unknownField"] = 1
            else:
                parent[last] = replacement
            yield broken


def cerberus_ok(doc: dict[str, Any]) -> bool:
    return bool(cerberus.Validator(document_schema(doc["kind"])).validate(doc, normalize=False))


def test_the_example_documents_conform() -> None:
    docs = documents()
    assert len(docs) >= 10
    for doc in docs:
        assert conforms(doc, document_schema(doc["kind"])), doc["metadata"]["name"]


@pytest.mark.parametrize("index", range(len(documents())))
def test_a_yes_is_always_cerberus_yes(index: int) -> None:
    doc = documents()[index]
    checked = 0
    for broken in variants(doc):
        if not isinstance(broken.get("kind"), str) or broken["kind"] not in KIND_SCHEMAS:
            continue
        if conforms(broken, document_schema(broken["kind"])):
            assert cerberus_ok(broken), broken
        checked += 1
    assert checked > 0
