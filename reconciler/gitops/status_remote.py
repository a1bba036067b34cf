"""Publish status commits to the server: fetch, push, and fetch-rebase-retry on a race.

:class:`StatusRemote` is the status publisher's side that talks to the fleet repository's
server (see ``reconciler.gitops.status_push``). It looks up what the remote branch holds
(kept in the tracking ref), pushes our queued commit (never forced), and when the push is
rejected because the branch moved, puts our file set on top of the new tip and tries again
after a jittered exponential backoff. A shared branch moves all the time, so there every
attempt starts with a fetch. Shutdown ends the retries: no further attempt is made once the
daemon's stop event is set, and the wait between two attempts ends with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from structlog.typing import FilteringBoundLogger

from reconciler.core.backoff import Backoff, retry
from reconciler.core.errors import StatusPushError
from reconciler.gitops.gitrun import redact
from reconciler.gitops.status_branches import Layout
from reconciler.gitops.status_tree import StatusRepo

__all__ = ["StatusRemote"]

_MESSAGE_LIMIT = 400
# "[remote rejected]" reasons that mean "someone else updated the ref at the same moment":
# retry after a fetch. Any other remote rejection (a hook, permissions) needs a human.
_RACE_REASONS = ("cannot lock ref", "failed to update ref", "incorrect old value",
                 "reference already exists", "but expected", "failed to lock")


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


class StatusRemote:
    """Fetches and pushes the status branch of ``repo`` (see the module docstring).

    ``local_ref`` holds our newest commit, ``tracking_ref`` what the remote was last seen
    holding; both are moved here as the server answers.
    """

    def __init__(
        self, repo: StatusRepo, *, layout: Layout, local_ref: str, tracking_ref: str,
        max_attempts: int, backoff: Backoff, stop: threading.Event | None,
        log: FilteringBoundLogger,
    ) -> None:
        self.repo = repo
        self.layout = layout
        self.local_ref = local_ref
        self.tracking_ref = tracking_ref
        self.max_attempts = max_attempts
        self.adopted = False  # the remote branch was looked up once (see adopt)
        self._backoff = backoff
        self._stop = stop
        self._log = log

    @property
    def _where(self) -> str:
        return redact(self.repo.remote_url)

    def fetch(self) -> str | None:
        """Fetch the remote branch into the tracking ref; None when it does not exist."""
        branch = self.repo.branch
        old = self.repo.rev(self.tracking_ref)
        done = self.repo.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                             "--no-auto-gc", self.repo.remote_url,
                             f"+refs/heads/{branch}:{self.tracking_ref}",
                             check=False, network=True)
        if done.returncode == 0:
            return self.repo.rev(self.tracking_ref)
        if b"couldn't find remote ref" in done.stderr:
            self.repo.set_ref(self.tracking_ref, None, old)
            return None
        raise StatusPushError(f"status branch {branch}: cannot fetch from "
                              f"{self._where}: {_trim(done.stderr)}")

    def adopt(self) -> str | None:
        """Start from the remote branch if it exists (offline: start from nothing), so a
        restarted daemon continues its branch instead of being rejected."""
        try:
            tip = self.fetch()
        except StatusPushError as exc:
            self._log.warning("status_fetch_failed", error=str(exc))
            return None
        self.adopted = True
        if tip is not None:
            self.repo.set_ref(self.local_ref, tip, None)
            self._log.info("status_branch_adopted", commit=tip)
        return tip

    def push_once(self, commit: str) -> None:
        """Push ``commit`` to the branch (never forced); raise :class:`_Conflict` when the
        remote moved, :class:`StatusPushError` for anything else."""
        branch = self.repo.branch
        done = self.repo.git("push", "--porcelain", "--no-verify", self.repo.remote_url,
                             f"{commit}:refs/heads/{branch}", check=False, network=True)
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
            raise StatusPushError(f"status branch {branch}: push to "
                                  f"{self._where} rejected: {redact(summary)}",
                                  reason="StatusPushRejected")
        raise StatusPushError(f"status branch {branch}: cannot push to "
                              f"{self._where}: {_trim(done.stderr)}")

    def rebase(self, local: str, tip: str | None, blobs: Mapping[str, str], message: str,
               prefixes: tuple[str, ...]) -> str:
        """Our file set on top of the remote ``tip``; returns the commit to push (``tip``
        itself when the remote already holds exactly our files)."""
        repo = self.repo
        if tip is not None and tip == repo.first_parent(local):
            return local  # already on the tip: nothing to rebuild
        tip_tree = repo.tree_of(tip) if tip else None
        tree = repo.build_tree(tip_tree, blobs, prefixes)
        if tip is not None and tree == tip_tree:
            commit = tip
        elif tip is None and repo.first_parent(local) is None:
            commit = local
        else:
            commit = repo.commit_tree(tree, tip, message)
        repo.set_ref(self.local_ref, commit, local)
        return commit

    def push(
        self, local: str, blobs: Mapping[str, str], message: str, prefixes: tuple[str, ...],
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
            if made and self.repo.stopping():
                raise _Stopped
            made += 1
            if rebase:
                tip = self.fetch()
                local = self.rebase(local, tip, blobs, message, prefixes)
                if local == tip:
                    self._log.info("status_found_on_remote", commit=tip)
                    made -= 1  # nothing was pushed
                    return False
            try:
                self.push_once(local)
            except _Conflict as conflict:
                self._log.info("status_push_rejected", attempt=made, reason=str(conflict))
                rebase = True
                raise
            return True

        branch = self.repo.branch
        try:
            pushed = retry(attempt, on=_Conflict, attempts=self.max_attempts,
                           backoff=self._backoff, sleep=self._pause)
        except _Stopped:
            stopped = StatusPushError(
                f"status branch {branch}: push to {self._where} given up "
                f"after {made} attempts: the daemon is shutting down (the commit stays "
                "queued)", reason="Stopped")
            self._log.warning("status_push_failed", attempt=made, commit=local,
                              error=str(stopped), reason=stopped.reason)
            return made, local, stopped
        except _Conflict:
            gave_up = StatusPushError(
                f"status branch {branch}: push to {self._where} still "
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
            old = self.repo.rev(self.tracking_ref)
            self.repo.set_ref(self.tracking_ref, local, old)
            self._log.info("status_pushed", commit=local, attempts=made)
        return made, local, None

    def _pause(self, seconds: float) -> None:
        """The wait between two pushes; shutdown ends it."""
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)
