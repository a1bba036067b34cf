"""URL routing, discovery documents and collection lists of the test API server.

:func:`route` maps ``/api/v1/namespaces/ns/configmaps/x`` or
``/apis/apps/v1/namespaces/ns/deployments/x/scale`` to a :class:`Route`; :func:`verb` names
a request the way the kube-apiserver's audit log does (``get``, ``list``, ``patch``...);
:func:`discovery` answers ``/version``, ``/api``, ``/apis`` and the group-version resource
lists; :func:`list_page` answers a list with label and field selectors and ``limit`` /
``continue`` paging. Called by ``tests.kubeapi.server`` under the store lock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.kubeapi.resources import ApiStatus, ResourceType
from tests.kubeapi.selectors import match_fields, match_labels
from tests.kubeapi.store import Store, Stored

__all__ = ["Route", "discovery", "list_page", "route", "verb"]

_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "kubeapi-test",
    "gitTreeState": "clean", "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5",
    "compiler": "gc", "platform": "linux/amd64",
}
_SUBRESOURCES = ("status", "scale")


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def route(store: Store, segs: list[str]) -> Route | None:
    """The resource a path names, None when it names none."""
    if segs[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rt = store.find_type(group, version, rest[0])
    if rt is None or (namespace is not None and not rt.namespaced):
        return None
    sub = rest[2] if len(rest) == 3 else ""
    if sub and (sub not in _SUBRESOURCES or (sub == "status" and not rt.has_status)
                or (sub == "scale" and not rt.spec_replicas)):
        return None
    return Route(rt, namespace, rest[1] if len(rest) >= 2 else None, sub)


def verb(method: str, found: Route | None, query: dict[str, str]) -> str:
    """The request's verb as an audit log names it; "" for discovery and non-resource paths."""
    if found is None:
        return ""
    if found.name is None:
        if method == "GET":
            return "watch" if query.get("watch") in ("true", "1") else "list"
        return {"POST": "create", "DELETE": "deletecollection"}.get(method, method.lower())
    return {"GET": "get", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(method, method.lower())


def discovery(store: Store, segs: list[str], address: str) -> Any:
    """The discovery document at ``segs``, None when it is not a discovery path."""
    types = store.types()
    if segs == ["version"]:
        return _VERSION
    if segs == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}
    if segs == ["api", "v1"]:
        return _resource_list("v1", [t for t in types if t.group == ""])
    groups: dict[str, list[str]] = {}
    for t in types:
        if t.group and t.version not in groups.setdefault(t.group, []):
            groups[t.group].append(t.version)
    if segs == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [_group(g, vs) for g, vs in groups.items()]}
    if len(segs) == 2 and segs[0] == "apis" and segs[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(segs[1], groups[segs[1]])}
    if len(segs) == 3 and segs[0] == "apis" and segs[2] in groups.get(segs[1], []):
        return _resource_list(f"{segs[1]}/{segs[2]}", [
            t for t in types if t.group == segs[1] and t.version == segs[2]])
    return None


def _group(name: str, versions: Iterable[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for t in types:
        resources += t.discovery_entries()
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}


def _token(key: tuple[str, str], rv: str) -> str:
    raw = json.dumps({"rv": rv, "after": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _after(token: str) -> tuple[str, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, name = decoded["after"]
        return (str(namespace), str(name))
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiStatus.bad_request("continue key is not valid: "
                                    "illegal base64 data or JSON") from exc


def list_page(store: Store, rt: ResourceType, namespace: str | None, query: dict[str, str],
              on_read: Callable[[Stored], None] | None = None) -> dict[str, Any]:
    """One page of the collection: objects matching the selectors, in name order, at most
    ``limit`` of them with a ``continue`` token for the rest. ``on_read`` sees every object
    first (the controller advances its status)."""
    if on_read is not None:
        for stored in store.select(rt, namespace):
            on_read(stored)
    limit_text = query.get("limit", "")
    limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else 0
    after = _after(query["continue"]) if query.get("continue") else None
    rv = store.resource_version()
    items: list[tuple[tuple[str, str], dict[str, Any]]] = []
    for stored in store.select(rt, namespace):
        meta = stored.obj["metadata"]
        key = (str(meta.get("namespace", "")), str(meta["name"]))
        if after is not None and key <= after:
            continue
        obj = store.render(stored, rt)
        if not match_labels(query.get("labelSelector", ""), obj):
            continue
        if not match_fields(query.get("fieldSelector", ""), obj):
            continue
        if rt.builtin:
            # Typed lists of built-in kinds carry no per-item apiVersion/kind.
            del obj["apiVersion"], obj["kind"]
        items.append((key, obj))
    metadata: dict[str, Any] = {"resourceVersion": rv}
    if limit and len(items) > limit:
        metadata["continue"] = _token(items[limit - 1][0], rv)
        metadata["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata,
            "items": [obj for _, obj in items]}
