"""Object storage and write semantics of the test API server.

:class:`Store` keeps the objects, their ``resourceVersion`` counter and their managed fields,
and implements what the kube-apiserver does on create, update, patch, server-side apply and
delete: defaulting and validation (``tests.kubeapi.defaults``), field ownership per manager
and operation (``tests.kubeapi.fieldsets``), apply conflicts and pruning, ``dryRun``, the
``status`` subresource, generation and resourceVersion bumps only on real change, cascading
Namespace and CustomResourceDefinition deletion. The HTTP layer (``tests.kubeapi.server``)
calls it under one lock; the optional controller (``tests.kubeapi.controller``) writes
status through it.
"""

from __future__ import annotations

import copy
import random
import string
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi import defaults
from tests.kubeapi.fieldsets import (
    FREEFORM,
    MISSING,
    FieldPath,
    apply_merge,
    decode_fields_v1,
    encode_fields_v1,
    field_set,
    format_path,
    get_at,
    json_merge_patch,
    json_patch,
    remove_at,
    strategic_merge,
)
from tests.kubeapi.resources import BUILTIN_TYPES, ApiStatus, ResourceType, crd_types

__all__ = ["Entry", "Store", "now"]

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Metadata the API server owns: never part of a manager's field set, never taken from a body.
_SYSTEM_META = ("name", "namespace", "uid", "resourceVersion", "generation",
                "creationTimestamp", "selfLink", "managedFields", "deletionTimestamp",
                "deletionGracePeriodSeconds")

ObjKey = tuple[str, str, str, str]  # group, plural, namespace, name


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


@dataclass
class Stored:
    rt: ResourceType
    obj: dict[str, Any]
    managed: list[Entry]


def _view(rt: ResourceType, obj: dict[str, Any], subresource: str) -> dict[str, Any]:
    """The part of ``obj`` that field ownership is tracked on for this (sub)resource."""
    if subresource == "status":
        return {"status": copy.deepcopy(obj["status"])} if "status" in obj else {}
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if rt.has_status:
        out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for k in _SYSTEM_META:
            meta.pop(k, None)
        if not meta:
            del out["metadata"]
    return out


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _changed(old_view: dict[str, Any], new_view: dict[str, Any], p: FieldPath) -> bool:
    old = get_at(old_view, p)
    if old is MISSING:
        return True
    # Maps and list items change through their leaves, which are members of their own.
    return not isinstance(old, dict) and old != get_at(new_view, p)


