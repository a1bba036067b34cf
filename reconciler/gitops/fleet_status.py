"""Read the whole fleet's status files back from the status branches, fast at fleet scale.

Used by ``reconciler status`` and ``report`` (joined with the fleet model by
``reconciler.gitops.fleet_view``) and by rollout waves, which wait until the previous wave's
targets report healthy on the same revision. One call is one ``git fetch`` (every
``reconciler-status/*`` branch, the shared branch and, when asked, the tracked ref and the
tags, in one round trip) into the bare repository of a cache
(``reconciler.gitops.status_cache``), then, for the branches that moved since the cache last
saw them only: one ``git diff-tree --stdin`` lists their files, ``git cat-file --batch``
reads the blobs the cache does not know, and ``reconciler.gitops.status_parse`` parses them.
No checkout, and no process per branch: 10,000 branches cost a few processes.

Per target the newest entry wins (by ``lastChange``) when the same target appears on several
branches, e.g. while a fleet moves from the shared branch to per-site branches. A file that
cannot be read becomes an entry carrying an error, never an exception. How recently a site
was heard from (``last_seen``) is the newest of the file's ``lastChange``, the site's
heartbeat file (``status/<site path>/.heartbeat``, refreshed by the daemon every few minutes
to hours, see ``reconciler.engine.publishing``) and, on a site's own branch, the time of its
last commit.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.gitops.gitrun import Credentials, Git, redact
from reconciler.gitops.source import GitSource, parse_ref
from reconciler.gitops.status_branches import DEFAULT_SHARED_BRANCH, PER_SITE_BRANCH_PREFIX
from reconciler.gitops.status_cache import BlobFacts, StatusCache
from reconciler.gitops.status_files import HEARTBEAT_FILE, facts_of, parse_time

__all__ = ["STATUS_REFS", "FleetStatus", "InstanceStatus", "StatusEntry", "StatusReader",
           "read_fleet_status"]

_FETCH_PREFIX = "refs/reconciler/fleet/"
STATUS_REFS = _FETCH_PREFIX + "*"  # the fetched status branches, as a glob for git log
# the empty tree, by object name length (SHA-1, SHA-256): diffed against a branch's tree it
# lists every file of the branch
_EMPTY_TREE = {40: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
               64: "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"}
_BLOBS_PER_READ = 2000  # bounds what one git cat-file holds in memory
_DOCUMENTS_PER_QUERY = 400

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One instance on a target, as the target's status file reports it."""

    name: str
    solution: str = ""
    phase: str = ""
    release: str = ""  # the solution's release the target runs ("" when not reported)


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


