"""The ``scale`` subresource of the test API server.

``GET .../deployments/web/scale`` answers an ``autoscaling/v1`` ``Scale`` built from the object
(:func:`render`); ``PUT`` and the non-apply ``PATCH`` types write its ``spec.replicas`` back to
the object's replica field (:func:`replicas_of` checks the body), as ``kubectl scale`` and the
HorizontalPodAutoscaler do. Served for the kinds whose :class:`ResourceType` names a replica
field: Deployments, StatefulSets and custom resources whose CRD declares a scale subresource.
The field ownership of such a write (an Update with ``subresource: scale`` that takes
``spec.replicas`` from whoever owned it) is ``tests.kubeapi.ownership``'s.
"""

from __future__ import annotations

from typing import Any

from tests.kubeapi.resources import ApiStatus, Cause, ResourceType

__all__ = ["render", "replicas_of", "set_replicas"]

_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _selector(rt: ResourceType, obj: dict[str, Any]) -> str:
    selector = _at(obj, ("spec", "selector"))
    labels = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(labels, dict) or not rt.builtin:
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def render(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The ``Scale`` of ``obj``."""
    meta = obj.get("metadata") or {}
    replicas = _at(obj, rt.spec_replicas)
    if replicas is None and not rt.builtin:
        raise ApiStatus(500, "InternalError", "Internal error occurred: the spec replicas "
                        f"field {'.' + '.'.join(rt.spec_replicas)!r} does not exist")
    status: dict[str, Any] = {"replicas": _at(obj, rt.status_replicas) or 0}
    selector = _selector(rt, obj)
    if selector:
        status["selector"] = selector
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in _META if k in meta},
            "spec": {"replicas": replicas or 0}, "status": status}


def replicas_of(rt: ResourceType, name: str, body: Any) -> int:
    """The replica count a ``Scale`` body asks for (400/422 as the real server answers)."""
    if not isinstance(body, dict):
        raise ApiStatus.bad_request("the body of the request must be a JSON object")
    if body.get("kind") not in (None, "Scale"):
        raise ApiStatus.bad_request(f"the kind in the data ({body.get('kind')}) does not match "
                                    "the expected kind (Scale)")
    meta = body.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise ApiStatus.bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the "
            f"URL ({name})")
    replicas = (body.get("spec") or {}).get("replicas", 0)
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ApiStatus.bad_request("Scale in version \"v1\" cannot be handled as a Scale: "
                                    "json: cannot unmarshal into Go struct field "
                                    "ScaleSpec.spec.replicas of type int32")
    if replicas < 0:
        raise ApiStatus(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: '
                        f"spec.replicas: Invalid value: {replicas}: must be greater than or "
                        "equal to 0", {"name": name, "group": "autoscaling", "kind": "Scale",
                                       "causes": [Cause("FieldValueInvalid", "Invalid value",
                                                        "spec.replicas").to_dict()]})
    return replicas


def set_replicas(rt: ResourceType, obj: dict[str, Any], replicas: int) -> None:
    """Write ``replicas`` into the object's replica field (in place)."""
    node = obj
    for key in rt.spec_replicas[:-1]:
        node = node.setdefault(key, {})
    node[rt.spec_replicas[-1]] = replicas