class Store:
    """Objects by group/plural/namespace/name; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._last_rv = 1000
        self._objects: dict[ObjKey, Stored] = {}
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTIN_TYPES:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    # --- types -------------------------------------------------------------------------

    def types(self) -> list[ResourceType]:
        with self.lock:
            return list(self._types.values())

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self.lock:
            return self._types.get((group, version, plural))

    def type_for_kind(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        with self.lock:
            for rt in self._types.values():
                if rt.group == group and rt.version == version and rt.kind == kind:
                    return rt
        raise ApiStatus(404, "NotFound", f'no matches for kind "{kind}" in version '
                        f'"{api_version}"')

    def _register_crd(self, crd: dict[str, Any]) -> None:
        self._unregister_crd(crd)
        for rt in crd_types(crd):
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for k in [k for k, rt in self._types.items() if not rt.builtin
                  and rt.group == group and rt.plural == plural]:
            del self._types[k]

    # --- reads -------------------------------------------------------------------------

    def render(self, stored: Stored, rt: ResourceType | None = None) -> dict[str, Any]:
        rt = rt or stored.rt
        obj = copy.deepcopy(stored.obj)
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if stored.managed:
            obj["metadata"]["managedFields"] = [e.to_dict() for e in stored.managed]
        ordered = {"apiVersion": obj.pop("apiVersion"), "kind": obj.pop("kind")}
        ordered.update(obj)
        return ordered

    def lookup(self, rt: ResourceType, namespace: str, name: str) -> Stored | None:
        with self.lock:
            return self._objects.get((rt.group, rt.plural, namespace if rt.namespaced else "",
                                      name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            stored = self.lookup(rt, namespace, name)
            if stored is None:
                raise ApiStatus.not_found(rt, name)
            return self.render(stored, rt)

    def select(self, rt: ResourceType, namespace: str | None) -> list[Stored]:
        with self.lock:
            return [
                s for (g, p, ns, _), s in sorted(self._objects.items())
                if g == rt.group and p == rt.plural and (namespace is None or ns == namespace)
            ]

    def resource_version(self) -> str:
        """The latest resourceVersion handed out (what a list reports)."""
        with self.lock:
            return str(self._last_rv)

    def _next_rv(self) -> str:
        self._last_rv += 1
        return str(self._last_rv)

    # --- writes ------------------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and (
            "", "namespaces", "", namespace) not in self._objects:
            raise ApiStatus.namespace_not_found(namespace)

    def _check_body(self, rt: ResourceType, body: Any, namespace: str, name: str | None) -> None:
        if not isinstance(body, dict):
            raise ApiStatus.bad_request("the body of the request must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != rt.api_version:
            raise ApiStatus.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})")
        if kind and kind != rt.kind:
            raise ApiStatus.bad_request(
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: the kind in '
                f"the data ({kind}) does not match the expected kind ({rt.kind})")
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ApiStatus.bad_request("metadata must be an object")
        if name is not None and meta.get("name") not in (None, name):
            raise ApiStatus.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})")
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiStatus.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request")
        defaults.validate_body_types(rt, body)

    def _prepare(self, rt: ResourceType, namespace: str, name: str, body: dict[str, Any],
                 old: Stored | None, subresource: str) -> dict[str, Any]:
        """The object to store: the body with server-owned metadata and status carried over."""
        if subresource == "status":
            assert old is not None
            new = copy.deepcopy(old.obj)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            return new
        new = copy.deepcopy(body)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        meta.pop("managedFields", None)
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if rt.has_status:
            new.pop("status", None)
            status = old.obj.get("status") if old is not None else defaults.initial_status(rt)
            if status is not None:
                new["status"] = copy.deepcopy(status)
        if old is not None:
            for k in ("uid", "creationTimestamp", "generation", "resourceVersion",
                      "deletionTimestamp"):
                if k in old.obj["metadata"]:
                    meta[k] = old.obj["metadata"][k]
        defaults.apply_defaults(rt, new)
        defaults.validate(rt, new)
        if old is not None:
            defaults.validate_update(rt, old.obj, new)
        return new

    def _commit(self, rt: ResourceType, old: Stored | None, new: dict[str, Any],
                managed: list[Entry], dry_run: bool) -> tuple[dict[str, Any], bool]:
        """Store ``new`` (unless dry-run or unchanged); return (rendered, changed)."""
        managed = [e for e in managed if e.fields]
        if old is not None and old.obj == new and _same_managed(old.managed, managed):
            return self.render(old, rt), False
        meta = new["metadata"]
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if rt.has_generation:
                meta["generation"] = 1
        elif rt.has_generation and _spec_part(old.obj) != _spec_part(new):
            meta["generation"] = int(old.obj["metadata"].get("generation", 1)) + 1
        if dry_run:
            if old is None:
                meta.pop("resourceVersion", None)
        else:
            meta["resourceVersion"] = self._next_rv()
        stored = Stored(rt, new, managed)
        key = (rt.group, rt.plural, meta.get("namespace", "") if rt.namespaced else "",
               meta["name"])
        if not dry_run:
            self._objects[key] = stored
            if rt.kind == "CustomResourceDefinition":
                self._crd_established(stored)
        return self.render(stored, rt), True

    def _crd_established(self, stored: Stored) -> None:
        spec = stored.obj.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        stamp = now()
        stored.obj["status"] = {
            "acceptedNames": names,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": stamp},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": stamp},
            ],
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        }
        self._register_crd(stored.obj)

    def create(self, rt: ResourceType, namespace: str, body: Any, manager: str,
               dry_run: bool) -> dict[str, Any]:
        with self.lock:
            self._check_body(rt, body, namespace, None)
            meta = body.get("metadata") or {}
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                name = f"{meta['generateName']}{suffix}"
            if rt.namespaced:
                self._check_namespace(rt, namespace)
            if name and self.lookup(rt, namespace, name) is not None:
                raise ApiStatus.already_exists(rt, name)
            new = self._prepare(rt, namespace, name, body, None, "")
            managed = _decode_managed(meta.get("managedFields"))
            _record_update(rt, managed, None, new, manager, "")
            rendered, _ = self._commit(rt, None, new, managed, dry_run)
            return rendered

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, manager: str,
               dry_run: bool, subresource: str = "") -> dict[str, Any]:
        with self.lock:
            self._check_body(rt, body, namespace, name)
            old = self.lookup(rt, namespace, name)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old.obj["metadata"].get("resourceVersion"):
                raise ApiStatus.modified(rt, name)
            new = self._prepare(rt, namespace, name, body, old, subresource)
            given = (body.get("metadata") or {}).get("managedFields")
            managed = _decode_managed(given) if given is not None else _copy_managed(old)
            _record_update(rt, managed, old.obj, new, manager, subresource)
            return self._commit(rt, old, new, managed, dry_run)[0]

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, patch: Any,
              manager: str | None, force: bool, dry_run: bool,
              subresource: str = "") -> tuple[dict[str, Any], bool]:
        """Apply a patch; returns (object, created)."""
        with self.lock:
            old = self.lookup(rt, namespace, name)
            if content_type == APPLY:
                if not manager:
                    raise ApiStatus.bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value:"
                        " is required for apply patch")
                return self._apply(rt, namespace, name, patch, old, manager, force, dry_run,
                                   subresource)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            current = self.render(old, rt)
            del current["metadata"]["managedFields"]
            try:
                if content_type == MERGE:
                    target = json_merge_patch(current, patch)
                elif content_type == STRATEGIC:
                    if not rt.builtin:
                        raise ApiStatus.unsupported_media(content_type)
                    target = strategic_merge(current, patch)
                elif content_type == JSON_PATCH:
                    if not isinstance(patch, list):
                        raise ValueError("json: cannot unmarshal object into Go value of type "
                                         "jsonpatch.Patch")
                    target = json_patch(current, patch)
                else:
                    raise ApiStatus.unsupported_media(content_type)
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise ApiStatus(422 if content_type == JSON_PATCH else 400,
                                "Invalid" if content_type == JSON_PATCH else "BadRequest",
                                f"the server rejected our request due to an error in our "
                                f"request: {exc}") from exc
            self._check_body(rt, target, namespace, name)
            rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(
                patch, dict) else None
            if rv and rv != old.obj["metadata"].get("resourceVersion"):
                raise ApiStatus.modified(rt, name)
            new = self._prepare(rt, namespace, name, target, old, subresource)
            managed = _copy_managed(old)
            _record_update(rt, managed, old.obj, new, manager or "", subresource)
            return self._commit(rt, old, new, managed, dry_run)[0], False

    def _apply(self, rt: ResourceType, namespace: str, name: str, config: Any,
               old: Stored | None, manager: str, force: bool, dry_run: bool,
               subresource: str) -> tuple[dict[str, Any], bool]:
        self._check_body(rt, config, namespace, name)
        for key, what in (("apiVersion", "Version"), ("kind", "Kind")):
            if not config.get(key):
                raise ApiStatus.bad_request(
                    f"error decoding YAML: Object '{what}' is missing in the apply request")
        meta = config.get("metadata") or {}
        if meta.get("managedFields") is not None:
            raise ApiStatus.bad_request("metadata.managedFields must be nil")
        rv = meta.get("resourceVersion")
        if rv and (old is None or rv != old.obj["metadata"].get("resourceVersion")):
            raise ApiStatus.modified(rt, name)
        if old is None:
            if subresource:
                raise ApiStatus.not_found(rt, name)
            if rt.namespaced:
                self._check_namespace(rt, namespace)
            live: dict[str, Any] = {"metadata": {}}
        else:
            live = copy.deepcopy(old.obj)
        cfg_view = _view(rt, config, subresource)
        applied = field_set(cfg_view)
        merged = apply_merge(live, cfg_view)
        managed = _copy_managed(old) if old is not None else []
        mine = next((e for e in managed if e.manager == manager and e.operation == "Apply"
                     and e.subresource == subresource), None)
        others: set[FieldPath] = set()
        for e in managed:
            if e is not mine:
                others |= e.fields
        previous = mine.fields if mine is not None else set()
        # Fields this manager applied before and omits now go, unless someone else owns them.
        # Parents first: a removed list item takes its fields with it.
        for p in sorted(previous - applied - others, key=len):
            remove_at(merged, p)
        new = self._prepare(rt, namespace, name, merged, old, subresource)
        old_view = _view(rt, old.obj, subresource) if old is not None else {}
        new_view = _view(rt, new, subresource)
        conflicts = [
            (e, p) for e in managed if e.manager != manager and e.subresource == subresource
            for p in sorted(e.fields & applied, key=format_path)
            if _changed(old_view, new_view, p)
        ]
        if conflicts and not force:
            raise _conflict_error(conflicts)
        for e, p in conflicts:
            e.fields.discard(p)
        if mine is None:
            mine = Entry(manager, "Apply", rt.api_version, subresource)
            managed.append(mine)
        mine.fields = set(applied)
        mine.api_version = rt.api_version
        mine.time = now()
        _drop_vanished(rt, managed, new)
        rendered, _ = self._commit(rt, old, new, managed, dry_run)
        return rendered, old is None

    def delete(self, rt: ResourceType, namespace: str, name: str,
               dry_run: bool) -> dict[str, Any]:
        with self.lock:
            stored = self.lookup(rt, namespace, name)
            if stored is None:
                raise ApiStatus.not_found(rt, name)
            rendered = self.render(stored, rt)
            if dry_run:
                return rendered
            key = (rt.group, rt.plural, namespace if rt.namespaced else "", name)
            del self._objects[key]
            if rt.kind == "Namespace":
                for k in [k for k in self._objects if k[2] == name and
                          self._objects[k].rt.namespaced]:
                    del self._objects[k]
                rendered["metadata"]["deletionTimestamp"] = now()
                rendered["status"] = {"phase": "Terminating"}
                return rendered
            if rt.kind == "CustomResourceDefinition":
                spec = stored.obj.get("spec") or {}
                group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
                for k in [k for k in self._objects if k[0] == group and k[1] == plural]:
                    del self._objects[k]
                self._unregister_crd(stored.obj)
            if rt.kind in ("Pod", "CustomResourceDefinition") or not rt.builtin:
                return rendered
            details: dict[str, Any] = {"name": name, "kind": rt.plural,
                                       "uid": stored.obj["metadata"].get("uid")}
            if rt.group:
                details["group"] = rt.group
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": details}

    def set_status(self, rt: ResourceType, namespace: str, name: str, status: dict[str, Any],
                   manager: str) -> dict[str, Any]:
        """Replace the status as a controller would (an Update on the status subresource)."""
        with self.lock:
            old = self.lookup(rt, namespace, name)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            new = copy.deepcopy(old.obj)
            new["status"] = copy.deepcopy(status)
            managed = _copy_managed(old)
            _record_update(rt, managed, old.obj, new, manager, "status")
            return self._commit(rt, old, new, managed, False)[0]

    def preload(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as a create by ``kubectl-create`` would, keeping its status."""
        with self.lock:
            rt = self.type_for_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
            namespace = (obj.get("metadata") or {}).get("namespace") or (
                "default" if rt.namespaced else "")
            rendered = self.create(rt, namespace, obj, "kubectl-create", dry_run=False)
            if rt.has_status and obj.get("status"):
                rendered = self.set_status(rt, namespace, rendered["metadata"]["name"],
                                           obj["status"], "kubectl-create")
            return rendered


