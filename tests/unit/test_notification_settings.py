"""The ``notifications:`` section of the local config, through ``load_config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.core.errors import ConfigError
from reconciler.daemon.config import load_config
from reconciler.daemon.notification_settings import (
    NotificationSettings,
    SinkKind,
    SinkSettings,
)

BASE = {"repo": {"url": "https://git.example.net/fleet.git"}, "site": "eu/berlin"}


def load(tmp_path: Path, notifications: object,
         env: dict[str, str] | None = None) -> NotificationSettings:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**BASE, "notifications": notifications}))
    return load_config(path, environ=env or {}).notifications


def test_absent_or_empty_means_no_sinks(tmp_path: Path) -> None:
    assert load(tmp_path, None) == NotificationSettings()
    assert load(tmp_path, {}) == NotificationSettings()


def test_every_sink_kind_and_setting(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    found = load(tmp_path, {
        "queueLimit": 50, "retryDelay": 0.5, "retryMaxDelay": 60, "rateInterval": 3,
        "rateBurst": 2,
        "sinks": [
            {"type": "webhook", "url": "https://hooks.example.net/r", "secretFile": "hmac",
             "timeout": 5},
            {"type": "slack", "urlFile": "/etc/reconciler/slack-url"},
            {"type": "teams", "name": "ops-teams", "urlFile": "teams-url", "caFile": "ca.pem"},
            {"type": "github", "repository": "fleet/config", "tokenFile": "gh"},
            {"type": "gitlab", "repository": "group/sub/fleet", "tokenFile": "gl",
             "context": "edge/{site}", "targetUrl": "https://dash.example.net"},
            {"type": "forgejo", "repository": "fleet/config", "tokenFile": "fj",
             "baseUrl": "https://code.example.net/api/v1/"},
        ]})
    assert found == NotificationSettings(
        queue_limit=50, retry_delay=0.5, retry_max_delay=60.0, rate_interval=3.0,
        rate_burst=2, sinks=(
            SinkSettings("webhook", SinkKind.WEBHOOK, url="https://hooks.example.net/r",
                         secret_file=etc / "hmac", timeout=5.0),
            SinkSettings("slack", SinkKind.SLACK,
                         url_file=Path("/etc/reconciler/slack-url")),
            SinkSettings("ops-teams", SinkKind.TEAMS, url_file=etc / "teams-url",
                         ca_file=etc / "ca.pem"),
            SinkSettings("github", SinkKind.GITHUB, token_file=etc / "gh",
                         base_url="https://api.github.com", repository="fleet/config"),
            SinkSettings("gitlab", SinkKind.GITLAB, token_file=etc / "gl",
                         base_url="https://gitlab.com/api/v4", repository="group/sub/fleet",
                         context="edge/{site}", target_url="https://dash.example.net"),
            SinkSettings("forgejo", SinkKind.GITEA, token_file=etc / "fj",
                         base_url="https://code.example.net/api/v1",
                         repository="fleet/config"),
        ))


@pytest.mark.parametrize(("sinks", "problem"), [
    ([{"type": "slack"}], "notifications.sinks[0]: give either url or urlFile"),
    ([{"type": "slack", "url": "https://a", "urlFile": "f"}],
     "notifications.sinks[0]: give either url or urlFile"),
    ([{"type": "teams", "url": "ftp://files.example.net/x"}],
     "notifications.sinks[0].url: not an http(s) URL"),
    ([{"type": "webhook", "url": "https://a.example.net"}],
     "notifications.sinks[0].secretFile: required for a webhook sink"),
    ([{"type": "github", "repository": "fleet/config"}],
     "notifications.sinks[0].tokenFile: required for a github sink"),
    ([{"type": "github", "tokenFile": "t", "repository": "config"}],
     "notifications.sinks[0].repository: expected owner/name, found 'config'"),
    ([{"type": "gitea", "tokenFile": "t", "repository": "a/b"}],
     "notifications.sinks[0].baseUrl: required for a gitea sink"),
    ([{"type": "slack", "url": "https://a.example.net", "tokenFile": "t"}],
     "notifications.sinks[0].tokenFile: not used by a slack sink"),
    ([{"type": "slack", "url": "https://a.example.net"},
      {"type": "slack", "url": "https://b.example.net"}],
     "notifications.sinks[1]: a second sink named 'slack'"),
])
def test_what_a_sink_lacks_or_cannot_use_is_named(tmp_path: Path, sinks: list[object],
                                                   problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, {"sinks": sinks})
    assert problem in raised.value.message, raised.value.message
    assert all(p.startswith(str(tmp_path)) for p in raised.value.problems)


@pytest.mark.parametrize(("notifications", "problem"), [
    ({"sinks": [{"type": "pager"}]}, "notifications.sinks[0].type: unallowed value pager"),
    ({"sinks": [{"type": "slack", "url": "https://a", "name": "with space"}]},
     "notifications.sinks[0].name"),
    ({"queueLimit": 0}, "notifications.queueLimit: min value is 1"),
    ({"retryDelay": 5, "retryMaxDelay": 1}, "retryMaxDelay: must not be below retryDelay"),
    ({"sink": []}, "notifications.sink"),
])
def test_shape_errors(tmp_path: Path, notifications: object, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, notifications)
    assert problem in " ".join(raised.value.problems), raised.value.problems


def test_settings_from_the_environment(tmp_path: Path) -> None:
    found = load(tmp_path, None, env={
        "RECONCILER_NOTIFICATIONS_QUEUELIMIT": "7",
        "RECONCILER_NOTIFICATIONS_SINKS":
            "[{type: slack, urlFile: /run/secrets/slack-url}]"})
    assert found.queue_limit == 7
    assert found.sinks == (SinkSettings("slack", SinkKind.SLACK,
                                        url_file=Path("/run/secrets/slack-url")),)
