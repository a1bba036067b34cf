"""Which revision each target is held to, and the validated revisions that choice draws on.

Per target, :func:`choose_revision` decides: the run's newest revision when it is usable for
that target (trusted, readable, and without a validation error that concerns the target),
otherwise the target's last good revision, so that drift is still repaired while a bad
commit waits to be fixed, and nothing at all for a target that never had a good revision.
One target's invalid instance never holds back another target.

:class:`RevisionReader` reads the newest revision of a run: checks its signature when the
site asks for one (an untrusted revision is *blocked*), checks it out and validates it (one
that cannot be is *unusable*); neither is an error of the run. Its :class:`ReportCache`
validates each revision once and keeps the reports of the revisions still in use (the
newest, and every target's applied and last good one). Each validation is also kept on disk
(``revision_cache``): a new process (``sync --once``, a restart) reads an unchanged revision's
report back instead of validating it again, once it has checked that nothing else the
validation read (secrets it could not read, release tags) changed. :func:`serving_fleet`
says which fleet tells the daemon what it serves: the newest revision's, unless that cannot
be read or has errors that concern every target, then a last good revision's. Used by the
pipeline.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import structlog

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.errors import SourceError, VerificationError
from reconciler.core.model import Fleet
from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import ProviderRegistry
from reconciler.core.secrets import SecretReader
from reconciler.core.validation import Report, validate_repository
from reconciler.engine.failures import describe
from reconciler.engine.revision_cache import (
    Inputs,
    RecordingReleases,
    RecordingSecrets,
    RevisionCache,
    context_digest,
    secret_digest,
)
from reconciler.gitops.gitrun import Git
from reconciler.gitops.releases import ReleaseResolver
from reconciler.gitops.source import GitSource, Revision
from reconciler.gitops.verification import VerifyMode, VerifyPolicy, verify_revision

__all__ = ["Basis", "NewestRevision", "ReportCache", "RevisionChoice", "RevisionReader",
           "choose_revision", "serving_fleet"]

_log = structlog.get_logger(__name__)
_UNLISTED = "unlisted"  # the release tags could not be listed: a stored report is not used


class Basis(enum.Enum):
    """Why a target is held to the revision chosen for it."""

    NEWEST = "newest"  # the run's revision is usable for the target
    LAST_GOOD = "last-good"  # it is not: the target's last good revision instead
    NONE = "none"  # it is not, and the target never had a good revision


@dataclass(frozen=True)
class RevisionChoice:
    """The revision one target is reconciled to in this run ("" for none) and why; with the
    newest revision's validation errors that concern the target."""

    revision: str
    basis: Basis
    errors: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True)
class NewestRevision:
    """What a run found out about its newest revision."""

    commit: str
    report: Report | None  # its validation; None when it was not validated
    blocked: str = ""  # why it is not trusted ("" when it is)
    unusable: str = ""  # why it could not be checked out or validated

    @cached_property
    def has_errors(self) -> bool:
        """Whether its validation found errors (asked once, not once per target)."""
        return self.report is not None and not self.report.ok

    def errors_for(self, target: str) -> tuple[Diagnostic, ...]:
        """Its validation errors that concern ``target`` (:meth:`Report.errors_for`)."""
        if self.report is None or not self.has_errors:
            return ()
        return tuple(self.report.errors_for(target))


def choose_revision(target: str, newest: str, *, last_good: str, report: Report | None,
                    blocked: str = "", unusable: str = "",
                    errors: tuple[Diagnostic, ...] | None = None) -> RevisionChoice:
    """The revision ``target`` is held to (see the module docstring).

    ``report`` is the newest revision's validation (None when it was not validated);
    ``blocked`` says why that revision is not trusted, ``unusable`` why it could not be
    checked out or validated ("" when it could); ``errors``, when given, are the report's
    errors for ``target`` (found by the caller), else they are found here.
    """
    if errors is None:
        errors = tuple(report.errors_for(target)) if report is not None else ()
    if not blocked and not unusable and not errors and report is not None:
        return RevisionChoice(newest, Basis.NEWEST)
    if last_good:
        return RevisionChoice(last_good, Basis.LAST_GOOD, errors)
    return RevisionChoice("", Basis.NONE, errors)


class ReportCache:
    """Validation reports by commit: each revision is checked out and validated once.

    ``validate(commit)`` makes a report; ``in_use()`` names the revisions whose reports are
    worth keeping, asked whenever a new report is added (the rest are dropped, so memory
    follows what is in use, not the history of the repository).
    """

    def __init__(self, validate: Callable[[str], Report],
                 in_use: Callable[[], set[str]]) -> None:
        self._validate = validate
        self._in_use = in_use
        self.reports: dict[str, Report] = {}

    def get(self, commit: str) -> Report:
        """The report of ``commit``, validating it when not known; raises what checking it
        out or validating it raises."""
        found = self.reports.get(commit)
        if found is None:
            found = self._validate(commit)
            self.reports[commit] = found
            keep = self._in_use() | {commit}
            for old in [c for c in self.reports if c not in keep]:
                del self.reports[old]
        return found

    def known(self, commit: str) -> Report | None:
        """The report of ``commit`` if it was made (never validates)."""
        return self.reports.get(commit)


