"""The daemon's small HTTP server: health, readiness, metrics and the git push webhook.

The daemon builds a :class:`Health`, a :class:`reconciler.metrics.Metrics` and, when
``webhook.secretFile`` is configured, a :class:`WebhookSettings`; it starts one
:class:`HttpServer` (loopback by default) and stops it on shutdown. From its main loop it calls
``health.beat()``; after each run, ``health.mark_ready()`` or, when the run served no target,
``health.mark_unready(reason)``.

Endpoints:

* ``GET /healthz``: 200 while the main loop's heartbeat is fresh, 503 once it is older than
  ``Health.max_age`` (the loop is stuck). Small JSON body either way.
* ``GET /readyz``: 200 once a run has finished with at least one target served; 503 before,
  and while the daemon serves nothing (its ``site:`` is not in the revision, no revision could
  be fetched), with the reason in the body.
* ``GET /metrics``: Prometheus text exposition of the daemon's own registry.
* ``POST /hooks/git``: push webhooks (see ``reconciler.webhooks`` for the forges). 202 and a
  trigger for a push of the tracked ref; 200 "ignored" for other refs and events (this is how
  the daemon's own status-branch pushes never wake it); 401 bad or missing signature; 413 body
  over ``max_body``; 400 malformed; 405 wrong method; 429 with ``Retry-After`` when triggers
  come faster than the rate limit allows (the trigger is still delivered later, coalesced).

One thread serves each connection (``ThreadingHTTPServer``), at most ``max_connections`` at
once; a reaper thread closes connections older than ``request_timeout`` so slow clients cannot
hold threads. Every request is answered or dropped; no request can stop the server.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from reconciler.errors import ConfigError
from reconciler.metrics import Metrics
from reconciler.webhooks import Outcome, RefFilter, inspect_delivery

__all__ = [
    "Health",
    "HealthState",
    "HttpServer",
    "HttpSettings",
    "TriggerGate",
    "WebhookResult",
    "WebhookSettings",
]

log = structlog.get_logger(__name__).bind(component="httpserver")

MIB = 1 << 20
_WEBHOOK_PATH = "/hooks/git"
_GET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_LINGER_SECONDS = 2.0  # how long an early-refused upload is drained so its sender sees the answer
_LINGER_BYTES = 8 * MIB


@dataclass(frozen=True)
class HttpSettings:
    """Where and how the server listens (local config ``listen.address`` and ``listen.port``)."""

    host: str = "127.0.0.1"  # loopback: metrics and webhooks are exposed only on purpose
    port: int = 9420  # 0 picks a free port (tests)
    request_timeout: float = 10.0  # a connection open longer than this is closed
    max_body: int = MIB  # larger webhook bodies are refused with 413
    max_connections: int = 32  # concurrent connections; more are closed at once


@dataclass(frozen=True)
class WebhookSettings:
    """The webhook receiver: its secret, the refs that matter and what a push triggers."""

    secret: bytes = field(repr=False)  # from webhook.secretFile; never logged
    refs: RefFilter
    on_push: Callable[[str], None]  # must not block: wakes the daemon's loop with a reason
    trigger_interval: float = 10.0  # one trigger token is earned every this many seconds
    trigger_burst: int = 2  # tokens saved up for a burst of pushes


class WebhookResult(enum.Enum):
    """How a webhook request ended (the ``result`` label of the requests counter)."""

    TRIGGERED = "triggered"
    RATE_LIMITED = "rate_limited"
    IGNORED = "ignored"
    PING = "ping"
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    FAILED = "failed"  # the trigger callback raised


@dataclass(frozen=True)
class HealthState:
    alive: bool
    ready: bool
    heartbeat_age: float  # seconds since the last beat (or since start, before the first)
    max_age: float
    reason: str = ""  # why the daemon is not ready ("" when it is)


class Health:
    """Heartbeat and readiness of the daemon's main loop; thread-safe."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._last_beat = time.monotonic()  # the first run may take a while: count from start
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "the first run has not finished"

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def mark_ready(self) -> None:
        with self._lock:
            self._ready, self._reason = True, ""

    def mark_unready(self, reason: str) -> None:
        """Not ready for ``reason`` (e.g. the daemon serves no target) until marked ready."""
        with self._lock:
            self._ready, self._reason = False, reason

    def state(self) -> HealthState:
        age = time.monotonic() - self._last_beat
        with self._lock:
            ready, reason = self._ready, self._reason
        return HealthState(alive=age <= self.max_age, ready=ready, heartbeat_age=age,
                           max_age=self.max_age, reason=reason)


