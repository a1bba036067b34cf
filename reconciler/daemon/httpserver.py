"""Serve the daemon's endpoints (``reconciler.daemon.wsgi.App``) with waitress on one listening
socket.

The daemon starts one :class:`HttpServer` (loopback by default) and stops it on shutdown.
waitress reads every connection in one event-loop thread, so a slow client holds no thread; a
request reaches the app, on one of a few worker threads, only once its headers and body are in
full. waitress settings and small subclasses of its classes keep what the daemon promises:

* **A total deadline per connection** (``request_timeout``). waitress's ``channel_timeout``
  counts idle time only, so a client trickling one header byte at a time would keep its
  connection for ever: ``_Server.maintenance`` closes every connection older than the deadline
  whose request is not being answered, on every turn of the event loop (at least every
  ``min(1, request_timeout / 4)`` seconds).
* **Body size** (``max_body``): waitress's ``max_request_body_size`` is ``max_body + 1`` (it
  refuses at the limit). A larger ``Content-Length`` is refused with 413 from the headers
  alone; a chunked body is counted as it arrives (framing included) and refused once over; a
  declared length is read exactly, never further. An HTTP/1.0 body sent without a length ends
  when the client shuts its side, as HTTP/1.0 allows (``_Parser``, ``_Channel.handle_read``:
  waitress would take it as no body); it is capped the same way. In HTTP/1.1, no length and no
  chunking means no body (RFC 9112 6.3).
* **Headers** are capped at 64 KiB in all (431).
* **Connections beyond** ``max_connections`` are closed at once (waitress's own
  ``connection_limit`` would leave them waiting, unanswered, in the listen backlog).
* **Every connection ends cleanly** (``_Drain``): half-closed, then what the client still sends
  is read and dropped for up to 2 s, so that a client still sending a refused body reads its
  413 instead of a reset. A client that shuts its side early still gets its answer (waitress
  would drop the connection).
* **One request per connection** (``_Task``): every answer says ``Connection: close``, so the
  deadline never cuts a kept-alive connection between two requests.
* waitress's own refusals (413, 431, 400 for bad framing, 501 for unknown transfer codings, 505
  for HTTP versions other than 1.0 and 1.1) are JSON ``{"error": ...}`` like the app's, and
  count on the webhook metric when they were meant for the webhook (``_ErrorTask``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import structlog

# waitress ships no types, and typeshed's stubs misdescribe the internals subclassed here (a
# task's request, the server's channel table): it is used untyped.
from waitress import (  # type: ignore[import-untyped]
    adjustments,
    buffers,
    channel,
    parser,
    receiver,
    server,
    task,
    utilities,
    wasyncore,
)

from reconciler.core.errors import ConfigError
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.wsgi import App, Health, Response, WebhookSettings

__all__ = ["HttpServer", "HttpSettings"]

log = structlog.get_logger(__name__).bind(component="httpserver")

MIB = 1 << 20
_MAX_HEADER = 64 * 1024
_WORKERS = 4  # every answer is computed in microseconds: a few threads serve all
_LINGER_SECONDS = 2.0  # how long a closed connection's input is drained (see _Drain)
_LINGER_BYTES = 8 * MIB


@dataclass(frozen=True)
class HttpSettings:
    """Where and how the server listens (local config ``listen.address`` and ``listen.port``)."""

    host: str = "127.0.0.1"  # loopback: metrics and webhooks are exposed only on purpose
    port: int = 9420  # 0 picks a free port (tests)
    request_timeout: float = 10.0  # a connection open longer than this is closed
    max_body: int = MIB  # larger request bodies are refused with 413
    max_connections: int = 32  # concurrent connections; more are closed at once


class _VersionNotSupported(utilities.Error):  # type: ignore[misc]
    code = 505
    reason = "HTTP Version Not Supported"


class _Parser(parser.HTTPRequestParser):  # type: ignore[misc]
    """waitress's parser, refusing HTTP versions it would silently answer as HTTP/1.0 and
    reading an HTTP/1.0 body without a length up to the client's EOF."""

    until_close = False  # an HTTP/1.0 body sent without a length: it ends at the client's EOF

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.version not in ("1.0", "1.1"):
            self.error = _VersionNotSupported(f"HTTP/{self.version or '0.9'} is not supported")
        elif (self.version == "1.0" and "CONTENT_LENGTH" not in self.headers
              and self.command in ("POST", "PUT", "PATCH")):
            self.until_close = True  # read up to the cap like any body, then 413
            self.body_rcv = receiver.FixedStreamReceiver(
                self.adj.max_request_body_size, buffers.OverflowableBuffer(self.adj.inbuf_overflow))


