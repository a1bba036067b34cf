"""The patch types of the test API server: JSON merge patch, strategic merge patch, JSON patch.

:func:`patched` computes the object a non-apply ``PATCH`` asks for, as the kube-apiserver does
(server-side apply is ``tests.kubeapi.fieldsets.apply_merge`` plus field ownership in
``tests.kubeapi.store``). Strategic merge patches merge keyed lists by the keys
``tests.kubeapi.fieldsets`` knows; malformed patches are the real server's 400/422 answers.
Called by ``tests.kubeapi.store`` for objects and for the scale subresource.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.kubeapi.fieldsets import FieldPath, find_item, item_key, list_keys, merge_lists
from tests.kubeapi.resources import ApiStatus

__all__ = ["APPLY", "JSON_PATCH", "MERGE", "STRATEGIC", "json_merge_patch", "json_patch",
           "patched", "strategic_merge"]

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def patched(current: dict[str, Any], content_type: str, patch: Any, *,
            strategic: bool = True) -> Any:
    """``current`` with a non-apply ``patch`` of ``content_type`` applied (a new object).

    ``strategic`` is false for custom resources, which refuse strategic merge patches.
    """
    try:
        if content_type == MERGE:
            return json_merge_patch(current, patch)
        if content_type == STRATEGIC:
            if not strategic:
                raise ApiStatus.unsupported_media(content_type)
            return strategic_merge(current, patch)
        if content_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise ValueError("json: cannot unmarshal object into Go value of type "
                                 "jsonpatch.Patch")
            return json_patch(current, patch)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ApiStatus(422 if content_type == JSON_PATCH else 400,
                        "Invalid" if content_type == JSON_PATCH else "BadRequest",
                        f"the server rejected our request due to an error in our "
                        f"request: {exc}") from exc
    raise ApiStatus.unsupported_media(content_type)


def strategic_merge(live: Any, patch: Any, path: FieldPath = ()) -> Any:
    """A strategic merge patch: JSON merge patch, with keyed lists merged by their keys.

    Supports ``null`` deletion, ``$patch: delete`` on list items and ``$patch: replace``
    on maps; ``$setElementOrder`` and ``$retainKeys`` directives are accepted and dropped.
    """
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
        out = copy.deepcopy(live) if isinstance(live, dict) else {}
        for k, v in patch.items():
            if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
                continue
            p = (*path, ("f", k))
            if v is None:
                out.pop(k, None)
            elif isinstance(v, list) and isinstance(out.get(k), list):
                out[k] = _strategic_list(out[k], v, p)
            elif isinstance(v, dict | list):
                out[k] = strategic_merge(out.get(k), v, p)
            else:
                out[k] = v
        return out
    if isinstance(patch, list):
        return [
            strategic_merge(None, i, path) if isinstance(i, dict) else i
            for i in patch
            if not (isinstance(i, dict) and i.get("$patch") == "delete")
        ]
    return copy.deepcopy(patch)


def _strategic_list(live: list[Any], patch: list[Any], path: FieldPath) -> list[Any]:
    real_items = [p for p in patch if not isinstance(p, dict) or "$patch" not in p]
    keys = list_keys(path, live + real_items)
    if keys is None or keys == "set":
        return merge_lists(live, patch, path, strategic_merge)
    assert isinstance(keys, tuple)
    out = copy.deepcopy(live)
    for item in patch:
        key = item_key(keys, item)
        idx = find_item(out, path, ("k", key))
        if item.get("$patch") == "delete":
            if idx >= 0:
                del out[idx]
        elif idx >= 0:
            out[idx] = strategic_merge(out[idx], item, (*path, ("k", key)))
        else:
            out.append(strategic_merge({}, item, (*path, ("k", key))))
    return out


def json_merge_patch(live: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(live) if isinstance(live, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge_patch(out.get(k), v)
    return out


def _pointer(ptr: str) -> list[str]:
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise ValueError(f"invalid JSON pointer {ptr!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]


def _container(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise ValueError(f"path element {t!r} not found")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[int(t)]
        else:
            raise ValueError(f"cannot descend into {t!r}")
    return cur


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch; raises ValueError when an operation does not apply."""
    out = copy.deepcopy(doc)
    for op in ops:
        name = op.get("op")
        tokens = _pointer(str(op.get("path", "")))
        if name == "test":
            if _container(out, tokens) != op.get("value"):
                raise ValueError(f"test operation failed at {op.get('path')!r}")
            continue
        if name in ("move", "copy"):
            src = _pointer(str(op.get("from", "")))
            value = copy.deepcopy(_container(out, src))
            if name == "move":
                _remove(out, src)
            out = _add(out, tokens, value)
        elif name == "add":
            out = _add(out, tokens, copy.deepcopy(op.get("value")))
        elif name == "remove":
            _remove(out, tokens)
        elif name == "replace":
            _remove(out, tokens)
            out = _add(out, tokens, copy.deepcopy(op.get("value")))
        else:
            raise ValueError(f"unknown JSON patch operation {name!r}")
    return out


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _container(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            idx = int(last)
            if not 0 <= idx <= len(parent):
                raise ValueError(f"index {idx} out of range")
            parent.insert(idx, value)
    else:
        raise ValueError(f"cannot add at {last!r}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> None:
    if not tokens:
        raise ValueError("cannot remove the whole document")
    parent = _container(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ValueError(f"path element {last!r} not found")
        del parent[last]
    elif isinstance(parent, list):
        del parent[int(last)]
    else:
        raise ValueError(f"cannot remove {last!r}")
