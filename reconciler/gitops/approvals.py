"""Approvals of rollout waves: signed annotated tags, and whether those found count.

A wave with ``approval: true`` (``Instance.spec.rollout``, :mod:`reconciler.core.rollouts`)
moves to a release only once someone listed in ``spec.rollout.approvers`` has approved that
release for it. An approval is an annotated tag, signed by the approver, named::

    reconciler-approval/<instance>/<wave>/<release>/<who>

``<who>`` is a label (the approver's e-mail by default) so that approvals by several people
never collide and a tag pushed by someone else cannot take an approver's place; what counts
is the signature, never the label. ``reconciler approve`` makes the tag
(:mod:`reconciler.gitops.approval_tags`); the rollout gate calls :func:`approvals_for` on the
daemon's mirror after fetching :func:`approval_refspec` for the (instance, wave, release) it
waits on.

An approval counts when its tag object is signed by a key the site trusts (the same
allowed-signers file and keyring as revision verification, :func:`verify_tags`), the signed
object carries the very name it is found under (a signed approval of one wave or release
copied under another name does not count), and the signer matches an entry of
``approvers`` (:func:`matching_approver`). The caller passes ``approvers`` from the revision
the site verified; a tag cannot change that list, so an approval never authorises its own
approver. With verification off at the site (mode ``none``) nothing is trusted and nothing is
checked: every approval tag found counts, and the result says it is advisory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.gitops.gitrun import Git
from reconciler.gitops.signatures import Signature
from reconciler.gitops.verification import VerifyMode, VerifyPolicy, verify_tags

__all__ = [
    "APPROVAL_PREFIX",
    "Approval",
    "ApprovalCheck",
    "approval_refspec",
    "approval_tag",
    "approvals_for",
    "approver_label",
    "matching_approver",
]

APPROVAL_PREFIX = "reconciler-approval"
_SHOWN = 3  # reasons of tags that do not count, in the one-line reason of a waiting wave
# what one component of a ref name may not hold (git check-ref-format), "/" included
_BAD_IN_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\/]|\.\.|@\{")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._@+-]+")
_EMAIL = re.compile(r"<([^<>]+)>\s*$")


def _component(kind: str, value: str) -> str:
    """``value`` if git takes it as one component of a ref name, else ValueError."""
    if (not value or _BAD_IN_REF.search(value) or value.startswith(".")
            or value.endswith((".", ".lock")) or value == "@"):
        raise ValueError(f"{kind} {value!r} cannot be part of a tag name (one path "
                         "component: no '/', ':', spaces, '..', '@{', leading '.', "
                         "trailing '.lock')")
    return value


def _prefix(instance: str, wave: str, release: str) -> str:
    """What the names of every approval of ``release`` of ``instance`` for ``wave`` start
    with (before ``/<who>``); ValueError naming the part that cannot be in a tag name."""
    parts = [_component(k, v) for k, v in (("instance", instance), ("wave", wave),
                                           ("release", release))]
    return "/".join([APPROVAL_PREFIX, *parts])


def approval_tag(instance: str, wave: str, release: str, who: str) -> str:
    """The name of ``who``'s approval of ``release`` of ``instance`` for ``wave``
    (without ``refs/tags/``); ValueError naming the part that cannot be in a tag name."""
    return f"{_prefix(instance, wave, release)}/{_component('who', who)}"


def approval_refspec(instance: str, wave: str, release: str, *,
                     into: str = "refs/tags") -> str:
    """The fetch refspec of every approval of ``release`` of ``instance`` for ``wave`` and
    nothing else, stored under ``into`` (forced: a re-made approval replaces the old)."""
    prefix = _prefix(instance, wave, release)
    return f"+refs/tags/{prefix}/*:{into.rstrip('/')}/{prefix}/*"


def approver_label(who: str) -> str:
    """``who`` (an e-mail, a name) as the last component of an approval tag's name."""
    label = _LABEL_BAD.sub("-", who.strip())
    label = re.sub(r"\.{2,}", "-", label)
    label = re.sub(r"-{2,}", "-", label).strip(".-")
    if label.endswith(".lock"):
        label = label[:-len(".lock")] + "-lock"
    return label if label not in ("", "@") else "approver"


