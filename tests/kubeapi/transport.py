"""The HTTP side of the test API server: the threaded server, request records, faults.

:class:`HTTPServer` serves plain HTTP/1.1 with keep-alive on 127.0.0.1 and hands every request
to a :class:`Serving` (``tests.kubeapi.server.KubeAPIServer``); :class:`RecordedRequest` is one
line of the request log tests count; :class:`Fault` is an injected failure and
:func:`fault_status` the ``Status`` it answers with; :func:`parse_body` decodes JSON and YAML
bodies as the kube-apiserver does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import yaml

from tests.kubeapi.patches import APPLY
from tests.kubeapi.resources import ApiStatus

__all__ = [
    "CONNECTION_RESET",
    "Fault",
    "HTTPServer",
    "Handler",
    "RecordedRequest",
    "Serving",
    "fault_status",
    "parse_body",
]

CONNECTION_RESET = 0
"""``fail_next(..., status_code=CONNECTION_RESET)`` drops the connection without answering."""

_FAULT_REASONS = {
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "Timeout: request did not complete within requested timeout"),
}


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
    # as the audit log names it: get, list, watch, create, update, patch, delete,
    # deletecollection; "" for discovery and other non-resource paths
    verb: str = ""
    subresource: str = ""  # status, scale or ""


@dataclass
class Fault:
    method: str | None
    path_prefix: str
    status_code: int
    times: int
    body: dict[str, Any] | None


class Serving(Protocol):
    def serve(self, handler: Handler) -> None: ...


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, api: Serving) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # answer in one segment: without this, each response waits ~40 ms for delayed ACKs
    disable_nagle_algorithm = True
    server: HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged (and recorded) by KubeAPIServer

    def do_GET(self) -> None:
        self.server.api.serve(self)

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


def parse_body(raw: bytes, content_type: str | None) -> Any:
    try:
        if content_type == APPLY or (content_type or "").endswith("yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiStatus.bad_request(f"error decoding request body ({content_type}): {exc}") \
            from exc


def fault_status(fault: Fault) -> ApiStatus:
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
