"""The ``notifications:`` section of the local config: where a site sends its alerts.

``reconciler.daemon.config`` validates the section's shape with :data:`NOTIFICATIONS_SCHEMA`
(a cerberus rule, part of the config's schema) and turns it into a
:class:`NotificationSettings` with :func:`build_notifications`, which also checks what a
schema cannot say: which keys each kind of sink needs and which it ignores, URLs that are
URLs, one name per sink. Secret files are only named here; ``reconciler.daemon
.notification_sinks`` reads them when the daemon starts. docs/notifications.md describes every
key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError

__all__ = ["NOTIFICATIONS_SCHEMA", "NotificationSettings", "SinkKind", "SinkSettings",
           "build_notifications"]


class SinkKind(enum.Enum):
    WEBHOOK = "webhook"  # generic JSON, HMAC-SHA256 signed
    SLACK = "slack"  # Slack incoming webhook
    TEAMS = "teams"  # Microsoft Teams: a Workflows webhook (or a legacy incoming webhook)
    GITHUB = "github"  # commit status
    GITLAB = "gitlab"  # commit status
    GITEA = "gitea"  # commit status; Forgejo has the same API

    @property
    def is_forge(self) -> bool:
        return self in (SinkKind.GITHUB, SinkKind.GITLAB, SinkKind.GITEA)


_KINDS = {k.value: k for k in SinkKind} | {"forgejo": SinkKind.GITEA}
_STR = {"type": "string"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_SINK_SCHEMA: dict[str, Any] = {
    "type": {"type": "string", "required": True, "allowed": sorted(_KINDS)},
    "name": {"type": "string", "regex": _NAME.pattern},
    "url": _STR, "urlFile": _STR, "secretFile": _STR, "tokenFile": _STR, "baseUrl": _STR,
    "repository": _STR, "context": _STR, "targetUrl": _STR, "caFile": _STR,
    "timeout": {"type": "number", "min": 1, "max": 300},
}
NOTIFICATIONS_SCHEMA: dict[str, Any] = {"type": "dict", "nullable": True, "schema": {
    "sinks": {"type": "list", "schema": {"type": "dict", "schema": _SINK_SCHEMA}},
    "queueLimit": {"type": "integer", "min": 1, "max": 100_000},
    "retryDelay": {"type": "number", "min": 0.01},
    "retryMaxDelay": {"type": "number", "min": 0.01},
    "rateInterval": {"type": "number", "min": 0},
    "rateBurst": {"type": "integer", "min": 1},
}}

# which keys each kind takes (beyond type, name, timeout and caFile, which all take)
_CHAT = {"url", "urlFile"}
_FORGE = {"tokenFile", "baseUrl", "repository", "context", "targetUrl"}
_KEYS = {SinkKind.WEBHOOK: _CHAT | {"secretFile"}, SinkKind.SLACK: _CHAT,
         SinkKind.TEAMS: _CHAT, SinkKind.GITHUB: _FORGE, SinkKind.GITLAB: _FORGE,
         SinkKind.GITEA: _FORGE}
_DEFAULT_BASE = {SinkKind.GITHUB: "https://api.github.com",
                 SinkKind.GITLAB: "https://gitlab.com/api/v4"}
DEFAULT_CONTEXT = "reconciler/{site}"


@dataclass(frozen=True)
class SinkSettings:
    """One sink as configured (secrets by file name only)."""

    name: str
    kind: SinkKind
    url: str = ""  # webhook, slack, teams: the endpoint, unless url_file holds it
    url_file: Path | None = None
    secret_file: Path | None = None  # webhook: the HMAC key
    token_file: Path | None = None  # forges: the API token
    base_url: str = ""  # forges: the API root (GitHub's and GitLab's public one by default)
    repository: str = ""  # forges: owner/name (GitLab: a project id or path)
    context: str = DEFAULT_CONTEXT  # forges: the status context; {site} is the site id
    target_url: str = ""  # forges: the status's link (a dashboard, a report)
    ca_file: Path | None = None  # a private CA for an on-premises server
    timeout: float = 10.0  # seconds per request


@dataclass(frozen=True)
class NotificationSettings:
    """Every sink, and how hard to try: queue bound, retry delays, rate limit per sink."""

    sinks: tuple[SinkSettings, ...] = ()
    queue_limit: int = 500  # notifications kept on disk per sink; the oldest go first
    retry_delay: float = 2.0  # first delay after a failed delivery, doubling
    retry_max_delay: float = 300.0
    rate_interval: float = 1.0  # seconds per delivery, on average, per sink
    rate_burst: int = 10


def build_notifications(data: Mapping[str, Any] | None, where: str,
                        path: Callable[[str | None], Path | None]) -> NotificationSettings:
    """The settings of a schema-valid ``notifications:`` mapping; ``path`` resolves file
    names as the rest of the config does. Raises :class:`ConfigError` with every problem."""
    data = data or {}
    problems: list[str] = []
    sinks: list[SinkSettings] = []
    names: dict[str, int] = {}
    for index, raw in enumerate(data.get("sinks") or ()):
        at = f"notifications.sinks[{index}]"
        sink = _sink(raw, path, at, problems)
        if sink.name in names:
            problems.append(f"{at}: a second sink named '{sink.name}' (the first is "
                            f"notifications.sinks[{names[sink.name]}]); give each its own name")
        names.setdefault(sink.name, index)
        sinks.append(sink)
    settings = NotificationSettings(
        sinks=tuple(sinks), queue_limit=int(data.get("queueLimit", 500)),
        retry_delay=float(data.get("retryDelay", 2.0)),
        retry_max_delay=float(data.get("retryMaxDelay", 300.0)),
        rate_interval=float(data.get("rateInterval", 1.0)),
        rate_burst=int(data.get("rateBurst", 10)))
    if settings.retry_max_delay < settings.retry_delay:
        problems.append("notifications.retryMaxDelay: must not be below retryDelay")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"invalid configuration {where}: {problems[0]}{more}",
                          [f"{where}: {p}" for p in problems])
    return settings


def _sink(raw: Mapping[str, Any], path: Callable[[str | None], Path | None], at: str,
          problems: list[str]) -> SinkSettings:
    kind = _KINDS[raw["type"]]
    name = raw.get("name") or raw["type"]
    allowed = _KEYS[kind] | {"type", "name", "timeout", "caFile"}
    for key in sorted(set(raw) - allowed):
        problems.append(f"{at}.{key}: not used by a {raw['type']} sink "
                        f"(its keys: {', '.join(sorted(allowed))})")
    if kind.is_forge:
        base = raw.get("baseUrl") or _DEFAULT_BASE.get(kind, "")
        if not base:
            problems.append(f"{at}.baseUrl: required for a {raw['type']} sink (the API "
                            "root, e.g. https://git.example.com/api/v1)")
        elif not _is_http(base):
            problems.append(f"{at}.baseUrl: not an http(s) URL: {base!r}")
        for key in ("tokenFile", "repository"):
            if not raw.get(key):
                problems.append(f"{at}.{key}: required for a {raw['type']} sink")
        repo = raw.get("repository") or ""
        if repo and kind is not SinkKind.GITLAB and not re.fullmatch(r"[^/\s]+/[^/\s]+", repo):
            problems.append(f"{at}.repository: expected owner/name, found {repo!r}")
        return SinkSettings(name, kind, token_file=path(raw.get("tokenFile")),
                            base_url=base.rstrip("/"), repository=repo,
                            context=raw.get("context") or DEFAULT_CONTEXT,
                            target_url=raw.get("targetUrl", ""),
                            ca_file=path(raw.get("caFile")),
                            timeout=float(raw.get("timeout", 10.0)))
    if bool(raw.get("url")) == bool(raw.get("urlFile")):
        problems.append(f"{at}: give either url or urlFile (a file holding the URL, for "
                        "URLs that carry a token, as Slack's and Teams' do)")
    elif raw.get("url") and not _is_http(raw["url"]):
        problems.append(f"{at}.url: not an http(s) URL")  # the URL itself is not repeated
    if kind is SinkKind.WEBHOOK and not raw.get("secretFile"):
        problems.append(f"{at}.secretFile: required for a webhook sink (the key its "
                        "deliveries are signed with)")
    return SinkSettings(name, kind, url=raw.get("url", ""), url_file=path(raw.get("urlFile")),
                        secret_file=path(raw.get("secretFile")),
                        ca_file=path(raw.get("caFile")),
                        timeout=float(raw.get("timeout", 10.0)))


def _is_http(url: str) -> bool:
    return re.match(r"https?://[^/\s]+", url) is not None
