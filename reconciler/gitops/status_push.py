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

This module holds the publisher and what a publish returns; branch names, site ids and the
directories a site owns are in ``reconciler.gitops.status_branches``, the commit building in
``reconciler.gitops.status_tree``, and the fetch, push and retry in
``reconciler.gitops.status_remote``.

Shutdown is never held up by the server: once the daemon's stop event is set, the retry loop
makes no further attempt, and a fetch or push still talking to the server gets
:data:`STOP_GRACE` seconds (enough to deliver the last status to a server that answers) before
its git process is terminated. Every git call runs through the project's git runner
(``reconciler.gitops.gitrun``), which does that.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.core.backoff import Backoff
from reconciler.core.errors import ConfigError, StatusPushError
from reconciler.gitops.gitrun import STOP_GRACE, Git, GitErrors
from reconciler.gitops.status_branches import (
    DEFAULT_SHARED_BRANCH,
    LOCAL_REF_PREFIX,
    PER_SITE_BRANCH_PREFIX,
    TRACKING_REF_PREFIX,
    Layout,
    branch_for,
    check_site_path,
    check_status_paths,
    owned_prefixes,
    site_id_for,
)
from reconciler.gitops.status_remote import StatusRemote
from reconciler.gitops.status_tree import StatusRepo

__all__ = [
    "DEFAULT_SHARED_BRANCH",
    "PER_SITE_BRANCH_PREFIX",
    "Layout",
    "Outcome",
    "PublishResult",
    "StatusPublisher",
    "site_id_for",
]

_LOCAL_TIMEOUT = 30.0  # seconds for one local plumbing command

log = structlog.get_logger(__name__)


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
        check_site_path(site_path)
        if max_attempts < 1:
            raise ConfigError(f"status: max_attempts must be at least 1, not {max_attempts}")
        if branch is None:
            branch = branch_for(layout, site_id)
        self.git_dir = Path(git_dir)
        self.remote_url = remote_url
        self.site_id = site_id
        self.site_path = site_path
        self.layout = layout
        self.branch = branch
        self.push_enabled = push
        self.max_attempts = max_attempts
        self._prefixes = owned_prefixes(site_path, [])
        self._local_ref = LOCAL_REF_PREFIX + branch
        self._tracking_ref = TRACKING_REF_PREFIX + branch
        self._lock = threading.Lock()
        name, email = author
        runner = Git(self.git_dir, timeout=_LOCAL_TIMEOUT, network_timeout=timeout,
                     stop=stop, stop_grace=STOP_GRACE,
                     env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                          "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email},
                     errors=GitErrors(StatusPushError, timeout_reason="StatusPushTimeout"))
        self._log = log.bind(site=site_path, branch=branch, layout=layout.value)
        self._repo = StatusRepo(runner, remote_url=remote_url, branch=branch)
        # stop is set on shutdown: see the module docstring
        self._remote = StatusRemote(
            self._repo, layout=layout, local_ref=self._local_ref,
            tracking_ref=self._tracking_ref, max_attempts=max_attempts,
            backoff=Backoff(retry_delay, max_retry_delay, jitter=True), stop=stop,
            log=self._log)
        runner.init_bare()
        checked = self._repo.git("check-ref-format", f"refs/heads/{branch}", check=False)
        if checked.returncode != 0:
            raise ConfigError(f"status: branch name {branch!r} (site id {site_id!r}) is not a "
                              "valid git branch name")

    def set_sites(self, site_paths: list[str]) -> None:
        """The sites whose status directories this publisher owns (a daemon serving a
        subtree owns the directory of every site in it); ``site_path`` always included."""
        prefixes = owned_prefixes(self.site_path, site_paths)
        with self._lock:
            self._prefixes = prefixes

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
        check_status_paths(files, self._prefixes, self.site_path)
        with self._lock:
            prefixes = self._prefixes
            blobs = self._repo.hash_blobs(files)
            local = self._repo.rev(self._local_ref)
            if local is None and self.push_enabled and push and not self._remote.adopted:
                # First publish with this state: learn what the remote already holds, so a
                # restarted daemon continues its branch instead of being rejected.
                local = self._remote.adopt()
            outcome, local = self._commit(local, blobs, message, prefixes)
            attempts, pushed, failure = 0, False, None
            if self.push_enabled and push and local is not None:
                if local == self._repo.rev(self._tracking_ref):
                    pushed = True
                else:
                    attempts, local, failure = self._remote.push(local, blobs, message,
                                                                 prefixes)
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
        local = self._repo.rev(self._local_ref)
        return local is not None and local != self._repo.rev(self._tracking_ref)

    def head(self) -> str | None:
        """Our newest status commit (pushed or queued), or None before the first one."""
        return self._repo.rev(self._local_ref)

    def read_file(self, path: str) -> bytes | None:
        """The content of ``path`` in our newest status commit; None when there is none."""
        local = self._repo.rev(self._local_ref)
        if local is None:
            return None
        found = self._repo.git("cat-file", "blob", f"{local}:{path}", check=False)
        return found.stdout if found.returncode == 0 else None

    def _commit(self, local: str | None, blobs: Mapping[str, str], message: str,
                prefixes: tuple[str, ...]) -> tuple[Outcome, str | None]:
        """Commit ``blobs`` on top of our last commit when that changes the tree."""
        base_tree = self._repo.tree_of(local) if local else None
        tree = self._repo.build_tree(base_tree, blobs, prefixes)
        if tree == base_tree or (local is None and not blobs):
            return Outcome.UNCHANGED, local
        commit = self._repo.commit_tree(tree, local, message)
        self._repo.set_ref(self._local_ref, commit, local)
        return Outcome.COMMITTED, commit
