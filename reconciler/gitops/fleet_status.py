"""Read the whole fleet's status files back from the status branches.

Used by ``reconciler status`` (a table or JSON of every target) and by rollout waves, which
wait until the previous wave's targets report healthy on the same revision. One call is one
``git fetch`` (every ``reconciler-status/*`` branch and the shared branch, in one round trip)
into a bare repository, then ``git ls-tree`` + one ``git cat-file --batch``: no checkout.

Per target the newest entry wins (by ``lastChange``) when the same target appears on several
branches, e.g. while a fleet moves from the shared branch to per-site branches. A file that
cannot be read becomes an entry carrying an error, never an exception.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from reconciler.core import tables
from reconciler.gitops.gitrun import Git, redact
from reconciler.gitops.status_branches import DEFAULT_SHARED_BRANCH, PER_SITE_BRANCH_PREFIX

__all__ = ["FleetStatus", "StatusEntry", "format_table", "read_fleet_status"]

_FETCH_PREFIX = "refs/reconciler/fleet/"
_MESSAGE_WIDTH = 60

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StatusEntry:
    """The status of one target as its newest status file reports it."""

    site: str
    target: str
    branch: str  # status branch the file was read from
    path: str  # path of the file on that branch
    phase: str = ""  # Ready | Progressing | Failed | Invalid | Blocked | RolledBack | Pending
    message: str = ""
    observed_revision: str = ""
    last_good_revision: str = ""
    last_change: dt.datetime | None = None
    # what is wrong with the file at ``path`` on ``branch``; when it could not be parsed at
    # all, the other fields are empty
    error: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the parsed file

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site, "target": self.target, "branch": self.branch, "path": self.path,
            "phase": self.phase, "message": self.message,
            "observedRevision": self.observed_revision,
            "lastGoodRevision": self.last_good_revision,
            "lastChange": _format_time(self.last_change) if self.last_change else None,
            "error": self.error, "status": _jsonable(self.data),
        }


@dataclass(frozen=True)
class FleetStatus:
    """Every target's newest status, sorted by site path then target."""

    entries: tuple[StatusEntry, ...]
    branches: Mapping[str, str]  # status branch -> commit that was read
    source: str  # the repository read (credentials removed)

    def __iter__(self) -> Iterator[StatusEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, site: str, target: str) -> StatusEntry | None:
        return next((e for e in self.entries if e.key == (site, target)), None)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "branches": dict(self.branches),
                "targets": [e.to_dict() for e in self.entries]}


def read_fleet_status(
    remote_url: str,
    *,
    work_dir: Path | None = None,
    shared_branch: str = DEFAULT_SHARED_BRANCH,
) -> FleetStatus:
    """Fetch every status branch of ``remote_url`` (a URL or a local path) in one round trip
    and return the newest status of every target.

    ``work_dir`` is a cache: a bare repository kept between calls so later fetches transfer
    only what changed; without it a temporary one is used and removed.
    Raises :class:`SourceError` when the repository cannot be fetched.
    """
    if work_dir is not None:
        return _read(Path(work_dir), remote_url, shared_branch)
    with tempfile.TemporaryDirectory(prefix="reconciler-fleet-") as tmp:
        return _read(Path(tmp) / "status.git", remote_url, shared_branch)


