"""A Kubernetes API server on 127.0.0.1 for tests, spoken to by the real ``kubernetes`` client.

:class:`KubeAPIServer` serves plain HTTP on an ephemeral port from a background thread:
discovery (``/version``, ``/api``, ``/apis``, ``/apis/<group>/<version>``) good enough for
``kubernetes.dynamic.DynamicClient``, CRUD on collections and objects, every patch type
including server-side apply with ``managedFields``, ``dryRun=All``, the ``status`` subresource,
CustomResourceDefinitions that add their resources to discovery, and real ``Status`` error
bodies. The semantics live in ``tests.kubeapi.store``; this module routes HTTP to it and
offers the controls tests need: a request log, hand edits by another field manager, status
writes, fault injection and an optional controller (``tests.kubeapi.controller``).

Used by the kubernetes provider's tests::

    with KubeAPIServer() as api:
        api.write_kubeconfig(tmp_path / "kubeconfig")
        ...
        assert api.count(method="PATCH", dry_run=False) == 1
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
import yaml

from tests.kubeapi.controller import Controller
from tests.kubeapi.resources import ApiStatus, ResourceType
from tests.kubeapi.selectors import match_fields, match_labels
from tests.kubeapi.store import APPLY, MERGE, Store

__all__ = ["CONNECTION_RESET", "KubeAPIServer", "RecordedRequest"]

CONNECTION_RESET = 0
"""``fail_next(..., status_code=CONNECTION_RESET)`` drops the connection without answering."""

_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "kubeapi-test",
    "gitTreeState": "clean", "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5",
    "compiler": "gc", "platform": "linux/amd64",
}
_FAULT_REASONS = {
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "Timeout: request did not complete within requested timeout"),
}

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (after it was answered)."""

    method: str
    path: str
    query: Mapping[str, str]
    dry_run: bool
    field_manager: str | None
    content_type: str | None
    status: int


@dataclass
class _Fault:
    method: str | None
    path_prefix: str
    status_code: int
    times: int
    body: dict[str, Any] | None


