"""What ``reconciler config check`` checks: a site's local config and everything it points at.

Every problem is listed, not only the first: the file itself (schema and ``RECONCILER_*``
values), the files and directories it names, the ref syntax and the verification policy, and
(unless offline) the tracked revision, fetched into a temporary directory (the daemon's state
directory is not touched, so this is safe while the daemon runs) to check that ``site:`` and
``targets:`` name a site and targets it has.
"""

from __future__ import annotations

import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.core.loading import load_fleet
from reconciler.daemon.config import DaemonConfig, load_config, served_problems
from reconciler.gitops.source import GitSource, parse_ref
from reconciler.gitops.verification import VerifyMode, VerifyPolicy

__all__ = ["ConfigCheck", "check_config"]

# (section, key, kind) of every file or directory a config names
_NAMED_PATHS = (("repo", "sshKey", "file"), ("repo", "tokenFile", "file"),
                ("webhook", "secretFile", "file"), ("verify", "allowedSigners", "file"),
                (None, "secretsDir", "dir"))


@dataclass(frozen=True)
class ConfigCheck:
    """Every problem found; the config when its file could be loaded; and what the tracked
    revision serves (or why it was not looked at)."""

    problems: tuple[str, ...]
    config: DaemonConfig | None = None
    served: str = ""


def check_config(path: Path, *, offline: bool = False) -> ConfigCheck:
    """Check the config at ``path`` and everything it points at (the tracked revision too,
    unless ``offline``)."""
    if not path.exists():
        return ConfigCheck((f"{path}: no such file (use --config FILE or RECONCILER_CONFIG)",))
    try:
        config = load_config(path)
    except ConfigError as exc:
        # the schema failed: still check the files the config names, so one run lists all
        return ConfigCheck((*(exc.problems or [exc.message]), *_named_path_problems(path)))
    problems: list[str] = []
    try:
        parse_ref(config.ref)
    except ConfigError as exc:
        problems.append(exc.message)
    try:
        policy = VerifyPolicy(VerifyMode(config.verify_mode), config.verify_allowed_signers,
                              config.verify_gpg_keyring)
        problems.extend(f"verify: {p}" for p in policy.problems())
    except ConfigError as exc:
        problems.append(exc.message)
    problems += _named_path_problems(path)
    problems += _sink_file_problems(config)
    problems += _control_socket_problems(config)
    served = "repository not checked (--offline)"
    if not offline:
        if any(p.startswith("repo.") for p in problems):
            problems.append("repo: not contacted until the problems above are fixed")
        else:
            found, served = _check_tracked_revision(config)
            problems += found
    return ConfigCheck(tuple(problems), config, served)


def _named_path_problems(config_path: Path) -> list[str]:
    """Files and directories the config names that do not exist (read from the raw YAML,
    so this works even when the rest of the config is invalid)."""
    try:
        raw = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(raw, dict):
        return []
    base = config_path.resolve().parent
    problems = []
    for section, key, kind in _NAMED_PATHS:
        holder = raw.get(section) if section else raw
        value = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(value, str) or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        ok = path.is_dir() if kind == "dir" else path.is_file()
        if not ok:
            name = f"{section}.{key}" if section else key
            what = "a directory" if kind == "dir" else "a readable file"
            problems.append(f"{name}: {path} is not {what}")
    return problems


def _sink_file_problems(config: DaemonConfig) -> list[str]:
    """The notification sinks' secret and CA files: each must be a readable, non-empty file
    (the daemon refuses to start otherwise)."""
    problems = []
    for index, sink in enumerate(config.notifications.sinks):
        for key, file in (("urlFile", sink.url_file), ("secretFile", sink.secret_file),
                          ("tokenFile", sink.token_file), ("caFile", sink.ca_file)):
            if file is None:
                continue
            try:
                empty = not file.read_bytes().strip()
            except OSError as exc:
                problems.append(f"notifications.sinks[{index}].{key}: {file}: "
                                f"{exc.strerror or exc}")
                continue
            if empty:
                problems.append(f"notifications.sinks[{index}].{key}: {file} is empty")
    return problems


def _control_socket_problems(config: DaemonConfig) -> list[str]:
    """A directory for ``controlSocket`` that the daemon would refuse (it refuses to put
    its socket where other users may write). One that does not exist yet is fine: systemd
    makes the runtime directory when the service starts, the daemon makes any other."""
    if not config.control_socket_explicit:
        return []
    directory = config.control_socket_path.parent
    try:
        mode = directory.stat().st_mode
    except OSError:
        return []
    if mode & stat.S_IWOTH:
        return [f"controlSocket: {directory} may be written by every user; the daemon will "
                "not put its socket there (choose a directory only its user can write)"]
    return []


def _check_tracked_revision(config: DaemonConfig) -> tuple[list[str], str]:
    """Fetch the tracked revision into a temporary directory and check that the config's
    site and targets are in it: (problems, a summary of what is served)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-config-check-") as tmp:
        source = GitSource(config.repo_url, config.ref, Path(tmp), ssh_key=config.ssh_key,
                           token_file=config.token_file, timeout=config.git_timeout)
        try:
            source.fetch()
            revision = source.resolve()
            fleet = load_fleet(source.checkout(revision.commit)).fleet
        except ReconcilerError as exc:
            return [f"repo: {exc.message}"], ""
        problems = served_problems(config, fleet, revision.commit)
        site = fleet.find_site(config.site)
        served = [t.name for t in fleet.targets_under(site.name)] if site else []
        if config.targets:
            served = [t for t in served if t in config.targets]
        count = f"{len(served)} target{'' if len(served) == 1 else 's'}"
        return problems, f"{count} in revision {revision.commit[:12]}"
