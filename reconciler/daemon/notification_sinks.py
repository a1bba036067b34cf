"""One notification sink at the wire: its secrets, its URL and headers, one HTTP POST.

:class:`Sink` is built from a :class:`SinkSettings` when the daemon starts: it reads the
secret files the settings name (a missing or empty file is a :class:`ConfigError`, so the
daemon refuses to start rather than drop alerts later) and registers every secret value with
``reconciler.core.secrets`` so that no log line carries one. :meth:`Sink.send` makes one
request with the standard library's HTTP client, follows no redirect (a token must not travel
to another host) and says what happened as a :class:`Outcome`: delivered, worth retrying
(connection failures, timeouts, 408, 425, 429 and 5xx, with the server's ``Retry-After``), or
rejected (any other answer: retrying the same request cannot help). Called by the sender
threads of ``reconciler.daemon.notifications``.

Headers per kind (docs/notifications.md):

* webhook: ``X-Reconciler-Signature: sha256=<hex HMAC-SHA256 of the body>``,
  ``X-Reconciler-Event: phase-changes``, ``X-Reconciler-Delivery: <event id>``;
* github: ``Authorization: Bearer <token>``, ``Accept: application/vnd.github+json``,
  ``X-GitHub-Api-Version: 2022-11-28``;
* gitlab: ``PRIVATE-TOKEN: <token>``;
* gitea / forgejo: ``Authorization: token <token>``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.core.errors import ConfigError
from reconciler.core.secrets import mask, register
from reconciler.daemon.notification_queue import QueuedDelivery
from reconciler.daemon.notification_settings import SinkKind, SinkSettings

__all__ = ["Outcome", "Result", "Sink", "encode", "signature"]

SIGNATURE_HEADER = "X-Reconciler-Signature"
_RETRY_STATUSES = frozenset({408, 425, 429})
_EXCERPT = 300  # characters of an error answer kept for the log


class Result(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str = ""  # masked: safe to log
    retry_after: float = 0.0  # seconds the server asked for (429, 503)
    status: int | None = None


def encode(body: Any) -> bytes:
    """The bytes sent (and signed) for a JSON body."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: bytes, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _read_secret(path: Path | None, what: str) -> str:
    if path is None:
        return ""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"notifications: {what} {path} cannot be read "
                          f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not value:
        raise ConfigError(f"notifications: {what} {path} is empty")
    return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class Sink:
    """A configured sink, ready to send (see the module docstring)."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.kind = settings.kind
        what = f"sink {settings.name}:"
        url = settings.url or _read_secret(settings.url_file, f"{what} urlFile")
        self._url = settings.base_url if settings.kind.is_forge else url
        if urllib.parse.urlsplit(self._url).scheme not in ("http", "https"):
            raise ConfigError(f"notifications: {what} the URL in {settings.url_file} is not "
                              "an http(s) URL")  # the URL itself is not repeated: a secret
        self._key = _read_secret(settings.secret_file, f"{what} secretFile").encode()
        self._token = _read_secret(settings.token_file, f"{what} tokenFile")
        secrets = [self._token, self._key.decode()]
        if settings.url_file is not None:  # a URL kept in a file carries a token in it
            parts = urllib.parse.urlsplit(url)
            secrets += [url, parts.path, parts.query]
        self._secrets = [s for s in secrets if len(s) >= 4]
        register(self._secrets)
        try:
            context = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"notifications: {what} caFile {settings.ca_file}: "
                              f"{exc}") from None
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context))

    @property
    def host(self) -> str:
        """The server's host name: what logs may say about where a sink sends."""
        return urllib.parse.urlsplit(self._url).hostname or ""

    def masked(self, text: str) -> str:
        return str(mask(text, self._secrets))

    def headers(self, item: QueuedDelivery, body: bytes) -> dict[str, str]:
        out = {"Content-Type": "application/json", "User-Agent": f"reconciler/{__version__}"}
        if self.kind is SinkKind.WEBHOOK:
            out |= {"X-Reconciler-Event": "phase-changes",
                    "X-Reconciler-Delivery": item.event,
                    SIGNATURE_HEADER: signature(self._key, body)}
        elif self.kind is SinkKind.GITHUB:
            out |= {"Authorization": f"Bearer {self._token}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28"}
        elif self.kind is SinkKind.GITLAB:
            out["PRIVATE-TOKEN"] = self._token
        elif self.kind is SinkKind.GITEA:
            out["Authorization"] = f"token {self._token}"
        return out

    def send(self, item: QueuedDelivery) -> Outcome:
        """POST one queued delivery; never raises."""
        body = encode(item.body)
        # the scheme was checked when the sink was built: http or https only
        request = urllib.request.Request(  # noqa: S310
            self._url + item.path, data=body, method="POST", headers=self.headers(item, body))
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                response.read(64 * 1024)
                return Outcome(Result.DELIVERED, status=response.status)
        except urllib.error.HTTPError as exc:
            return self._answer(exc)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # refused, unreachable, reset, timed out, a broken answer: the server may be back
            # later (URLError and timeouts are OSErrors)
            reason = getattr(exc, "reason", None) or exc
            return Outcome(Result.RETRY, self.masked(f"{type(exc).__name__}: {reason}"))

    def _answer(self, exc: urllib.error.HTTPError) -> Outcome:
        try:
            text = exc.read(4096).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException):
            text = ""
        detail = self.masked(f"HTTP {exc.code}: {' '.join(text.split())[:_EXCERPT]}".strip())
        if exc.code in _RETRY_STATUSES or exc.code >= 500:
            return Outcome(Result.RETRY, detail, _retry_after(exc.headers.get("Retry-After")),
                           exc.code)
        return Outcome(Result.REJECTED, detail, status=exc.code)


def _retry_after(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header in its seconds form (an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