def _fingerprint(text: str) -> str:
    """An OpenPGP fingerprint as gpg prints it in status lines (upper-case hex, no spaces)."""
    text = "".join(text.split()).upper()
    return text[2:] if text.startswith("0X") else text


def matching_approver(signature: Signature, approvers: Sequence[str]) -> str | None:
    """The first entry of ``approvers`` that names the signer of a good ``signature``.

    An entry matches an SSH signature when it is the principal the allowed-signers file gives
    the key (one of them, when the file lists several for it; compared without regard to case)
    or the key's fingerprint (``SHA256:...``, exactly); an OpenPGP signature when it is the
    full fingerprint of the signing key's primary key (case, spaces and ``0x`` ignored; never a
    short key id), the e-mail address of the key's primary user id, or that whole user id (both
    compared without regard to case).
    """
    if not signature.ok:
        return None
    signer, key = signature.signer or "", signature.key or ""
    if signature.method == "ssh":
        names = {p.strip().casefold() for p in signer.split(",") if p.strip()}
    else:
        email = _EMAIL.search(signer)
        names = {signer.strip().casefold(), *([email.group(1).casefold()] if email else [])}
    for entry in approvers:
        if key and (entry.strip() == key if signature.method == "ssh"
                    else len(key) == 40 and _fingerprint(entry) == key.upper()):
            return entry
        if entry.strip() and entry.strip().casefold() in names:
            return entry
    return None


@dataclass(frozen=True)
class Approval:
    """One approval tag found, and whether it counts (``reason`` says why, or why not)."""

    tag: str  # its name, without refs/tags/
    counts: bool
    reason: str
    approver: str | None = None  # the entry of approvers its signer matched
    signer: str | None = None  # SSH principal or OpenPGP user id; the tagger when advisory
    key: str | None = None  # SSH key fingerprint or OpenPGP primary key fingerprint
    method: str | None = None  # "ssh" or "gpg"


@dataclass(frozen=True)
class ApprovalCheck:
    """The approvals of one release of one instance for one wave, as a site judges them."""

    instance: str
    wave: str
    release: str
    approvals: tuple[Approval, ...] = ()  # every approval tag found, by name
    advisory: bool = False  # verification is off at the site: nothing was checked
    problem: str = ""  # why no approval can exist (a release that cannot name a tag)

    @property
    def approved(self) -> bool:
        return any(a.counts for a in self.approvals)

    @property
    def approved_by(self) -> tuple[str, ...]:
        """Who approved: the approvers entries matched (the tag names when advisory)."""
        return tuple(a.approver or a.tag for a in self.approvals if a.counts)

    @property
    def reason(self) -> str:
        """One line for status, after "wave canary waits for approval of telemetry-agent
        1.5.0: ": who approved, or that no approval exists yet (and the command that makes
        one), or why each approval found does not count."""
        counted = [a for a in self.approvals if a.counts]
        if counted:
            first = counted[0]
            who = first.approver or first.signer or "an approval tag"
            text = f"approved by {who} (tag {first.tag})"
            return text + (" (advisory: verification is off)" if self.advisory else "")
        if self.problem:
            return self.problem
        command = (f"reconciler approve {self.instance} --wave {self.wave} --release "
                   f"{self.release}")
        if not self.approvals:
            return f"no approval yet ({command})"
        why = [a.reason for a in self.approvals[:_SHOWN]]
        if len(self.approvals) > _SHOWN:
            why.append(f"and {len(self.approvals) - _SHOWN} more that do not count")
        return f"no approval counts ({command}): {'; '.join(why)}"


