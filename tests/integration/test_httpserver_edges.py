"""Edges of the daemon's HTTP server that a well-kept server could get subtly different: HEAD,
metrics negotiation, refusals counted and shaped like the app's answers, clients that half-close
or trickle a body. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.daemon.httpserver import HttpServer, HttpSettings
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.webhooks import RefFilter, sign
from reconciler.daemon.wsgi import Health, WebhookSettings

SECRET = b"edge-secret"


@pytest.fixture
def server() -> Iterator[HttpServer]:
    running = HttpServer(HttpSettings(port=0, request_timeout=0.6), health=Health(60),
                         metrics=Metrics(),
                         webhook=WebhookSettings(SECRET, RefFilter.tracking(branch="main"),
                                                 lambda reason: None))
    running.start()
    yield running
    running.stop()


def get(server: HttpServer, method: str, path: str,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def exchange(server: HttpServer, data: bytes, *, shut_write: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_answers_like_get_without_a_body(server: HttpServer, path: str) -> None:
    status, headers, _ = get(server, "GET", path)
    head_status, head_headers, head_body = get(server, "HEAD", path)
    assert head_status == status
    assert head_body == b""
    assert head_headers["Content-Type"] == headers["Content-Type"]
    assert int(head_headers["Content-Length"]) > 0


def test_metrics_are_compressed_and_in_openmetrics_when_asked_for(server: HttpServer) -> None:
    status, headers, body = get(server, "GET", "/metrics", {
        "Accept": "application/openmetrics-text; version=1.0.0",
        "Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = gzip.decompress(body).decode()
    assert text.rstrip().endswith("# EOF")
    assert "reconciler_webhook_requests" in text


def webhook_counts(server: HttpServer) -> dict[str, float]:
    text = get(server, "GET", "/metrics")[2].decode()
    return {sample.labels["result"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "reconciler_webhook_requests_total"}


def test_refusals_before_the_app_are_json_and_counted(server: HttpServer) -> None:
    too_large = exchange(server, b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 5000000\r\n\r\n")
    status, headers, body = split(too_large)
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert json.loads(body) == {"error": "body larger than 1048576 bytes"}

    bad_length = exchange(server, b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 12x\r\n\r\n")
    status, _, body = split(bad_length)
    assert status == 400
    assert "error" in json.loads(body)
    assert webhook_counts(server) == {"too_large": 1, "malformed": 1}


@pytest.mark.parametrize(("request_line", "status"), [
    (b"GET /healthz HTTP/9.9", 505),
    (b"GET /healthz HTTP/1.1\r\nX-Long: " + b"b" * 70000, 431),
])
def test_parser_refusals_are_json(server: HttpServer, request_line: bytes, status: int) -> None:
    got, headers, body = split(exchange(server, request_line + b"\r\n\r\n"))
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(body)


def test_client_that_shuts_its_side_still_gets_its_answer(server: HttpServer) -> None:
    body = json.dumps({"ref": "refs/heads/other"}).encode()
    request = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n"
               + f"Content-Length: {len(body)}\r\n".encode()
               + f"X-Reconciler-Signature: sha256={sign(SECRET, body)}\r\n\r\n".encode() + body)
    status, _, answer = split(exchange(server, request, shut_write=True))
    assert status == 200
    assert json.loads(answer)["result"] == "ignored"


def test_client_trickling_its_body_is_closed_at_the_deadline(server: HttpServer) -> None:
    began = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as sock:
        sock.sendall(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        sock.settimeout(0.1)
        for _ in range(60):  # one body byte every 0.1 s: never idle, never complete
            try:
                sock.sendall(b"x")
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed
    assert time.monotonic() - began < 3
