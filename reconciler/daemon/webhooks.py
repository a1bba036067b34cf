"""Git push webhooks: who sent a delivery, whether its signature holds, and what it asks for.

Pure functions over a request's headers and raw body; no I/O except :func:`load_secret`.
The daemon's WSGI app (``reconciler.daemon.wsgi``) calls :func:`inspect_delivery` for every
``POST /hooks/git`` and :meth:`RefFilter.matches` to decide whether a verified push concerns the
tracked ref. The daemon builds the :class:`RefFilter` from its tracked ref and loads the secret
from ``webhook.secretFile`` with :func:`load_secret`.

The sender is recognised by the header that authenticates it (every comparison constant-time):

* Gitea / Forgejo: ``X-Gitea-Signature`` / ``X-Forgejo-Signature``, the hex HMAC-SHA256 of the
  body; event in ``X-Gitea-Event`` / ``X-Forgejo-Event`` (``push``).
* GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; event in ``X-GitHub-Event``
  (``push``; ``ping`` when the hook is created).
* GitLab: ``X-Gitlab-Token``, the secret itself; event in ``X-Gitlab-Event`` (``Push Hook``,
  ``Tag Push Hook``; a ``System Hook`` whose ``event_name`` is ``push`` or ``tag_push``).
* generic (scripts, other forges): ``X-Reconciler-Signature: sha256=<hex HMAC-SHA256>``; event
  in ``X-Reconciler-Event`` (optional: ``push`` when absent, or ``ping``); JSON body with ``ref``
  and optionally ``after``.

Gitea and Forgejo also send ``X-GitHub-Event`` and often ``X-Hub-Signature-256``; their own
signature header is checked first so such a delivery is reported as Gitea. Every push payload
carries ``ref`` (``refs/heads/main``, ``refs/tags/v1.2.0``) and ``after`` (the new commit, all
zeros when the ref was deleted). GitHub and Gitea may post ``application/x-www-form-urlencoded``
with the JSON in a ``payload`` field; the signature always covers the raw body.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import hmac
import json
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.errors import ConfigError

__all__ = [
    "Delivery",
    "Forge",
    "Outcome",
    "RefFilter",
    "inspect_delivery",
    "load_secret",
    "sign",
]

log = structlog.get_logger(__name__).bind(component="webhooks")

_ZERO_SHA = "0" * 40


class Forge(enum.Enum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    GENERIC = "generic"


class Outcome(enum.Enum):
    """What a delivery amounts to, before the tracked ref is considered."""

    PUSH = "push"  # verified push of a ref
    PING = "ping"  # verified configuration check: answer, do nothing
    OTHER_EVENT = "other_event"  # verified, but not a push (issues, pull requests): ignore
    UNAUTHORIZED = "unauthorized"  # no recognised signature header, or it does not verify
    MALFORMED = "malformed"  # verified, but the body is not the JSON a push needs


@dataclass(frozen=True)
class Delivery:
    """The result of inspecting one webhook request."""

    outcome: Outcome
    forge: Forge | None = None  # None when no authentication header was recognised
    event: str = ""  # the event header's value as sent
    ref: str | None = None
    after: str | None = None  # the ref's new commit
    deleted: bool = False  # the push deleted the ref
    delivery_id: str | None = None  # the forge's delivery GUID, for correlating logs
    detail: str = ""  # why the delivery was refused or ignored (never contains the secret)


@dataclass(frozen=True)
class RefFilter:
    """Which pushed refs concern this daemon.

    ``refs`` are full ref names matched exactly (``refs/heads/main``); ``tag_globs`` are
    shell-style patterns on the tag name below ``refs/tags/`` (``v*``, ``*``), used when the
    daemon tracks the newest tag in a semver range: any new tag may be the newest.
    """

    refs: frozenset[str] = frozenset()
    tag_globs: tuple[str, ...] = ()

    @classmethod
    def tracking(cls, *, branch: str | None = None, tag: str | None = None,
                 tag_glob: str | None = None) -> RefFilter:
        """A filter for a tracked branch, a tracked tag, and/or tags matching a pattern.

        Short names are qualified (``main`` becomes ``refs/heads/main``); names already
        starting with ``refs/`` are kept as they are.
        """
        refs: set[str] = set()
        if branch:
            refs.add(branch if branch.startswith("refs/") else f"refs/heads/{branch}")
        if tag:
            refs.add(tag if tag.startswith("refs/") else f"refs/tags/{tag}")
        return cls(refs=frozenset(refs), tag_globs=(tag_glob,) if tag_glob else ())

    def matches(self, ref: str) -> bool:
        if ref in self.refs:
            return True
        if ref.startswith("refs/tags/"):
            name = ref.removeprefix("refs/tags/")
            return any(fnmatch.fnmatchcase(name, glob) for glob in self.tag_globs)
        return False


@dataclass(frozen=True)
class _Scheme:
    """How one forge authenticates a delivery and names its event."""

    forge: Forge
    auth_headers: tuple[str, ...]  # lower-case; the first one present is checked
    event_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    prefix: str = ""  # e.g. "sha256=" before the hex digest
    token: bool = False  # the header carries the secret itself, not an HMAC
    push_events: frozenset[str] = field(default_factory=frozenset)
    ping_events: frozenset[str] = frozenset()
    default_event: str = ""  # assumed when no event header is sent


# Checked in this order: Gitea/Forgejo before GitHub, since they send GitHub's headers too.
_SCHEMES: tuple[_Scheme, ...] = (
    _Scheme(Forge.GITEA, ("x-forgejo-signature", "x-gitea-signature"),
            ("x-forgejo-event", "x-gitea-event", "x-github-event"),
            ("x-forgejo-delivery", "x-gitea-delivery"),
            push_events=frozenset({"push"})),
    _Scheme(Forge.GITHUB, ("x-hub-signature-256",), ("x-github-event",), ("x-github-delivery",),
            prefix="sha256=", push_events=frozenset({"push"}), ping_events=frozenset({"ping"})),
    _Scheme(Forge.GITLAB, ("x-gitlab-token",), ("x-gitlab-event",),
            ("x-gitlab-event-uuid", "x-gitlab-webhook-uuid"), token=True,
            push_events=frozenset({"Push Hook", "Tag Push Hook"})),
    _Scheme(Forge.GENERIC, ("x-reconciler-signature",), ("x-reconciler-event",),
            ("x-reconciler-delivery",), prefix="sha256=", push_events=frozenset({"push"}),
            ping_events=frozenset({"ping"}), default_event="push"),
)


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body``, as senders compute it (tests, ``curl`` recipes)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def load_secret(path: Path) -> bytes:
    """Read the webhook secret from ``webhook.secretFile``; surrounding whitespace is dropped.

    Raises :class:`ConfigError` when the file cannot be read or is empty: an empty key would
    let anyone compute a valid signature.
    """
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"webhook.secretFile: cannot read {path}: {exc.strerror}") from exc
    secret = raw.strip()
    if not secret:
        raise ConfigError(f"webhook.secretFile: {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Still usable, but an operator should know other local users can forge pushes.
        log.warning("webhook_secret_file_shared", path=str(path), mode=oct(mode & 0o777))
    return secret


def inspect_delivery(headers: Mapping[str, str], body: bytes, secret: bytes) -> Delivery:
    """Authenticate a delivery and say what it asks for.

    ``headers`` may use any case; ``body`` is the raw request body the signature covers.
    Nothing about the body is trusted before the signature has been checked.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    for scheme in _SCHEMES:
        present = next((h for h in scheme.auth_headers if h in lower), None)
        if present is not None:
            break
    else:
        return Delivery(Outcome.UNAUTHORIZED, detail="no signature header")
    delivery_id = next((lower[h] for h in scheme.delivery_headers if h in lower), None)
    if not secret or not _verified(scheme, lower[present], body, secret):
        return Delivery(Outcome.UNAUTHORIZED, forge=scheme.forge, delivery_id=delivery_id,
                        detail=f"{present} does not verify")
    event = next((lower[h].strip() for h in scheme.event_headers if h in lower),
                 scheme.default_event)
    base = Delivery(Outcome.OTHER_EVENT, forge=scheme.forge, event=event,
                    delivery_id=delivery_id)
    if event in scheme.ping_events:
        return replace(base, outcome=Outcome.PING)
    payload = _payload(lower.get("content-type", ""), body)
    if isinstance(payload, str):
        return replace(base, outcome=Outcome.MALFORMED, detail=payload)
    is_push = event in scheme.push_events or (
        scheme.forge is Forge.GITLAB and event == "System Hook"
        and payload.get("event_name") in ("push", "tag_push"))
    if not is_push:
        return replace(base, detail=f"event {event!r} is not a push")
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        return replace(base, outcome=Outcome.MALFORMED, detail="body: field 'ref' is missing")
    after = payload.get("after")
    after = after if isinstance(after, str) else None
    deleted = payload.get("deleted") is True or after == _ZERO_SHA
    return replace(base, outcome=Outcome.PUSH, ref=ref, after=after, deleted=deleted)


def _verified(scheme: _Scheme, value: str, body: bytes, secret: bytes) -> bool:
    given = value.strip().encode("utf-8", "replace")
    if scheme.token:
        return hmac.compare_digest(given, secret)
    prefix = scheme.prefix.encode()
    if not given.startswith(prefix):
        return False
    expected = sign(secret, body).encode()
    # Hex digits may arrive in upper case from hand-written senders; HMAC equality is on bytes.
    return hmac.compare_digest(given[len(prefix):].lower(), expected)


def _payload(content_type: str, body: bytes) -> dict[str, Any] | str:
    """The JSON object of a push body, or a message saying why there is none."""
    media = content_type.split(";", 1)[0].strip().lower()
    text: str | bytes = body
    if media == "application/x-www-form-urlencoded" and not body.lstrip().startswith(b"{"):
        # A JSON body labelled as a form is what `curl -d` sends: read it as JSON.
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return "body: not a valid form"
        if "payload" not in form:
            return "body: form field 'payload' is missing"
        text = form["payload"][0]
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"body: not valid JSON ({exc.__class__.__name__})"
    if not isinstance(data, dict):
        return "body: JSON is not an object"
    return data
