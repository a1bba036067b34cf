"""Publish a site's status files to a status branch of the fleet repository.

The site daemon creates one :class:`StatusPublisher` at start-up and calls
:meth:`StatusPublisher.publish` with the full set of status files of its site (written by
``reconciler.engine.status``) after each reconcile. The publisher commits them to the site's status
branch only when the tree changes, and pushes the commit:

* ``Layout.PER_SITE`` (default): branch ``reconciler-status/<site id>``, owned by this daemon.
  Commits fast-forward from our last commit (kept in ``refs/reconciler/status/<branch>``), so a
  push is one round trip. If the remote branch moved anyway, it is fetched and our file set is
  put on top of it.
* ``Layout.SHARED``: one branch for the whole fleet (default ``reconciler-fleet-status``),
  pushed with fetch-rebase-retry and jittered exponential backoff.

Everything happens in a bare repository the daemon owns (possibly shared with its source
mirror), with git plumbing and a private temporary index: no work tree, no checkout, and no ref
outside ``refs/reconciler/`` is ever written locally. A push that fails for a network reason
leaves the commit queued in the local ref; the next ``publish`` pushes it.

Shutdown is never held up by the server: once the daemon's stop event is set, the retry loop
makes no further attempt, and a fetch or push still talking to the server gets
:data:`STOP_GRACE` seconds (enough to deliver the last status to a server that answers) before
its git process is terminated. Every git call runs through the project's git runner
(``reconciler.gitops.gitrun``), which does that.
"""

from __future__ import annotations

import enum
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.core.backoff import Backoff, retry
from reconciler.core.errors import ConfigError, StatusPushError
from reconciler.gitops.gitrun import STOP_GRACE, Git, GitErrors, GitResult, redact

__all__ = [
    "DEFAULT_SHARED_BRANCH",
    "PER_SITE_BRANCH_PREFIX",
    "Layout",
    "Outcome",
    "PublishResult",
    "StatusPublisher",
    "site_id_for",
]

DEFAULT_SHARED_BRANCH = "reconciler-fleet-status"
PER_SITE_BRANCH_PREFIX = "reconciler-status/"
LOCAL_REF_PREFIX = "refs/reconciler/status/"  # our newest commit (pushed or queued)
TRACKING_REF_PREFIX = "refs/reconciler/status-remote/"  # what the remote was last seen holding

_ZERO = "0" * 40
_LOCAL_TIMEOUT = 30.0  # seconds for one local plumbing command
_MESSAGE_LIMIT = 400
# "[remote rejected]" reasons that mean "someone else updated the ref at the same moment":
# retry after a fetch. Any other remote rejection (a hook, permissions) needs a human.
_RACE_REASONS = ("cannot lock ref", "failed to update ref", "incorrect old value",
                 "reference already exists", "but expected", "failed to lock")

log = structlog.get_logger(__name__)


class Layout(enum.Enum):
    PER_SITE = "per-site"
    SHARED = "shared"


class Outcome(enum.Enum):
    COMMITTED = "Committed"  # the file set changed: a new commit was made
    UNCHANGED = "Unchanged"  # the tree is the same as our last commit's: nothing was committed


@dataclass(frozen=True)
class PublishResult:
    """What one :meth:`StatusPublisher.publish` call did.

    ``pushed`` is true when, at the end of the call, the remote branch holds ``commit`` (also
    when there was nothing new to push). ``attempts`` counts push attempts made by this call.
    """

    outcome: Outcome
    commit: str | None  # tip of our status branch; None only before anything was ever written
    pushed: bool
    attempts: int
    branch: str
    duration_s: float
    error: str | None = None  # why the push failed (only on an unchanged call, see publish)

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.COMMITTED


def site_id_for(site_path: str) -> str:
    """The flat site id of a site path (``eu/berlin/line-1`` -> ``eu_berlin_line-1``)."""
    return site_path.strip("/").replace("/", "_")