class TriggerGate:
    """Rate limit and coalesce webhook triggers (a token bucket with one deferred trigger).

    A request spends a token and fires at once. Without a token it is refused (the caller
    answers 429) but not lost: one deferred trigger is scheduled for when the next token is
    earned, and every further request before then joins it. The run it starts fetches the
    newest commit anyway, so one trigger after the last push is all that is needed.
    """

    def __init__(self, fire: Callable[[str], None], *, interval: float, burst: int) -> None:
        if interval <= 0 or burst < 1:
            raise ConfigError("webhook rate limit: interval must be > 0 and burst >= 1")
        self._fire = fire
        self._interval = interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._deferred: threading.Timer | None = None
        self._deferred_at = 0.0
        self._deferred_reason = ""
        self._closed = False

    def request(self, reason: str) -> float | None:
        """Fire now and return ``None``, or return the seconds until the deferred trigger."""
        with self._lock:
            if self._closed:
                return None
            now = self._refill()
            if self._deferred is not None:
                self._deferred_reason = reason
                return max(0.0, self._deferred_at - now)
            if self._tokens < 1:
                wait = (1 - self._tokens) * self._interval
                self._deferred_reason = reason
                self._deferred_at = now + wait
                self._deferred = threading.Timer(wait, self._fire_deferred)
                self._deferred.daemon = True
                self._deferred.start()
                return wait
            self._tokens -= 1
        self._fire(reason)
        return None

    def close(self) -> None:
        """Cancel a deferred trigger; later requests fire nothing (the daemon is stopping)."""
        with self._lock:
            self._closed = True
            timer, self._deferred = self._deferred, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) / self._interval)
        self._stamp = now
        return now

    def _fire_deferred(self) -> None:
        with self._lock:
            if self._closed or self._deferred is None:
                return
            self._refill()
            self._tokens = max(0.0, self._tokens - 1)
            self._deferred = None
            reason = self._deferred_reason
        try:
            self._fire(reason + " (deferred)")
        except Exception:
            log.exception("webhook_trigger_failed", reason=reason)


