"""The fleet's recent status changes, newest first, from the log of the status branches.

Used by ``reconciler report``. One ``git log`` over every status branch the cache fetched
(``reconciler.gitops.fleet_status``), bounded to the newest ``limit`` commits that changed a
target's status file (heartbeat commits change none and are passed by), names each changed
file with its blobs before and after; one ``git cat-file --batch`` reads them. Each change
becomes a :class:`StatusChange`: which target, its phase before and after, the revision it
runs and its message. The cost follows ``limit``, not the size of the fleet's history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from reconciler.gitops.gitrun import Git
from reconciler.gitops.status_files import facts_of

__all__ = ["StatusChange", "recent_changes"]

_ZERO = frozenset("0")


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One target's status file changed by one commit of a status branch."""

    when: dt.datetime  # the commit's time
    site: str
    target: str
    before: str  # the phase before ("" when the file is new)
    after: str  # the phase after ("" when the file was removed)
    revision: str  # the applied revision after the change
    message: str
    commit: str


def recent_changes(git: Git, refs: str, *, limit: int = 200,
                   sites: list[str] | None = None) -> list[StatusChange]:
    """The changes of the newest ``limit`` commits reachable from the refs matching the glob
    ``refs`` (e.g. ``refs/reconciler/fleet/*``), at most ``limit`` changes, newest first;
    of the subtrees of ``sites`` only, when given."""
    if limit <= 0:
        return []
    where = [f":(glob)status/{site}/**/*.yaml" for site in sites] if sites else [
        ":(glob)status/**/*.yaml"]
    log = git.run("log", f"--glob={refs}", "--format=@%H %ct", "--raw", "--no-abbrev",
                  "--no-renames", f"-n{limit}", "--", *where,
                  context="reading the status history").stdout.decode("utf-8", "replace")
    raw: list[tuple[str, dt.datetime, str, str, str]] = []  # commit, when, path, before, after
    commit, when = "", dt.datetime.fromtimestamp(0, dt.UTC)
    for line in log.splitlines():
        if line.startswith("@"):
            commit, stamp = line[1:].split(" ", 1)
            when = dt.datetime.fromtimestamp(int(stamp), dt.UTC)
        elif line.startswith(":") and "\t" in line and len(raw) < limit:
            meta, path = line.split("\t", 1)  # ":<mode> <mode> <before> <after> <change>"
            fields = meta.split()
            raw.append((commit, when, path, fields[2], fields[3]))
    wanted = {blob for *_, before, after in raw for blob in (before, after)
              if set(blob) != _ZERO}
    contents = git.read_blobs(wanted, context="reading past status files") if wanted else {}
    changes = []
    for commit, when, path, before, after in raw:
        old = facts_of(contents[before]) if before in contents else None
        new = facts_of(contents[after]) if after in contents else None
        site, _, name = path[len("status/"):].rpartition("/")
        changes.append(StatusChange(
            when=when, site=site, target=name.rsplit(".", 1)[0],
            before=old.phase if old is not None else "",
            after=new.phase if new is not None else "",
            revision=(new.applied or new.observed)[:12] if new is not None else "",
            message=(new.message or new.problem) if new is not None else "status removed",
            commit=commit))
    return changes
