"""Drift detection for Kubernetes objects: compare a live object with a dry-run apply result.

Pure functions, no I/O; called by ``KubernetesProvider.observe`` with the live object (GET)
and the server's answer to a dry-run server-side apply of the desired object. Both come from
the API server, so defaulted fields are present on both sides and never show as a change.

The comparison is restricted to the fields our field manager owns: the union of the
``fieldsV1`` sets of the ``reconciler`` Apply entries in ``metadata.managedFields`` of the live
object (what we own now, so a field removed from the manifest shows as a removal) and of the
dry-run result (what we will own, so a field taken over by a hand edit shows as drift). Fields
only someone else owns are left alone. ``ignore`` JSON pointers are dropped from both sides.
The result is a unified diff of YAML per object, with Secret values redacted.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .kube_objects import FIELD_MANAGER, ObjectRef, remove_pointer

__all__ = [
    "ObjectDiff",
    "compare",
    "fieldset_of",
    "managed_fieldset",
    "mask_values",
    "merge_fieldsets",
    "project",
    "strip_noise",
    "unified",
]

# written by the server, never by us: never part of a comparison
_NOISE_METADATA = ("managedFields", "resourceVersion", "generation", "uid",
                   "creationTimestamp", "selfLink", "deletionTimestamp",
                   "deletionGracePeriodSeconds")
_REDACTED = "<redacted>"
_REDACTED_CHANGED = "<redacted, changed>"

FieldSet = dict[str, Any]


@dataclass(frozen=True)
class ObjectDiff:
    """The comparison of one object: ``changed`` and a readable unified diff."""

    ref: ObjectRef
    changed: bool
    text: str = ""


def managed_fieldset(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> FieldSet | None:
    """The union of ``manager``'s Apply field sets on ``obj``; None when it has no entry."""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    found: FieldSet | None = None
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if entry.get("subresource"):  # status written through a subresource is not ours
            continue
        fields = entry.get("fieldsV1")
        if isinstance(fields, Mapping):
            found = merge_fieldsets(found or {}, fields)
    return found


def merge_fieldsets(a: Mapping[str, Any], b: Mapping[str, Any]) -> FieldSet:
    out: FieldSet = {key: copy.deepcopy(value) for key, value in a.items()}
    for key, value in b.items():
        if key in out and isinstance(out[key], Mapping) and isinstance(value, Mapping):
            out[key] = merge_fieldsets(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fieldset_of(value: Any) -> FieldSet:
    """A field set covering every field of ``value``; lists count as one field.

    Used when the server returns no managed fields for our manager (an old server or a
    proxy stripping them), so the comparison still ignores everything we do not set.
    """
    if not isinstance(value, Mapping):
        return {}
    return {f"f:{key}": fieldset_of(sub) for key, sub in value.items()}


def _owns_whole(fields: Mapping[str, Any]) -> bool:
    return not fields


def _match_key(item: Any, key: str) -> bool:
    kind, _, raw = key.partition(":")
    try:
        wanted = json.loads(raw)
    except ValueError:
        return False
    if kind == "k":
        return isinstance(item, Mapping) and isinstance(wanted, Mapping) and all(
            item.get(k) == v for k, v in wanted.items())
    if kind == "v":
        return bool(item == wanted)
    return False


def _copy(value: Any) -> Any:
    # most leaves are scalars: skipping deepcopy's dispatch for them halves the cost of a diff
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)


def project(value: Any, fields: Mapping[str, Any]) -> Any:
    """The part of ``value`` covered by a ``fieldsV1`` set (a copy; ``value`` is untouched)."""
    if _owns_whole(fields):
        return _copy(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = project(value[key[2:]], sub)
        return out
    if isinstance(value, list):
        picked: dict[int, Any] = {}
        for key, sub in fields.items():
            if key == ".":
                continue
            if key.startswith("i:") and key[2:].isdigit():
                index = int(key[2:])
                if index < len(value):
                    picked[index] = project(value[index], sub)
                continue
            for index, item in enumerate(value):
                if index not in picked and _match_key(item, key):
                    picked[index] = project(item, sub)
        return [picked[i] for i in sorted(picked)]
    return _copy(value)


def strip_noise(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without ``status`` and the metadata the server writes."""
    out = copy.deepcopy(dict(obj))
    _drop_noise(out)
    return out


def _drop_noise(out: Any) -> Any:
    """``out`` (a copy the caller owns) without ``status`` and server-written metadata."""
    if not isinstance(out, dict):
        return out
    out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in _NOISE_METADATA:
            meta.pop(key, None)
    return out


def _redact_secret(ref: ObjectRef, before: Any, after: Any) -> tuple[Any, Any]:
    if ref.kind != "Secret" or ref.group != "":
        return before, after
    for field in ("data", "stringData"):
        old = before.get(field) if isinstance(before, dict) else None
        new = after.get(field) if isinstance(after, dict) else None
        if isinstance(old, dict):
            before[field] = {k: _REDACTED for k in old}
        if isinstance(new, dict):
            after[field] = {
                k: _REDACTED if isinstance(old, dict) and old.get(k) == v else _REDACTED_CHANGED
                for k, v in new.items()}
    return before, after


def mask_values(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value in ``text`` (short values would mask noise)."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _dump(value: Any) -> list[str]:
    if value is None:
        return []
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).splitlines(True)


def unified(ref: ObjectRef, before: Any, after: Any) -> str:
    """A unified diff of two YAML renderings (``None`` for an absent side)."""
    before, after = _redact_secret(ref, copy.deepcopy(before), copy.deepcopy(after))
    lines = difflib.unified_diff(_dump(before), _dump(after),
                                 fromfile=f"live/{ref}", tofile=f"desired/{ref}")
    return "".join(lines)


def compare(live: Mapping[str, Any], dry_run: Mapping[str, Any], *,
            ignore: Sequence[str] = (),
            desired: Mapping[str, Any] | None = None) -> ObjectDiff:
    """Compare a live object with the dry-run apply of the desired one, on our fields only."""
    ref = ObjectRef.of(dry_run)
    owned_live = managed_fieldset(live)
    owned_next = managed_fieldset(dry_run)
    if owned_live is None and owned_next is None:
        owned = fieldset_of(desired if desired is not None else dry_run)
    else:
        owned = merge_fieldsets(owned_live or {}, owned_next or {})
    # project first, then drop the noise from the (small) projections: deep-copying whole
    # live objects, managedFields included, was most of the cost of a no-op comparison
    before = _drop_noise(project(live, owned))
    after = _drop_noise(project(dry_run, owned))
    for pointer in ignore:
        remove_pointer(before, pointer)
        remove_pointer(after, pointer)
    if before == after:
        return ObjectDiff(ref, changed=False)
    return ObjectDiff(ref, changed=True, text=unified(ref, before, after))