def _read(git_dir: Path, remote_url: str, shared_branch: str) -> FleetStatus:
    git = Git(git_dir)
    git.init_bare()
    per_site = PER_SITE_BRANCH_PREFIX + "*"
    # A pattern for the shared branch too: a missing exact ref would fail the whole fetch,
    # and a fleet has either layout (or neither yet). Extra matches are ignored below.
    git.run("fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head", "--no-auto-gc",
            remote_url,
            f"+refs/heads/{per_site}:{_FETCH_PREFIX}{per_site}",
            f"+refs/heads/{shared_branch}*:{_FETCH_PREFIX}{shared_branch}*",
            remote=remote_url, context="fetching status branches")
    refs = git.run("for-each-ref", "--format=%(objectname) %(refname)", _FETCH_PREFIX,
                   context="listing status branches").text
    branches: dict[str, str] = {}
    for line in refs.splitlines():
        sha, ref = line.split(" ", 1)
        branch = ref[len(_FETCH_PREFIX):]
        if branch.startswith(PER_SITE_BRANCH_PREFIX) or branch == shared_branch:
            branches[branch] = sha
    files: list[tuple[str, str, str]] = []  # (branch, path, blob)
    for branch, sha in sorted(branches.items()):
        listed = git.run("ls-tree", "-r", "-z", sha, "--", "status/",
                         context=f"listing status files of branch {branch}").stdout
        for item in listed.decode("utf-8", "replace").split("\0"):
            if not item:
                continue
            meta, path = item.split("\t", 1)
            if meta.split()[1] == "blob" and path.endswith((".yaml", ".yml")):
                files.append((branch, path, meta.split()[2]))
    contents = git.read_blobs({blob for _, _, blob in files}, context="reading status files")
    newest: dict[tuple[str, str], StatusEntry] = {}
    for branch, path, blob in files:
        entry = _parse(branch, path, contents[blob], shared_branch)
        current = newest.get(entry.key)
        if current is None or _rank(entry, shared_branch) > _rank(current, shared_branch):
            newest[entry.key] = entry
    # by path components, so a site's subtree stays together ("eu/a/x" before "eu/a-2")
    ordered = sorted(newest.values(), key=lambda e: (e.site.split("/"), e.target))
    status = FleetStatus(entries=tuple(ordered),
                         branches=branches, source=redact(remote_url))
    log.info("fleet_status_read", source=status.source, branches=len(branches),
             files=len(files), targets=len(status.entries))
    return status


def _parse(branch: str, path: str, raw: bytes, shared_branch: str) -> StatusEntry:
    """One status file as an entry; problems become ``error``, never exceptions."""
    rel = path[len("status/"):]
    site, _, name = rel.rpartition("/")
    target = name.rsplit(".", 1)[0]
    base = StatusEntry(site=site, target=target, branch=branch, path=path)
    if not site:
        return _with_error(base, "status file is not under status/<site path>/")
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return _with_error(base, f"not UTF-8 text (byte {exc.start})")
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        return _with_error(base, f"invalid YAML{where}: {exc.problem or exc.context}")
    except yaml.YAMLError as exc:
        return _with_error(base, f"invalid YAML: {exc}")
    if not isinstance(doc, dict):
        return _with_error(base, f"not a mapping but {type(doc).__name__}")
    errors = []
    for key, expected in (("site", site), ("target", target)):
        if key in doc and str(doc[key]) != expected:
            errors.append(f"field {key} is {doc[key]!r} but the path says {expected!r}")
    last_change = _parse_time(doc.get("lastChange"))
    if doc.get("lastChange") is not None and last_change is None:
        errors.append(f"field lastChange {doc['lastChange']!r} is not an ISO 8601 time")
    return StatusEntry(
        site=site, target=target, branch=branch, path=path,
        phase=_text(doc.get("phase")), message=_text(doc.get("message")),
        observed_revision=_text(doc.get("observedRevision")),
        last_good_revision=_text(doc.get("lastGoodRevision")),
        last_change=last_change,
        error="; ".join(errors) if errors else None,
        data=doc,
    )


def _with_error(entry: StatusEntry, error: str) -> StatusEntry:
    return StatusEntry(site=entry.site, target=entry.target, branch=entry.branch,
                       path=entry.path, error=error)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _parse_time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):  # YAML reads unquoted timestamps itself
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rank(entry: StatusEntry, shared_branch: str) -> tuple[bool, dt.datetime, bool, str]:
    """Ordering of candidates for one target: readable, newest, per-site branch first."""
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return (entry.error is None, entry.last_change or oldest,
            entry.branch != shared_branch, entry.branch)


def _jsonable(value: Any) -> Any:
    """YAML data as JSON-serialisable data (timestamps become ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def format_table(status: FleetStatus) -> str:
    """A plain-text table: site, target, phase, revision, last change, message."""
    if not status.entries:
        return f"no status files found in {status.source}\n"
    header = ("SITE", "TARGET", "PHASE", "REVISION", "LAST CHANGE", "MESSAGE")
    rows = []
    for e in status.entries:
        message = f"error: {e.error}" if e.error else e.message
        message = " ".join(message.split())
        if len(message) > _MESSAGE_WIDTH:
            message = message[: _MESSAGE_WIDTH - 3] + "..."
        rows.append((e.site, e.target, e.phase or ("?" if e.error else "-"),
                     e.observed_revision[:8] or "-",
                     _format_time(e.last_change) if e.last_change else "-", message))
    return tables.render(rows, header=header) + "\n"
