"""A Kubernetes API server on 127.0.0.1 for tests, spoken to by the real ``kubernetes`` client.

:class:`KubeAPIServer` serves plain HTTP on an ephemeral port from a background thread:
discovery (``/version``, ``/api``, ``/apis``, ``/apis/<group>/<version>``) good enough for
``kubernetes.dynamic.DynamicClient``, CRUD on collections and objects, lists with selectors
and ``limit``/``continue`` paging, every patch type including server-side apply with
``managedFields`` (ownership moved by every kind of writer as the real server moves it, see
``tests.kubeapi.ownership``), ``dryRun=All``, the ``status`` and ``scale`` subresources,
CustomResourceDefinitions that add their resources to discovery, and real ``Status`` error
bodies. The semantics live in ``tests.kubeapi.store``; this module routes HTTP to it
(``tests.kubeapi.routes``, ``tests.kubeapi.transport``) and offers the controls tests need: a
request log with each request's verb, hand edits by another field manager, status writes,
fault injection and an optional controller (``tests.kubeapi.controller``).

Used by the kubernetes provider's tests::

    with KubeAPIServer() as api:
        api.write_kubeconfig(tmp_path / "kubeconfig")
        ...
        assert api.count(method="PATCH", dry_run=False) == 1
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
import yaml

from tests.kubeapi.controller import Controller
from tests.kubeapi.patches import APPLY, MERGE, patched
from tests.kubeapi.resources import ApiStatus, ResourceType
from tests.kubeapi.routes import Route, discovery, list_page, route, verb
from tests.kubeapi.store import Store
from tests.kubeapi.transport import (
    CONNECTION_RESET,
    Fault,
    Handler,
    HTTPServer,
    RecordedRequest,
    fault_status,
    parse_body,
)

__all__ = ["CONNECTION_RESET", "KubeAPIServer", "RecordedRequest"]

log = structlog.get_logger(__name__)


class KubeAPIServer:
    """A Kubernetes API server for tests; use as a context manager (start/stop)."""

    def __init__(self, *, controller: bool = False,
                 controller_delays: Mapping[str, int] | None = None) -> None:
        self._store = Store()
        self._controller = Controller(self._store, controller_delays) if controller else None
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._log_lock = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log = log.bind(component="kubeapi")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        self._httpd = HTTPServer(self)
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
              path_prefix: str | None = None, verb: str | None = None) -> int:
        """How many recorded requests match every given criterion (``verb``: ``get``,
        ``list``, ``patch``... as :class:`RecordedRequest` names them)."""
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method.upper())
            and (dry_run is None or r.dry_run == dry_run)
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (verb is None or r.verb == verb)
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
            self._faults.append(Fault(method.upper() if method else None, path_prefix,
                                       status_code, times, body))

    # --- request handling --------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._log_lock:
            for fault in self._faults:
                if fault.method in (None, method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def serve(self, h: Handler) -> None:
        """Answer one request (called by the HTTP server's handler thread)."""
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
                    raise fault_status(fault)
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
        found = route(self._store, [s for s in path.split("/") if s])
        record = RecordedRequest(method, path, query, dry_run, manager, content_type, status,
                                 verb(method, found, query),
                                 found.subresource if found is not None else "")
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
            discovered = discovery(self._store, segs, f"127.0.0.1:{self.port}")
            if discovered is not None:
                return 200, discovered
        found = route(self._store, segs)
        if found is None:
            raise ApiStatus.page_not_found()
        if "dryRun" in query and query["dryRun"] != "All":
            raise ApiStatus.bad_request(f'Invalid dry run value: "{query["dryRun"]}"')
        body = parse_body(raw, content_type) if raw else None
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager") or agent.split("/")[0] or "unknown-manager"
        rt, ns, name, sub = found.rt, found.namespace or "", found.name, found.subresource
        store = self._store
        with store.lock:
            if name is None:
                if method == "GET":
                    if query.get("watch") in ("true", "1"):
                        raise ApiStatus.method_not_allowed("WATCH")
                    return 200, self._list(rt, found.namespace, query)
                if method == "POST" and (found.namespace is not None or not rt.namespaced):
                    return 201, store.create(rt, ns, body, manager, dry_run)
                if method == "DELETE":
                    return 200, self._delete_collection(rt, found.namespace, query, dry_run)
                raise ApiStatus.method_not_allowed(method)
            if rt.namespaced and found.namespace is None:
                raise ApiStatus.page_not_found()
            if sub == "scale":
                return 200, self._scale(method, found, query, content_type, body, manager,
                                        dry_run)
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

    def _list(self, rt: ResourceType, namespace: str | None,
              query: dict[str, str]) -> dict[str, Any]:
        controller = self._controller
        return list_page(self._store, rt, namespace, query,
                         controller.on_read if controller is not None else None)

    def _scale(self, method: str, found: Route, query: dict[str, str],
               content_type: str | None, body: Any, manager: str,
               dry_run: bool) -> dict[str, Any]:
        """``GET``, ``PUT`` or ``PATCH`` of an object's ``scale`` subresource."""
        rt, ns, name = found.rt, found.namespace or "", str(found.name)
        store = self._store
        if method == "GET":
            return store.get_scale(rt, ns, name)
        if method == "PATCH":
            if content_type is None:
                raise ApiStatus.unsupported_media("")
            if content_type == APPLY:
                raise ApiStatus.unsupported_media(content_type)  # not modelled here
            if query.get("force"):
                raise ApiStatus.bad_request("force is only allowed for apply patches")
            body = patched(store.get_scale(rt, ns, name), content_type, body)
        elif method != "PUT":
            raise ApiStatus.method_not_allowed(method)
        return store.write_scale(rt, ns, name, body, manager, dry_run)

    def _delete_collection(self, rt: ResourceType, namespace: str | None,
                           query: dict[str, str], dry_run: bool) -> dict[str, Any]:
        listed = self._list(rt, namespace, query)
        for obj in listed["items"]:
            meta = obj["metadata"]
            self._store.delete(rt, meta.get("namespace", ""), meta["name"], dry_run)
        return listed