class _Task(task.WSGITask):  # type: ignore[misc]
    """One request per connection: every answer closes it."""

    def build_response_header(self) -> bytes:
        self.set_close_on_finish()
        return cast(bytes, super().build_response_header())


class _ErrorTask(task.ErrorTask):  # type: ignore[misc]
    """waitress's refusals as the app's JSON."""

    def execute(self) -> None:
        owner = cast(_Server, self.channel.server)
        error = self.request.error
        status = HTTPStatus(error.code)
        message = (f"body larger than {owner.settings.max_body} bytes"
                   if status is HTTPStatus.REQUEST_ENTITY_TOO_LARGE else str(error.body))
        log.info("http_request_refused", status=status.value, detail=message)
        owner.app.refused(getattr(self.request, "path", ""), status)
        response = Response.json(status, {"error": message})
        self.status = f"{status.value} {status.phrase}"
        self.response_headers.extend(response.header_list())
        self.content_length = len(response.body)
        self.set_close_on_finish()
        self.write(response.body)


class _Drain(wasyncore.dispatcher):  # type: ignore[misc]
    """A connection being closed: half-closed, its input read and dropped for a short while.

    Closing a socket with unread input makes the kernel reset the connection, which can destroy
    an answer the client has not read yet (a 413 while it still sends its body).
    """

    def __init__(self, sock: socket.socket, socket_map: dict[int, wasyncore.dispatcher]) -> None:
        super().__init__(sock, socket_map)
        self.until = time.monotonic() + _LINGER_SECONDS
        self.left = _LINGER_BYTES
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def readable(self) -> bool:
        if time.monotonic() < self.until:
            return True
        self.close()
        return False

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.left -= len(self.recv(65536))  # the client's EOF or reset closes (wasyncore)
        if self.left <= 0:
            self.close()

    def handle_close(self) -> None:
        self.close()


class _Channel(channel.HTTPChannel):  # type: ignore[misc]
    """One client connection: answered even after the client shut its side, drained when
    closed."""

    parser_class = _Parser
    task_class = _Task
    error_task_class = _ErrorTask
    half_closed = False  # the client has shut its side: answer, then close
    request: Any  # the request being received (waitress's; None between requests)

    def readable(self) -> bool:
        return not self.half_closed and super().readable()

    def handle_read(self) -> None:
        # waitress closes at the client's EOF, losing the answer to what it sent before
        try:
            data = self.socket.recv(self.adj.recv_bytes)
        except BlockingIOError:
            return
        except OSError:
            self.half_closed = True
            self.handle_close()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
            return
        self.half_closed = True
        request = self.request
        if isinstance(request, _Parser) and request.until_close:
            request.completed = True
            request.headers["CONTENT_LENGTH"] = str(len(request.body_rcv))
            with self.requests_lock:
                self.requests.append(request)
                self.request = None
            self.server.add_task(self)
        elif not self.requests:
            self.handle_close()

    def handle_close(self) -> None:
        if not self.half_closed and self.socket is not None:
            with contextlib.suppress(OSError):
                _Drain(self.socket.dup(), self._map)
        super().handle_close()


