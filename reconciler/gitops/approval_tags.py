"""Making an approval: the signed annotated tag ``reconciler approve`` writes.

The tag ``reconciler-approval/<instance>/<wave>/<release>/<who>`` (named by
:func:`reconciler.gitops.approvals.approval_tag`) points at HEAD of the approver's working
copy, is signed with their own git signing setup (``git tag -s``: ``gpg.format``,
``user.signingkey``) and says in its message what it approves and who approved::

    Approve release 1.5.0 of telemetry-eu for wave canary

    Instance: telemetry-eu
    Wave: canary
    Release: 1.5.0
    Approved-by: Alice <alice@example.org>

The message is for people; daemons judge the tag's name and signature
(:mod:`reconciler.gitops.approvals`). Like ``reconciler release``, nothing is pushed unless
asked (:func:`reconciler.gitops.releases.push_tag`). :func:`fleet_at_head` reads the fleet
model as committed at HEAD, which the command checks the instance and wave against.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import ReconcilerError
from reconciler.core.loading import LoadResult, load_fleet
from reconciler.gitops.approvals import approval_tag
from reconciler.gitops.gitrun import Git
from reconciler.gitops.source import export

__all__ = ["Recorded", "approval_message", "approver_identity", "fleet_at_head",
           "tag_approval"]


@dataclass(frozen=True)
class Recorded:
    """An approval just tagged."""

    tag: str
    commit: str
    signed: bool


def _git(repo: Path) -> Git:
    # the person at the terminal may be asked for a signing key's passphrase
    return Git(repo, working_copy=True, interactive=True)


def _head(repo: Path) -> str:
    done = _git(repo).run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if not done.ok or not done.text:
        raise ReconcilerError(f"{repo} has no commit yet: nothing to approve against",
                              reason="NoCommit")
    return done.text


def fleet_at_head(repo: Path) -> tuple[str, LoadResult]:
    """HEAD of the working copy ``repo`` and the fleet as committed there (loaded, not
    validated: the instance's rollout is all that is needed)."""
    head = _head(repo)
    with tempfile.TemporaryDirectory(prefix="reconciler-approve-") as tmp:
        tree = Path(tmp, "tree")
        tree.mkdir()
        export(Git(repo, working_copy=True), head, tree)
        return head, load_fleet(tree)


def approver_identity(repo: Path) -> tuple[str, str]:
    """("Name <email>", email) of whom git tags as in ``repo`` (``user.name``/``user.email``
    or ``GIT_COMMITTER_*``); :class:`ReconcilerError` when git knows no one."""
    done = _git(repo).run("var", "GIT_COMMITTER_IDENT", check=False)
    ident = done.text.rsplit(" ", 2)[0] if done.ok else ""
    email = ident[ident.find("<") + 1:ident.rfind(">")] if "<" in ident else ""
    if not email:
        raise ReconcilerError("git knows no identity to approve as: set user.name and "
                              "user.email (git config)", reason="NoIdentity")
    return ident, email


def approval_message(instance: str, wave: str, release: str, approver: str,
                     note: str | None = None) -> str:
    text = (f"Approve release {release} of {instance} for wave {wave}\n\n"
            f"Instance: {instance}\nWave: {wave}\nRelease: {release}\n"
            f"Approved-by: {approver}\n")
    return f"{text}\n{note.strip()}\n" if note and note.strip() else text


def tag_approval(repo: Path, instance: str, wave: str, release: str, *, who: str,
                 approver: str, sign: bool = True, note: str | None = None) -> Recorded:
    """Tag HEAD of the working copy ``repo`` as ``approver``'s approval (``who``: the tag
    name's label). ValueError when a part cannot be in a tag name; :class:`ReconcilerError`
    when the approval exists or git fails (signing included)."""
    tag = approval_tag(instance, wave, release, who)
    git = _git(repo)
    if git.run("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).ok:
        raise ReconcilerError(f"{tag} already exists (delete it first to approve again: "
                              f"git tag -d {tag})", reason="ApprovalExists")
    head = _head(repo)
    message = approval_message(instance, wave, release, approver, note)
    how = ["-s"] if sign else ["-a", "--no-sign"]  # --no-sign wins over tag.gpgSign
    git.run("tag", *how, "-m", message, tag, head, context=f"tagging {tag}")
    return Recorded(tag=tag, commit=head, signed=sign)
