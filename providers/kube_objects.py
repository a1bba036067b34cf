"""Kubernetes object values: references, apply order, ownership marks and JSON pointers.

Pure helpers shared by the provider (``kubernetes.py``), the diff (``kube_diff.py``) and the
manifest loader (``kube_manifests.py``). An :class:`ObjectRef` is what the inventory records
for every applied object; the ownership labels and annotations stamped on each object say
which instance, component and target put it there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANNOTATION_COMPONENT",
    "ANNOTATION_INSTANCE",
    "ANNOTATION_TARGET",
    "FIELD_MANAGER",
    "LABEL_MANAGED_BY",
    "ObjectRef",
    "apply_order",
    "decode_pointer",
    "get_pointer",
    "refs_of",
    "remove_pointer",
    "set_pointer",
    "stamp_ownership",
]

FIELD_MANAGER = "reconciler"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_INSTANCE = "reconciler.io/instance"
ANNOTATION_TARGET = "reconciler.io/target"
ANNOTATION_COMPONENT = "reconciler.io/component"

# label values: at most 63 characters, alphanumeric at both ends
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

# kinds applied before everything else, in this order: later objects may live in them
_FIRST_KINDS = ("Namespace", "CustomResourceDefinition")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of one object: what the inventory records and prunes by."""

    api_version: str
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """Identity across API versions (``apps/v1`` and ``apps/v1beta2`` are one object)."""
        return (self.group, self.kind, self.namespace, self.name)

    def to_dict(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind,
                "namespace": self.namespace, "name": self.name}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ObjectRef:
        return cls(api_version=str(raw.get("apiVersion", "")), kind=str(raw.get("kind", "")),
                   namespace=str(raw.get("namespace") or ""), name=str(raw.get("name", "")))

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(api_version=str(obj.get("apiVersion", "")), kind=str(obj.get("kind", "")),
                   namespace=str(meta.get("namespace") or ""), name=str(meta.get("name", "")))


def apply_order(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Namespaces, then CustomResourceDefinitions, then the rest in manifest order."""

    def rank(item: tuple[int, Mapping[str, Any]]) -> tuple[int, int]:
        index, obj = item
        kind = obj.get("kind")
        first = _FIRST_KINDS.index(kind) if kind in _FIRST_KINDS else len(_FIRST_KINDS)
        return (first, index)

    return [obj for _, obj in sorted(enumerate(objects), key=rank)]


def stamp_ownership(obj: Mapping[str, Any], *, instance: str, target: str,
                    component: str) -> dict[str, Any]:
    """A copy of ``obj`` carrying the ownership label and annotations.

    The identity goes into annotations because instance, target and component names may hold
    characters a label value cannot; it is also put in labels when it fits, so that
    ``kubectl get -l reconciler.io/instance=...`` works.
    """
    out = copy.deepcopy(dict(obj))
    meta = dict(out.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    labels[LABEL_MANAGED_BY] = FIELD_MANAGER
    for key, value in ((ANNOTATION_INSTANCE, instance), (ANNOTATION_TARGET, target),
                       (ANNOTATION_COMPONENT, component)):
        annotations[key] = value
        if _LABEL_VALUE.match(value):
            labels[key] = value
    meta["labels"] = labels
    meta["annotations"] = annotations
    out["metadata"] = meta
    return out


def decode_pointer(pointer: str) -> list[str]:
    """RFC 6901: ``/metadata/annotations/a~1b`` -> ``["metadata", "annotations", "a/b"]``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _step(node: Any, part: str) -> tuple[bool, Any]:
    if isinstance(node, Mapping):
        return (part in node, node.get(part))
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return (True, node[int(part)])
    return (False, None)


def get_pointer(obj: Any, pointer: str) -> tuple[bool, Any]:
    """``(found, value)`` at ``pointer`` inside ``obj``."""
    node = obj
    for part in decode_pointer(pointer):
        found, node = _step(node, part)
        if not found:
            return (False, None)
    return (True, node)


def remove_pointer(obj: Any, pointer: str) -> None:
    """Delete the value at ``pointer`` in place; a missing path is left as it is."""
    parts = decode_pointer(pointer)
    if not parts:
        return
    parent = obj
    for part in parts[:-1]:
        found, parent = _step(parent, part)
        if not found:
            return
    last = parts[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]


def set_pointer(obj: Any, pointer: str, value: Any) -> None:
    """Set the value at ``pointer`` in place, creating intermediate mappings."""
    parts = decode_pointer(pointer)
    if not parts:
        return
    node = obj
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = copy.deepcopy(value)


def refs_of(objects: Iterable[Mapping[str, Any]]) -> list[ObjectRef]:
    return [ObjectRef.of(obj) for obj in objects]
