"""Where a site's status goes: site ids, status branch names, local refs and owned directories.

A site's status files live under ``status/<site path>/`` on a status branch of the fleet
repository. With ``Layout.PER_SITE`` (default) the branch is ``reconciler-status/<site id>``,
one per daemon; with ``Layout.SHARED`` the whole fleet shares one branch (default
``reconciler-fleet-status``). The publisher (``reconciler.gitops.status_push``) keeps its own
commits in refs under ``refs/reconciler/`` only; the fleet view (``fleet_status``) reads the
branches by these names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from reconciler.core.errors import ConfigError, StatusPushError

__all__ = [
    "DEFAULT_SHARED_BRANCH",
    "LOCAL_REF_PREFIX",
    "PER_SITE_BRANCH_PREFIX",
    "TRACKING_REF_PREFIX",
    "Layout",
    "branch_for",
    "check_site_path",
    "check_status_paths",
    "owned_prefixes",
    "site_id_for",
]

DEFAULT_SHARED_BRANCH = "reconciler-fleet-status"
PER_SITE_BRANCH_PREFIX = "reconciler-status/"
LOCAL_REF_PREFIX = "refs/reconciler/status/"  # our newest commit (pushed or queued)
TRACKING_REF_PREFIX = "refs/reconciler/status-remote/"  # what the remote was last seen holding


class Layout(enum.Enum):
    PER_SITE = "per-site"
    SHARED = "shared"


def site_id_for(site_path: str) -> str:
    """The flat site id of a site path (``eu/berlin/line-1`` -> ``eu_berlin_line-1``)."""
    return site_path.strip("/").replace("/", "_")


def branch_for(layout: Layout, site_id: str) -> str:
    """The default status branch of a site under ``layout``."""
    return PER_SITE_BRANCH_PREFIX + site_id if layout is Layout.PER_SITE else DEFAULT_SHARED_BRANCH


def check_site_path(site_path: str) -> None:
    """Raise :class:`ConfigError` unless ``site_path`` is a relative path like ``eu/berlin``."""
    parts = site_path.split("/")
    if not site_path or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"status: site path {site_path!r} is not a path like 'eu/berlin'")


def owned_prefixes(site_path: str, site_paths: Iterable[str]) -> tuple[str, ...]:
    """The status directories a publisher of ``site_path`` owns: its own and those of
    ``site_paths``, which must all be at or below it (a daemon serving a subtree owns the
    directory of every site in it)."""
    paths = [path.strip("/") for path in site_paths]
    for path in paths:
        if not (path == site_path or path.startswith(site_path + "/")) or any(
                part in ("", ".", "..") for part in path.split("/")):
            raise ConfigError(f"status: site {path!r} is not inside {site_path!r}")
    own = f"status/{site_path}/"
    return tuple(dict.fromkeys([own, *(f"status/{p}/" for p in paths)]))


def check_status_paths(files: Mapping[str, bytes], prefixes: tuple[str, ...],
                       site_path: str) -> None:
    """Raise :class:`StatusPushError` unless every path of ``files`` names a file directly in
    one of the directories ``prefixes``."""
    for path in files:
        prefix = next((p for p in prefixes if path.startswith(p)
                       and "/" not in path[len(p):]), "")
        name = path[len(prefix):] if prefix else ""
        # Only files directly in our directories are ours: status/a/b/c/ belongs to site
        # a/b/c, which may share the branch (SHARED layout) with site a/b.
        if not name or "/" in name or name in (".", "..") or any(
                c in name for c in "\0\n\r"):
            raise StatusPushError(
                f"status file {path!r} of site {site_path} is not directly under "
                f"{' or '.join(prefixes)}", reason="InvalidStatusPath")
