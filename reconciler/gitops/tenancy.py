"""Tenancy at the site: every new commit that touches a project's paths is signed by one of
its members, judged by the members the commit's parent declares (docs/tenancy.md).

The engine calls :func:`check_commits` with an instance's last applied revision and the
revision it is about to apply. For every commit in ``old..new`` (first-parent history, the
branches merges bring in, and the merges themselves):

* the paths it changes against its first parent (a rename is a deletion and an addition);
* who owns each path (:class:`reconciler.core.projects.Ownership`): the platform project for
  ``reconciler.yaml``, ``projects/`` and every path no project claims, else the project whose
  ``paths`` match it (an overlap: each of them);
* whether the commit is signed by a member of that project — members as declared by the
  commit's **first parent**, and only by declarations that were themselves changed by a
  platform member: a commit never authorises itself (a key added and used in one commit does
  not count), and an unauthorised change to ``projects/`` is disregarded for every commit
  after it. Platform members sign fleet-level files and declarations, not a project's paths
  unless they are its members too;
* and, when the project's roles leave the signer out, whether the change is one the signer's
  roles allow (``reconciler.gitops.tenancy_roles``: solutions, parameters on instances).

Merges: a path a merge takes unchanged from another parent, and that a commit the merge brings
in changed, is vouched for by that commit, so an unsigned merge of signed commits passes.
What the merge writes itself — a conflict resolution, a change of its own, or a version none
of the commits it brings in wrote (merging an old commit to undo the mainline) — must be signed
by a member, as any commit. Each commit a merge brings in is judged again by the members the
merge's first parent declares (a member removed since the branch started no longer counts).
With ``signed_merges`` a merge must be signed by a member for every project path it changes.

A :class:`Violation` names the commit, the path, the project and the signer; it no longer
blocks once a later commit that was allowed to change the path gave it back what it held
before the commit (a revert); what comes after builds on that. The
check reads history with a few batched git calls and checks signatures in bulk
(``reconciler.gitops.commit_signers``); its failure is a :class:`VerificationError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from reconciler.core.errors import VerificationError
from reconciler.core.model import Fleet
from reconciler.core.projects import DECLARATIONS_DIR, NO_PLATFORM, Member, Ownership, Project
from reconciler.gitops.commit_history import Commit, History, read_history, resolve
from reconciler.gitops.commit_signers import UNSIGNED, Signer, read_signers
from reconciler.gitops.gitrun import Git, GitErrors
from reconciler.gitops.tenancy_declarations import Declarations
from reconciler.gitops.tenancy_roles import RoleQuestion, needs_role_check, role_problems

__all__ = ["TenancyCheck", "Violation", "check_commits"]

log = structlog.get_logger(__name__)
_TIMEOUT = 120.0


@dataclass(frozen=True)
class Violation:
    """One path of one commit that its signer could not change."""

    commit: str  # full object name
    path: str
    project: str  # the project that owns the path (its parent's declarations)
    signer: str  # "name (key)" of a known member, the key, or "unsigned"
    reason: str
    platform: bool = False  # a fleet-level path: every instance is concerned
    merge: str = ""  # set when found again where this merge brings the commit in
    resolved: bool = False  # a later allowed commit gave the path back what it held before

    def describe(self) -> str:
        return (f"commit {self.commit[:12]} changes {self.path} of project {self.project}: "
                f"{self.reason}")


@dataclass(frozen=True)
class TenancyCheck:
    """What :func:`check_commits` found in ``old..new``."""

    old: str | None
    new: str
    commits: int  # commits in the range
    violations: tuple[Violation, ...] = ()
    seconds: float = 0.0

    @property
    def blocking(self) -> tuple[Violation, ...]:
        """The violations that still hold at ``new``."""
        return tuple(v for v in self.violations if not v.resolved)

    @property
    def ok(self) -> bool:
        return not self.blocking

    @property
    def blocked_projects(self) -> frozenset[str]:
        """Projects whose instances must not move to ``new``."""
        return frozenset(v.project for v in self.blocking)

    @property
    def blocks_everything(self) -> bool:
        """Whether a fleet-level path (Settings, the hierarchy, the declarations, a path no
        project claims) was changed without a platform member's signature."""
        return any(v.platform for v in self.blocking)

    def blocked_instances(self, fleet: Fleet) -> dict[str, tuple[Violation, ...]]:
        """Instance name -> the violations that keep it on its last good revision, for the
        instances of ``fleet`` (the fleet at ``new``). Instances of other projects carry on."""
        blocking = self.blocking
        if not blocking:
            return {}
        everything = tuple(v for v in blocking if v.platform)
        own = Ownership(fleet.projects)
        found: dict[str, tuple[Violation, ...]] = {}
        for name, inst in fleet.instances.items():
            owners = own.owners(inst.source.path)
            mine = everything + tuple(v for v in blocking
                                      if not v.platform and (v.project in owners or not owners))
            if mine:
                found[name] = mine
        return found


