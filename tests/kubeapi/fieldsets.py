"""Field paths, field sets and the merge algebra of the test API server.

The test API server (``tests.kubeapi.server``) tracks ``metadata.managedFields`` the way the
kube-apiserver does through sigs.k8s.io/structured-merge-diff. This module holds the pieces
that do not depend on HTTP or storage:

* a field path is a tuple of path elements, each ``("f", name)``, ``("k", ((key, value), ...))``
  for an item of an associative list, ``("v", json)`` for an item of a set list, or
  ``("i", index)``; a field set is a Python ``set`` of such paths;
* :func:`field_set` computes the set of fields an object sets (what an applier owns);
* :func:`encode_fields_v1` / :func:`decode_fields_v1` convert to and from the ``FieldsV1``
  trie (``f:`` / ``k:`` / ``v:`` / ``.`` keys);
* :func:`apply_merge` merges an applied configuration into the live object (the other
  patch types are in ``tests.kubeapi.patches``).

List semantics follow the built-in Kubernetes schemas for the lists a reconciler touches:
containers, env, ports, volumes and their mounts are associative lists keyed by their merge
keys; finalizers are sets; every other list is atomic (replaced whole).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FREEFORM",
    "MISSING",
    "FieldPath",
    "PathElement",
    "apply_merge",
    "decode_fields_v1",
    "encode_fields_v1",
    "field_set",
    "find_item",
    "format_path",
    "get_at",
    "item_key",
    "list_keys",
    "merge_lists",
    "remove_at",
]

PathElement = tuple[str, Any]
FieldPath = tuple[PathElement, ...]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# Associative lists and their keys, as declared by +listMapKey in the Kubernetes API types.
_ASSOCIATIVE: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
_SETS = frozenset({"finalizers"})
# Map-typed fields: their keys are entries, not struct fields, so each entry is a member of
# the field set on its own (the same rule structured-merge-diff applies to non-struct maps).
FREEFORM = frozenset(
    {"labels", "annotations", "data", "stringData", "binaryData", "matchLabels",
     "nodeSelector", "limits", "requests", "capacity", "allocatable"}
)
# Key fields the API server defaults, so an item that omits them still matches its key.
_KEY_DEFAULTS: dict[str, Any] = {"protocol": "TCP"}


def list_keys(path: FieldPath, value: list[Any]) -> tuple[str, ...] | str | None:
    """How the list at ``path`` merges: its key names, ``"set"``, or None for atomic."""
    if not path or path[-1][0] != "f":
        return None
    name = path[-1][1]
    if name in _SETS and all(not isinstance(v, dict | list) for v in value):
        return "set"
    if name == "ports":
        in_container = any(
            e[0] == "f" and e[1] in ("containers", "initContainers", "ephemeralContainers")
            for e in path
        )
        keys: tuple[str, ...] = (
            ("containerPort", "protocol") if in_container else ("port", "protocol")
        )
        return keys if all(isinstance(v, dict) for v in value) else None
    keys_for = _ASSOCIATIVE.get(name)
    if keys_for is not None and all(isinstance(v, dict) for v in value):
        return keys_for
    return None


def item_key(keys: tuple[str, ...], item: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The key of one associative-list item, with defaulted key fields filled in."""
    out = []
    for k in keys:
        if k in item:
            out.append((k, item[k]))
        elif k in _KEY_DEFAULTS:
            out.append((k, _KEY_DEFAULTS[k]))
    return tuple(sorted(out))


def _is_freeform(name: str, value: Any) -> bool:
    if name in FREEFORM:
        return True
    # A Service selector is a plain map; a workload selector is a LabelSelector struct.
    return (
        name == "selector"
        and isinstance(value, dict)
        and not ({"matchLabels", "matchExpressions"} & value.keys())
    )


