"""A recording HTTP server on 127.0.0.1, standing in for Slack, Teams, a forge's API or a
webhook receiver in the notification tests: it keeps every request it receives (path, headers,
raw body) and answers what the test tells it to. Used by ``test_notifications.py`` and
``test_notification_sinks.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes = field(repr=False)
    at: float = 0.0  # time.monotonic() when it arrived


    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class Recorder:
    """``answer(request)`` says what to reply (default 200 "ok"); ``port`` 0 picks one."""

    def __init__(self, port: int = 0,
                 answer: Callable[[Received], Answer] = lambda _r: Answer()) -> None:
        self.port = port
        self.answer = answer
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got = Received("POST", self.path,
                               {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length), time.monotonic())
                with recorder._lock:
                    recorder._received.append(got)
                reply = recorder.answer(got)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self, prefix: str = "") -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path.startswith(prefix)]

    def wait_for(self, count: int, prefix: str = "", timeout: float = 30) -> list[Received]:
        """At least ``count`` requests under ``prefix`` (asserts within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(prefix)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} request(s) to {prefix or '/'} after "
                                     f"{timeout}s, wanted {count}: {found}")
            time.sleep(0.05)