@dataclass(frozen=True)
class _Refusal:
    status: HTTPStatus
    result: WebhookResult
    message: str
    linger: bool = False  # the body was left unread: drain it so the sender gets the answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: HttpServer, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        self.owner = owner
        self._slots = threading.BoundedSemaphore(owner.settings.max_connections)
        self._open: dict[socket.socket, float] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("http_connection_refused", client=str(client_address[0]),
                        reason="too many connections")
            self.shutdown_request(request)
            return
        deadline = time.monotonic() + self.owner.settings.request_timeout
        with self._open_lock:
            self._open[request] = deadline
        try:
            super().process_request(request, client_address)
        except Exception:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()

    def reap(self, *, everything: bool = False) -> None:
        """Shut down connections past their deadline (all of them when stopping)."""
        now = time.monotonic()
        with self._open_lock:
            overdue = [s for s, d in self._open.items() if everything or d <= now]
        for sock in overdue:
            # shutdown (not close) wakes the handler thread blocked in recv; it then cleans up.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("http_connection_failed", client=str(client_address[0]))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "reconciler"
    sys_version = ""
    # Answer unparseable request lines with a status line and headers, not HTTP/0.9 bare bodies.
    default_request_version = "HTTP/1.0"
    _linger = False

    def setup(self) -> None:
        super().setup()
        # Per-recv timeout; the server's reaper bounds the connection's total time.
        self.connection.settimeout(self.server.owner.settings.request_timeout)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.flush()
            if self._linger:
                _drain(self.connection)
        super().finish()

    # Every method goes through one dispatcher so known paths can answer 405, not 501.
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self._responded = False
        try:
            self._route()
        except (TimeoutError, ConnectionError) as exc:
            log.info("http_request_abandoned", client=self.client_address[0], error=str(exc))
            self.close_connection = True
        except Exception:
            log.exception("http_request_failed", path=self.path, method=self.command)
            if not self._responded:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        if path == _WEBHOOK_PATH and owner.webhook is not None:
            self._webhook(owner)
        elif path in _GET_PATHS:
            if self.command not in ("GET", "HEAD"):
                self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET"},
                           headers={"Allow": "GET, HEAD"})
            elif path == "/metrics":
                body, content_type = owner.metrics.exposition()
                self._send(HTTPStatus.OK, body, content_type)
            else:
                state = owner.health.state()
                ok = state.alive if path == "/healthz" else state.ready
                payload = {
                    "status": ("ok" if ok else "stale") if path == "/healthz"
                    else ("ready" if ok else "not ready"),
                    "heartbeat_age_seconds": round(state.heartbeat_age, 3),
                    "heartbeat_max_age_seconds": state.max_age,
                    "ready": state.ready,
                }
                if path == "/readyz" and not ok:
                    payload["reason"] = state.reason
                self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, payload)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _webhook(self, owner: HttpServer) -> None:
        hook = owner.webhook
        assert hook is not None
        if self.command != "POST":
            self._hook_answer(owner, _Refusal(HTTPStatus.METHOD_NOT_ALLOWED,
                                              WebhookResult.METHOD_NOT_ALLOWED, "use POST"),
                              headers={"Allow": "POST"})
            return
        body = self._read_body(owner.settings.max_body)
        if isinstance(body, _Refusal):
            self._linger = body.linger
            self._hook_answer(owner, body)
            return
        delivery = inspect_delivery(dict(self.headers.items()), body, hook.secret)
        bound = log.bind(forge=delivery.forge.value if delivery.forge else None,
                         event=delivery.event, ref=delivery.ref, after=delivery.after,
                         delivery=delivery.delivery_id, client=self.client_address[0])
        if delivery.outcome is Outcome.UNAUTHORIZED:
            bound.warning("webhook_refused", detail=delivery.detail)
            self._hook_answer(owner, _Refusal(HTTPStatus.UNAUTHORIZED,
                                              WebhookResult.UNAUTHORIZED,
                                              "missing or invalid signature"))
        elif delivery.outcome is Outcome.MALFORMED:
            bound.warning("webhook_refused", detail=delivery.detail)
            self._hook_answer(owner, _Refusal(HTTPStatus.BAD_REQUEST, WebhookResult.MALFORMED,
                                              delivery.detail))
        elif delivery.outcome is Outcome.PING:
            bound.info("webhook_pinged")
            self._hook_json(owner, HTTPStatus.OK, WebhookResult.PING, {"result": "pong"})
        elif delivery.outcome is Outcome.OTHER_EVENT or delivery.ref is None:
            bound.debug("webhook_ignored", detail=delivery.detail)
            self._hook_json(owner, HTTPStatus.OK, WebhookResult.IGNORED,
                            {"result": "ignored", "reason": delivery.detail})
        elif not hook.refs.matches(delivery.ref):
            bound.debug("webhook_ignored", detail="ref not tracked")
            self._hook_json(owner, HTTPStatus.OK, WebhookResult.IGNORED,
                            {"result": "ignored", "ref": delivery.ref,
                             "reason": "ref not tracked"})
        else:
            assert owner.gate is not None
            reason = f"webhook {delivery.forge.value if delivery.forge else ''} {delivery.ref}"
            if delivery.after:
                reason += f" {delivery.after[:12]}"
            try:
                wait = owner.gate.request(reason)
            except Exception:
                bound.exception("webhook_trigger_failed")
                self._hook_json(owner, HTTPStatus.INTERNAL_SERVER_ERROR, WebhookResult.FAILED,
                                {"error": "trigger failed"})
                return
            if wait is None:
                bound.info("webhook_triggered")
                self._hook_json(owner, HTTPStatus.ACCEPTED, WebhookResult.TRIGGERED,
                                {"result": "triggered", "ref": delivery.ref})
            else:
                retry = max(1, math.ceil(wait))
                bound.info("webhook_deferred", retry_after=retry)
                self._hook_json(owner, HTTPStatus.TOO_MANY_REQUESTS, WebhookResult.RATE_LIMITED,
                                {"result": "rate limited", "ref": delivery.ref,
                                 "detail": f"a run is already scheduled in {retry} s"},
                                headers={"Retry-After": str(retry)})

    def _read_body(self, limit: int) -> bytes | _Refusal:
        """The request body, refusing more than ``limit`` bytes whatever the headers claim."""
        too_large = _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, WebhookResult.TOO_LARGE,
                             f"body larger than {limit} bytes", linger=True)
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                return _Refusal(HTTPStatus.BAD_REQUEST, WebhookResult.MALFORMED,
                                f"unsupported Transfer-Encoding {coding!r}", linger=True)
            return _read_chunked(self.rfile, limit, too_large)
        length = self.headers.get("Content-Length")
        if length is None:
            if self.request_version != "HTTP/1.0":
                return b""  # HTTP/1.1 without a length or chunking: no body (RFC 9112 6.3)
            # HTTP/1.0 without a length: the body ends when the client closes its side.
            data = self.rfile.read(limit + 1)
            return too_large if len(data) > limit else data
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            return _Refusal(HTTPStatus.BAD_REQUEST, WebhookResult.MALFORMED,
                            "invalid Content-Length", linger=True)
        if size > limit:
            return too_large  # refused before reading a byte of it
        data = self.rfile.read(size)
        if len(data) < size:
            return _Refusal(HTTPStatus.BAD_REQUEST, WebhookResult.MALFORMED,
                            "body shorter than Content-Length")
        return data

    def _hook_answer(self, owner: HttpServer, refusal: _Refusal,
                     headers: dict[str, str] | None = None) -> None:
        self._hook_json(owner, refusal.status, refusal.result, {"error": refusal.message},
                        headers)

    def _hook_json(self, owner: HttpServer, status: HTTPStatus, result: WebhookResult,
                   payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        owner.metrics.webhook(result.value)
        self._json(status, payload, headers)

    def _json(self, status: HTTPStatus, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n", "application/json", headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors found by the stdlib parser (bad request line, headers too long) as JSON."""
        status = HTTPStatus(code)
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._json(status, {"error": message or status.phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request_served", client=self.client_address[0], line=format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("http_request_refused", client=self.client_address[0], line=format % args)


def _read_chunked(rfile: Any, limit: int, too_large: _Refusal) -> bytes | _Refusal:
    malformed = _Refusal(HTTPStatus.BAD_REQUEST, WebhookResult.MALFORMED,
                         "malformed chunked body", linger=True)
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1026)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return malformed
        if size < 0:
            return malformed
        if size == 0:
            break
        total += size
        if total > limit:
            return too_large
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            return malformed
        parts.append(chunk)
    for _ in range(64):  # trailer fields, ended by an empty line
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            return b"".join(parts)
    return malformed


def _drain(conn: socket.socket) -> None:
    """Half-close, then read and drop what the client still sends, for a bounded time.

    Closing a socket with unread data makes the kernel send a reset, which can destroy the
    response before the sender reads it; draining lets a sender of a refused upload finish
    writing and then see the 413.
    """
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + _LINGER_SECONDS
    drained = 0
    while drained < _LINGER_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            return
        drained += len(chunk)


class HttpServer:
    """One listening socket serving every endpoint from a daemon thread."""

    def __init__(self, settings: HttpSettings, *, health: Health, metrics: Metrics,
                 webhook: WebhookSettings | None = None) -> None:
        self.settings = settings
        self.health = health
        self.metrics = metrics
        self.webhook = webhook
        self.gate = (TriggerGate(webhook.on_push, interval=webhook.trigger_interval,
                                 burst=webhook.trigger_burst) if webhook else None)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``settings.port`` was 0)."""
        if self._server is None:
            raise RuntimeError("HttpServer.address read before start()")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        """Bind and serve; raises :class:`ConfigError` when the address cannot be bound."""
        host, port = self.settings.host, self.settings.port
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server(self, (host, port), family)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"listen.address/listen.port: cannot listen on {host}:{port}: "
                              f"{reason}") from exc
        serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 1.0},
                                 name="http-server", daemon=True)
        reaper = threading.Thread(target=self._reap, name="http-reaper", daemon=True)
        self._threads = [serve, reaper]
        for thread in self._threads:
            thread.start()
        log.info("http_server_started", url=self.url, webhook=self.webhook is not None)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close open connections and join every thread of the server."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        if self.gate is not None:
            self.gate.close()
        self._shutdown(server)
        server.reap(everything=True)
        server.server_close()  # joins the connection threads, which the reap just woke
        for thread in self._threads:
            thread.join(timeout)
        self._server = None
        log.info("http_server_stopped")

    def _shutdown(self, server: _Server) -> None:
        """End ``serve_forever`` without waiting out its poll interval.

        ``shutdown()`` only sets a flag the loop checks after ``select`` returns, so a
        throw-away connection is made to wake it (repeated, in case it landed before the flag).
        """
        waiter = threading.Thread(target=server.shutdown, name="http-shutdown", daemon=True)
        waiter.start()
        while waiter.is_alive():
            with contextlib.suppress(OSError), socket.create_connection(
                    self.address, timeout=0.2):
                pass
            waiter.join(0.05)

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reap(self) -> None:
        period = min(1.0, self.settings.request_timeout / 4)
        while not self._stopping.wait(period):
            server = self._server
            if server is not None:
                server.reap()
