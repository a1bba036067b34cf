"""What the kubernetes provider applies: a component's objects, rendered and placed.

Used by ``KubernetesProvider`` (``kubernetes.py``): :func:`desired_objects` loads the
component's manifests and inline resources (``kube_manifests.py``), puts them in apply order,
stamps our ownership marks, places each in its namespace and checks the local policy;
:class:`Options` are the properties that shape an apply; :func:`with_ignored` gives ignored
fields their live values; :func:`record_refs` reads the objects an inventory record lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.provider_api import Component, LocalPolicy, PermanentError, PolicyError, Record

from .kube_manifests import duplicate, load_objects
from .kube_objects import (
    ObjectRef,
    apply_order,
    get_pointer,
    remove_pointer,
    set_pointer,
    stamp_ownership,
)

if TYPE_CHECKING:  # the kubernetes client costs ~0.1 s to import: only when a target uses it
    from .kube_client import KubeClient, ResourceInfo

__all__ = ["CRD", "Desired", "Options", "crd_api_versions", "crd_kinds", "desired_objects",
           "record_refs", "with_ignored"]

CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")


@dataclass(frozen=True)
class Options:
    """The component properties that shape what is applied."""

    force: bool
    prune: bool
    ignore: tuple[str, ...]

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> Options:
        return cls(force=bool(properties.get("force", True)),
                   prune=bool(properties.get("prune", True)),
                   ignore=tuple(str(p) for p in properties.get("ignore") or ()))


@dataclass(frozen=True)
class Desired:
    """One object to apply: its reference, rendered body and kind as served."""

    ref: ObjectRef
    body: dict[str, Any]
    info: ResourceInfo | None  # None: a custom kind whose CRD is in this component, not yet served


def crd_kinds(objects: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
    """``(group, kind) -> namespaced`` for the CRDs among ``objects``."""
    found: dict[tuple[str, str], bool] = {}
    for obj in objects:
        if (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind")) != CRD:
            continue
        spec = obj.get("spec") or {}
        kind = str((spec.get("names") or {}).get("kind") or "")
        found[(str(spec.get("group") or ""), kind)] = spec.get("scope", "Namespaced") != "Cluster"
    return found


def crd_api_versions(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    return [f"{spec.get('group')}/{v.get('name')}" for v in spec.get("versions") or []
            if isinstance(v, Mapping)]


def with_ignored(body: Mapping[str, Any], live: Mapping[str, Any] | None,
                  ignore: Sequence[str]) -> dict[str, Any]:
    """The body to apply: ignored fields carry the live value, so we never fight over them."""
    out = json.loads(json.dumps(body))
    if live is None:
        return dict(out)
    for pointer in ignore:
        found, value = get_pointer(live, pointer)
        if found:
            set_pointer(out, pointer, value)
        else:
            remove_pointer(out, pointer)
    return dict(out)


def record_refs(record: Record | None) -> list[tuple[ObjectRef, bool]]:
    """``(ref, prune_pending)`` for every object a record lists."""
    if record is None:
        return []
    out = []
    for raw in record.data.get("objects") or []:
        if isinstance(raw, Mapping):
            out.append((ObjectRef.from_dict(raw), bool(raw.get("prunePending"))))
    return out


def _check_policy(ref: ObjectRef, policy: LocalPolicy) -> None:
    allowed = policy.namespaces
    if allowed is None:
        return
    namespace = ref.name if (ref.group, ref.kind) == ("", "Namespace") else ref.namespace
    if namespace and namespace not in allowed:
        raise PolicyError(f"{ref}: namespace {namespace!r} is not allowed by the local "
                          f"policy (allowed: {', '.join(sorted(allowed)) or 'none'})")


def desired_objects(component: Component, client: KubeClient, namespace: str | None,
                    policy: LocalPolicy) -> list[Desired]:
    """The component's objects in apply order, stamped with our ownership marks, each in
    its namespace (its own, else the binding's ``namespace``, else the kubeconfig's),
    checked against the local policy."""
    objects = load_objects(component)
    crds = crd_kinds(objects)
    desired: list[Desired] = []
    for obj in apply_order(objects):
        body = stamp_ownership(obj, instance=component.instance, target=component.target,
                               component=component.name)
        api_version, kind = str(body["apiVersion"]), str(body["kind"])
        info = client.resource(api_version, kind)
        namespaced = info.namespaced if info is not None else \
            crds.get((api_version.rpartition("/")[0], kind))
        if namespaced is None:
            raise PermanentError(f"{ObjectRef.of(body)}: the API server does not know kind "
                                 f"{kind} in {api_version}", reason="UnknownKind")
        if namespaced:
            body["metadata"]["namespace"] = str(body["metadata"].get("namespace") or namespace
                                                or client.default_namespace)
        else:
            body["metadata"].pop("namespace", None)
        ref = ObjectRef.of(body)
        _check_policy(ref, policy)
        desired.append(Desired(ref, body, info))
    twice = duplicate([d.ref for d in desired])
    if twice is not None:
        raise PermanentError(f"component {component.name}: {twice} is defined twice",
                             reason="InvalidManifest")
    return desired
