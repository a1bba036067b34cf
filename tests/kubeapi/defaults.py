"""Defaulting and validation of the test API server, modelled on the kube-apiserver's.

``apply_defaults`` fills what the real server fills (Deployment replicas and strategy, pod
template defaults, Service cluster IPs and port protocols, Namespace finalizers...), so a
client that diffs its whole object against the live one sees the same noise it would see on a
real cluster. ``validate`` rejects what the real server rejects, raising
:class:`tests.kubeapi.resources.ApiStatus` with the real message. ``initial_status`` is the
status an object is created with. Called by ``tests.kubeapi.store`` on every write.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from tests.kubeapi.resources import ApiStatus, Cause, ResourceType

__all__ = [
    "apply_defaults", "check_body", "initial_status", "validate", "validate_body_types",
    "validate_update",
]

_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
_cluster_ips = itertools.count(1)
_node_ports = itertools.count(30080)

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    r"used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def _pod_spec_defaults(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            image = str(c.get("image", ""))
            tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
            latest = not tagged or image.endswith(":latest")
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
            for e in c.get("env") or []:
                ref = e.get("valueFrom", {}).get("fieldRef") if isinstance(e, dict) else None
                if isinstance(ref, dict):
                    ref.setdefault("apiVersion", "v1")


def _template_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    template = spec.get("template")
    if not isinstance(template, dict):
        return None
    tspec = template.setdefault("spec", {})
    return tspec if isinstance(tspec, dict) else None


def apply_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Fill the fields the real API server defaults (in place)."""
    if not rt.builtin:
        return
    kind = rt.kind
    spec = obj.get("spec")
    if kind in _WORKLOADS and isinstance(spec, dict):
        tspec = _template_spec(obj)
        if tspec is not None:
            if kind == "Job" and "restartPolicy" not in tspec:
                # A Job's pod template is not defaulted to Always; validation demands a value.
                tspec["restartPolicy"] = ""
            _pod_spec_defaults(tspec)
    if kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxSurge", "25%")
            ru.setdefault("maxUnavailable", "25%")
    elif kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"partition": 0}})
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
    elif kind == "DaemonSet" and isinstance(spec, dict):
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": 0, "maxUnavailable": 1}})
    elif kind == "Job" and isinstance(spec, dict):
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
    elif kind == "Pod" and isinstance(spec, dict):
        _pod_spec_defaults(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
    elif kind == "Service" and isinstance(spec, dict):
        _service_defaults(spec)
    elif kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels.setdefault("kubernetes.io/metadata.name", obj["metadata"].get("name", ""))
    elif kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")


def _service_defaults(spec: dict[str, Any]) -> None:
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if stype != "ExternalName":
        if not spec.get("clusterIP"):
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if not isinstance(p, dict):
            continue
        p.setdefault("protocol", "TCP")
        if "port" in p:
            p.setdefault("targetPort", p["port"])
        if stype in ("NodePort", "LoadBalancer"):
            p.setdefault("nodePort", next(_node_ports))
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def initial_status(rt: ResourceType) -> dict[str, Any] | None:
    """The status an object of this type is created with (None: the type has no status)."""
    if not rt.has_status or not rt.builtin:
        return None
    if rt.kind == "Namespace":
        return {"phase": "Active"}
    if rt.kind == "Service":
        return {"loadBalancer": {}}
    if rt.kind == "PersistentVolumeClaim":
        return {"phase": "Pending"}
    if rt.kind == "Pod":
        return {"phase": "Pending", "qosClass": "BestEffort"}
    return {}


def check_body(rt: ResourceType, body: Any, namespace: str, name: str | None) -> None:
    """Reject a body that cannot be this object (400 BadRequest), as the real server does."""
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
    validate_body_types(rt, body)


def validate_body_types(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Reject bodies the real server cannot decode into its Go types (400 BadRequest)."""
    if rt.kind in ("ConfigMap", "Secret"):
        for key in ("data", "stringData") if rt.kind == "Secret" else ("data",):
            for value in (obj.get(key) or {}).values():
                if not isinstance(value, str):
                    go_type = {bool: "bool", int: "number", float: "number", list: "array",
                               dict: "object"}.get(type(value), "value")
                    raise ApiStatus.bad_request(
                        f'{rt.kind} in version "v1" cannot be handled as a {rt.kind}: json: '
                        f"cannot unmarshal {go_type} into Go struct field {rt.kind}.{key} of "
                        "type string"
                    )


def validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid naming every offending field, like the real server."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    causes: list[Cause] = []
    if not name:
        causes.append(Cause("FieldValueRequired", "Required value: name or generateName is "
                            "required", "metadata.name"))
    else:
        pattern, msg, limit = _SUBDOMAIN, _SUBDOMAIN_MSG, 253
        if rt.kind == "Namespace":
            pattern, msg, limit = _LABEL_1123, _LABEL_1123_MSG, 63
        elif rt.kind == "Service":
            pattern, msg, limit = _LABEL_1035, _LABEL_1035_MSG, 63
        if not pattern.match(name) or len(name) > limit:
            causes.append(Cause("FieldValueInvalid", f'Invalid value: "{name}": {msg}',
                                "metadata.name"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if rt.builtin and rt.kind in _WORKLOADS:
        causes += _validate_workload(rt, spec)
    elif rt.builtin and rt.kind == "Pod":
        causes += _validate_containers(spec, "spec")
    elif rt.builtin and rt.kind == "Service":
        causes += _validate_service(spec)
    elif rt.kind == "CustomResourceDefinition":
        causes += _validate_crd(obj, spec)
    if causes:
        raise ApiStatus.invalid(rt, name, causes)


def _validate_containers(pod_spec: Any, prefix: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    if not containers:
        return [Cause("FieldValueRequired", "Required value", f"{prefix}.containers")]
    for i, c in enumerate(containers):
        c = c if isinstance(c, dict) else {}
        if not c.get("name"):
            causes.append(Cause("FieldValueRequired", "Required value",
                                f"{prefix}.containers[{i}].name"))
        if not c.get("image"):
            causes.append(Cause("FieldValueRequired", "Required value",
                                f"{prefix}.containers[{i}].image"))
    return causes


def _validate_workload(rt: ResourceType, spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    assert isinstance(template, dict)
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector")
    if rt.kind != "Job":
        if not selector:
            causes.append(Cause("FieldValueRequired", "Required value", "spec.selector"))
        else:
            wanted = selector.get("matchLabels") or {}
            if not wanted and not selector.get("matchExpressions"):
                causes.append(Cause("FieldValueInvalid", "Invalid value: v1.LabelSelector{"
                                    "MatchLabels:map[string]string(nil), MatchExpressions:"
                                    "[]v1.LabelSelectorRequirement(nil)}: empty selector is "
                                    "invalid for deployment", "spec.selector"))
            elif any(labels.get(k) != v for k, v in wanted.items()):
                rendered = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
                causes.append(Cause("FieldValueInvalid", f"Invalid value: map[string]string"
                                    f"{{{rendered}}}: `selector` does not match template "
                                    "`labels`", "spec.template.metadata.labels"))
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(Cause("FieldValueInvalid", f"Invalid value: {replicas}: must be greater "
                            "than or equal to 0", "spec.replicas"))
    causes += _validate_containers(template.get("spec"), "spec.template.spec")
    policy = (template.get("spec") or {}).get("restartPolicy")
    if rt.kind == "Job" and policy not in ("OnFailure", "Never"):
        causes.append(Cause("FieldValueRequired" if not policy else "FieldValueNotSupported",
                            "Required value: valid values: \"OnFailure\", \"Never\"" if not
                            policy else f'Unsupported value: "{policy}": supported values: '
                            '"OnFailure", "Never"', "spec.template.spec.restartPolicy"))
    return causes


_IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "selector"),),
    "StatefulSet": (("spec", "selector"), ("spec", "serviceName")),
    "DaemonSet": (("spec", "selector"),),
    "Job": (("spec", "selector"), ("spec", "template"), ("spec", "completions")),
    "Service": (("spec", "clusterIP"),),
    "PersistentVolumeClaim": (("spec", "accessModes"), ("spec", "storageClassName")),
}


def validate_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Reject changes to fields the real server treats as immutable (422 Invalid)."""
    causes = []
    for path in _IMMUTABLE.get(rt.kind, ()) if rt.builtin else ():
        before: Any = old
        after: Any = new
        for key in path:
            before = before.get(key) if isinstance(before, dict) else None
            after = after.get(key) if isinstance(after, dict) else None
        if before != after:
            causes.append(Cause("FieldValueInvalid", f"Invalid value: {_go(after)}: field is "
                                "immutable", ".".join(path)))
    if causes:
        raise ApiStatus.invalid(rt, str(new["metadata"].get("name", "")), causes)


def _go(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return "core.PodTemplateSpec{...}" if isinstance(value, dict) else repr(value)


def _validate_service(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    if not ports and spec.get("type", "ClusterIP") != "ExternalName" and \
            spec.get("clusterIP") != "None":
        causes.append(Cause("FieldValueRequired", "Required value", "spec.ports"))
    for i, p in enumerate(ports):
        port = p.get("port") if isinstance(p, dict) else None
        if not isinstance(port, int) or not 1 <= port <= 65535:
            causes.append(Cause("FieldValueInvalid", f"Invalid value: {port or 0}: must be "
                                "between 1 and 65535, inclusive", f"spec.ports[{i}].port"))
        if len(ports) > 1 and isinstance(p, dict) and not p.get("name"):
            causes.append(Cause("FieldValueRequired", "Required value",
                                f"spec.ports[{i}].name"))
    return causes


def _validate_crd(obj: dict[str, Any], spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    name = (obj.get("metadata") or {}).get("name", "")
    for key in ("plural", "kind"):
        if not names.get(key):
            causes.append(Cause("FieldValueRequired", "Required value", f"spec.names.{key}"))
    if not group:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.group"))
    if names.get("plural") and group and name != f"{names['plural']}.{group}":
        causes.append(Cause("FieldValueInvalid", f'Invalid value: "{name}": must be '
                            'spec.names.plural+"."+spec.group', "metadata.name"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(Cause("FieldValueNotSupported", f'Unsupported value: "{spec.get("scope")}'
                            '": supported values: "Cluster", "Namespaced"', "spec.scope"))
    if not spec.get("versions"):
        causes.append(Cause("FieldValueRequired", "Required value: must have exactly one "
                            "version marked as storage version", "spec.versions"))
    return causes