def _trim(stderr: bytes) -> str:
    """The remote's message, without hints and credentials, short enough for a status file."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("hint:")]
    text = redact("; ".join(kept)) or "no message from git"
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


class _Conflict(Exception):
    """A push was rejected because the remote branch moved: fetch and retry."""


class _Stopped(Exception):
    """Shutdown was asked for between two push attempts: no further attempt."""


class StatusPublisher:
    """Commits and pushes one site's status files (see the module docstring)."""

    def __init__(
        self,
        git_dir: Path,
        remote_url: str,
        *,
        site_id: str,
        site_path: str,
        layout: Layout = Layout.PER_SITE,
        branch: str | None = None,
        push: bool = True,
        author: tuple[str, str] = ("reconciler", "reconciler@localhost"),
        max_attempts: int = 30,
        retry_delay: float = 0.05,
        max_retry_delay: float = 5.0,
        timeout: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        parts = site_path.split("/")
        if not site_path or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"status: site path {site_path!r} is not a path like 'eu/berlin'")
        if max_attempts < 1:
            raise ConfigError(f"status: max_attempts must be at least 1, not {max_attempts}")
        if branch is None:
            branch = (PER_SITE_BRANCH_PREFIX + site_id if layout is Layout.PER_SITE
                      else DEFAULT_SHARED_BRANCH)
        self.git_dir = Path(git_dir)
        self.remote_url = remote_url
        self.site_id = site_id
        self.site_path = site_path
        self.layout = layout
        self.branch = branch
        self.push_enabled = push
        self.max_attempts = max_attempts
        self._backoff = Backoff(retry_delay, max_retry_delay, jitter=True)
        self._timeout = timeout
        self._stop = stop  # set on shutdown: see the module docstring
        self._prefix = f"status/{site_path}/"
        self._prefixes: tuple[str, ...] = (self._prefix,)
        self._local_ref = LOCAL_REF_PREFIX + branch
        self._tracking_ref = TRACKING_REF_PREFIX + branch
        self._lock = threading.Lock()
        self._adopted = False  # the remote branch was looked up once (see publish)
        name, email = author
        self._runner = Git(self.git_dir, timeout=_LOCAL_TIMEOUT, network_timeout=timeout,
                           stop=stop, stop_grace=STOP_GRACE,
                           env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email},
                           errors=GitErrors(StatusPushError,
                                             timeout_reason="StatusPushTimeout"))
        self._log = log.bind(site=site_path, branch=branch, layout=layout.value)
        self._runner.init_bare()
        checked = self._git("check-ref-format", f"refs/heads/{branch}", check=False)
        if checked.returncode != 0:
            raise ConfigError(f"status: branch name {branch!r} (site id {site_id!r}) is not a "
                              "valid git branch name")

    # ---------------------------------------------------------------- public API

    def set_sites(self, site_paths: list[str]) -> None:
        """The sites whose status directories this publisher owns (a daemon serving a
        subtree owns the directory of every site in it); ``site_path`` always included."""
        paths = [site_path.strip("/") for site_path in site_paths]
        for path in paths:
            if not (path == self.site_path or path.startswith(self.site_path + "/")) or any(
                    part in ("", ".", "..") for part in path.split("/")):
                raise ConfigError(f"status: site {path!r} is not inside {self.site_path!r}")
        with self._lock:
            self._prefixes = tuple(dict.fromkeys([self._prefix, *(f"status/{p}/"
                                                                  for p in paths)]))

    def publish(self, files: Mapping[str, bytes], message: str, *,
                push: bool = True) -> PublishResult:
        """Make the site's status files on the branch exactly ``files``, commit if that
        changed the tree, and push whatever is queued (when pushing is enabled and ``push``:
        the daemon passes False while it backs off from an unreachable server).

        ``files`` maps repository paths directly under ``status/<site path>/`` to content;
        files under that directory that are not in ``files`` are removed.

        When the push fails, the commit stays queued for the next call and
        :class:`StatusPushError` is raised if this call made a new commit. An unchanged call
        never raises for a push: it retries the queued commit and reports the failure in
        ``PublishResult.error``, so a daemon running offline is not told the same news on
        every run.
        """
        started = time.monotonic()
        self._check_paths(files)
        with self._lock:
            blobs = self._hash_blobs(files)
            local = self._rev(self._local_ref)
            if local is None and self.push_enabled and push and not self._adopted:
                # First publish with this state: learn what the remote already holds, so a
                # restarted daemon continues its branch instead of being rejected.
                local = self._adopt_remote()
            outcome, local = self._commit(local, blobs, message)
            attempts, pushed, failure = 0, False, None
            if self.push_enabled and push and local is not None:
                if local == self._rev(self._tracking_ref):
                    pushed = True
                else:
                    attempts, local, failure = self._push_with_retry(local, blobs, message)
                    pushed = failure is None
        result = PublishResult(outcome=outcome, commit=local, pushed=pushed, attempts=attempts,
                               branch=self.branch, duration_s=time.monotonic() - started,
                               error=str(failure) if failure else None)
        self._log.log(
            logging.INFO if result.changed or attempts else logging.DEBUG,
            "status_committed" if result.changed else "status_unchanged",
            commit=local, pushed=pushed, attempts=attempts, files=len(files),
            duration_s=round(result.duration_s, 3))
        if failure is not None and result.changed:
            raise failure
        return result

    def pending(self) -> bool:
        """True when a commit is queued locally that the remote does not hold yet."""
        if not self.push_enabled:
            return False
        # no lock: two ref reads are enough, and a metrics scrape must not wait for a push
        local = self._rev(self._local_ref)
        return local is not None and local != self._rev(self._tracking_ref)

    def head(self) -> str | None:
        """Our newest status commit (pushed or queued), or None before the first one."""
        return self._rev(self._local_ref)

    # ---------------------------------------------------------------- git plumbing

    def _git(
        self, *args: str, input: bytes = b"", check: bool = True,
        index: Path | None = None, network: bool = False,
    ) -> GitResult:
        # only calls to the server watch the stop: a local git command is quick, and ending
        # one could leave a lock file in our own repository
        return self._runner.run(*args, input=input, check=check,
                                env=None if index is None else {"GIT_INDEX_FILE": str(index)},
                                remote=self.remote_url if network else None,
                                context=f"status branch {self.branch}")

    def _stopping(self) -> bool:
        """True once shutdown was asked for."""
        return self._runner.stopping()

    def _rev(self, ref: str) -> str | None:
        done = self._git("rev-parse", "--verify", "--quiet", ref + "^{commit}", check=False)
        return done.stdout.decode().strip() if done.returncode == 0 else None

    def _tree_of(self, commit: str) -> str:
        return self._git("rev-parse", commit + "^{tree}").stdout.decode().strip()

    def _first_parent(self, commit: str) -> str | None:
        return self._rev(commit + "^")

    def _set_ref(self, ref: str, new: str | None, old: str | None) -> None:
        # The old value makes the update atomic against anything else touching the ref.
        if new is None:
            if old is not None:
                self._git("update-ref", "-d", ref, old)
            return
        self._git("update-ref", "-m", "reconciler status", ref, new, old or _ZERO)

    def _check_paths(self, files: Mapping[str, bytes]) -> None:
        for path in files:
            prefix = next((p for p in self._prefixes if path.startswith(p)
                           and "/" not in path[len(p):]), "")
            name = path[len(prefix):] if prefix else ""
            # Only files directly in our directories are ours: status/a/b/c/ belongs to site
            # a/b/c, which may share the branch (SHARED layout) with site a/b.
            if not name or "/" in name or name in (".", "..") or any(
                    c in name for c in "\0\n\r"):
                raise StatusPushError(
                    f"status file {path!r} of site {self.site_path} is not directly under "
                    f"{' or '.join(self._prefixes)}", reason="InvalidStatusPath")

    def _hash_blobs(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """Write every file as a blob; returns path -> blob id."""
        if not files:
            return {}
        paths = sorted(files)
        with tempfile.TemporaryDirectory(prefix="reconciler-status-") as tmp:
            disk = []
            for i, path in enumerate(paths):
                target = Path(tmp) / str(i)
                target.write_bytes(files[path])
                disk.append(str(target))
            done = self._git("hash-object", "-w", "--no-filters", "--stdin-paths",
                             input=("\n".join(disk) + "\n").encode())
        ids = done.stdout.decode().split()
        return dict(zip(paths, ids, strict=True))

    def _build_tree(self, base: str | None, blobs: Mapping[str, str]) -> str:
        """The tree of ``base`` with our directory's files replaced by ``blobs``."""
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="reconciler-index-") as tmp:
            index = Path(tmp) / "index"
            if base is None:
                self._git("read-tree", "--empty", index=index)
            else:
                self._git("read-tree", base, index=index)
                listed = self._git("ls-tree", "-z", base, "--", *self._prefixes).stdout
                for entry in listed.decode("utf-8", "surrogateescape").split("\0"):
                    if not entry:
                        continue
                    meta, path = entry.split("\t", 1)
                    if meta.split()[1] == "blob" and path not in blobs:
                        lines.append(f"0 {_ZERO}\t{path}")  # mode 0 removes the entry
            lines.extend(f"100644 {blob}\t{path}" for path, blob in sorted(blobs.items()))
            if lines:
                self._git("update-index", "-z", "--index-info", index=index,
                          input="".join(line + "\0" for line in lines).encode(
                              "utf-8", "surrogateescape"))
            return self._git("write-tree", index=index).stdout.decode().strip()

    def _commit_tree(self, tree: str, parent: str | None, message: str) -> str:
        args = ["commit-tree", tree] + (["-p", parent] if parent else [])
        return self._git(*args, input=message.encode()).stdout.decode().strip()

    def _commit(self, local: str | None, blobs: Mapping[str, str],
                message: str) -> tuple[Outcome, str | None]:
        base_tree = self._tree_of(local) if local else None
        tree = self._build_tree(base_tree, blobs)
        if tree == base_tree or (local is None and not blobs):
            return Outcome.UNCHANGED, local
        commit = self._commit_tree(tree, local, message)
        self._set_ref(self._local_ref, commit, local)
        return Outcome.COMMITTED, commit

    # ---------------------------------------------------------------- remote

    def _fetch(self) -> str | None:
        """Fetch the remote branch into the tracking ref; None when it does not exist."""
        old = self._rev(self._tracking_ref)
        done = self._git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                         "--no-auto-gc", self.remote_url,
                         f"+refs/heads/{self.branch}:{self._tracking_ref}",
                         check=False, network=True)
        if done.returncode == 0:
            return self._rev(self._tracking_ref)
        if b"couldn't find remote ref" in done.stderr:
            self._set_ref(self._tracking_ref, None, old)
            return None
        raise StatusPushError(f"status branch {self.branch}: cannot fetch from "
                              f"{redact(self.remote_url)}: {_trim(done.stderr)}")

    def _adopt_remote(self) -> str | None:
        """Start from the remote branch if it exists (offline: start from nothing)."""
        try:
            tip = self._fetch()
        except StatusPushError as exc:
            self._log.warning("status_fetch_failed", error=str(exc))
            return None
        self._adopted = True
        if tip is not None:
            self._set_ref(self._local_ref, tip, None)
            self._log.info("status_branch_adopted", commit=tip)
        return tip

    def _push_once(self, commit: str) -> None:
        """Push ``commit`` to the branch (never forced); raise :class:`_Conflict` when the
        remote moved, :class:`StatusPushError` for anything else."""
        done = self._git("push", "--porcelain", "--no-verify", self.remote_url,
                         f"{commit}:refs/heads/{self.branch}", check=False, network=True)
        if done.returncode == 0:
            return
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split("\t")
            if len(fields) < 3 or fields[0] != "!":
                continue
            summary = fields[2]
            if summary.startswith("[rejected]") or (
                    summary.startswith("[remote rejected]")
                    and any(r in summary for r in _RACE_REASONS)):
                raise _Conflict(summary)
            raise StatusPushError(f"status branch {self.branch}: push to "
                                  f"{redact(self.remote_url)} rejected: {redact(summary)}",
                                  reason="StatusPushRejected")
        raise StatusPushError(f"status branch {self.branch}: cannot push to "
                              f"{redact(self.remote_url)}: {_trim(done.stderr)}")

    def _rebase(self, local: str, tip: str | None, blobs: Mapping[str, str],
                message: str) -> str:
        """Our file set on top of the remote ``tip``; returns the commit to push (``tip``
        itself when the remote already holds exactly our files)."""
        if tip is not None and tip == self._first_parent(local):
            return local  # already on the tip: nothing to rebuild
        tip_tree = self._tree_of(tip) if tip else None
        tree = self._build_tree(tip_tree, blobs)
        if tip is not None and tree == tip_tree:
            commit = tip
        elif tip is None and self._first_parent(local) is None:
            commit = local
        else:
            commit = self._commit_tree(tree, tip, message)
        self._set_ref(self._local_ref, commit, local)
        return commit

    def _push_with_retry(
        self, local: str, blobs: Mapping[str, str], message: str,
    ) -> tuple[int, str, StatusPushError | None]:
        """Push the queued commit; returns the attempts made, our newest commit, and the
        error that stopped the push (None when the remote now holds that commit).

        A push rejected because the branch moved is tried again on top of the new tip,
        after a jittered backoff; any other failure ends the push at once, as does shutdown
        (no further attempt once it was asked for).
        """
        rebase = self.layout is Layout.SHARED  # a shared branch moves all the time
        made = 0

        def attempt() -> bool:  # False: the remote held our files already
            nonlocal local, rebase, made
            if made and self._stopping():
                raise _Stopped
            made += 1
            if rebase:
                tip = self._fetch()
                local = self._rebase(local, tip, blobs, message)
                if local == tip:
                    self._log.info("status_found_on_remote", commit=tip)
                    made -= 1  # nothing was pushed
                    return False
            try:
                self._push_once(local)
            except _Conflict as conflict:
                self._log.info("status_push_rejected", attempt=made, reason=str(conflict))
                rebase = True
                raise
            return True

        try:
            pushed = retry(attempt, on=_Conflict, attempts=self.max_attempts,
                         backoff=self._backoff, sleep=self._pause)
        except _Stopped:
            stopped = StatusPushError(
                f"status branch {self.branch}: push to {redact(self.remote_url)} given up "
                f"after {made} attempts: the daemon is shutting down (the commit stays "
                "queued)", reason="Stopped")
            self._log.warning("status_push_failed", attempt=made, commit=local,
                              error=str(stopped), reason=stopped.reason)
            return made, local, stopped
        except _Conflict:
            gave_up = StatusPushError(
                f"status branch {self.branch}: push to {redact(self.remote_url)} still "
                f"rejected after {self.max_attempts} attempts (others keep updating it)",
                reason="StatusPushConflict")
            self._log.warning("status_push_failed", attempt=self.max_attempts, commit=local,
                              error=str(gave_up), reason=gave_up.reason)
            return self.max_attempts, local, gave_up
        except StatusPushError as exc:
            self._log.warning("status_push_failed", attempt=made, commit=local,
                              error=str(exc), reason=exc.reason)
            return made, local, exc
        if pushed:
            old = self._rev(self._tracking_ref)
            self._set_ref(self._tracking_ref, local, old)
            self._log.info("status_pushed", commit=local, attempts=made)
        return made, local, None

    def _pause(self, seconds: float) -> None:
        """The wait between two pushes; shutdown ends it."""
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)