class RevisionReader:
    """Verifies, checks out and validates revisions of ``source`` for one site."""

    def __init__(self, source: GitSource, registry: ProviderRegistry, policy: LocalPolicy, *,
                 verify: VerifyPolicy, secrets: SecretReader,
                 in_use: Callable[[], set[str]]) -> None:
        self.source = source
        self.registry = registry
        self.policy = policy
        self.verify = verify
        self.secrets = secrets
        self.releases = ReleaseResolver(source.git_dir, source.checkout)
        self.reports = ReportCache(self._validate, in_use)
        self.in_use = in_use

    @cached_property
    def cache(self) -> RevisionCache:
        """Validated revisions on disk, for the next process (see ``revision_cache``)."""
        return RevisionCache(self.source.checkouts.parent / "revisions",
                             context_digest(self.registry, self.policy, self.secrets.directory))

    def newest(self, revision: Revision) -> NewestRevision:
        """Read the run's newest revision (see the module docstring); never raises."""
        commit = revision.commit
        try:
            if self.verify.mode is not VerifyMode.NONE:
                tags = self.source.tags_at(commit) if self.verify.mode is VerifyMode.TAG \
                    else []
                tag = revision.ref.removeprefix("refs/tags/") \
                    if revision.ref.startswith("refs/tags/") else (tags[0] if tags else None)
                verify_revision(self.source.git_dir, commit, policy=self.verify, tag=tag)
            return NewestRevision(commit, self.reports.get(commit))
        except VerificationError as exc:
            _log.warning("revision_blocked", error=exc.message)
            return NewestRevision(commit, None, blocked=exc.message)
        except SourceError as exc:
            _log.error("checkout_failed", error=exc.message)
            return NewestRevision(commit, None, unusable=f"revision {commit[:12]} cannot be "
                                                         f"used: {exc.message}")
        except Exception as exc:  # a validation bug must not cost the targets their status
            _log.exception("validation_crashed")
            return NewestRevision(commit, None, unusable=f"revision {commit[:12]} cannot be "
                                                         f"used: {describe(exc)}")

    def _validate(self, commit: str) -> Report:
        """The report of ``commit``: the one on disk when what it depended on is unchanged,
        else a new validation (written to disk for the next process)."""
        root = self.source.checkout(commit)
        cached = self.cache.load(commit, self._unchanged)
        if cached is not None and cached.fleet.root == root.resolve():
            _log.debug("revision_cache_used", revision=commit[:12])
            return cached
        inputs = Inputs()
        report = validate_repository(
            root, registry=self.registry, policy=self.policy, revision=commit,
            secrets=RecordingSecrets(self.secrets, inputs),
            releases=RecordingReleases(self.releases, inputs, self._release_tags))
        inputs.checkouts = _release_checkouts(report, self.source.checkouts)
        self.cache.store(commit, report, inputs, keep=self.in_use())
        return report

    def _unchanged(self, inputs: Inputs) -> bool:
        """Whether what a stored validation read is still what it was: each secret it could
        not read, and the release tags of each solution it looked up; the checkouts of the
        releases it rendered are exported again when they were pruned."""
        if any(secret_digest(self.secrets, name) != digest
               for name, digest in inputs.secrets.items()):
            return False
        if inputs.releases:
            now = self._release_tags(inputs.releases)
            if now != inputs.releases or _UNLISTED in now.values():
                return False
        for commit in inputs.checkouts:
            self.source.checkout(commit)
            self.releases.commits.add(commit)
        return True

    def _release_tags(self, solutions: Collection[str]) -> dict[str, str]:
        """Solution -> a digest of its release tags (names and the objects they name), one
        ``git for-each-ref`` for all of them (:data:`_UNLISTED` when that fails)."""
        listed = Git(self.source.git_dir).run(
            "for-each-ref", "--format=%(refname) %(objectname)",
            *(f"refs/tags/{name}" for name in sorted(solutions)), check=False)
        if not listed.ok:
            return dict.fromkeys(solutions, _UNLISTED)
        lines: dict[str, list[str]] = {name: [] for name in solutions}
        for line in listed.text.splitlines():
            solution = line.removeprefix("refs/tags/").partition("/")[0]
            if solution in lines:
                lines[solution].append(line)
        return {name: hashlib.sha256("\n".join(sorted(found)).encode()).hexdigest()
                for name, found in lines.items()}


def _release_checkouts(report: Report, checkouts: Path) -> list[str]:
    """The commits of the release checkouts the report's placements render from."""
    found = {p.solution.root for placements in report.placements.values()
             for p in placements if p.solution.release and p.solution.root is not None}
    return sorted(root.name for root in found if root.parent == checkouts)


def serving_fleet(report: Report | None, last_good: Iterable[str],
                  reports: ReportCache) -> Fleet | None:
    """The fleet that says what the daemon serves in this run (see the module docstring);
    None when no revision can say it."""
    if report is not None and not any(not d.target and not d.instance for d in report.errors):
        return report.fleet
    for good in last_good:
        try:
            return reports.get(good).fleet
        except Exception as exc:  # another target's last good revision may serve
            _log.warning("last_good_unusable", revision=good[:12], error=describe(exc))
    return None
