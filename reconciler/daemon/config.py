"""The site daemon's local configuration (default ``/etc/reconciler/config.yaml``).

Every key can be overridden by an environment variable named ``RECONCILER_`` + the key path
upper-cased and joined by ``_`` (``repo.url`` -> ``RECONCILER_REPO_URL``,
``policy.allowScripts`` -> ``RECONCILER_POLICY_ALLOWSCRIPTS``); values are read as YAML, so
``true``, ``30`` and ``[a, b]`` work, and a comma-separated string is accepted for lists.
Relative paths are resolved against the config file's directory, except ``policy.fileRoots``,
which (like the ``root`` and ``workdir`` of file and script bindings) are relative to
``stateDir``. Used by every command that acts on a site (``run``, ``sync``, ``plan``,
``hold``, ``config check``).

``controlSocket`` (the local channel of ``hold``, ``unhold`` and ``sync --retry``) defaults to
``$RUNTIME_DIRECTORY/control.sock`` when systemd gives the daemon a runtime directory, and to
``<stateDir>/control.sock`` otherwise.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cerberus
import yaml

from reconciler.core.durations import parse_duration
from reconciler.core.errors import ConfigError
from reconciler.core.loading import _schema_errors, field_path
from reconciler.core.model import Fleet, StatusLayout
from reconciler.core.provider_api import SHUTDOWN_GRACE, LocalPolicy
from reconciler.core.yamlio import YamlFileError, read_documents
from reconciler.daemon.config_schema import SCHEMA as _SCHEMA
from reconciler.daemon.notification_settings import (
    NotificationSettings,
    build_notifications,
)
from reconciler.engine.engine_settings import EngineSettings
from reconciler.gitops.status_push import site_id_for
from reconciler.gitops.verification import VerifyMode

__all__ = ["DEFAULT_CONFIG", "DaemonConfig", "load_config", "served_problems", "site_id"]

DEFAULT_CONFIG = Path("/etc/reconciler/config.yaml")
ENV_PREFIX = "RECONCILER_"
CONTROL_SOCKET = "control.sock"  # in $RUNTIME_DIRECTORY, else in stateDir



# the flat id of a site path names its status branch; the status publisher owns the rule
site_id = site_id_for


@dataclass(frozen=True)
class DaemonConfig:
    """The validated local configuration; every field defaulted for a safe small site."""

    repo_url: str
    site: str  # site path or name: the subtree this daemon serves
    ref: str = "main"
    ssh_key: Path | None = None
    token_file: Path | None = None
    git_timeout: int = 120  # seconds for one git network operation
    targets: tuple[str, ...] = ()  # only these targets of the subtree (empty: all)
    state_dir: Path = Path("/var/lib/reconciler")
    interval: int | None = None  # None: the repository's Settings default (180 s)
    jitter: int | None = None
    retries: int | None = None
    retry_delay: float | None = None
    retry_max_delay: float = 300.0
    health_timeout: int | None = None
    health_poll_interval: float = 2.0
    apply_concurrency: int = 4
    # on shutdown, how long a running helm upgrade may go on before it is stopped; the unit's
    # TimeoutStopSec must exceed it by helm's 30 s to roll back (docs/operations.md)
    shutdown_grace: float = SHUTDOWN_GRACE
    # during a run's waits, how often to look at the server for a newer revision
    remote_check_interval: float = 30.0
    status_layout: StatusLayout | None = None  # None: the repository's Settings
    status_branch: str | None = None
    status_push: bool = True
    status_heartbeat: float = 3600.0  # seconds between heartbeats of an idle site; 0: none
    policy: LocalPolicy = field(default_factory=LocalPolicy)
    listen_address: str = "127.0.0.1"
    listen_port: int = 9420
    listen_enabled: bool = True
    webhook_secret_file: Path | None = None
    webhook_trigger_interval: float = 10.0  # rate limit: one trigger per this many seconds
    webhook_trigger_burst: int = 2
    verify_mode: str = "none"
    verify_allowed_signers: Path | None = None
    verify_gpg_keyring: Path | None = None
    verify_signed_merges: bool = False
    secrets_dir: Path | None = None
    watch: bool = True  # watch a local repository path for changes
    # the local channel of hold/unhold/sync --retry; None: <state_dir>/control.sock
    control_socket: Path | None = None
    control_socket_explicit: bool = False  # set by the config (not a default)
    repair_outside_windows: bool = True
    log_format: str = "auto"
    log_level: str = "info"
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    source_file: Path | None = None

    @property
    def is_local_repo(self) -> bool:
        url = self.repo_url
        return url.startswith("file://") or url.startswith("/") or url.startswith(".")

    @property
    def local_repo_path(self) -> Path | None:
        if not self.is_local_repo:
            return None
        return Path(self.repo_url.removeprefix("file://"))

    @property
    def control_socket_path(self) -> Path:
        return self.control_socket or self.state_dir / CONTROL_SOCKET

    def engine_settings(self) -> EngineSettings:
        """What the engine needs of this configuration, as its own values."""
        return EngineSettings(
            repo_url=self.repo_url, ref=self.ref, ssh_key=self.ssh_key,
            token_file=self.token_file, git_timeout=self.git_timeout, site=self.site,
            targets=self.targets, state_dir=self.state_dir, retries=self.retries,
            retry_delay=self.retry_delay, retry_max_delay=self.retry_max_delay,
            health_timeout=self.health_timeout,
            health_poll_interval=self.health_poll_interval,
            apply_concurrency=self.apply_concurrency, shutdown_grace=self.shutdown_grace,
            remote_check_interval=self.remote_check_interval, policy=self.policy,
            secrets_dir=self.secrets_dir, verify_mode=VerifyMode(self.verify_mode),
            verify_allowed_signers=self.verify_allowed_signers,
            verify_gpg_keyring=self.verify_gpg_keyring,
            verify_signed_merges=self.verify_signed_merges, status_layout=self.status_layout,
            status_branch=self.status_branch, status_push=self.status_push,
            # None: the default, <state_dir>/control.sock (served by the daemon, not the engine)
            status_heartbeat=self.status_heartbeat, control_socket=self.control_socket,
            repair_outside_windows=self.repair_outside_windows)


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str],
                   applied: dict[tuple[str, ...], tuple[str, str]]) -> list[str]:
    """Apply RECONCILER_* variables to ``data``; returns the problems found. ``applied``
    receives key path -> (variable, raw value) of every override, so that a bad value is
    blamed on its variable rather than on a line of the file."""
    problems: list[str] = []
    leaves: dict[str, tuple[str, ...]] = {}

    def walk(schema: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, rules in schema.items():
            path = (*prefix, key)
            if rules.get("type") == "dict" and "schema" in rules:
                walk(rules["schema"], path)
            else:
                leaves[ENV_PREFIX + "_".join(p.upper() for p in path)] = path

    walk(_SCHEMA, ())
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("RECONCILER_CONFIG",):
            continue
        path = leaves.get(name)
        if path is None:
            if name.startswith("RECONCILER_TEST_"):
                continue
            problems.append(f"{name}: unknown setting (known: {', '.join(sorted(leaves))})")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        rules = _rules_at(path)
        if rules.get("type") == "list" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif rules.get("type") == "string" and not isinstance(value, str):
            value = raw
        node = data
        for part in path[:-1]:
            if node.get(part) is None:  # absent, or a section left empty (``notifications:``)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                problems.append(f"{name}: cannot override inside a non-mapping")
                break
        else:
            node[path[-1]] = value
            applied[path] = (name, raw)
    return problems


def _rules_at(path: tuple[str, ...]) -> dict[str, Any]:
    rules: dict[str, Any] = {"schema": _SCHEMA}
    for part in path:
        rules = rules["schema"][part]
    return rules


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """Read, override from the environment, validate; raises ConfigError with every problem."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    docs: list[Any] = []
    where = "environment"
    if path is not None:
        where = str(path)
        try:
            docs = read_documents(path)
        except YamlFileError as exc:
            line = f":{exc.line}" if exc.line else ""
            message = f"{path}{line}: {exc.message}"
            raise ConfigError(message, [message]) from None
        if len(docs) > 1:
            raise ConfigError(f"{path}: expected one YAML document, found {len(docs)}")
        if docs:
            if not isinstance(docs[0].data, dict):
                raise ConfigError(f"{path}: the config must be a mapping")
            data = docs[0].data
            lines = docs[0]
    from_env: dict[tuple[str, ...], tuple[str, str]] = {}
    problems = _env_overrides(data, env, from_env)
    for key, value in (overrides or {}).items():
        data[key] = value
        from_env.pop((key,), None)
    validator = cerberus.Validator(_SCHEMA)
    if not validator.validate(data):
        for fpath, message in _schema_errors(validator._errors, _SCHEMA):
            variable = next((v for p, v in from_env.items()
                             if tuple(fpath[:len(p)]) == p), None)
            if variable is not None:  # the value came from the environment, not the file
                name, raw = variable
                shown = raw if len(raw) <= 60 else raw[:57] + "..."
                problems.append(f"{name}: {field_path(fpath)}: {message} (value {shown!r})")
                continue
            lineno = lines.line_of(fpath) if path is not None and docs else 0
            loc = f"{where}:{lineno}" if lineno else where
            problems.append(f"{loc}: {field_path(fpath)}: {message}")
    if problems:
        raise ConfigError(f"invalid configuration {where}: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                          problems)
    return _build(data, path, env)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""


def served_problems(config: DaemonConfig | EngineSettings, fleet: Fleet,
                    revision: str) -> list[str]:
    """Why ``site`` and ``targets`` of ``config`` select no target of ``fleet`` (the fleet at
    ``revision``), one line per mistake; empty when the daemon has something to serve.

    Used by ``reconciler config check`` and by the daemon, which says so in its log and in
    ``/readyz`` rather than serving nothing without a word.
    """
    at = f"in revision {revision[:12]}" if revision else "in the repository"
    site = fleet.find_site(config.site)
    if site is None:
        paths = [fleet.site_path(name) for name in fleet.sites]
        hint = _did_you_mean(config.site, [*paths, *fleet.sites])
        if not hint:
            hint = (f" (sites: {', '.join(sorted(paths)[:10])}"
                    f"{' ...' if len(paths) > 10 else ''})" if paths else " (it has no sites)")
        return [f"site: no site '{config.site}' {at}{hint}"]
    path = fleet.site_path(site.name)
    under = {t.name for t in fleet.targets_under(path)}
    problems = []
    for name in config.targets:
        if name in under:
            continue
        elsewhere = fleet.targets.get(name)
        hint = (f" (it is at site {fleet.site_path(elsewhere.site)})" if elsewhere is not None
                else _did_you_mean(name, under))
        problems.append(f"targets: no target '{name}' at site {path} {at}{hint}")
    if not under:
        problems.append(f"site: no target at site {path} or below it {at}")
    return problems


def _build(data: dict[str, Any], path: Path | None, env: Mapping[str, str]) -> DaemonConfig:
    base = path.resolve().parent if path is not None else Path.cwd()

    def p(value: str | None, rel_to: Path = base) -> Path | None:
        if value is None or value == "":
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (rel_to / candidate)

    repo = data["repo"]
    url = repo["url"]
    if not ("://" in url or url.startswith("/") or "@" in url.split("/")[0]):
        url = str((base / url).resolve())  # a relative local path
    state_dir = p(data.get("stateDir")) or Path("/var/lib/reconciler")
    retries = data.get("retries") or {}
    status = data.get("status") or {}
    pol = data.get("policy") or {}
    roots = pol.get("fileRoots", ["files"])
    policy = LocalPolicy(
        allowed_providers=frozenset(pol["allowedProviders"])
        if pol.get("allowedProviders") is not None else None,
        file_roots=tuple(p(r, state_dir) or state_dir for r in roots),
        allow_scripts=bool(pol.get("allowScripts", False)),
        namespaces=frozenset(pol["namespaces"]) if pol.get("namespaces") is not None else None,
    )
    listen = data.get("listen") or {}
    verify = data.get("verify") or {}
    # systemd's RuntimeDirectory= (joined by ':' when the unit names several: the first)
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    socket_path = p(data.get("controlSocket")) or (
        Path(runtime) / CONTROL_SOCKET if runtime else None)
    log, hook = data.get("log") or {}, data.get("webhook") or {}
    return DaemonConfig(
        repo_url=url,
        site=data["site"].strip("/"),
        ref=repo.get("ref", "main"),
        ssh_key=p(repo.get("sshKey")),
        token_file=p(repo.get("tokenFile")),
        git_timeout=repo.get("timeout", 120),
        targets=tuple(data.get("targets") or ()),
        state_dir=state_dir,
        interval=data.get("interval"),
        jitter=data.get("jitter"),
        retries=retries.get("count"),
        retry_delay=retries.get("delay"),
        retry_max_delay=float(retries.get("maxDelay", 300.0)),
        health_timeout=data.get("healthTimeout"),
        health_poll_interval=float(data.get("healthPollInterval", 2.0)),
        apply_concurrency=int(data.get("applyConcurrency", 4)),
        shutdown_grace=float(data.get("shutdownGrace", SHUTDOWN_GRACE)),
        remote_check_interval=float(data.get("remoteCheckInterval", 30.0)),
        status_layout=StatusLayout(status["layout"]) if "layout" in status else None,
        status_branch=status.get("branch"),
        status_push=bool(status.get("push", True)),
        status_heartbeat=parse_duration(status.get("heartbeat", 3600), zero=True),
        policy=policy,
        listen_address=listen.get("address", "127.0.0.1"),
        listen_port=listen.get("port", 9420),
        listen_enabled=bool(listen.get("enabled", True)),
        webhook_secret_file=p(hook.get("secretFile")),
        webhook_trigger_interval=float(hook.get("triggerInterval", 10.0)),
        webhook_trigger_burst=int(hook.get("triggerBurst", 2)),
        verify_mode=verify.get("mode", "none"),
        verify_allowed_signers=p(verify.get("allowedSigners")),
        verify_gpg_keyring=p(verify.get("gpgKeyring")),
        verify_signed_merges=bool(verify.get("signedMerges", False)),
        secrets_dir=p(data.get("secretsDir")),
        watch=bool(data.get("watch", True)),
        control_socket=socket_path,
        control_socket_explicit=bool(data.get("controlSocket")),
        repair_outside_windows=bool(data.get("repairOutsideWindows", True)),
        log_format=log.get("format", "auto"),
        log_level=log.get("level", "info"),
        notifications=build_notifications(data.get("notifications"),
                                          str(path or "environment"), p),
        source_file=path,
    )
