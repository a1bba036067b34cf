"""Read the whole fleet's status files back from the status branches, fast at fleet scale.

Used by ``reconciler status`` and ``report`` (joined with the fleet model by
``reconciler.gitops.fleet_view``) and by rollout waves, which wait until the previous wave's
targets report healthy on the same revision. One call is one ``git fetch`` (every
``reconciler-status/*`` branch, the shared branch and, when asked, the tracked ref and the
tags, in one round trip) into the bare repository of a cache
(``reconciler.gitops.status_cache``; into an empty one, a bare clone, which writes its
references into one file where a fetch writes one per branch), then, for the branches that
moved since the cache last saw them only (``reconciler.gitops.status_reading``): one ``git
diff-tree --stdin`` lists their files, ``git cat-file --batch`` reads the files whose blob
changed, a few thousand at a time, and ``reconciler.gitops.status_files`` says what they
say. No checkout, and no process per branch: 10,000 branches cost a few dozen processes.

Per target the newest entry wins (by ``lastChange``) when the same target appears on several
branches, e.g. while a fleet moves from the shared branch to per-site branches. A file that
cannot be read becomes an entry carrying an error, never an exception. How recently a site
was heard from (``last_seen``, worked out in ``reconciler.gitops.status_entries``) is the
newest of the file's ``lastChange``, the site's heartbeat file (``status/<site
path>/.heartbeat``, refreshed by the daemon every hour or so, see
``reconciler.engine.publishing``) and, on a site's own branch, the time of its last commit.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.gitops.gitrun import Credentials, Git, redact
from reconciler.gitops.source import GitSource, parse_ref
from reconciler.gitops.status_branches import DEFAULT_SHARED_BRANCH, PER_SITE_BRANCH_PREFIX
from reconciler.gitops.status_cache import FileFacts, StatusCache
from reconciler.gitops.status_entries import (
    HEARTBEAT_SUFFIX,
    EntryMaker,
    InstanceStatus,
    StatusEntry,
    order,
)
from reconciler.gitops.status_files import document_of
from reconciler.gitops.status_reading import list_trees, read_blobs, read_facts

__all__ = ["STATUS_REFS", "FleetStatus", "InstanceStatus", "StatusEntry", "StatusReader",
           "order", "read_fleet_status"]

_FETCH_PREFIX = "refs/reconciler/fleet/"
STATUS_REFS = _FETCH_PREFIX + "*"  # the fetched status branches, as a glob for git log
_DOCUMENTS_PER_QUERY = 400

log = structlog.get_logger(__name__)


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
                 credentials: Credentials | None = None, timeout: float = 300.0,
                 documents: bool = False) -> None:
        self.remote_url = remote_url
        # keep each new file's whole document while reading it (for JSON and the report);
        # without, :meth:`documents` makes them when first asked
        self.keep_documents = documents
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
        per_site = PER_SITE_BRANCH_PREFIX + "*"
        # Patterns, not exact names, for the shared branch and the tracked branch: a missing
        # exact ref would fail the whole fetch, and a fleet has either layout (or neither
        # yet). Extra matches are ignored below.
        specs = [f"+refs/heads/{per_site}:{_FETCH_PREFIX}{per_site}",
                 f"+refs/heads/{self.shared_branch}*:{_FETCH_PREFIX}{self.shared_branch}*"]
        if self.ref is not None:
            specs.append("+refs/tags/*:refs/tags/*")
        if not (self.cache.git_dir / "HEAD").exists() and _clonable(self.remote_url):
            self._clone(specs)
            return
        if self.ref is not None and self.ref.kind in ("branch", "auto"):
            specs.append(f"+refs/heads/{self.ref.value}*:refs/heads/{self.ref.value}*")
        git = self.git
        git.init_bare()
        git.run("fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head",
                "--no-auto-gc", self.remote_url, *specs, remote=self.remote_url,
                context="fetching status branches")

    def _clone(self, specs: list[str]) -> None:
        """The first fetch into an empty cache, as a bare clone: git writes a clone's
        references into one file (``packed-refs``), where a fetch writes a file per branch,
        which at ten thousand branches takes longer than the transfer. A bare clone takes
        every branch as it is (``refs/heads/*``, the tracked branch among them) besides
        ``specs``; the copies of the status branches there are left alone. The remote is
        not kept in the repository's config."""
        new = self.cache.directory / "repo.git.new"
        if new.is_dir() and not new.is_symlink():  # what an interrupted clone left
            shutil.rmtree(new, ignore_errors=True)
        else:
            new.unlink(missing_ok=True)
        runner = Git(self.cache.directory, working_copy=True, credentials=self._credentials,
                     network_timeout=self._timeout)
        runner.run("clone", "--bare", "--quiet", "--no-tags", "--no-local",
                   *(item for spec in specs for item in ("-c", f"remote.origin.fetch={spec}")),
                   self.remote_url, new.name, remote=self.remote_url,
                   context="fetching status branches")
        Git(new).run("config", "--remove-section", "remote.origin",
                     context="setting up the status cache")
        new.rename(self.cache.git_dir)

    def collect(self) -> FleetStatus:
        """The newest status of every target, from what :meth:`fetch` fetched."""
        git = self.git
        tips = self._tips(git)
        fresh = self._update(git, tips)
        entries = self._entries({branch: tip[2] for branch, tip in tips.items()}, fresh)
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
        """Each entry with its whole status file as JSON text (``null`` for a file that is
        not a mapping), a few hundred read at a time, in the order given."""
        batch: list[StatusEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == _DOCUMENTS_PER_QUERY:
                yield from self._documents(batch)
                batch = []
        yield from self._documents(batch)

    def _documents(self, batch: list[StatusEntry]) -> Iterator[tuple[StatusEntry, str]]:
        found = self.document_texts(batch)
        for entry in batch:
            yield entry, found.get(entry.blob) or "null"

    def document_texts(self, entries: Iterable[StatusEntry]) -> dict[str, str]:
        """Blob -> its whole status file as JSON text (``null`` for a file that is not a
        mapping), for the blobs of ``entries`` (a few hundred: one query)."""
        blobs = sorted({e.blob for e in entries if e.blob})
        if not blobs:
            return {}
        found = self.cache.documents(blobs)
        missing = [blob for blob in blobs if blob not in found]
        if missing:  # read by a call that did not keep documents: made now, kept from now
            made = {blob: document_of(raw) for blob, raw in read_blobs(self.git, missing)}
            self.cache.store_documents(made)
            found.update(made)
        return found

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

    def _update(self, git: Git, tips: Mapping[str, tuple[str, str, int]]
                ) -> dict[str, tuple[str, int, list[FileFacts]]]:
        """Bring the cache to ``tips``: list the branches that moved, read the files that
        changed on them. Returns what it recorded for the branches that moved."""
        cache = self.cache
        known = cache.branches()
        moved = {b: tip for b, tip in tips.items() if known.get(b) != tip[0]}
        gone = [b for b in known if b not in tips]
        if not moved and not gone:
            return {}
        listed = list_trees(git, {tree for _, tree, _ in moved.values()})
        before = cache.files([b for b in [*moved, *gone] if b in known])
        kept = {record[1]: record[2:] for files in before.values() for record in files}
        # in the order of the branches: about the order of the fetched pack, which makes
        # reading them a third faster than in the order of their names
        new = list(dict.fromkeys(blob for _, tree, _ in moved.values()
                                 for _, blob in listed.get(tree, ()) if blob not in kept))
        store = cache.document_store() if self.keep_documents else None
        try:
            facts = read_facts(git, new, store)
        finally:
            if store is not None:
                store.close()
        records: dict[str, tuple[str, int, list[FileFacts]]] = {}
        for branch, (commit, tree, when) in moved.items():
            records[branch] = (commit, when, [
                (path, blob, *(kept[blob] if blob in kept else facts[blob]))
                for path, blob in listed.get(tree, ())])
        now = {record[1] for _, _, files in records.values() for record in files}
        cache.update(moved=records, gone=gone, documents={},
                     dropped=[blob for blob in kept if blob not in now])
        log.info("fleet_status_cached", moved=len(moved), gone=len(gone), parsed=len(new))
        return records

    def _entries(self, times: Mapping[str, int],
                 fresh: Mapping[str, tuple[str, int, list[FileFacts]]]
                 ) -> tuple[StatusEntry, ...]:
        maker = EntryMaker(times, self.shared_branch)
        branches: Iterable[tuple[str, list[FileFacts]]] = (
            (branch, files) for branch, (_, _, files) in fresh.items())
        if any(branch not in fresh for branch in times):  # else: every one was just read
            branches = itertools.chain(branches, (
                (branch, files) for branch, _, files in self.cache.records(skip=fresh)))
        newest: dict[tuple[str, str], StatusEntry] = {}
        for branch, records in branches:  # a branch at a time: its heartbeats, then its files
            targets = []
            for record in records:
                if record[0].endswith(HEARTBEAT_SUFFIX):
                    maker.heartbeat(branch, record)
                else:
                    targets.append(record)
            for record in targets:
                entry = maker.entry(branch, record)
                key = (entry.site, entry.target)
                current = newest.get(key)
                if current is None or self._rank(entry) > self._rank(current):
                    newest[key] = entry
        return tuple(sorted(newest.values(), key=lambda e: order(e.site, e.target)))

    def _rank(self, entry: StatusEntry) -> tuple[bool, dt.datetime, bool, str]:
        """Ordering of candidates for one target: readable, newest, per-site branch first."""
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
        return (entry.error is None, entry.last_change or oldest,
                entry.branch != self.shared_branch, entry.branch)


def _clonable(url: str) -> bool:
    """Whether ``url`` may be cloned from: a clone keeps its URL in the repository's config
    for a moment, so a URL that carries credentials (``https://user:token@host``) is only
    ever fetched from."""
    return redact(url) == url or url.startswith("ssh://")


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