def approvals_for(git_dir: Path, instance: str, wave: str, release: str, *,
                  policy: VerifyPolicy, approvers: Sequence[str],
                  refs: str = "refs/tags") -> ApprovalCheck:
    """Every approval of ``release`` of ``instance`` for ``wave`` in the git directory
    ``git_dir`` (the daemon's mirror, or a clone's ``.git``), judged under the site's
    ``policy`` against ``approvers`` (``spec.rollout.approvers`` of the verified revision).

    ``refs`` is where the approval tags were fetched to (``refs/tags`` unless the caller's
    refspec put them elsewhere, see :func:`approval_refspec`). One ``git for-each-ref`` lists
    them; each annotated one is then read and verified (two git calls) unless verification is
    off. :class:`SourceError` when ``git_dir`` cannot be read; :class:`VerificationError` when
    the site's keyring cannot be loaded.
    """
    try:
        prefix = _prefix(instance, wave, release)
    except ValueError as exc:
        return ApprovalCheck(instance, wave, release, problem=str(exc))
    found = _listed(Path(git_dir), refs.rstrip("/"), prefix)
    advisory = policy.mode is VerifyMode.NONE
    if advisory:
        return ApprovalCheck(instance, wave, release, tuple(
            Approval(t.name, True, f"approval {t.name} counts without a signature check "
                                   "(verification is off at this site)", signer=t.tagger)
            for t in found), advisory=True)
    signed = verify_tags(Path(git_dir), [t.oid for t in found if t.kind == "tag"],
                         policy=policy)
    judged = tuple(_judge(t, signed.get(t.oid), instance, approvers) for t in found)
    return ApprovalCheck(instance, wave, release, judged)


@dataclass(frozen=True)
class _Listed:
    name: str  # the ref's name under refs (what the tag is called on the server)
    kind: str  # "tag" (annotated) or "commit" (lightweight)
    oid: str
    inner: str  # the name the tag object itself carries ("" when lightweight)
    tagger: str | None


def _listed(git_dir: Path, refs: str, prefix: str) -> list[_Listed]:
    """The approval tags ``<prefix>/<label>`` fetched under ``refs``."""
    fields = "%00".join(("%(refname)", "%(objecttype)", "%(objectname)", "%(tag)",
                         "%(taggername) %(taggeremail)"))
    git = Git(git_dir, env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull})
    under = f"{refs}/{prefix}/"
    out = git.run("for-each-ref", f"--format={fields}", under,
                  context="reading wave approvals").stdout.decode("utf-8", "replace")
    found = []
    for line in out.splitlines():
        parts = line.split("\0")
        label = parts[0][len(under):]
        if len(parts) != 5 or not parts[0].startswith(under) or not label or "/" in label:
            continue  # not an approval of this release
        name = f"{prefix}/{label}"
        found.append(_Listed(name, parts[1], parts[2], parts[3], parts[4].strip() or None))
    return sorted(found, key=lambda t: t.name)


def _judge(tag: _Listed, signature: Signature | None, instance: str,
           approvers: Sequence[str]) -> Approval:
    name = tag.name
    if tag.kind != "tag" or signature is None:
        return Approval(name, False, f"approval {name} is a lightweight tag, which cannot be "
                                     "signed")
    if signature.ok and tag.inner != name:
        # the signature covers the name inside the object: a valid approval of another wave
        # or release must not count under this name
        return Approval(name, False, f"approval {name} is the signed tag {tag.inner} under "
                                     "another name", signer=signature.signer,
                        key=signature.key, method=signature.method)
    if not signature.ok:
        problem = signature.problem
        text = "is not signed" if problem == "unsigned" else f"is not accepted: {problem}"
        return Approval(name, False, f"approval {name} {text}", key=signature.key,
                        method=signature.method)
    matched = matching_approver(signature, approvers)
    if matched is None:
        nobody = "" if approvers else " (spec.rollout.approvers lists nobody)"
        return Approval(name, False, f"approval {name} is signed by {signature.signer}, who is "
                                     f"not an approver of {instance}{nobody}",
                        signer=signature.signer, key=signature.key, method=signature.method)
    return Approval(name, True, f"approved by {matched} (tag {name})", approver=matched,
                    signer=signature.signer, key=signature.key, method=signature.method)