class StatusReader:
    """Reads the status branches of ``remote_url`` through the cache in ``cache_dir`` (a
    temporary one, removed on exit, when None). A context manager: the cache is locked
    while it is open. ``ref`` is the tracked ref to fetch along (with the tags), for
    :meth:`tracked`; None fetches the status branches only."""

    def __init__(self, remote_url: str, *, cache_dir: Path | None = None,
                 shared_branch: str = DEFAULT_SHARED_BRANCH, ref: str | None = None,
                 credentials: Credentials | None = None, timeout: float = 300.0) -> None:
        self.remote_url = remote_url
        self.shared_branch = shared_branch
        self.ref = parse_ref(ref) if ref is not None else None
        self._ref_text = ref
        self._credentials = credentials or Credentials()
        self._timeout = timeout
        self._cache_dir = cache_dir
        self._stack = ExitStack()
        self._cache: StatusCache | None = None

    def __enter__(self) -> StatusReader:
        directory = self._cache_dir
        if directory is None:
            directory = Path(self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="reconciler-fleet-")))
        self._cache = self._stack.enter_context(StatusCache(directory))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def cache(self) -> StatusCache:
        if self._cache is None:
            raise RuntimeError("StatusReader is used outside its with block")
        return self._cache

    @property
    def git(self) -> Git:
        return Git(self.cache.git_dir, credentials=self._credentials,
                   network_timeout=self._timeout)

    def read(self) -> FleetStatus:
        """:meth:`fetch`, then :meth:`collect`."""
        self.fetch()
        return self.collect()

    def fetch(self) -> None:
        """Fetch the status branches (and the tracked ref and the tags, when asked) in one
        round trip. Raises :class:`SourceError` when the repository cannot be fetched."""
        git = self.git
        git.init_bare()
        per_site = PER_SITE_BRANCH_PREFIX + "*"
        # Patterns, not exact names, for the shared branch and the tracked branch: a missing
        # exact ref would fail the whole fetch, and a fleet has either layout (or neither
        # yet). Extra matches are ignored below.
        specs = [f"+refs/heads/{per_site}:{_FETCH_PREFIX}{per_site}",
                 f"+refs/heads/{self.shared_branch}*:{_FETCH_PREFIX}{self.shared_branch}*"]
        if self.ref is not None:
            specs.append("+refs/tags/*:refs/tags/*")
            if self.ref.kind in ("branch", "auto"):
                specs.append(f"+refs/heads/{self.ref.value}*:refs/heads/{self.ref.value}*")
        git.run("fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head",
                "--no-auto-gc", self.remote_url, *specs, remote=self.remote_url,
                context="fetching status branches")

    def collect(self) -> FleetStatus:
        """The newest status of every target, from what :meth:`fetch` fetched."""
        git = self.git
        tips = self._tips(git)
        self._update(git, tips)
        entries = self._entries({branch: tip[2] for branch, tip in tips.items()})
        status = FleetStatus(entries=entries,
                             branches={branch: tip[0] for branch, tip in tips.items()},
                             source=redact(self.remote_url))
        log.info("fleet_status_read", source=status.source, branches=len(tips),
                 targets=len(entries))
        return status

    def tracked(self) -> str:
        """The commit of the tracked ref as fetched by :meth:`read`; :class:`SourceError`
        when the repository has no such ref."""
        if self._ref_text is None:
            raise ValueError("no tracked ref was fetched")
        source = GitSource(self.remote_url, self._ref_text, self.cache.directory)
        return source.resolve().commit

    def documents(self, entries: Iterable[StatusEntry]) -> Iterator[tuple[StatusEntry, str]]:
        """Each entry with its whole status file as JSON text ("" when it has none), a few
        hundred read at a time, in the order given."""
        batch: list[StatusEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == _DOCUMENTS_PER_QUERY:
                yield from self._documents(batch)
                batch = []
        yield from self._documents(batch)

    def _documents(self, batch: list[StatusEntry]) -> Iterator[tuple[StatusEntry, str]]:
        if not batch:
            return
        found = self.cache.documents(sorted({e.blob for e in batch if e.blob}))
        for entry in batch:
            yield entry, found.get(entry.blob, "") or ""

    # ---------------------------------------------------------------- steps of read()

    def _tips(self, git: Git) -> dict[str, tuple[str, str, int]]:
        """Status branch -> (commit, tree, commit time) as fetched."""
        refs = git.run("for-each-ref",
                       "--format=%(objectname) %(tree) %(committerdate:unix) %(refname)",
                       _FETCH_PREFIX, context="listing status branches").text
        tips: dict[str, tuple[str, str, int]] = {}
        for line in refs.splitlines():
            sha, tree, when, ref = line.split(" ", 3)
            branch = ref[len(_FETCH_PREFIX):]
            if branch.startswith(PER_SITE_BRANCH_PREFIX) or branch == self.shared_branch:
                tips[branch] = (sha, tree, int(when or 0))
        return tips

    def _update(self, git: Git, tips: Mapping[str, tuple[str, str, int]]) -> None:
        """Bring the cache to ``tips``: list the branches that moved, read new blobs."""
        cache = self.cache
        known = cache.branches()
        moved = {b: tip for b, tip in tips.items() if known.get(b) != tip[0]}
        gone = [b for b in known if b not in tips]
        if not moved and not gone:
            return
        listed = _list_trees(git, {tree for _, tree, _ in moved.values()})
        wanted = {blob for tree in listed.values() for _, blob in tree}
        new = sorted(wanted - cache.known_blobs(wanted))
        facts: dict[str, BlobFacts] = {}
        for start in range(0, len(new), _BLOBS_PER_READ):
            chunk = new[start:start + _BLOBS_PER_READ]
            contents = git.read_blobs(chunk, context="reading status files")
            facts.update((blob, facts_of(contents[blob])) for blob in chunk)
        cache.update(moved={b: (sha, when, listed.get(tree, ()))
                            for b, (sha, tree, when) in moved.items()},
                     gone=gone, facts=facts)
        log.info("fleet_status_cached", moved=len(moved), gone=len(gone), parsed=len(new))

    def _entries(self, times: Mapping[str, int]) -> tuple[StatusEntry, ...]:
        heartbeats: dict[tuple[str, str], dt.datetime] = {}  # (branch, site dir) -> time
        files: list[tuple[Any, ...]] = []
        for row in self.cache.rows():
            branch, _, path = row[0], row[1], row[2]
            if path.endswith("/" + HEARTBEAT_FILE):
                beat = parse_time(row[12])
                if beat is not None:
                    heartbeats[(branch, path[len("status/"):-len(HEARTBEAT_FILE) - 1])] = beat
            else:
                files.append(row)
        newest: dict[tuple[str, str], StatusEntry] = {}
        for row in files:
            entry = self._entry(row, times, heartbeats)
            current = newest.get(entry.key)
            if current is None or self._rank(entry) > self._rank(current):
                newest[entry.key] = entry
        # by path components, so a site's subtree stays together ("eu/a/x" before "eu/a-2")
        return tuple(sorted(newest.values(), key=lambda e: (e.site.split("/"), e.target)))

    def _entry(self, row: tuple[Any, ...], times: Mapping[str, int],
               heartbeats: Mapping[tuple[str, str], dt.datetime]) -> StatusEntry:
        (branch, _, path, blob, site_field, target_field, phase, message, observed, applied,
         last_good, last_change_text, _, problem, fatal, instances, errors) = row
        rel = path[len("status/"):]
        site, _, name = rel.rpartition("/")
        target = name.rsplit(".", 1)[0]
        if not site:
            return StatusEntry(site=site, target=target, branch=branch, path=path, blob=blob,
                               error="status file is not under status/<site path>/")
        if fatal:  # not readable at all: nothing else is known
            return StatusEntry(site=site, target=target, branch=branch, path=path, blob=blob,
                               error=problem)
        problems = [problem] if problem else []
        for key, found, expected in (("site", site_field, site),
                                     ("target", target_field, target)):
            if found and found != expected:
                problems.append(f"field {key} is {found!r} but the path says {expected!r}")
        last_change = parse_time(last_change_text)
        seen = [moment for moment in (
            last_change,
            dt.datetime.fromtimestamp(times.get(branch, 0), dt.UTC)
            if branch != self.shared_branch and times.get(branch) else None,
            *(heartbeats.get((branch, "/".join(site.split("/")[:depth])))
              for depth in range(site.count("/") + 1, 0, -1)),
        ) if moment is not None]
        return StatusEntry(
            site=site, target=target, branch=branch, path=path, phase=phase,
            message=message, observed_revision=observed, applied_revision=applied,
            last_good_revision=last_good, last_change=last_change,
            last_seen=max(seen) if seen else None,
            error="; ".join(problems) if problems else None,
            instances=tuple(InstanceStatus(*item) for item in json.loads(instances)),
            errors=errors, blob=blob)

    def _rank(self, entry: StatusEntry) -> tuple[bool, dt.datetime, bool, str]:
        """Ordering of candidates for one target: readable, newest, per-site branch first."""
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
        return (entry.error is None, entry.last_change or oldest,
                entry.branch != self.shared_branch, entry.branch)


def _list_trees(git: Git, trees: set[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Tree -> its status files and heartbeat files as (path, blob), for all trees in one
    ``git diff-tree --stdin`` against the empty tree."""
    if not trees:
        return {}
    empty = _EMPTY_TREE[len(next(iter(trees)))]
    pairs = "".join(f"{empty} {tree}\n" for tree in sorted(trees))
    out = git.run("diff-tree", "--stdin", "-r", "-z", "--no-renames", "--", "status/",
                  input=pairs.encode(), context="listing status files").stdout
    listed: dict[str, list[tuple[str, str]]] = {tree: [] for tree in trees}
    current: list[tuple[str, str]] = []
    meta = ""
    for token in out.decode("utf-8", "surrogateescape").split("\0"):
        if meta:  # the path of the entry whose meta came before
            if token.endswith((".yaml", ".yml", "/" + HEARTBEAT_FILE)):
                current.append((token, meta.split(" ")[3]))
            meta = ""
            continue
        while token.startswith(empty + " "):  # git echoes each pair before its entries
            line, _, token = token.partition("\n")
            current = listed.setdefault(line.split(" ", 1)[1], [])
        if token.startswith(":") and token.split(" ")[1] in ("100644", "100755"):
            meta = token  # ":000000 <mode> <zero> <blob> A" of a file
    return {tree: tuple(files) for tree, files in listed.items()}


def read_fleet_status(
    remote_url: str,
    *,
    work_dir: Path | None = None,
    shared_branch: str = DEFAULT_SHARED_BRANCH,
) -> FleetStatus:
    """Fetch every status branch of ``remote_url`` (a URL or a local path) in one round trip
    and return the newest status of every target.

    ``work_dir`` is a cache directory kept between calls, so later calls fetch only what
    changed and read only the files that changed; without it a temporary one is used and
    removed. Raises :class:`SourceError` when the repository cannot be fetched.
    """
    with StatusReader(remote_url, cache_dir=work_dir, shared_branch=shared_branch) as reader:
        return reader.read()
