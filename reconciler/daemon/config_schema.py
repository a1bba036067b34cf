"""The shape of the site daemon's local configuration, as a cerberus schema.

``reconciler.daemon.config`` validates the file (and its environment overrides) against
:data:`SCHEMA` before it builds a :class:`~reconciler.daemon.config.DaemonConfig`; the keys
are documented in docs/operations.md and, with comments, in ``systemd/config.yaml``.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.durations import check_duration
from reconciler.daemon.control import check_socket_path
from reconciler.daemon.notification_settings import NOTIFICATIONS_SCHEMA

__all__ = ["SCHEMA"]

_STR = {"type": "string"}
SCHEMA: dict[str, Any] = {
    "repo": {"type": "dict", "required": True, "schema": {
        "url": {"type": "string", "required": True, "empty": False},
        "ref": {"type": "string", "empty": False},
        "sshKey": _STR,
        "tokenFile": _STR,
        "timeout": {"type": "integer", "min": 1},
    }},
    "site": {"type": "string", "required": True, "empty": False},
    "targets": {"type": "list", "schema": _STR},
    "stateDir": _STR,
    "interval": {"type": "integer", "min": 1},
    "jitter": {"type": "integer", "min": 0},
    "retries": {"type": "dict", "schema": {
        "count": {"type": "integer", "min": 0, "max": 100},
        "delay": {"type": "number", "min": 0},
        "maxDelay": {"type": "number", "min": 0},
    }},
    "healthTimeout": {"type": "integer", "min": 1},
    "healthPollInterval": {"type": "number", "min": 0.05},
    "applyConcurrency": {"type": "integer", "min": 1, "max": 64},
    "shutdownGrace": {"type": "number", "min": 0},
    "remoteCheckInterval": {"type": "number", "min": 1},
    "status": {"type": "dict", "schema": {
        "layout": {"type": "string", "allowed": ["per-site", "shared"]},
        "branch": _STR,
        "push": {"type": "boolean"},
        # how often an idle site rewrites its heartbeat file: 1h, 30m, seconds; 0: never
        "heartbeat": {"type": ["number", "string"], "check_with": check_duration},
    }},
    "policy": {"type": "dict", "schema": {
        "allowedProviders": {"type": "list", "nullable": True, "schema": _STR},
        "fileRoots": {"type": "list", "schema": _STR},
        "allowScripts": {"type": "boolean"},
        "namespaces": {"type": "list", "nullable": True, "schema": _STR},
    }},
    "listen": {"type": "dict", "schema": {
        "address": _STR,
        "port": {"type": "integer", "min": 0, "max": 65535},
        "enabled": {"type": "boolean"},
    }},
    "webhook": {"type": "dict", "schema": {
        "secretFile": _STR,
        "triggerInterval": {"type": "number", "min": 0},  # seconds per trigger token
        "triggerBurst": {"type": "integer", "min": 1},
    }},
    "verify": {"type": "dict", "schema": {
        "mode": {"type": "string", "allowed": ["none", "commit", "tag"]},
        "allowedSigners": _STR,
        "gpgKeyring": _STR,
        # tenancy: every merge commit must be signed by a member (docs/tenancy.md)
        "signedMerges": {"type": "boolean"},
    }},
    "secretsDir": _STR,
    "watch": {"type": "boolean"},
    # hold, unhold and sync --retry reach the daemon here (docs/operations.md)
    "controlSocket": {"type": "string", "empty": False, "check_with": check_socket_path},
    # repair drift and roll back outside maintenance windows (docs/failure-handling.md)
    "repairOutsideWindows": {"type": "boolean"},
    "log": {"type": "dict", "schema": {
        "format": {"type": "string", "allowed": ["auto", "json", "console"]},
        "level": {"type": "string", "allowed": ["debug", "info", "warning", "error"]},
    }},
    "notifications": NOTIFICATIONS_SCHEMA,  # docs/notifications.md
}