def field_set(obj: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Every field ``obj`` sets, as structured-merge-diff's ToFieldSet computes it."""
    out: set[FieldPath] = set()
    _walk(obj, prefix, out, freeform=False)
    return out


def _walk(value: Any, path: FieldPath, out: set[FieldPath], *, freeform: bool) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            p = (*path, ("f", k))
            leaf = (
                freeform
                or not isinstance(v, dict | list)
                or (isinstance(v, dict) and not v)
                or (isinstance(v, list) and (not v or list_keys(p, v) is None))
            )
            if leaf:
                out.add(p)
            if isinstance(v, dict | list):
                _walk(v, p, out, freeform=_is_freeform(k, v))
    elif isinstance(value, list):
        if not value:
            return
        keys = list_keys(path, value)
        if keys is None:
            return  # atomic: the parent already added the list's own path
        for item in value:
            if keys == "set":
                out.add((*path, ("v", _json(item))))
            else:
                assert isinstance(keys, tuple)
                ip = (*path, ("k", item_key(keys, item)))
                out.add(ip)
                _walk(item, ip, out, freeform=False)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- FieldsV1 encoding -------------------------------------------------------------------


def _element_key(e: PathElement) -> str:
    kind, val = e
    if kind == "f":
        return f"f:{val}"
    if kind == "k":
        return "k:" + _json(dict(val))
    if kind == "v":
        return f"v:{val}"
    return f"i:{val}"


def _parse_element(key: str) -> PathElement:
    kind, _, rest = key.partition(":")
    if kind == "f":
        return ("f", rest)
    if kind == "k":
        return ("k", tuple(sorted(json.loads(rest).items())))
    if kind == "v":
        return ("v", _json(json.loads(rest)))
    if kind == "i":
        return ("i", int(rest))
    raise ValueError(f"unknown FieldsV1 key {key!r}")


def encode_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """The ``fieldsV1`` trie of a field set: members with children get a ``.`` marker."""
    root: dict[str, Any] = {}
    members = set(paths)
    for path in sorted(members, key=lambda p: [_element_key(e) for e in p]):
        node = root
        for e in path:
            node = node.setdefault(_element_key(e), {})
    _mark(root, (), members)
    return root


def _mark(node: dict[str, Any], path: FieldPath, members: set[FieldPath]) -> None:
    for key, child in list(node.items()):
        p = (*path, _parse_element(key))
        if child:
            _mark(child, p, members)
            if p in members:
                # The API server writes the "." marker first; keep that order.
                node[key] = {".": {}, **child}


def decode_fields_v1(trie: dict[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The field set a ``fieldsV1`` trie describes."""
    out: set[FieldPath] = set()
    for key, child in trie.items():
        if key == ".":
            out.add(prefix)
            continue
        p = (*prefix, _parse_element(key))
        if not child:
            out.add(p)
        else:
            out |= decode_fields_v1(child, p)
    return out


def format_path(path: FieldPath) -> str:
    """The path as the API server prints it in conflict messages (``.spec.replicas``)."""
    parts = []
    for kind, val in path:
        if kind == "f":
            parts.append(f".{val}")
        elif kind == "k":
            parts.append("[" + ",".join(f"{k}={_json(v)}" for k, v in val) + "]")
        elif kind == "v":
            parts.append(f"[={val}]")
        else:
            parts.append(f"[{val}]")
    return "".join(parts)


# --- navigation --------------------------------------------------------------------------


def find_item(lst: list[Any], parent: FieldPath, e: PathElement) -> int:
    kind, val = e
    if kind == "i":
        return int(val) if 0 <= int(val) < len(lst) else -1
    for i, item in enumerate(lst):
        if kind == "v" and _json(item) == val:
            return i
        if kind == "k" and isinstance(item, dict):
            keys = tuple(k for k, _ in val)
            if item_key(keys, item) == val:
                return i
    return -1


def get_at(obj: Any, path: FieldPath) -> Any:
    """The value at ``path`` in ``obj``, or :data:`MISSING`."""
    cur = obj
    for depth, e in enumerate(path):
        if e[0] == "f":
            if not isinstance(cur, dict) or e[1] not in cur:
                return MISSING
            cur = cur[e[1]]
        else:
            if not isinstance(cur, list):
                return MISSING
            idx = find_item(cur, path[:depth], e)
            if idx < 0:
                return MISSING
            cur = cur[idx]
    return cur


def remove_at(obj: Any, path: FieldPath) -> None:
    """Remove the field or list item at ``path`` from ``obj`` (no-op when absent)."""
    if not path:
        return
    parent = get_at(obj, path[:-1])
    e = path[-1]
    if e[0] == "f":
        if isinstance(parent, dict):
            parent.pop(e[1], None)
    elif isinstance(parent, list):
        idx = find_item(parent, path[:-1], e)
        if idx >= 0:
            del parent[idx]


# --- merging -----------------------------------------------------------------------------


def apply_merge(live: Any, config: Any, path: FieldPath = ()) -> Any:
    """Merge an applied configuration into the live object (maps deep, keyed lists by key)."""
    if isinstance(live, dict) and isinstance(config, dict):
        out = copy.deepcopy(live)
        for k, v in config.items():
            p = (*path, ("f", k))
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = apply_merge(out[k], v, p)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(live, list) and isinstance(config, list):
        return merge_lists(live, config, path, apply_merge)
    return copy.deepcopy(config)


def merge_lists(live: list[Any], config: list[Any], path: FieldPath, merge: Any) -> list[Any]:
    keys = list_keys(path, live + config)
    if keys is None:
        return copy.deepcopy(config)
    out = copy.deepcopy(live)
    if keys == "set":
        for item in config:
            if item not in out:
                out.append(copy.deepcopy(item))
        return out
    assert isinstance(keys, tuple)
    for item in config:
        key = item_key(keys, item)
        ip = (*path, ("k", key))
        idx = find_item(out, path, ("k", key))
        if idx >= 0:
            out[idx] = merge(out[idx], item, ip)
        else:
            out.append(merge({}, item, ip))
    return out