def check_commits(git_dir: Path, old: str | None, new: str, *, gpg_keyring: Path | None = None,
                  signed_merges: bool = False) -> TenancyCheck:
    """Check every commit reachable from ``new`` and not from ``old`` (all of ``new``'s
    history when ``old`` is None). ``gpg_keyring`` is the site's ``verify.gpgKeyring``: the
    public keys behind the members' OpenPGP fingerprints."""
    started = time.monotonic()
    git = Git(Path(git_dir), working_copy=True, timeout=_TIMEOUT,
              env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
              errors=GitErrors(VerificationError))
    names = resolve(git, new, *([old] if old else []))
    full_new, full_old = names[0], (names[1] if old else None)
    history = read_history(git, full_old, full_new)
    declarations = Declarations(git)
    outside = {p for c in history.commits for p in c.parents if p not in history.index}
    changing = [c.oid for c in history.commits if _touches_declarations(c)]
    declarations.load([*outside, *changing])
    tenancy = changing or any(declarations.ownership(declarations.tree(p)).active
                              for p in outside)
    violations: list[Violation] = []
    if tenancy:
        signers = read_signers(git, [c.oid for c in history.commits if c.paths],
                               gpg_keyring=gpg_keyring)
        judge = _Judge(history, declarations, signers, signed_merges)
        judge.run()
        for question, reason in role_problems(git, judge.questions):
            judge.add_role(question, reason)
        violations = _mark_resolved(git, history, judge.found)
    check = TenancyCheck(full_old, full_new, len(history.commits), tuple(violations),
                         time.monotonic() - started)
    log.info("tenancy_checked", old=(full_old or "")[:12], new=full_new[:12],
             commits=check.commits, violations=len(check.violations),
             blocking=len(check.blocking), seconds=round(check.seconds, 3))
    return check


def _touches_declarations(commit: Commit) -> bool:
    return any(p == DECLARATIONS_DIR or p.startswith(DECLARATIONS_DIR + "/")
               for p in commit.paths)


