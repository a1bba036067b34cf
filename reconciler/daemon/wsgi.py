"""The daemon's HTTP endpoints as one WSGI application: health, readiness, metrics, webhook.

The daemon builds a :class:`Health`, a :class:`reconciler.daemon.metrics.Metrics` and, when
``webhook.secretFile`` is configured, a :class:`WebhookSettings`; ``reconciler.daemon.httpserver``
serves an :class:`App` made of them. From its main loop the daemon calls ``health.beat()``;
after each run, ``health.mark_ready()`` or, when the run served no target,
``health.mark_unready(reason)``.

Endpoints (every answer is JSON except ``/metrics``, and carries ``Cache-Control: no-store``):

* ``GET /healthz``: 200 while the main loop's heartbeat is fresh, 503 once it is older than
  ``Health.max_age`` (the loop is stuck).
* ``GET /readyz``: 200 once a run has finished with at least one target served; 503 before,
  and while the daemon serves nothing (its ``site:`` is not in the revision, no revision could
  be fetched), with the reason in the body.
* ``GET /metrics``: the daemon's own registry through prometheus_client's WSGI app (text
  format, OpenMetrics when asked for, gzip when accepted).
* ``POST /hooks/git``: push webhooks (see ``reconciler.daemon.webhooks`` for the forges). 202 and a
  trigger for a push of the tracked ref; 200 "ignored" for other refs and events (this is how
  the daemon's own status-branch pushes never wake it); 401 bad or missing signature; 400
  malformed; 405 wrong method; 429 with ``Retry-After`` when triggers come faster than the rate
  limit allows (the trigger is still delivered later, coalesced). 413 for a body over the limit
  comes from the server, which refuses it before the app runs (see :meth:`App.refused`).

The app never touches a socket: the server hands it a body already read in full and capped.
"""

from __future__ import annotations

import enum
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import make_wsgi_app

from reconciler.core.errors import ConfigError
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.webhooks import Outcome, RefFilter, inspect_delivery

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["WEBHOOK_PATH", "App", "Health", "HealthState", "Response", "TriggerGate",
           "WebhookResult", "WebhookSettings"]

log = structlog.get_logger(__name__).bind(component="httpserver")

WEBHOOK_PATH = "/hooks/git"
_GET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


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
class Response:
    """One complete answer; the app and the server's own refusals are both made of these."""

    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: HTTPStatus, payload: dict[str, Any],
             headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode() + b"\n",
                   headers=tuple((headers or {}).items()))

    def header_list(self) -> list[tuple[str, str]]:
        return [("Content-Type", self.content_type), ("Content-Length", str(len(self.body))),
                ("Cache-Control", "no-store"), *self.headers]