class _Workers(task.ThreadedTaskDispatcher):  # type: ignore[misc]
    """waitress's worker threads, kept so that stopping can join them."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[threading.Thread] = []

    def start_new_thread(self, target: Callable[[int], object], thread_no: int) -> None:
        thread = threading.Thread(target=target, args=(thread_no,), daemon=True,
                                  name=f"http-worker-{thread_no}")
        self.started.append(thread)
        thread.start()


class _Server(server.TcpWSGIServer):  # type: ignore[misc]
    """The listening socket: the connection limit and the total deadline."""

    channel_class = _Channel

    def __init__(self, app: App, settings: HttpSettings, sock: socket.socket,
                 socket_map: dict[int, wasyncore.dispatcher]) -> None:
        self.app = app
        self.settings = settings
        adj = adjustments.Adjustments(
            ident="reconciler", log_socket_errors=False,
            cleanup_interval=0,  # maintenance on every turn of the event loop
            # the listener, the loop's wake-up pipe, the connections and as many draining
            connection_limit=2 * settings.max_connections + 2,
            max_request_header_size=_MAX_HEADER, max_request_body_size=settings.max_body + 1)
        self.workers = _Workers()
        self.workers.set_thread_count(_WORKERS)
        super().__init__(app, map=socket_map, _sock=sock, dispatcher=self.workers, adj=adj,
                         bind_socket=False,
                         sockinfo=(sock.family, sock.type, None, sock.getsockname()))

    def handle_accept(self) -> None:
        if len(self.active_channels) < self.settings.max_connections:
            super().handle_accept()
            return
        pair = self.accept()
        if pair is not None:
            log.warning("http_connection_refused", client=str(pair[1][0]),
                        reason="too many connections")
            _Drain(pair[0], self._map)

    def maintenance(self, now: float) -> None:
        cutoff = now - self.settings.request_timeout
        for conn in list(self.active_channels.values()):
            if not conn.requests and conn.creation_time < cutoff:
                conn.will_close = True


class HttpServer:
    """One listening socket serving the daemon's endpoints from an event-loop thread."""

    def __init__(self, settings: HttpSettings, *, health: Health, metrics: Metrics,
                 webhook: WebhookSettings | None = None) -> None:
        self.settings = settings
        self.app = App(health=health, metrics=metrics, webhook=webhook)
        self._server: _Server | None = None
        self._map: dict[int, wasyncore.dispatcher] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def webhook(self) -> WebhookSettings | None:
        return self.app.webhook

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``settings.port`` was 0)."""
        if self._server is None:
            raise RuntimeError("HttpServer.address read before start()")
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        """Bind and serve; raises :class:`ConfigError` when the address cannot be bound."""
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"listen.address/listen.port: cannot listen on {host}:{port}: "
                              f"{reason}") from exc
        self._stopping.clear()
        try:
            self._server = _Server(self.app, self.settings, sock, self._map)
        except BaseException:
            sock.close()
            raise
        self._thread = threading.Thread(target=self._serve, name="http-server", daemon=True)
        self._thread.start()
        log.info("http_server_started", url=self.url, webhook=self.webhook is not None)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close open connections and join every thread of the server."""
        running, thread = self._server, self._thread
        if running is None or thread is None:
            return
        self._stopping.set()
        if self.app.gate is not None:
            self.app.gate.close()
        running.pull_trigger()  # wakes the event loop, which then ends
        thread.join(timeout)
        wasyncore.close_all(self._map)  # here, not in the loop: the trigger must stay open
        running.workers.shutdown(timeout=max(1, int(timeout)))
        for worker in running.workers.started:
            worker.join(timeout)
        self._server = self._thread = None
        log.info("http_server_stopped")

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        period = min(1.0, self.settings.request_timeout / 4)
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=period, use_poll=True, map=self._map, count=1)
        except Exception:
            log.exception("http_server_failed")