def _same_managed(a: list[Entry], b: list[Entry]) -> bool:
    return [(e.ident(), e.fields) for e in a] == [(e.ident(), e.fields) for e in b]


def _copy_managed(stored: Stored | None) -> list[Entry]:
    if stored is None:
        return []
    return [Entry(e.manager, e.operation, e.api_version, e.subresource, e.time, set(e.fields))
            for e in stored.managed]


def _decode_managed(raw: Any) -> list[Entry]:
    if not raw:
        return []
    out = []
    for item in raw:
        out.append(Entry(str(item.get("manager", "")), str(item.get("operation", "Update")),
                         str(item.get("apiVersion", "")), str(item.get("subresource", "")),
                         str(item.get("time") or now()),
                         decode_fields_v1(item.get("fieldsV1") or {})))
    return out


def _record_update(rt: ResourceType, managed: list[Entry], old: dict[str, Any] | None,
                   new: dict[str, Any], manager: str, subresource: str) -> None:
    """An Update takes the fields it changed away from every other manager."""
    old_view = _view(rt, old, subresource) if old is not None else {}
    new_view = _view(rt, new, subresource)
    old_set = field_set(old_view)
    changed = {p for p in field_set(new_view) if p not in old_set or _changed(old_view,
                                                                               new_view, p)}
    # An Update that creates a map (labels, annotations, data...) owns the map itself too,
    # which the API server records as a "." marker next to the entries.
    changed |= {p[:-1] for p in changed if len(p) >= 2 and p[-2][0] == "f"
                and p[-2][1] in FREEFORM and get_at(old_view, p[:-1]) is MISSING}
    if changed:
        for e in managed:
            if e.subresource == subresource:
                e.fields -= changed
        entry = next((e for e in managed if e.ident() == (manager, "Update", subresource,
                                                           rt.api_version)), None)
        if entry is None:
            entry = Entry(manager, "Update", rt.api_version, subresource)
            managed.append(entry)
        entry.fields |= changed
        entry.time = now()
    _drop_vanished(rt, managed, new)


def _drop_vanished(rt: ResourceType, managed: list[Entry], new: dict[str, Any]) -> None:
    views = {sub: _view(rt, new, sub) for sub in ("", "status")}
    for e in managed:
        view = views.get(e.subresource, views[""])
        e.fields = {p for p in e.fields if get_at(view, p) is not MISSING}


def _conflict_error(conflicts: list[tuple[Entry, FieldPath]]) -> ApiStatus:
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