class App:
    """The WSGI application (PEP 3333) of the daemon's endpoints; thread-safe."""

    def __init__(self, *, health: Health, metrics: Metrics,
                 webhook: WebhookSettings | None = None) -> None:
        self.health = health
        self.metrics = metrics
        self.webhook = webhook
        self.gate = (TriggerGate(webhook.on_push, interval=webhook.trigger_interval,
                                 burst=webhook.trigger_burst) if webhook else None)
        self._prometheus = make_wsgi_app(metrics.registry)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            response = self._route(environ, method, path)
        except Exception:
            log.exception("http_request_failed", path=path, method=method)
            response = Response.json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
        log.debug("http_request_served", client=environ.get("REMOTE_ADDR"), method=method,
                  path=path, status=response.status.value)
        start_response(f"{response.status.value} {response.status.phrase}",
                       response.header_list())
        return [] if method == "HEAD" else [response.body]

    def refused(self, path: str, status: HTTPStatus) -> None:
        """The server refused a request before the app ran (body too large, bad framing)."""
        if path == WEBHOOK_PATH and self.webhook is not None:
            too_large = status is HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            self.metrics.webhook((WebhookResult.TOO_LARGE if too_large
                                  else WebhookResult.MALFORMED).value)

    def _route(self, environ: WSGIEnvironment, method: str, path: str) -> Response:
        if path == WEBHOOK_PATH and self.webhook is not None:
            if method != "POST":
                return self._counted(WebhookResult.METHOD_NOT_ALLOWED, Response.json(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST"}, {"Allow": "POST"}))
            body = environ["wsgi.input"].read()
            headers = {k[5:].replace("_", "-"): v for k, v in environ.items()
                       if k.startswith("HTTP_")}
            if "CONTENT_TYPE" in environ:
                headers["Content-Type"] = environ["CONTENT_TYPE"]
            return self._hook(self.webhook, headers, body, str(environ.get("REMOTE_ADDR")))
        if path not in _GET_PATHS:
            return Response.json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        if method not in ("GET", "HEAD"):
            return Response.json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET"},
                                 {"Allow": "GET, HEAD"})
        if path == "/metrics":
            return self._metrics(environ)
        state = self.health.state()
        ok = state.alive if path == "/healthz" else state.ready
        payload: dict[str, Any] = {
            "status": ("ok" if ok else "stale") if path == "/healthz"
            else ("ready" if ok else "not ready"),
            "heartbeat_age_seconds": round(state.heartbeat_age, 3),
            "heartbeat_max_age_seconds": state.max_age,
            "ready": state.ready,
        }
        if path == "/readyz" and not ok:
            payload["reason"] = state.reason
        return Response.json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, payload)

    def _metrics(self, environ: WSGIEnvironment) -> Response:
        """prometheus_client's own app: it picks the format and compression the scraper asks
        for. A HEAD is asked as a GET (it knows only GET) and answered without the body."""
        answer: list[Any] = []

        def start(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> None:
            answer[:] = [int(status.split()[0]), dict(headers)]

        body = b"".join(self._prometheus({**environ, "REQUEST_METHOD": "GET"}, start))
        status, headers = answer
        content_type = headers.pop("Content-Type", "text/plain")
        return Response(HTTPStatus(status), body, content_type, tuple(headers.items()))

    def _hook(self, hook: WebhookSettings, headers: dict[str, str], body: bytes,
              client: str) -> Response:
        delivery = inspect_delivery(headers, body, hook.secret)
        bound = log.bind(forge=delivery.forge.value if delivery.forge else None,
                         event=delivery.event, ref=delivery.ref, after=delivery.after,
                         delivery=delivery.delivery_id, client=client)
        if delivery.outcome is Outcome.UNAUTHORIZED:
            bound.warning("webhook_refused", detail=delivery.detail)
            return self._counted(WebhookResult.UNAUTHORIZED, Response.json(
                HTTPStatus.UNAUTHORIZED, {"error": "missing or invalid signature"}))
        if delivery.outcome is Outcome.MALFORMED:
            bound.warning("webhook_refused", detail=delivery.detail)
            return self._counted(WebhookResult.MALFORMED, Response.json(
                HTTPStatus.BAD_REQUEST, {"error": delivery.detail}))
        if delivery.outcome is Outcome.PING:
            bound.info("webhook_pinged")
            return self._counted(WebhookResult.PING,
                                 Response.json(HTTPStatus.OK, {"result": "pong"}))
        if delivery.outcome is Outcome.OTHER_EVENT or delivery.ref is None:
            bound.debug("webhook_ignored", detail=delivery.detail)
            return self._counted(WebhookResult.IGNORED, Response.json(
                HTTPStatus.OK, {"result": "ignored", "reason": delivery.detail}))
        if not hook.refs.matches(delivery.ref):
            bound.debug("webhook_ignored", detail="ref not tracked")
            return self._counted(WebhookResult.IGNORED, Response.json(
                HTTPStatus.OK,
                {"result": "ignored", "ref": delivery.ref, "reason": "ref not tracked"}))
        assert self.gate is not None
        reason = f"webhook {delivery.forge.value if delivery.forge else ''} {delivery.ref}"
        if delivery.after:
            reason += f" {delivery.after[:12]}"
        try:
            wait = self.gate.request(reason)
        except Exception:
            bound.exception("webhook_trigger_failed")
            return self._counted(WebhookResult.FAILED, Response.json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "trigger failed"}))
        if wait is None:
            bound.info("webhook_triggered")
            return self._counted(WebhookResult.TRIGGERED, Response.json(
                HTTPStatus.ACCEPTED, {"result": "triggered", "ref": delivery.ref}))
        retry = max(1, math.ceil(wait))
        bound.info("webhook_deferred", retry_after=retry)
        return self._counted(WebhookResult.RATE_LIMITED, Response.json(
            HTTPStatus.TOO_MANY_REQUESTS,
            {"result": "rate limited", "ref": delivery.ref,
             "detail": f"a run is already scheduled in {retry} s"},
            {"Retry-After": str(retry)}))

    def _counted(self, result: WebhookResult, response: Response) -> Response:
        self.metrics.webhook(result.value)
        return response
