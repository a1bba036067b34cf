"""One target's status as the fleet views see it, made from the status cache's rows.

:class:`StatusEntry` is what one status file says of its target (with the instances it names,
:class:`InstanceStatus`); :class:`EntryMaker` makes entries from the rows of
``reconciler.gitops.status_cache``, working out when each site was last heard from (the
newest of its status file's ``lastChange``, the heartbeat files of the site and the sites
above it on the same branch, and the time of its own branch's last commit). :func:`order` is
the order every fleet view lists targets in. Used by ``reconciler.gitops.fleet_status``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.gitops.status_files import HEARTBEAT_FILE, parse_time

__all__ = ["HEARTBEAT_SUFFIX", "EntryMaker", "InstanceStatus", "StatusEntry", "order"]

HEARTBEAT_SUFFIX = "/" + HEARTBEAT_FILE


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One instance on a target, as the target's status file reports it."""

    name: str
    solution: str = ""
    phase: str = ""
    release: str = ""  # the solution's release the target runs ("" when not reported)
    failed_release: str = ""  # the release it was rolled back from (docs/rollouts.md)


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """The status of one target as its newest status file reports it."""

    site: str
    target: str
    branch: str  # status branch the file was read from
    path: str  # path of the file on that branch
    phase: str = ""  # Ready | Progressing | Degraded | Failed | Invalid | Blocked | Pending
    message: str = ""
    observed_revision: str = ""
    applied_revision: str = ""
    last_good_revision: str = ""
    last_change: dt.datetime | None = None
    last_seen: dt.datetime | None = None  # newest sign of life (see the module docstring)
    # what is wrong with the file at ``path`` on ``branch``; when it could not be parsed at
    # all, the other fields are empty
    error: str | None = None
    instances: tuple[InstanceStatus, ...] = ()
    errors: int = 0  # validation errors the file reports
    blob: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.target)


def order(site: str, target: str) -> tuple[str, str]:
    """The sort key of a target: by site path component by component, so a site's subtree
    stays together ("eu/a/x" before "eu/a-2"), then by name. (A separator that sorts before
    every other character makes plain string comparison compare component by component.)"""
    return (site.replace("/", "\0"), target)


class EntryMaker:
    """Entries from the files the cache records. A fleet's files repeat most of what they say (the
    sites, the revisions, the phases and messages, the instances): equal values are shared,
    which keeps 50,000 entries small, and what depends only on the site is worked out once
    per site."""

    def __init__(self, times: Mapping[str, int], shared_branch: str) -> None:
        self.times = times
        self.shared_branch = shared_branch
        self.heartbeats: dict[tuple[str, str], dt.datetime] = {}  # (branch, site dir)
        self._pool: dict[Any, Any] = {}
        self._instances: dict[str, tuple[InstanceStatus, ...]] = {}
        self._seen: dict[tuple[str, str], dt.datetime | None] = {}
        self._times: dict[str, dt.datetime | None] = {}  # a site's files share their times

    def heartbeat(self, branch: str, record: tuple[Any, ...]) -> None:
        """Note a heartbeat file: (path, blob, *facts) as the cache records a file."""
        beat = parse_time(record[10])
        if beat is not None:
            self.heartbeats[(branch, record[0][len("status/"):-len(HEARTBEAT_SUFFIX)])] = beat

    def entry(self, branch: str, record: tuple[Any, ...]) -> StatusEntry:
        """The entry of a status file: (path, blob, *facts) as the cache records a file."""
        (path, blob, site_field, target_field, phase, message, observed, applied,
         last_good, last_change_text, _, problem, fatal, instances, errors) = record
        share = self._pool.setdefault
        site, _, name = path[7:].rpartition("/")  # after "status/"
        site, branch, target = share(site, site), share(branch, branch), name.rsplit(".", 1)[0]
        if not site:
            return StatusEntry(site=site, target=target, branch=branch, path=path, blob=blob,
                               error="status file is not under status/<site path>/")
        if fatal:  # not readable at all: nothing else is known
            return StatusEntry(site=site, target=target, branch=branch, path=path, blob=blob,
                               error=problem)
        error = problem or None
        if (site_field and site_field != site) or (target_field and target_field != target):
            problems = [problem] if problem else []
            for key, found, expected in (("site", site_field, site),
                                         ("target", target_field, target)):
                if found and found != expected:
                    problems.append(f"field {key} is {found!r} but the path says {expected!r}")
            error = "; ".join(problems)
        last_change = self._times.get(last_change_text)
        if last_change is None and last_change_text not in self._times:
            last_change = self._times[last_change_text] = parse_time(last_change_text)
        heard = self._site_seen(branch, site)
        seen = max(last_change, heard) if last_change and heard else last_change or heard
        found_instances = self._instances.get(instances)
        if found_instances is None:
            found_instances = self._instances_of(instances)
        return StatusEntry(
            site, target, branch, path, share(phase, phase), share(message, message),
            share(observed, observed), share(applied, applied), share(last_good, last_good),
            last_change, seen, error, found_instances, errors, blob)

    def _share(self, value: Any) -> Any:
        return self._pool.setdefault(value, value)

    def _instances_of(self, text: str) -> tuple[InstanceStatus, ...]:
        found = self._instances.get(text)
        if found is None:
            found = self._instances[text] = tuple(
                InstanceStatus(*(self._share(v) for v in item)) for item in json.loads(text))
        return found

    def _site_seen(self, branch: str, site: str) -> dt.datetime | None:
        """The newest of the heartbeats of ``site`` and its parents on ``branch``, and the
        time of the branch's last commit unless it is the shared branch."""
        key = (branch, site)
        if key not in self._seen:
            parts = site.split("/")
            moments = [self.heartbeats.get((branch, "/".join(parts[:depth])))
                       for depth in range(len(parts), 0, -1)]
            when = self.times.get(branch)
            if branch != self.shared_branch and when:
                moments.append(dt.datetime.fromtimestamp(when, dt.UTC))
            known = [m for m in moments if m is not None]
            self._seen[key] = max(known) if known else None
        return self._seen[key]
