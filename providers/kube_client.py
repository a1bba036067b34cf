"""A small Kubernetes API client for arbitrary kinds: discovery, GET, server-side apply, DELETE.

Used only by ``KubernetesProvider``. It sits on the official ``kubernetes`` package's
``ApiClient`` (kubeconfig and in-cluster loading, TLS, tokens, exec plugins) but makes its own
requests rather than going through ``kubernetes.dynamic.DynamicClient``, because the latter
loads every API group up front, keeps a discovery cache file in the shared temp directory keyed
by host (stale across servers reusing an address) and raises its own exception tree. Here
discovery is one GET per API group-version, cached per provider instance and refreshed at most
once per pass when a kind is missing (a CRD applied a moment ago).

This module is the provider's boundary: every ``ApiException``, urllib3 error, socket error and
kubeconfig error is mapped here to :class:`TransientError` (429, 5xx, connection failures; the
``Retry-After`` header becomes the delay) or :class:`PermanentError` (400, 401, 403, 404 on
writes, 409, 422, bad kubeconfig), with the API's message and the object's name.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.provider_api import PermanentError, TransientError

from .kube_objects import FIELD_MANAGER, ObjectRef

__all__ = ["ClientSettings", "KubeClient", "ResourceInfo"]

_log = structlog.get_logger(__name__)

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType",
            422: "Invalid", 408: "Timeout", 429: "TooManyRequests", 500: "InternalError",
            502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_MAX_MESSAGE = 1000


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the cluster (from the binding config)."""

    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    in_cluster: bool = False  # use the pod's service account instead of a kubeconfig
    timeout: float = 30.0  # seconds per request


@dataclass(frozen=True)
class ResourceInfo:
    """One kind as the server's discovery describes it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "") -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_message(raw: bytes | str | None) -> tuple[str, str]:
    """``(reason, message)`` from a ``Status`` body, or the raw text when it is not one."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        status = json.loads(text)
    except ValueError:
        return "", text.strip()[:_MAX_MESSAGE]
    if not isinstance(status, dict):
        return "", text.strip()[:_MAX_MESSAGE]
    message = str(status.get("message") or "")
    causes = (status.get("details") or {}).get("causes") or []
    fields = [str(c.get("field")) for c in causes if isinstance(c, dict) and c.get("field")]
    missing = [f for f in fields if f not in message]
    if missing:
        message += f" (fields: {', '.join(missing)})"
    return str(status.get("reason") or ""), message[:_MAX_MESSAGE]


def http_error(code: int, body: bytes | str | None, headers: Mapping[str, str] | None, *,
               what: str, action: str) -> PermanentError | TransientError:
    """The project error for an HTTP error answer about ``what`` (e.g. ``Deployment/ns/web``)."""
    reason, message = _status_message(body)
    reason = reason or _REASONS.get(code, "HTTPError")
    text = f"{what}: {action} failed ({code} {reason})" + (f": {message}" if message else "")
    if code in _TRANSIENT or code >= 500:
        return TransientError(text, delay=_retry_after(headers), reason=reason)
    return PermanentError(text, reason=reason)


