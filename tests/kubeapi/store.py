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
from dataclasses import dataclass
from typing import Any

from tests.kubeapi import defaults, scale
from tests.kubeapi.fieldsets import apply_merge, field_set, remove_at
from tests.kubeapi.ownership import (
    Entry,
    copy_managed,
    decode_managed,
    now,
    omitted,
    record_apply,
    record_update,
    same_managed,
    view,
)
from tests.kubeapi.patches import APPLY, MERGE, patched
from tests.kubeapi.resources import (
    BUILTIN_TYPES,
    ApiStatus,
    ResourceType,
    crd_types,
    established_status,
)

__all__ = ["APPLY", "MERGE", "Entry", "Store", "Stored", "now"]

ObjKey = tuple[str, str, str, str]  # group, plural, namespace, name


@dataclass
class Stored:
    rt: ResourceType
    obj: dict[str, Any]
    managed: list[Entry]


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


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
        if old is not None and old.obj == new and same_managed(old.managed, managed):
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
        stored.obj["status"] = established_status(stored.obj, now())
        self._register_crd(stored.obj)

    @staticmethod
    def _managed_from(body: dict[str, Any], old: Stored, subresource: str) -> list[Entry]:
        """Where an Update starts from: the managedFields the written object carries when it
        carries some (a client may rewrite them; ``[{}]`` resets them), else the live ones
        (an empty list or none at all must not wipe them); subresource writes never set
        them."""
        given = (body.get("metadata") or {}).get("managedFields")
        if given and not subresource:
            return decode_managed(given)
        return copy_managed(old.managed)

    def create(self, rt: ResourceType, namespace: str, body: Any, manager: str,
               dry_run: bool) -> dict[str, Any]:
        with self.lock:
            defaults.check_body(rt, body, namespace, None)
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
            managed = decode_managed(meta.get("managedFields"))
            record_update(rt, managed, None, new, manager, "")
            rendered, _ = self._commit(rt, None, new, managed, dry_run)
            return rendered

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, manager: str,
               dry_run: bool, subresource: str = "") -> dict[str, Any]:
        with self.lock:
            defaults.check_body(rt, body, namespace, name)
            old = self.lookup(rt, namespace, name)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old.obj["metadata"].get("resourceVersion"):
                raise ApiStatus.modified(rt, name)
            new = self._prepare(rt, namespace, name, body, old, subresource)
            managed = self._managed_from(body, old, subresource)
            record_update(rt, managed, old.obj, new, manager, subresource)
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
            target = patched(current, content_type, patch, strategic=rt.builtin)
            defaults.check_body(rt, target, namespace, name)
            rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(
                patch, dict) else None
            if rv and rv != old.obj["metadata"].get("resourceVersion"):
                raise ApiStatus.modified(rt, name)
            managed = self._managed_from(target, old, subresource)
            new = self._prepare(rt, namespace, name, target, old, subresource)
            record_update(rt, managed, old.obj, new, manager or "", subresource)
            return self._commit(rt, old, new, managed, dry_run)[0], False

    def _apply(self, rt: ResourceType, namespace: str, name: str, config: Any,
               old: Stored | None, manager: str, force: bool, dry_run: bool,
               subresource: str) -> tuple[dict[str, Any], bool]:
        defaults.check_body(rt, config, namespace, name)
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
        cfg_view = view(rt, config, subresource)
        applied = field_set(cfg_view)
        merged = apply_merge(live, cfg_view)
        managed = copy_managed(old.managed) if old is not None else []
        # Parents first: a removed list item takes its fields with it.
        for p in sorted(omitted(managed, manager, subresource, applied), key=len):
            remove_at(merged, p)
        new = self._prepare(rt, namespace, name, merged, old, subresource)
        record_apply(rt, managed, old.obj if old is not None else None, new, manager,
                     subresource, applied, force)
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

    def get_scale(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            stored = self.lookup(rt, namespace, name)
            if stored is None:
                raise ApiStatus.not_found(rt, name)
            return scale.render(rt, stored.obj)

    def write_scale(self, rt: ResourceType, namespace: str, name: str, body: Any,
                    manager: str, dry_run: bool) -> dict[str, Any]:
        """Set the replica count through the ``scale`` subresource; answers the new Scale."""
        with self.lock:
            old = self.lookup(rt, namespace, name)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            replicas = scale.replicas_of(rt, name, body)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old.obj["metadata"].get("resourceVersion"):
                raise ApiStatus.modified(rt, name)
            new = copy.deepcopy(old.obj)
            scale.set_replicas(rt, new, replicas)
            defaults.validate(rt, new)
            managed = copy_managed(old.managed)
            record_update(rt, managed, old.obj, new, manager, "scale")
            return scale.render(rt, self._commit(rt, old, new, managed, dry_run)[0])

    def set_status(self, rt: ResourceType, namespace: str, name: str, status: dict[str, Any],
                   manager: str) -> dict[str, Any]:
        """Replace the status as a controller would (an Update on the status subresource)."""
        with self.lock:
            old = self.lookup(rt, namespace, name)
            if old is None:
                raise ApiStatus.not_found(rt, name)
            new = copy.deepcopy(old.obj)
            new["status"] = copy.deepcopy(status)
            managed = copy_managed(old.managed)
            record_update(rt, managed, old.obj, new, manager, "status")
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


