"""Field ownership of the test API server: ``managedFields`` entries and how writes move them.

What the kube-apiserver's field manager (sigs.k8s.io/structured-merge-diff) does to
``metadata.managedFields`` on every write, for ``tests.kubeapi.store``:

* an **Update** (create, PUT, non-apply PATCH, a status or scale write) gives its manager the
  fields whose value it changed (or added), and takes them from every other manager; fields it
  removed are taken from everyone; fields it wrote with an unchanged value move nowhere;
* an **Apply** by a manager owns exactly the fields of its configuration: a field another
  manager owns with a different value is a conflict, unless forced, which moves it;
* writes through the ``status`` subresource only ever touch ``status``, and writes to the main
  resource never do (for kinds with a status subresource), so the two own disjoint fields; the
  ``scale`` subresource writes the main resource's ``spec.replicas`` and is recorded as an
  Update with ``subresource: scale`` (k8s.io/apiserver ``ScaleHandler``);
* an entry's ``time`` changes only when its manager changed something; an entry that owns
  nothing any more is dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi.fieldsets import (
    FREEFORM,
    MISSING,
    FieldPath,
    decode_fields_v1,
    encode_fields_v1,
    field_set,
    format_path,
    get_at,
)
from tests.kubeapi.resources import ApiStatus, ResourceType

__all__ = ["Entry", "copy_managed", "decode_managed", "drop_vanished", "now", "omitted",
           "record_apply", "record_update", "same_managed", "same_scope", "view"]

# Metadata the API server owns: never part of a manager's field set, never taken from a body.
SYSTEM_META = ("name", "namespace", "uid", "resourceVersion", "generation",
               "creationTimestamp", "selfLink", "managedFields", "deletionTimestamp",
               "deletionGracePeriodSeconds")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Entry:
    """One ``managedFields`` entry: a manager, its operation and the fields it owns."""

    manager: str
    operation: str
    api_version: str
    subresource: str = ""
    time: str = field(default_factory=now)
    fields: set[FieldPath] = field(default_factory=set)

    def ident(self) -> tuple[str, str, str, str]:
        # Appliers keep one entry across API versions; updaters get one per version.
        version = self.api_version if self.operation == "Update" else ""
        return (self.manager, self.operation, self.subresource, version)

    def describe(self) -> str:
        """How conflict messages name this manager (``"kubectl-edit" using apps/v1``)."""
        out = f'"{self.manager}"'
        if self.subresource:
            out += f' with subresource "{self.subresource}"'
        if self.operation == "Update":
            out += f" using {self.api_version}"
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def same_scope(a: str, b: str) -> bool:
    """True when writes through subresources ``a`` and ``b`` touch the same fields: the main
    resource and ``scale`` write the object, ``status`` writes its status."""
    return (a == "status") == (b == "status")


def view(rt: ResourceType, obj: dict[str, Any], subresource: str) -> dict[str, Any]:
    """The part of ``obj`` that field ownership is tracked on for this (sub)resource."""
    if subresource == "status":
        return {"status": copy.deepcopy(obj["status"])} if "status" in obj else {}
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if rt.has_status:
        out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for k in SYSTEM_META:
            meta.pop(k, None)
        if not meta:
            del out["metadata"]
    return out


def changed_at(old_view: dict[str, Any], new_view: dict[str, Any], p: FieldPath) -> bool:
    old = get_at(old_view, p)
    if old is MISSING:
        return True
    # Maps and list items change through their leaves, which are members of their own.
    return not isinstance(old, dict) and old != get_at(new_view, p)


def same_managed(a: list[Entry], b: list[Entry]) -> bool:
    return [(e.ident(), e.fields) for e in a] == [(e.ident(), e.fields) for e in b]


def copy_managed(entries: list[Entry] | None) -> list[Entry]:
    return [Entry(e.manager, e.operation, e.api_version, e.subresource, e.time, set(e.fields))
            for e in entries or []]


def decode_managed(raw: Any) -> list[Entry]:
    """Entries from a ``managedFields`` list; ``[{}]`` decodes to nothing (a reset)."""
    out = []
    for item in raw or []:
        if not isinstance(item, dict):
            raise ApiStatus.bad_request("metadata.managedFields: must be a list of objects")
        out.append(Entry(str(item.get("manager", "")), str(item.get("operation", "Update")),
                         str(item.get("apiVersion", "")), str(item.get("subresource", "")),
                         str(item.get("time") or now()),
                         decode_fields_v1(item.get("fieldsV1") or {})))
    return [e for e in out if e.manager or e.fields]


def record_update(rt: ResourceType, managed: list[Entry], old: dict[str, Any] | None,
                  new: dict[str, Any], manager: str, subresource: str) -> None:
    """An Update takes the fields it changed away from every other manager."""
    old_view = view(rt, old, subresource) if old is not None else {}
    new_view = view(rt, new, subresource)
    old_set = field_set(old_view)
    changed = {p for p in field_set(new_view) if p not in old_set or changed_at(old_view,
                                                                                new_view, p)}
    # An Update that creates a map (labels, annotations, data...) owns the map itself too,
    # which the API server records as a "." marker next to the entries.
    changed |= {p[:-1] for p in changed if len(p) >= 2 and p[-2][0] == "f"
                and p[-2][1] in FREEFORM and get_at(old_view, p[:-1]) is MISSING}
    if changed:
        for e in managed:
            if same_scope(e.subresource, subresource):
                e.fields -= changed
        entry = next((e for e in managed if e.ident() == (manager, "Update", subresource,
                                                           rt.api_version)), None)
        if entry is None:
            entry = Entry(manager, "Update", rt.api_version, subresource)
            managed.append(entry)
        entry.fields |= changed
        entry.time = now()
    drop_vanished(rt, managed, new)


def drop_vanished(rt: ResourceType, managed: list[Entry], new: dict[str, Any]) -> None:
    """Fields no longer in the object are owned by nobody."""
    views = {sub: view(rt, new, sub) for sub in ("", "status")}
    for e in managed:
        v = views["status"] if e.subresource == "status" else views[""]
        e.fields = {p for p in e.fields if get_at(v, p) is not MISSING}


def omitted(managed: list[Entry], manager: str, subresource: str,
            applied: set[FieldPath]) -> set[FieldPath]:
    """Fields ``manager`` applied before and omits now that nobody else owns: they go."""
    mine = _applier(managed, manager, subresource)
    others: set[FieldPath] = set()
    for e in managed:
        if e is not mine:
            others |= e.fields
    return (mine.fields if mine is not None else set()) - applied - others


def _applier(managed: list[Entry], manager: str, subresource: str) -> Entry | None:
    return next((e for e in managed if e.manager == manager and e.operation == "Apply"
                 and e.subresource == subresource), None)


def record_apply(rt: ResourceType, managed: list[Entry], old: dict[str, Any] | None,
                 new: dict[str, Any], manager: str, subresource: str,
                 applied: set[FieldPath], force: bool) -> None:
    """An Apply owns exactly ``applied``; a field another manager owns and the apply changes
    is a conflict (raised), unless forced: then it moves to the applier."""
    old_view = view(rt, old, subresource) if old is not None else {}
    new_view = view(rt, new, subresource)
    conflicts = [
        (e, p) for e in managed
        if e.manager != manager and same_scope(e.subresource, subresource)
        for p in sorted(e.fields & applied, key=format_path)
        if changed_at(old_view, new_view, p)
    ]
    if conflicts and not force:
        raise conflict_error(conflicts)
    for e, p in conflicts:
        e.fields.discard(p)
    mine = _applier(managed, manager, subresource)
    if mine is None:
        mine = Entry(manager, "Apply", rt.api_version, subresource)
        managed.append(mine)
    mine.fields = set(applied)
    mine.api_version = rt.api_version
    mine.time = now()
    drop_vanished(rt, managed, new)


def conflict_error(conflicts: list[tuple[Entry, FieldPath]]) -> ApiStatus:
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {e.describe()}",
               "field": format_path(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {e.describe()}: {format_path(p)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.describe(), []).append(format_path(p))
        lines = []
        for who in sorted(by_manager):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {p}" for p in by_manager[who]]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiStatus(409, "Conflict", message, {"causes": causes})
