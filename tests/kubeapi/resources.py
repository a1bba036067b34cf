"""Resource types and API ``Status`` errors of the test API server.

:class:`ResourceType` describes one served resource (group, version, plural, kind, scope,
subresources: status, scale); :data:`BUILTIN_TYPES` lists the built-in ones;
:func:`crd_types` turns a CustomResourceDefinition into the types it serves.
:class:`ApiStatus` is the failure a request handler raises to answer with a Kubernetes
``Status`` body; it never leaves the test server (it is the wire format, not a project
error), and its constructors reproduce the kube-apiserver's messages
(``deployments.apps "web" not found``, ``Deployment.apps "web" is invalid: ...``).
Used by ``tests.kubeapi.store`` and ``tests.kubeapi.server``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN_TYPES", "ApiStatus", "Cause", "ResourceType", "crd_types",
           "established_status"]

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True
    has_generation: bool = False
    builtin: bool = True
    # the scale subresource: where the object keeps its desired and observed replica counts
    # (empty: no scale subresource)
    spec_replicas: tuple[str, ...] = ()
    status_replicas: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``configmaps``: how NotFound and Conflict name the type."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps`` / ``ConfigMap``: how Invalid names the type."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery_entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        entries = [main]
        if self.has_status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.spec_replicas:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


_REPLICAS = ("spec", "replicas")
_READY = ("status", "replicas")


def _path(json_path: Any) -> tuple[str, ...]:
    """``.spec.replicas`` -> ``("spec", "replicas")`` (a CRD's scale paths)."""
    return tuple(p for p in str(json_path or "").split(".") if p)


def _t(group: str, plural: str, kind: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    version = "v1"
    return ResourceType(group, version, plural, kind.lower(), kind, namespaced, **kw)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t("", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    _t("", "configmaps", "ConfigMap", short_names=("cm",), has_status=False),
    _t("", "secrets", "Secret", has_status=False),
    _t("", "services", "Service", short_names=("svc",)),
    _t("", "pods", "Pod", short_names=("po",)),
    _t("", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",)),
    _t("", "serviceaccounts", "ServiceAccount", short_names=("sa",), has_status=False),
    _t("apps", "deployments", "Deployment", short_names=("deploy",), has_generation=True,
       spec_replicas=_REPLICAS, status_replicas=_READY),
    _t("apps", "statefulsets", "StatefulSet", short_names=("sts",), has_generation=True,
       spec_replicas=_REPLICAS, status_replicas=_READY),
    _t("apps", "daemonsets", "DaemonSet", short_names=("ds",), has_generation=True),
    _t("batch", "jobs", "Job", has_generation=True),
    _t(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        has_generation=True,
    ),
)


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subresources = v.get("subresources") or spec.get("subresources") or {}
        scale = subresources.get("scale") or {}
        out.append(
            ResourceType(
                group=str(spec.get("group", "")),
                version=str(v.get("name", "")),
                plural=str(names.get("plural", "")),
                singular=str(names.get("singular") or str(names.get("kind", "")).lower()),
                kind=str(names.get("kind", "")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                has_status="status" in subresources,
                has_generation=True,
                builtin=False,
                spec_replicas=_path(scale.get("specReplicasPath")),
                status_replicas=_path(scale.get("statusReplicasPath")),
            )
        )
    return out


def established_status(crd: dict[str, Any], stamp: str) -> dict[str, Any]:
    """The status of a CustomResourceDefinition whose names were accepted at ``stamp``."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    return {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


@dataclass(frozen=True)
class Cause:
    reason: str
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class ApiStatus(Exception):
    """A failed request, answered with a ``Status`` body of this code, reason and message."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out

    @staticmethod
    def _details(rt: ResourceType, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "kind": rt.plural}
        if rt.group:
            out["group"] = rt.group
        return out

    @classmethod
    def not_found(cls, rt: ResourceType, name: str) -> ApiStatus:
        return cls(404, "NotFound", f'{rt.qualified} "{name}" not found', cls._details(rt, name))

    @classmethod
    def namespace_not_found(cls, namespace: str) -> ApiStatus:
        return cls(
            404,
            "NotFound",
            f'namespaces "{namespace}" not found',
            {"name": namespace, "kind": "namespaces"},
        )

    @classmethod
    def already_exists(cls, rt: ResourceType, name: str) -> ApiStatus:
        return cls(
            409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', cls._details(rt, name)
        )

    @classmethod
    def modified(cls, rt: ResourceType, name: str) -> ApiStatus:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            cls._details(rt, name),
        )

    @classmethod
    def invalid(cls, rt: ResourceType, name: str, causes: list[Cause]) -> ApiStatus:
        parts = [f"{c.field}: {c.message}" for c in causes]
        joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        details: dict[str, Any] = {
            "name": name,
            "kind": rt.kind,
            "causes": [c.to_dict() for c in causes],
        }
        if rt.group:
            details["group"] = rt.group
        return cls(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {joined}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiStatus:
        return cls(400, "BadRequest", message)

    @classmethod
    def page_not_found(cls) -> ApiStatus:
        return cls(
            404,
            "NotFound",
            "the server could not find the requested resource",
            {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
        )

    @classmethod
    def method_not_allowed(cls, method: str) -> ApiStatus:
        return cls(405, "MethodNotAllowed", f"the server does not allow this method ({method}) "
                   "on the requested resource")

    @classmethod
    def unsupported_media(cls, content_type: str) -> ApiStatus:
        return cls(415, "UnsupportedMediaType", f'the body of the request was in an unknown '
                   f'format - accepted media types include: application/json-patch+json, '
                   f'application/merge-patch+json, application/apply-patch+yaml, '
                   f'application/strategic-merge-patch+json (got "{content_type}")')
