"""The writers that change an applied object, speaking the Kubernetes HTTP API.

Tests of field ownership (``tests/kubeapi/test_field_ownership.py``) and of the kubernetes
provider's drift checks (``tests/integration/test_kubernetes_idle.py``) drift objects the way
people and controllers do: an update (read, modify, ``PUT``), a server-side apply by another
field manager (with or without ``force``), the ``scale`` subresource (``kubectl scale``, the
HorizontalPodAutoscaler) and the ``status`` subresource (controllers). :class:`Writers` sends
those requests through the official client's ``ApiClient`` to whatever a kubeconfig names, so
the same test runs against the test API server and a real cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

__all__ = ["APPLY", "Answer", "Writers", "entry", "object_path"]

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def object_path(api_version: str, plural: str, namespace: str, name: str = "",
                subresource: str = "") -> str:
    """``/apis/apps/v1/namespaces/ns/deployments/web[/scale]`` (``namespace`` "" for
    cluster-scoped kinds)."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    return path + (f"/{subresource}" if subresource else "")


def entry(obj: dict[str, Any], manager: str, operation: str = "Apply",
          subresource: str = "") -> dict[str, Any] | None:
    """``manager``'s ``managedFields`` entry of ``obj`` for that operation and subresource."""
    for item in (obj.get("metadata") or {}).get("managedFields") or []:
        if (item.get("manager"), item.get("operation"), item.get("subresource", "")) == (
                manager, operation, subresource):
            found: dict[str, Any] = item
            return found
    return None


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Writers:
    """Requests to one cluster as any field manager; every call answers, none raises."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig),  # type: ignore[no-untyped-call]
                                    client_configuration=configuration, persist_config=False)
        configuration.retries = False
        self._api = k8s_client.ApiClient(configuration)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def call(self, method: str, path: str, body: Any = None, *,
             content_type: str = "application/json",
             query: list[tuple[str, str]] | None = None) -> Answer:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._api.param_serialize(method, path, query_params=query or [],
                                            header_params=headers, body=body,
                                            auth_settings=["BearerToken"])
        try:
            response = self._api.call_api(*request, _request_timeout=30)
            status, data = int(response.status), response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            status, data = int(exc.status or 0), exc.body
        decoded = json.loads(data) if data else {}
        return Answer(status, decoded if isinstance(decoded, dict) else {"value": decoded})

    def get(self, path: str) -> dict[str, Any]:
        answer = self.call("GET", path)
        assert answer.ok, answer
        return answer.body

    def update(self, path: str, edit: Callable[[dict[str, Any]], None],
               manager: str) -> Answer:
        """Read, ``edit`` in place, write back whole (``PUT``), as ``kubectl edit`` or a
        controller's update does; the body carries the managedFields as read."""
        obj = self.get(path)
        edit(obj)
        return self.call("PUT", path, obj, query=[("fieldManager", manager)])

    def apply(self, path: str, body: dict[str, Any], manager: str, *,
              force: bool = False) -> Answer:
        """A server-side apply of ``body`` by ``manager``."""
        query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
        return self.call("PATCH", path, body, content_type=APPLY, query=query)

    def scale(self, path: str, replicas: int, manager: str) -> Answer:
        """Set the replica count through the ``scale`` subresource, as ``kubectl scale``."""
        return self.call("PATCH", f"{path}/scale", {"spec": {"replicas": replicas}},
                         content_type=MERGE, query=[("fieldManager", manager)])

    def status(self, path: str, status: dict[str, Any], manager: str) -> Answer:
        """Merge ``status`` into the object's status through the ``status`` subresource."""
        return self.call("PATCH", f"{path}/status", {"status": status}, content_type=MERGE,
                         query=[("fieldManager", manager)])

    def reset_managed_fields(self, path: str, manager: str) -> Answer:
        """Clear every managedFields entry (a list holding one empty entry resets them)."""
        return self.call("PATCH", path, {"metadata": {"managedFields": [{}]}},
                         content_type=MERGE, query=[("fieldManager", manager)])