@dataclass(frozen=True)
class _Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, api: KubeAPIServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Keep-alive connections would hold their handler threads in readline() forever.
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # answer in one segment: without this, each response waits ~40 ms for delayed ACKs
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged (and recorded) by KubeAPIServer

    def do_GET(self) -> None:
        self.server.api._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def send_json(self, code: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


class KubeAPIServer:
    """A Kubernetes API server for tests; use as a context manager (start/stop)."""

    def __init__(self, *, controller: bool = False,
                 controller_delays: Mapping[str, int] | None = None) -> None:
        self._store = Store()
        self._controller = Controller(self._store, controller_delays) if controller else None
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._log_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log = log.bind(component="kubeapi")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        self._httpd = _HTTPServer(self)
        self._tmp = tempfile.TemporaryDirectory(prefix="kubeapi-")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
            name=f"kubeapi-{self.port}", daemon=True)
        self._thread.start()
        self._log = self._log.bind(url=self.url)
        self._log.debug("kubeapi_started")
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._tmp is not None:
            self._tmp.cleanup()
        self._httpd = self._thread = self._tmp = None
        self._log.debug("kubeapi_stopped")

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("KubeAPIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- client set-up -----------------------------------------------------------------

    def write_kubeconfig(self, path: str | Path, context: str = "kubeapi-test",
                         namespace: str = "default") -> Path:
        """Write a kubeconfig for this server; ``load_kube_config(config_file=path)`` reads it."""
        path = Path(path)
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "kubeapi-test-token"}}],
            "contexts": [{"name": context, "context": {
                "cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def client_configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` pointing at this server."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": "kubeapi-test-token"}
        config.api_key_prefix = {"authorization": "Bearer"}
        return config

    @property
    def discovery_cache_file(self) -> str:
        """A discovery cache file private to this server (for ``DynamicClient(cache_file=)``).

        The dynamic client's default cache is keyed by host, and ephemeral ports are reused
        across tests, so a stale cache could name resources this server does not have.
        """
        if self._tmp is None:
            raise RuntimeError("KubeAPIServer is not started")
        return str(Path(self._tmp.name) / "discovery.json")

    def dynamic_client(self) -> Any:
        """A ``kubernetes.dynamic.DynamicClient`` for this server with a private cache."""
        from kubernetes import client, dynamic

        api_client = client.ApiClient(self.client_configuration())
        return dynamic.DynamicClient(  # type: ignore[no-untyped-call]
            api_client, cache_file=self.discovery_cache_file)

    # --- request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._log_lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    def count(self, method: str | None = None, dry_run: bool | None = None,
              path_prefix: str | None = None) -> int:
        """How many recorded requests match every given criterion."""
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method.upper())
            and (dry_run is None or r.dry_run == dry_run)
            and (path_prefix is None or r.path.startswith(path_prefix))
        )

    # --- test controls -----------------------------------------------------------------

    def get_object(self, api_version: str, kind: str, name: str,
                   namespace: str | None = None) -> dict[str, Any] | None:
        """The stored object as the API would return it, or None (no controller tick)."""
        try:
            rt = self._store.type_for_kind(api_version, kind)
            return self._store.get(rt, namespace or "", name)
        except ApiStatus:
            return None

    def edit(self, api_version: str, kind: str, name: str, namespace: str | None,
             changes: dict[str, Any], manager: str = "kubectl-edit") -> dict[str, Any]:
        """A hand edit: a merge patch sent as an Update by ``manager`` (owns what it changes)."""
        rt = self._store.type_for_kind(api_version, kind)
        obj, _ = self._store.patch(rt, namespace or "", name, MERGE, changes, manager,
                                   force=False, dry_run=False)
        return obj

    def set_status(self, api_version: str, kind: str, name: str, namespace: str | None,
                   status: dict[str, Any],
                   manager: str = "kube-controller-manager") -> dict[str, Any]:
        """Replace an object's status, as its controller would."""
        rt = self._store.type_for_kind(api_version, kind)
        return self._store.set_status(rt, namespace or "", name, status, manager)

    def add_objects(self, *objs: dict[str, Any]) -> list[dict[str, Any]]:
        """Preload objects (created by ``kubectl-create``; a given status is kept)."""
        return [self._store.preload(obj) for obj in objs]

    def fail_next(self, method: str | None, path_prefix: str, status_code: int,
                  times: int = 1, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status_code`` (a Status body,
        ``Retry-After`` on 429) or, with :data:`CONNECTION_RESET`, drop the connection.
        ``method=None`` matches any method."""
        with self._log_lock:
            self._faults.append(_Fault(method.upper() if method else None, path_prefix,
                                       status_code, times, body))

    # --- request handling --------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._log_lock:
            for fault in self._faults:
                if fault.method in (None, method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _serve(self, h: _Handler) -> None:
        started = time.monotonic()
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        method = h.command
        content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip() or None
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager")
        status = 200
        reply: tuple[int, Any, dict[str, str] | None] | None = None
        fault = self._take_fault(method, path)
        if fault is None or fault.status_code != CONNECTION_RESET:
            try:
                if fault is not None:
                    raise _fault_status(fault)
                status, body = self._dispatch(method, path, query, content_type, raw,
                                              h.headers.get("User-Agent") or "")
                reply = (status, body, None)
            except ApiStatus as exc:
                status = exc.code
                reply = (exc.code, exc.body(), exc.headers)
            except Exception as exc:  # a bug here must reach the test as a 500, not a hang
                self._log.exception("request_failed", method=method, path=path)
                status = 500
                reply = (500, ApiStatus(500, "InternalError",
                                        f"Internal error occurred: {exc!r}").body(), None)
        else:
            status = CONNECTION_RESET
        # logged before the answer leaves: a client that has its response has been counted
        record = RecordedRequest(method, path, query, dry_run, manager, content_type, status)
        with self._log_lock:
            self._requests.append(record)
        if reply is None:
            h.reset()
        elif reply[2] is None:
            h.send_json(reply[0], reply[1])
        else:
            h.send_json(reply[0], reply[1], reply[2])
        self._log.debug("request_served", method=method, path=path, status=status,
                        dry_run=dry_run, ms=round((time.monotonic() - started) * 1000, 1))

    def _dispatch(self, method: str, path: str, query: dict[str, str],
                  content_type: str | None, raw: bytes, agent: str) -> tuple[int, Any]:
        segs = [s for s in path.split("/") if s]
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, "ok"
        if method == "GET":
            discovered = self._discovery(segs)
            if discovered is not None:
                return 200, discovered
        route = self._route(segs)
        if route is None:
            raise ApiStatus.page_not_found()
        if "dryRun" in query and query["dryRun"] != "All":
            raise ApiStatus.bad_request(f'Invalid dry run value: "{query["dryRun"]}"')
        body = _parse_body(raw, content_type) if raw else None
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager") or agent.split("/")[0] or "unknown-manager"
        rt, ns, name, sub = route.rt, route.namespace or "", route.name, route.subresource
        store = self._store
        with store.lock:
            if name is None:
                if method == "GET":
                    if query.get("watch") in ("true", "1"):
                        raise ApiStatus.method_not_allowed("WATCH")
                    return 200, self._list(rt, route.namespace, query)
                if method == "POST" and (route.namespace is not None or not rt.namespaced):
                    return 201, store.create(rt, ns, body, manager, dry_run)
                if method == "DELETE":
                    return 200, self._delete_collection(rt, route.namespace, query, dry_run)
                raise ApiStatus.method_not_allowed(method)
            if rt.namespaced and route.namespace is None:
                raise ApiStatus.page_not_found()
            if method == "GET":
                stored = store.lookup(rt, ns, name)
                if stored is not None and self._controller is not None:
                    self._controller.on_read(stored)
                obj = store.get(rt, ns, name)
                return 200, obj
            if method == "PUT":
                return 200, store.update(rt, ns, name, body, manager, dry_run, sub)
            if method == "PATCH":
                if content_type is None:
                    raise ApiStatus.unsupported_media("")
                force = query.get("force", "").lower() in ("true", "1")
                apply_manager = query.get("fieldManager") if content_type == APPLY else manager
                if force and content_type != APPLY:
                    raise ApiStatus.bad_request("force is only allowed for apply patches")
                obj, created = store.patch(rt, ns, name, content_type, body, apply_manager,
                                           force, dry_run, sub)
                return (201 if created else 200), obj
            if method == "DELETE":
                return 200, store.delete(rt, ns, name, dry_run)
        raise ApiStatus.method_not_allowed(method)

    def _route(self, segs: list[str]) -> _Route | None:
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
        rt = self._store.find_type(group, version, rest[0])
        if rt is None or (namespace is not None and not rt.namespaced):
            return None
        sub = rest[2] if len(rest) == 3 else ""
        if sub and (sub != "status" or not rt.has_status):
            return None
        return _Route(rt, namespace, rest[1] if len(rest) >= 2 else None, sub)

    def _list(self, rt: ResourceType, namespace: str | None,
              query: dict[str, str]) -> dict[str, Any]:
        items = []
        for stored in self._store.select(rt, namespace):
            if self._controller is not None:
                self._controller.on_read(stored)
        for stored in self._store.select(rt, namespace):
            obj = self._store.render(stored, rt)
            if not match_labels(query.get("labelSelector", ""), obj):
                continue
            if not match_fields(query.get("fieldSelector", ""), obj):
                continue
            if rt.builtin:
                # Typed lists of built-in kinds carry no per-item apiVersion/kind.
                del obj["apiVersion"], obj["kind"]
            items.append(obj)
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": self._store.resource_version()}, "items": items}

    def _delete_collection(self, rt: ResourceType, namespace: str | None,
                           query: dict[str, str], dry_run: bool) -> dict[str, Any]:
        listed = self._list(rt, namespace, query)
        for obj in listed["items"]:
            meta = obj["metadata"]
            self._store.delete(rt, meta.get("namespace", ""), meta["name"], dry_run)
        return listed

    def _discovery(self, segs: list[str]) -> Any:
        types = self._store.types()
        if segs == ["version"]:
            return _VERSION
        if segs == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
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


def _parse_body(raw: bytes, content_type: str | None) -> Any:
    try:
        if content_type == APPLY or (content_type or "").endswith("yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiStatus.bad_request(f"error decoding request body ({content_type}): {exc}") \
            from exc


def _fault_status(fault: _Fault) -> ApiStatus:
    reason, message = _FAULT_REASONS.get(fault.status_code, ("InternalError", "injected"))
    status = ApiStatus(fault.status_code, reason, message)
    if fault.status_code == 429:
        status.details = {"retryAfterSeconds": 1}
        status.headers = {"Retry-After": "1"}
    if fault.body is not None:
        status.message = str(fault.body.get("message", message))
        status.reason = str(fault.body.get("reason", reason))
        status.details = dict(fault.body.get("details", status.details))
    return status
