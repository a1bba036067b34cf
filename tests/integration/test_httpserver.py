"""The daemon's HTTP server, driven with real HTTP requests on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from reconciler.core.errors import ConfigError
from reconciler.daemon.httpserver import HttpServer, HttpSettings
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.webhooks import RefFilter, sign
from reconciler.daemon.wsgi import Health, WebhookSettings

SECRET = b"webhook-secret-0123456789"
SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
MIB = 1 << 20


@dataclass
class Triggers:
    """Records every trigger the server fires, with its time."""

    calls: list[tuple[float, str]] = field(default_factory=list)
    fired: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.calls.append((time.monotonic(), reason))
        self.fired.set()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.calls)


@dataclass
class Running:
    server: HttpServer
    health: Health
    metrics: Metrics
    triggers: Triggers

    @property
    def port(self) -> int:
        return self.server.address[1]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def push(self, ref: str = "refs/heads/main", **extra: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"ref": ref, "before": "0" * 40, "after": SHA}).encode()
        headers = {"X-Reconciler-Signature": "sha256=" + sign(SECRET, body),
                   "Content-Type": "application/json", **extra}
        status, _, data = self.request("POST", "/hooks/git", body, headers)
        return status, json.loads(data)


Factory = Callable[..., Running]


@pytest.fixture
def start() -> Iterator[Factory]:
    servers: list[HttpServer] = []

    def make(*, max_age: float = 60.0, request_timeout: float = 2.0, interval: float = 5.0,
             burst: int = 5, webhook: bool = True, refs: RefFilter | None = None,
             on_push: Callable[[str], None] | None = None, **settings: Any) -> Running:
        health = Health(max_age=max_age)
        metrics = Metrics()
        triggers = Triggers()
        hook = WebhookSettings(secret=SECRET, refs=refs or RefFilter.tracking(branch="main"),
                               on_push=on_push or triggers, trigger_interval=interval,
                               trigger_burst=burst) if webhook else None
        server = HttpServer(HttpSettings(port=0, request_timeout=request_timeout, **settings),
                            health=health, metrics=metrics, webhook=hook)
        server.start()
        servers.append(server)
        return Running(server, health, metrics, triggers)

    yield make
    for server in servers:
        server.stop()


def raw_exchange(port: int, data: bytes, *, shut_write: bool = False,
                 timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def signed_generic(body: bytes) -> str:
    return "sha256=" + sign(SECRET, body)


# -- health and readiness ---------------------------------------------------------------------

def test_healthz_follows_the_heartbeat(start: Factory) -> None:
    running = start(max_age=0.3)
    status, headers, body = running.request("GET", "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"

    time.sleep(0.45)  # no beat: the loop looks stuck
    status, _, body = running.request("GET", "/healthz")
    payload = json.loads(body)
    assert status == 503
    assert payload["status"] == "stale"
    assert payload["heartbeat_age_seconds"] > 0.3
    assert payload["heartbeat_max_age_seconds"] == 0.3

    running.health.beat()
    assert running.request("GET", "/healthz")[0] == 200
    assert running.request("HEAD", "/healthz")[0] == 200


def test_readyz_turns_ready_after_the_first_run(start: Factory) -> None:
    running = start()
    status, _, body = running.request("GET", "/readyz")
    assert (status, json.loads(body)["status"]) == (503, "not ready")
    running.health.mark_ready()
    status, _, body = running.request("GET", "/readyz?verbose=1")
    assert (status, json.loads(body)["status"]) == (200, "ready")


# -- metrics ----------------------------------------------------------------------------------

def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_exposition_carries_recorded_values(start: Factory) -> None:
    running = start()
    metrics = running.metrics
    metrics.observe_run(1.5)
    metrics.observe_run(42.0)
    before = time.time()
    metrics.record_target("line-1", "Ready", applied=3, pruned=1, drifted=2, success=True)
    metrics.record_target("line-1", "Ready", applied=1, success=True)
    metrics.record_target("line-2", "Failed", failed=2, success=False)
    metrics.record_target("line-3", "Waiting", success=False)  # a phase not known in advance
    metrics.fetch_failed()
    metrics.revision("1111111")
    metrics.revision(SHA)
    running.push()  # one webhook request, counted by result
    running.push("refs/heads/other")

    status, headers, body = running.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    got = samples(body.decode())

    assert got[("reconciler_run_duration_seconds_count", ())] == 2
    assert got[("reconciler_run_duration_seconds_sum", ())] == 43.5
    assert got[("reconciler_run_duration_seconds_bucket", (("le", "2.5"),))] == 1
    assert got[("reconciler_components_applied_total", (("target", "line-1"),))] == 4
    assert got[("reconciler_components_pruned_total", (("target", "line-1"),))] == 1
    assert got[("reconciler_components_failed_total", (("target", "line-2"),))] == 2
    assert got[("reconciler_components_drifted", (("target", "line-1"),))] == 0  # last run
    assert got[("reconciler_git_fetch_errors_total", ())] == 1
    assert got[("reconciler_revision_info", (("revision", SHA),))] == 1
    assert ("reconciler_revision_info", (("revision", "1111111"),)) not in got
    assert got[("reconciler_webhook_requests_total", (("result", "triggered"),))] == 1
    assert got[("reconciler_webhook_requests_total", (("result", "ignored"),))] == 1

    def phase(target: str, name: str) -> float:
        return got[("reconciler_target_phase", (("phase", name), ("target", target)))]

    assert phase("line-1", "Ready") == 1
    assert phase("line-1", "Failed") == 0
    assert phase("line-2", "Failed") == 1
    assert phase("line-2", "Ready") == 0
    assert phase("line-3", "Waiting") == 1
    assert phase("line-1", "Waiting") == 0  # learnt late, still present as 0
    line1 = got[("reconciler_target_last_success_timestamp_seconds", (("target", "line-1"),))]
    assert before <= line1 <= time.time()
    assert ("reconciler_target_last_success_timestamp_seconds",
            (("target", "line-2"),)) not in got

    metrics.forget_target("line-2")
    after = samples(running.request("GET", "/metrics")[2].decode())
    assert not [key for key in after if ("target", "line-2") in key[1]]


def test_two_servers_in_one_process_keep_separate_metrics(start: Factory) -> None:
    first, second = start(), start()
    first.metrics.fetch_failed()
    assert samples(first.request("GET", "/metrics")[2].decode())[
        ("reconciler_git_fetch_errors_total", ())] == 1
    assert samples(second.request("GET", "/metrics")[2].decode())[
        ("reconciler_git_fetch_errors_total", ())] == 0


# -- webhooks: the four forms ------------------------------------------------------------------

def github(body: bytes) -> dict[str, str]:
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e",
            "X-Hub-Signature-256": "sha256=" + sign(SECRET, body),
            "Content-Type": "application/json"}


def gitlab(body: bytes) -> dict[str, str]:
    return {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET.decode(),
            "Content-Type": "application/json"}


def gitea(body: bytes) -> dict[str, str]:
    return {"X-Gitea-Event": "push", "X-Gitea-Delivery": "f6266f16",
            "X-GitHub-Event": "push", "X-Gitea-Signature": sign(SECRET, body),
            "Content-Type": "application/json"}


def forgejo(body: bytes) -> dict[str, str]:
    return {"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(SECRET, body),
            "Content-Type": "application/json"}


def generic(body: bytes) -> dict[str, str]:
    return {"X-Reconciler-Signature": signed_generic(body)}


PAYLOADS = {
    "github": {"ref": "refs/heads/main", "before": "0" * 40, "after": SHA, "created": False,
               "deleted": False, "repository": {"full_name": "acme/fleet"},
               "pusher": {"name": "ann"}, "head_commit": {"id": SHA}},
    "gitlab": {"object_kind": "push", "event_name": "push", "before": "0" * 40, "after": SHA,
               "ref": "refs/heads/main", "checkout_sha": SHA, "project_id": 15,
               "project": {"path_with_namespace": "acme/fleet"}, "total_commits_count": 1},
    "gitea": {"ref": "refs/heads/main", "before": "0" * 40, "after": SHA,
              "repository": {"full_name": "acme/fleet"}, "pusher": {"login": "ann"}},
    "generic": {"ref": "refs/heads/main", "after": SHA},
}


@pytest.mark.parametrize(("name", "headers", "payload"), [
    ("github", github, PAYLOADS["github"]),
    ("gitlab", gitlab, PAYLOADS["gitlab"]),
    ("gitea", gitea, PAYLOADS["gitea"]),
    ("forgejo", forgejo, PAYLOADS["gitea"]),
    ("generic", generic, PAYLOADS["generic"]),
])
def test_signed_push_of_the_tracked_ref_triggers(start: Factory, name: str,
                                                 headers: Callable[[bytes], dict[str, str]],
                                                 payload: dict[str, Any]) -> None:
    running = start()
    body = json.dumps(payload).encode()
    status, _, data = running.request("POST", "/hooks/git", body, headers(body))
    assert status == 202, data
    assert json.loads(data) == {"result": "triggered", "ref": "refs/heads/main"}
    assert running.triggers.count == 1
    reason = running.triggers.calls[0][1]
    assert "refs/heads/main" in reason
    assert SHA[:12] in reason


def test_github_ping_is_answered(start: Factory) -> None:
    running = start()
    body = b'{"zen": "Design for failure.", "hook_id": 7}'
    headers = {**github(body), "X-GitHub-Event": "ping"}
    status, _, data = running.request("POST", "/hooks/git", body, headers)
    assert (status, json.loads(data)) == (200, {"result": "pong"})
    assert running.triggers.count == 0


@pytest.mark.parametrize("ref", [
    "refs/heads/dev",
    "refs/heads/reconciler-status/euberlinline1",  # the daemon's own status pushes
    "refs/heads/reconciler-fleet-status",
    "refs/tags/v1.0.0",
])
def test_push_to_another_ref_is_ignored(start: Factory, ref: str) -> None:
    running = start()
    status, payload = running.push(ref)
    assert status == 200
    assert payload == {"result": "ignored", "ref": ref, "reason": "ref not tracked"}
    assert running.triggers.count == 0


def test_tag_pushes_trigger_when_tags_are_tracked(start: Factory) -> None:
    running = start(refs=RefFilter.tracking(tag_glob="v*"))
    assert running.push("refs/tags/v1.4.0")[0] == 202
    assert running.push("refs/heads/main")[0] == 200
    assert running.triggers.count == 1


def test_non_push_events_are_ignored(start: Factory) -> None:
    running = start()
    body = json.dumps(PAYLOADS["github"]).encode()
    headers = {**github(body), "X-GitHub-Event": "pull_request"}
    status, _, data = running.request("POST", "/hooks/git", body, headers)
    assert status == 200
    assert json.loads(data)["result"] == "ignored"
    assert running.triggers.count == 0


# -- webhooks: refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"X-GitHub-Event": "push"},
    {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64},
    {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"},
    {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(b"other", b"{}")},
    {"X-Reconciler-Signature": "sha256=" + sign(b"other", b"{}")},
], ids=["nothing", "event only", "github zeros", "gitlab guess", "gitea other key",
        "generic other key"])
def test_bad_or_missing_signature_is_401(start: Factory, headers: dict[str, str]) -> None:
    running = start()
    body = json.dumps(PAYLOADS["generic"]).encode()
    status, _, data = running.request("POST", "/hooks/git", body, headers)
    assert status == 401
    assert json.loads(data) == {"error": "missing or invalid signature"}
    assert running.triggers.count == 0


def test_malformed_json_with_a_good_signature_is_400(start: Factory) -> None:
    running = start()
    body = b'{"ref": "refs/heads/main",'
    status, _, data = running.request("POST", "/hooks/git", body, generic(body))
    assert status == 400
    assert "not valid JSON" in json.loads(data)["error"]


def test_wrong_methods_are_405(start: Factory) -> None:
    running = start()
    status, headers, _ = running.request("GET", "/hooks/git")
    assert (status, headers["Allow"]) == (405, "POST")
    status, headers, _ = running.request("POST", "/healthz", b"{}")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert running.request("DELETE", "/metrics")[0] == 405
    assert running.request("GET", "/nowhere")[0] == 404


def test_webhook_endpoint_absent_without_a_secret(start: Factory) -> None:
    running = start(webhook=False)
    body = json.dumps(PAYLOADS["generic"]).encode()
    assert running.request("POST", "/hooks/git", body, generic(body))[0] == 404


def test_secret_never_reaches_the_logs(start: Factory) -> None:
    running = start()
    body = json.dumps(PAYLOADS["gitlab"]).encode()
    with capture_logs() as logs:
        assert running.request("POST", "/hooks/git", body, gitlab(body))[0] == 202
        bad = {**gitlab(body), "X-Gitlab-Token": SECRET.decode() + "x"}
        assert running.request("POST", "/hooks/git", body, bad)[0] == 401
    events = [entry["event"] for entry in logs]
    assert "webhook_triggered" in events
    assert "webhook_refused" in events
    assert SECRET.decode() not in repr(logs)
    assert SECRET.decode() not in repr(running.server.webhook)


# -- webhooks: body size ----------------------------------------------------------------------

def test_honest_oversized_content_length_is_refused_before_reading(start: Factory) -> None:
    running = start()
    head = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Reconciler-Signature: sha256=00\r\n"
            + f"Content-Length: {2 * MIB}\r\n\r\n".encode())
    # No body is sent at all: the answer must come from the header alone.
    response = raw_exchange(running.port, head, timeout=5)
    assert status_of(response) == 413


def test_oversized_body_sent_in_full_still_gets_its_413(start: Factory) -> None:
    running = start()
    body = b"x" * (2 * MIB)
    status, _, data = running.request("POST", "/hooks/git", body, generic(body))
    assert status == 413
    assert "larger than" in json.loads(data)["error"]
    assert running.request("GET", "/healthz")[0] == 200


def test_chunked_body_over_the_limit_is_413(start: Factory) -> None:
    running = start()
    chunk = b"x" * 65536
    framed = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 20 + b"0\r\n\r\n"
    head = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-Reconciler-Signature: sha256=00\r\n\r\n")
    assert status_of(raw_exchange(running.port, head + framed)) == 413


def test_chunked_body_under_the_limit_is_accepted(start: Factory) -> None:
    running = start()
    body = json.dumps(PAYLOADS["generic"]).encode()
    framed = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                      for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    head = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"X-Reconciler-Signature: {signed_generic(body)}\r\n\r\n".encode())
    assert status_of(raw_exchange(running.port, head + framed)) == 202
    assert running.triggers.count == 1


def test_body_without_length_is_capped_while_reading(start: Factory) -> None:
    running = start()
    head = b"POST /hooks/git HTTP/1.0\r\nX-Reconciler-Signature: sha256=00\r\n\r\n"
    response = raw_exchange(running.port, head + b"x" * (MIB + 10), shut_write=True)
    assert status_of(response) == 413


def test_lying_small_content_length_reads_no_further(start: Factory) -> None:
    # A server that read past the declared length would still be waiting for more bytes when
    # the client below gives up (10 s), long before its own request timeout (30 s).
    running = start(request_timeout=30.0)
    body = json.dumps(PAYLOADS["generic"]).encode()
    # The signature covers the whole body, but only 20 bytes are declared: the server reads
    # exactly those, so the signature cannot hold and nothing past them is ever buffered.
    head = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n"
            + f"X-Reconciler-Signature: {signed_generic(body)}\r\n\r\n".encode())
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        # Only the declared bytes first: the answer must come from them alone. Nothing unread
        # is left on the server's side, so it closes with a clean FIN and the client reads the
        # whole answer; extra bytes sent before the answer would make that close a reset,
        # racing the client's reads.
        sock.sendall(head + body[:20])
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        response = b"".join(chunks)
        assert status_of(response) == 401
        assert b"Connection: close" in response
        # The rest of the body and 2 MiB more find the connection closed. The kernel may take
        # some of them before the server's reset arrives, or refuse them at once: either way
        # the client may see the close while it is still sending.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body[20:] + b"y" * (2 * MIB))
    assert running.triggers.count == 0
    assert running.request("GET", "/healthz")[0] == 200


# -- slow and broken clients ------------------------------------------------------------------

def test_lying_large_content_length_is_closed_after_the_timeout(start: Factory) -> None:
    running = start(request_timeout=0.5)
    head = b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    began = time.monotonic()
    response = raw_exchange(running.port, head + b"{}", timeout=5)
    assert time.monotonic() - began < 3
    assert response == b""  # dropped without an answer: the client never sent its body
    assert running.request("GET", "/healthz")[0] == 200


def test_slow_client_trickling_headers_is_closed(start: Factory) -> None:
    running = start(request_timeout=0.6)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        # One header byte every 0.2 s keeps each recv under the timeout; the server's total
        # deadline must end it anyway.
        for _ in range(40):
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
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


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n",  # TLS
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\n\r\n",
    b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"X-Long: " + b"b" * 70000 + b"\r\n\r\n",
    b"\r\n\r\n",
], ids=["tls hello", "word", "version", "long line", "long header", "empty"])
def test_garbage_requests_do_not_hurt_the_server(start: Factory, garbage: bytes) -> None:
    running = start()
    response = raw_exchange(running.port, garbage, shut_write=True)
    assert response == b"" or status_of(response) >= 400
    assert running.request("GET", "/healthz")[0] == 200


def test_connections_beyond_the_limit_are_closed(start: Factory) -> None:
    running = start(max_connections=2, request_timeout=3.0)
    idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", running.port), timeout=2)
        with extra:
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert extra.recv(100) == b""
    finally:
        for sock in idle:
            sock.close()
    # Slots are given back when connections end.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if running.request("GET", "/healthz")[0] == 200:
                break
        except (ConnectionError, http.client.RemoteDisconnected):
            time.sleep(0.05)
    else:
        pytest.fail("server did not recover its connection slots")


def test_failing_trigger_callback_is_a_500_not_a_crash(start: Factory) -> None:
    def broken(reason: str) -> None:
        raise RuntimeError("queue gone")

    running = start(on_push=broken)
    assert running.push()[0] == 500
    assert running.request("GET", "/healthz")[0] == 200


# -- rate limiting and coalescing -------------------------------------------------------------

def test_burst_of_pushes_is_rate_limited_and_coalesced(start: Factory) -> None:
    running = start(interval=0.4, burst=1)
    answers = [running.push() for _ in range(12)]
    last_push = time.monotonic()
    statuses = [status for status, _ in answers]
    assert statuses[0] == 202
    assert set(statuses[1:]) == {429}
    retry = running.request("POST", "/hooks/git", b"{}",
                            {"X-Reconciler-Signature": signed_generic(b'{"ref": "x"}')})
    assert retry[0] == 401  # a refused signature is not rate-limited and fires nothing

    body = json.dumps(PAYLOADS["generic"]).encode()
    status, headers, _ = running.request("POST", "/hooks/git", body, generic(body))
    assert status == 429
    assert int(headers["Retry-After"]) >= 1

    time.sleep(0.8)
    calls = list(running.triggers.calls)
    assert len(calls) == 2  # one at once, one deferred for all the rest
    assert calls[-1][0] >= last_push  # nothing lost: a trigger came after the last push
    assert calls[-1][1].endswith("(deferred)")
    assert samples(running.request("GET", "/metrics")[2].decode())[
        ("reconciler_webhook_requests_total", (("result", "rate_limited"),))] == 12


def test_tokens_come_back_after_the_interval(start: Factory) -> None:
    running = start(interval=0.2, burst=2)
    assert [running.push()[0] for _ in range(2)] == [202, 202]
    time.sleep(0.45)
    assert running.push()[0] == 202
    assert running.triggers.count == 3


# -- lifecycle --------------------------------------------------------------------------------

def test_stop_joins_threads_and_frees_the_port(start: Factory) -> None:
    running = start(request_timeout=30.0)
    port = running.port
    idle = socket.create_connection(("127.0.0.1", port))  # a client that never sends
    try:
        time.sleep(0.1)
        began = time.monotonic()
        running.server.stop()
        assert time.monotonic() - began < 3
        assert not [t for t in threading.enumerate() if t.name.startswith("http-")]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        idle.close()
    running.server.stop()  # a second stop is harmless


def test_busy_port_is_a_config_error(start: Factory) -> None:
    running = start()
    other = HttpServer(HttpSettings(port=running.port), health=Health(60), metrics=Metrics())
    with pytest.raises(ConfigError, match=r"listen\.address"):
        other.start()


def test_deferred_trigger_is_cancelled_by_stop(start: Factory) -> None:
    running = start(interval=0.3, burst=1)
    assert running.push()[0] == 202
    assert running.push()[0] == 429
    running.server.stop()
    time.sleep(0.5)
    assert running.triggers.count == 1


def test_http11_post_without_length_has_an_empty_body(start: Factory) -> None:
    running = start(request_timeout=5.0)
    head = (b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n"
            + f"X-Reconciler-Signature: {signed_generic(b'')}\r\n\r\n".encode())
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(head)  # and keeps the connection open, as curl -X POST does
        response = sock.recv(65536)
    assert status_of(response) == 400  # verified, but an empty body is not a push
    assert time.monotonic() - began < 2