class KubeClient:
    """Requests to one cluster; created lazily, so a bad kubeconfig surfaces as an error of
    the first call (mapped to :class:`PermanentError`) rather than of the constructor."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._api: k8s_client.ApiClient | None = None
        self._default_namespace = "default"
        self._discovery: dict[str, dict[str, ResourceInfo]] = {}
        self._refreshed: set[str] = set()
        # components of one dependency level call from several threads: one ApiClient
        self._load_lock = threading.Lock()

    # -- setup ------------------------------------------------------------------------------

    def _load(self) -> k8s_client.ApiClient:
        if self._api is not None:
            return self._api
        with self._load_lock:  # another thread may have loaded it meanwhile
            return self._api if self._api is not None else self._load_locked()

    def _load_locked(self) -> k8s_client.ApiClient:
        settings = self._settings
        configuration = k8s_client.Configuration()
        try:
            if settings.in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                if _SA_NAMESPACE.is_file():
                    self._default_namespace = _SA_NAMESPACE.read_text().strip() or "default"
            else:
                path = str(Path(settings.kubeconfig).expanduser()) if settings.kubeconfig \
                    else None
                k8s_config.load_kube_config(config_file=path, context=settings.context,  # type: ignore[no-untyped-call]
                                            client_configuration=configuration,
                                            persist_config=False)
                self._default_namespace = self._context_namespace(path)
        except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError,
                KeyError) as exc:
            where = "in-cluster service account" if settings.in_cluster else \
                f"kubeconfig {settings.kubeconfig or '(default)'}"
            context = f" context {settings.context!r}" if settings.context else ""
            raise PermanentError(f"{where}{context}: cannot load: {exc}",
                                 reason="KubeconfigInvalid") from None
        # one request per call: the executor owns retries and backoff
        configuration.retries = False
        self._api = k8s_client.ApiClient(configuration)
        return self._api

    def _context_namespace(self, path: str | None) -> str:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        wanted = self._settings.context or (current or {}).get("name")
        for entry in contexts or []:
            if entry.get("name") == wanted:
                return str((entry.get("context") or {}).get("namespace") or "default")
        return "default"

    @property
    def default_namespace(self) -> str:
        """The namespace of the kubeconfig context (or service account), else ``default``."""
        self._load()
        return self._default_namespace

    def close(self) -> None:
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None

    # -- requests ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, what: str, action: str,
                 query: list[tuple[str, str]] | None = None, body: Any = None,
                 content_type: str = "application/json",
                 missing_ok: bool = False) -> dict[str, Any] | None:
        """One request; the decoded JSON answer, or None for a 404 when ``missing_ok``."""
        api = self._load()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            request = api.param_serialize(method, path, query_params=query or [],
                                          header_params=headers, body=body,
                                          auth_settings=["BearerToken"])
            response = api.call_api(*request, _request_timeout=self._settings.timeout)
            data = response.read()  # type: ignore[no-untyped-call]
            status, response_headers = int(response.status), dict(response.headers or {})
        except ApiException as exc:
            if not exc.status:  # TLS failures are raised with status 0
                raise PermanentError(f"{what}: {action} failed: {exc.reason}",
                                     reason="TLSError") from None
            raise http_error(int(exc.status), exc.body, dict(exc.headers or {}),
                             what=what, action=action) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"{what}: {action} failed: cannot reach the API server: "
                                 f"{exc}", reason="Unreachable") from None
        except OpenApiException as exc:
            raise PermanentError(f"{what}: {action} failed: {exc}",
                                 reason="ClientError") from None
        if status == 404 and missing_ok:
            return None
        if not 200 <= status < 300:
            raise http_error(status, data, response_headers, what=what, action=action)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            raise TransientError(f"{what}: {action}: the API server sent an answer that is not "
                                 "JSON", reason="BadResponse") from None
        if not isinstance(decoded, dict):
            raise TransientError(f"{what}: {action}: unexpected answer from the API server",
                                 reason="BadResponse")
        return decoded

    # -- discovery --------------------------------------------------------------------------

    def new_pass(self) -> None:
        """Start a pass (one observe/apply/delete/health): a missing kind may refresh again."""
        self._refreshed.clear()

    def _discover(self, api_version: str) -> dict[str, ResourceInfo]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        answer = self._request("GET", path, what=f"API {api_version}", action="discovery",
                               missing_ok=True)
        found: dict[str, ResourceInfo] = {}
        for entry in (answer or {}).get("resources") or []:
            name = str(entry.get("name") or "")
            if not name or "/" in name:  # subresources such as deployments/status
                continue
            kind = str(entry.get("kind") or "")
            found.setdefault(kind, ResourceInfo(api_version, kind, name,
                                                bool(entry.get("namespaced"))))
        _log.debug("discovery_refreshed", api_version=api_version, kinds=len(found))
        return found

    def resource(self, api_version: str, kind: str) -> ResourceInfo | None:
        """The kind as the server knows it; None when the server does not know it."""
        known = self._discovery.get(api_version)
        if known is None or (kind not in known and api_version not in self._refreshed):
            known = self._discovery[api_version] = self._discover(api_version)
            self._refreshed.add(api_version)
        return known.get(kind)

    def forget(self, api_version: str) -> None:
        """Drop what discovery said about ``api_version`` (a CRD serving it was applied)."""
        self._discovery.pop(api_version, None)
        self._refreshed.discard(api_version)

    def require(self, ref: ObjectRef) -> ResourceInfo:
        info = self.resource(ref.api_version, ref.kind)
        if info is None:
            raise PermanentError(f"{ref}: the API server does not know kind {ref.kind} in "
                                 f"{ref.api_version}", reason="UnknownKind")
        return info

    # -- objects ----------------------------------------------------------------------------

    def get(self, info: ResourceInfo, ref: ObjectRef) -> dict[str, Any] | None:
        return self._request("GET", info.path(ref.namespace, ref.name), what=str(ref),
                             action="get", missing_ok=True)

    def apply(self, info: ResourceInfo, body: Mapping[str, Any], *, force: bool,
              dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of ``body`` with our field manager."""
        ref = ObjectRef.of(body)
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        answer = self._request("PATCH", info.path(ref.namespace, ref.name), what=str(ref),
                               action="dry-run apply" if dry_run else "apply", query=query,
                               body=dict(body), content_type="application/apply-patch+yaml")
        assert answer is not None  # missing_ok is off: a 404 raised
        return answer

    def delete(self, info: ResourceInfo, ref: ObjectRef) -> bool:
        """Delete ``ref``; False when it was already gone."""
        answer = self._request("DELETE", info.path(ref.namespace, ref.name), what=str(ref),
                               action="delete", query=[("propagationPolicy", "Background")],
                               missing_ok=True)
        return answer is not None