class _Judge:
    """Goes through the range parents first, keeping the trusted declarations of each."""

    def __init__(self, history: History, declarations: Declarations,
                 signers: Mapping[str, Signer], signed_merges: bool) -> None:
        self.history = history
        self.declarations = declarations
        self.signers = signers
        self.signed_merges = signed_merges
        self.trusted: dict[str, str] = {}  # commit -> tree of the declarations it is judged by
        self.vouched: dict[str, tuple[str, ...]] = {}  # paths a commit's own signature covers
        self.found: dict[tuple[str, str, str], tuple[Violation, str]] = {}  # -> before
        self.questions: list[RoleQuestion] = []  # members a role may leave out

    def run(self) -> None:
        for commit in self.history.commits:
            parent = commit.parents[0] if commit.parents else None
            tree = self._tree(parent) if parent else ""
            own = self.declarations.ownership(tree)
            taken = self._taken(commit)
            self.vouched[commit.oid] = tuple(p for p in commit.paths if p not in taken)
            bad: set[str] = set()
            if own.active:
                bad = self._judge(commit, own, taken)
                if commit.is_merge:
                    bad |= self._landed(commit, own)
            touches = _touches_declarations(commit)
            # an unauthorised change of the declarations is not trusted by what comes after
            self.trusted[commit.oid] = self.declarations.tree(commit.oid) \
                if touches and not any(p.split("/", 1)[0] == DECLARATIONS_DIR for p in bad) \
                else tree

    def _tree(self, oid: str) -> str:
        return self.trusted[oid] if oid in self.trusted else self.declarations.tree(oid)

    def _signer(self, oid: str) -> Signer:
        return self.signers.get(oid, UNSIGNED)

    @staticmethod
    def _member(own: Ownership, project: str, signer: Signer) -> Member | None:
        found = own.projects.get(project)
        if found is None or not signer.ok:
            return None
        return found.member_by_key(signer.ssh_key, signer.fingerprints)

    def _taken(self, commit: Commit) -> frozenset[str]:
        """Paths a merge takes unchanged from a side whose commits changed them."""
        if not commit.is_merge or self.signed_merges:
            return frozenset()
        brought = self.history.brought_in(commit)
        return frozenset(p for p in commit.paths
                         if p not in commit.own and self.history.touched_by(p, brought))

    def _judge(self, commit: Commit, own: Ownership, taken: frozenset[str]) -> set[str]:
        """The paths of ``commit`` its signer may not change (reported)."""
        signer, bad = self._signer(commit.oid), set()
        for path in commit.paths:
            owners = own.owners(path)
            members = {p: self._member(own, p, signer) for p in owners}
            if all(members.values()):
                self.questions.extend(
                    RoleQuestion(commit.oid, commit.parents[0] if commit.parents else None,
                                 path, own.projects[p], m.name)
                    for p, m in members.items()
                    if m is not None and needs_role_check(own.projects[p], m.name))
                continue
            if path in taken:
                continue  # vouched for by the commits the merge brings in
            why = "" if not commit.is_merge else (
                "merges must be signed (signed merges are required)" if self.signed_merges
                else "the merge writes it itself (a conflict resolution or a change of its "
                "own)" if path in commit.own else "the merge takes a version that none of "
                "the commits it brings in wrote")
            for project in owners:
                if self._member(own, project, signer) is None:
                    self._add(commit, path, project, own, signer, why)
                    bad.add(path)
        return bad

    def _landed(self, merge: Commit, own: Ownership) -> set[str]:
        """The commits a merge brings in, judged again by the declarations where they land."""
        bad: set[str] = set()
        for commit in self.history.members(self.history.brought_in(merge)):
            signer = self._signer(commit.oid)
            for path in self.vouched.get(commit.oid, ()):
                for project in own.owners(path):
                    if self._member(own, project, signer) is None:
                        self._add(commit, path, project, own, signer, "", merge.oid)
                        bad.add(path)
        return bad

    def _add(self, commit: Commit, path: str, project: str, own: Ownership, signer: Signer,
             why: str, merge: str = "") -> None:
        key = (commit.oid, path, project)
        if key in self.found:
            return
        known = self._known(own, signer)
        if known is None and commit.parents:  # a member once: named as then declared
            known = self._known(self.declarations.ownership(self._tree(commit.parents[0])),
                                signer)
        shown = f"{known[1].name} ({signer.key})" if known else signer.shown
        if project == NO_PLATFORM:
            reason = ("no project is the platform (spec.platform: true), so nobody may "
                      "change fleet-level files")
        elif not signer.ok:
            reason = ("the commit is not signed" if signer.method is None
                      else f"its signature does not count: {signer.problem}")
        elif merge:
            reason = (f"signed by {shown}, who is not a member of project '{project}' where "
                      f"merge {merge[:12]} brings the commit in")
        elif self._becomes_member(commit, project, signer):
            reason = (f"signed by {shown}, who becomes a member of project '{project}' only "
                      "in this commit (a commit never authorises itself)")
        else:
            platform = known is not None and known[0].platform
            reason = f"signed by {shown}, who is not a member of project '{project}'" + (
                " (platform members sign fleet-level files and declarations, not a project's "
                "own paths)" if platform else "")
        if why:
            reason = f"{why}; {reason}"
        before = merge or commit.oid
        is_platform = project == own.platform
        self.found[key] = (Violation(commit.oid, path, project, shown, reason, is_platform,
                                     merge), before)

    def _known(self, own: Ownership, signer: Signer) -> tuple[Project, Member] | None:
        """The first project (and member) the signer's key belongs to."""
        return next(((p, m) for p in own.projects.values()
                     if (m := self._member(own, p.name, signer)) is not None), None)

    def add_role(self, question: RoleQuestion, reason: str) -> None:
        key = (question.commit, question.path, question.project.name)
        signer = self._signer(question.commit)
        self.found.setdefault(key, (Violation(
            question.commit, question.path, question.project.name,
            f"{question.member} ({signer.key})", reason), question.commit))

    def _becomes_member(self, commit: Commit, project: str, signer: Signer) -> bool:
        if not _touches_declarations(commit):
            return False
        after = self.declarations.ownership(self.declarations.tree(commit.oid))
        return self._member(after, project, signer) is not None


def _mark_resolved(git: Git, history: History,
                   found: Mapping[tuple[str, str, str], tuple[Violation, str]]
                   ) -> list[Violation]:
    """The violations, each marked resolved when a later commit of the range, allowed to
    change the path, gave it back what it held before the commit (before the merge, for a
    commit found again where a merge brings it in): a revert."""
    bad = {(v.commit, v.path) for v, _ in found.values()}
    asks: dict[tuple[str, str], list[str]] = {}  # (before, path) -> commits that may revert
    for violation, anchor in found.values():
        if "\n" in violation.path:
            continue
        asks[(anchor, violation.path)] = [
            c.oid for c in history.commits
            if c.oid != anchor and violation.path in c.paths
            and (c.oid, violation.path) not in bad and history.is_ancestor(anchor, c.oid)]
    specs = sorted({f"{anchor}^1:{path}" for (anchor, path), later in asks.items() if later}
                   | {f"{c}:{path}" for (_, path), later in asks.items() for c in later})
    objects: dict[str, str] = {}
    if specs:
        out = git.run("cat-file", "--batch-check=%(objectname)",
                      input="".join(f"{s}\n" for s in specs).encode(),
                      context="checking reverted changes").text.splitlines()
        objects = {spec: ("" if line.endswith(" missing") else line)
                   for spec, line in zip(specs, out, strict=True)}
    result = []
    for violation, anchor in found.values():
        later = asks.get((anchor, violation.path), [])
        before = objects.get(f"{anchor}^1:{violation.path}")
        reverted = any(objects.get(f"{c}:{violation.path}") == before for c in later)
        result.append(replace(violation, resolved=reverted) if reverted else violation)
    return result
