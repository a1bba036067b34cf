"""Commit and tag signature verification: the gate between fetching a revision and loading it.

The daemon calls :func:`verify_revision` after every fetch and before anything from the fetched
revision is read. When the site's policy (local config ``verify:``) asks for signatures, the
revision must be a commit signed by a trusted key (mode ``commit``) or be pointed at by an
annotated tag signed by a trusted key (mode ``tag``, for daemons that track release tags).
Anything else raises :class:`reconciler.core.errors.VerificationError`, which the daemon reports as
``Blocked`` without applying the revision. :func:`verify_tags` gives the same verdict on tag
objects to callers that judge the signer themselves (wave approvals,
``reconciler.gitops.approvals``).

Verification is git's own (``git verify-commit --raw`` / ``git verify-tag --raw``), so the
signature formats are exactly the ones git signs with:

* SSH signatures are trusted through an allowed-signers file (``verify.allowedSigners``), the
  same file ``ssh-keygen -Y verify`` reads;
* OpenPGP signatures are trusted through a keyring (``verify.gpgKeyring``): every key in it is
  trusted, no web of trust is consulted. The keyring is copied into a private temporary
  ``GNUPGHOME`` for each call because gpg writes lock and trust files next to its keyring, and
  the configuration directory is read-only under the systemd unit.

The answer is never taken from git's exit code alone: a revision passes only when git exits 0
*and* the verifier's own output says that a trusted key made a good signature (``[GNUPG:]
GOODSIG`` + ``VALIDSIG`` and no failure status for gpg; ``Good "git" signature for <principal>``
for SSH, which ssh-keygen prints only when the key matched an allowed signer); that output is
read by ``reconciler.gitops.signatures``.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.errors import ConfigError, PermanentError, TransientError, VerificationError
from reconciler.core.processes import run as run_process
from reconciler.gitops.gitrun import Git, GitErrors
from reconciler.gitops.signatures import Signature, last_line, read_gpg, read_ssh, signature_method

__all__ = ["Verified", "VerifyMode", "VerifyPolicy", "verify_revision", "verify_tags"]

log = structlog.get_logger(__name__)

# gpg or ssh-keygen on a slow edge box still answers in well under a second; a hung verifier
# must not stall the daemon's loop forever.
_TIMEOUT = 60.0
_SHORT = 12

# Public keyring files of a GnuPG home; private keys, sockets and gpg.conf are not copied, so
# an operator's keyring directory cannot turn on key auto-retrieval from the network.
_KEYRING_FILES = ("pubring.kbx", "pubring.gpg", "trustdb.gpg")


class VerifyMode(enum.Enum):
    """What a revision must carry before the daemon loads it."""

    COMMIT = "commit"  # the commit itself is signed by a trusted key
    TAG = "tag"  # an annotated tag signed by a trusted key points at the commit
    NONE = "none"  # no verification


@dataclass(frozen=True)
class VerifyPolicy:
    """The local config's ``verify:`` section.

    ``mode`` may be given as its config string (``"commit"``); it is stored as a
    :class:`VerifyMode`. ``gpg_home`` is a GnuPG home directory (its ``pubring.kbx`` or
    ``pubring.gpg``) or a single exported key file (armored or binary) holding the trusted keys.
    """

    mode: VerifyMode = VerifyMode.NONE
    allowed_signers: Path | None = None
    gpg_home: Path | None = None

    def __post_init__(self) -> None:
        if self.mode is not VerifyMode.NONE and self.allowed_signers is None \
                and self.gpg_home is None:
            message = (f"verify.mode is {self.mode.value!r} but neither verify.allowedSigners "
                       "nor verify.gpgKeyring names a trusted key")
            raise ConfigError(message, [message])

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, *,
                    base: Path | None = None) -> VerifyPolicy:
        """Build the policy from the local config's ``verify:`` mapping (camelCase keys).

        Relative paths are taken relative to ``base`` (the config file's directory).
        """
        section = section or {}
        allowed = ", ".join(m.value for m in VerifyMode)
        try:
            mode = VerifyMode(str(section.get("mode", "none")))
        except ValueError:
            message = f"verify.mode: {section.get('mode')!r} is not one of {allowed}"
            raise ConfigError(message, [message]) from None

        def path(key: str) -> Path | None:
            value = section.get(key)
            if value in (None, ""):
                return None
            found = Path(str(value)).expanduser()
            return found if base is None or found.is_absolute() else base / found

        return cls(mode=mode, allowed_signers=path("allowedSigners"),
                   gpg_home=path("gpgKeyring"))

    def problems(self) -> list[str]:
        """What is wrong with the trust stores on disk (for the config loader at start-up)."""
        if self.mode is VerifyMode.NONE:
            return []
        found: list[str] = []
        if self.allowed_signers is not None and not self.allowed_signers.is_file():
            found.append(f"verify.allowedSigners: {self.allowed_signers} is not a readable file")
        if self.gpg_home is not None:
            if self.gpg_home.is_dir():
                if not any((self.gpg_home / n).is_file() for n in _KEYRING_FILES[:2]):
                    found.append(f"verify.gpgKeyring: {self.gpg_home} holds no pubring.kbx "
                                 "or pubring.gpg")
            elif not self.gpg_home.is_file():
                found.append(f"verify.gpgKeyring: {self.gpg_home} does not exist")
        return found


@dataclass(frozen=True)
class Verified:
    """What a successful verification established (for logs and status)."""

    commit: str  # full object name of the verified commit
    mode: VerifyMode
    method: str | None = None  # "ssh" or "gpg"; None under mode none
    signer: str | None = None  # allowed-signers principal, or the key's user id
    key: str | None = None  # SSH key fingerprint or OpenPGP primary key fingerprint
    tag: str | None = None  # the signed tag that vouched for the commit (mode tag)


def verify_revision(git_dir: Path, commit: str, *, policy: VerifyPolicy,
                    tag: str | None = None) -> Verified:
    """Check that ``commit`` in the repository at ``git_dir`` may be applied under ``policy``.

    ``tag`` (mode ``tag``) names the tag the daemon tracks; without it any annotated tag that
    points at the commit and carries a trusted signature is accepted. Raises
    :class:`VerificationError` naming the commit (short object name) and the signer or the
    reason; returns what was verified.
    """
    git = _Git(Path(git_dir), policy.allowed_signers)
    full = git.resolve_commit(commit)
    bound = log.bind(commit=full[:_SHORT], mode=policy.mode.value)
    if policy.mode is VerifyMode.NONE:
        return Verified(commit=full, mode=policy.mode)
    try:
        with _trust_env(policy, f"commit {full[:_SHORT]}") as env:
            git.env = env
            if policy.mode is VerifyMode.COMMIT:
                result = _verify_commit(git, full, policy)
            else:
                result = _verify_tagged(git, full, policy, tag)
    except VerificationError as exc:
        bound.warning("revision_blocked", reason=exc.message)
        raise
    bound.info("revision_verified", method=result.method, signer=result.signer, key=result.key,
               tag=result.tag)
    return result


def verify_tags(git_dir: Path, tags: Sequence[str], *,
                policy: VerifyPolicy) -> dict[str, Signature]:
    """The verifier's verdict on each annotated tag object named in ``tags`` (object names).

    The same checks as a release tag's under mode ``tag``, with the site's trust stores (the
    policy's allowed signers and keyring, whatever its mode), for callers that decide
    themselves what a good signature allows: approvals (``reconciler.gitops.approvals``). An
    unsigned tag's verdict says ``unsigned``. Raises :class:`VerificationError` only when the
    keyring cannot be loaded.
    """
    if not tags:
        return {}
    git = _Git(Path(git_dir), policy.allowed_signers)
    with _trust_env(policy, f"tag {tags[0][:_SHORT]}") as env:
        git.env = env
        return {oid: _check(git, "tag", oid, policy) for oid in tags}


def _verify_commit(git: _Git, full: str, policy: VerifyPolicy) -> Verified:
    sig = _check(git, "commit", full, policy)
    if not sig.ok:
        raise VerificationError(f"commit {full[:_SHORT]}: {sig.problem}")
    return Verified(commit=full, mode=policy.mode, method=sig.method, signer=sig.signer,
                    key=sig.key)


def _verify_tagged(git: _Git, full: str, policy: VerifyPolicy, tag: str | None) -> Verified:
    short = full[:_SHORT]
    if tag is not None:
        candidates = [git.named_tag(tag, full)]
    else:
        candidates = git.tags_at(full)
        if not candidates:
            raise VerificationError(f"commit {short}: no signed tag points at it (it has no tags)")
    rejected: list[str] = []
    for name, kind, oid in candidates:
        if kind != "tag":
            rejected.append(f"tag {name} is a lightweight tag and cannot be signed")
            continue
        sig = _check(git, "tag", oid, policy)
        if sig.ok:
            return Verified(commit=full, mode=policy.mode, method=sig.method, signer=sig.signer,
                            key=sig.key, tag=name)
        rejected.append(f"tag {name}: {sig.problem}")
    raise VerificationError(f"commit {short}: no signed tag points at it ({'; '.join(rejected)})")


def _check(git: _Git, kind: str, oid: str, policy: VerifyPolicy) -> Signature:
    """Verify one commit or tag object and read the verifier's verdict from its output."""
    method = signature_method(git.cat(kind, oid), kind)
    if method is None:
        return Signature(False, None, problem="unsigned")
    if method == "x509":
        return Signature(False, method, problem="signed with an X.509 key, which is not "
                          "supported (use SSH or OpenPGP)")
    if method == "unknown":
        return Signature(False, None, problem="signature in an unknown format")
    if method == "ssh" and policy.allowed_signers is None:
        return Signature(False, method, problem="signed with an SSH key but "
                          "verify.allowedSigners is not configured, so no SSH key is trusted")
    if method == "ssh" and not os.access(str(policy.allowed_signers), os.R_OK):
        return Signature(False, method, problem=f"verify.allowedSigners "
                          f"{policy.allowed_signers} is not a readable file")
    code, output = git.run([f"verify-{kind}", "--raw", oid], check=False)
    if method == "ssh":
        return read_ssh(code, output)
    return read_gpg(code, output, configured=policy.gpg_home is not None)


@contextmanager
def _trust_env(policy: VerifyPolicy, subject: str) -> Iterator[dict[str, str]]:
    """What git's verifier runs with: a private GNUPGHOME holding the trusted keys
    (``subject``, "commit 0123abcd", names what is being verified in errors).

    The GNUPGHOME is always a fresh private directory, even without a configured keyring, so
    the daemon user's own ``~/.gnupg`` never adds trust.
    """
    with tempfile.TemporaryDirectory(prefix="reconciler-gpg-") as home:
        Path(home, "gpg.conf").write_text("no-auto-key-retrieve\nno-autostart\n")
        if policy.gpg_home is not None:
            _load_keyring(policy.gpg_home, Path(home), subject)
        yield {"GNUPGHOME": home}


def _load_keyring(source: Path, home: Path, subject: str) -> None:
    try:
        if source.is_dir():
            copied = 0
            for name in _KEYRING_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, home / name)
                    copied += name != "trustdb.gpg"
            if not copied:
                raise VerificationError(f"{subject}: verify.gpgKeyring {source} holds no "
                                        "pubring.kbx or pubring.gpg")
            return
        env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
        done = run_process(["gpg", "--batch", "--quiet", "--import", str(source)], cwd=home,
                           env={k: os.fsencode(v) for k, v in env.items()}, stdin=b"",
                           timeout=_TIMEOUT, what=f"importing verify.gpgKeyring {source}")
    except OSError as exc:
        raise VerificationError(f"{subject}: cannot read verify.gpgKeyring {source}: "
                                f"{exc.strerror or exc}") from exc
    except TransientError as exc:  # timed out
        raise VerificationError(f"{subject}: importing verify.gpgKeyring {source} "
                                "timed out") from exc
    except PermanentError as exc:  # gpg is not installed
        raise VerificationError(f"{subject}: {exc.message}") from exc
    if done.returncode != 0:
        detail = last_line(done.stderr_text.splitlines())
        raise VerificationError(f"{subject}: verify.gpgKeyring {source} could not be "
                                f"imported ({detail})")


class _Git:
    """The few git plumbing calls verification needs, through the project's git runner;
    every failure is a :class:`VerificationError` naming the object being checked."""

    def __init__(self, repo: Path, allowed_signers: Path | None) -> None:
        self.repo = repo
        # Command-line -c wins over the repository's own config, so a local working repo
        # cannot swap the verifier program; the allowed-signers file is this site's.
        config = {"gpg.program": "gpg", "gpg.ssh.program": "ssh-keygen",
                  "gpg.minTrustLevel": "undefined"}
        if allowed_signers is not None:
            config["gpg.ssh.allowedSignersFile"] = str(allowed_signers.absolute())
        # no system or user config either: only the repository's and ours count
        self._git = Git(repo, working_copy=True, config=config, timeout=_TIMEOUT,
                        env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
                        errors=GitErrors(VerificationError))
        self.env: Mapping[str, str] = {}  # the trust environment (GNUPGHOME) once set

    def run(self, args: Sequence[str], *, check: bool = True,
            what: str = "") -> tuple[int, str]:
        done = self._git.run(*args, check=check, context=what or args[-1][:_SHORT],
                             env=self.env)
        return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")

    def resolve_commit(self, commit: str) -> str:
        if not commit or commit.startswith("-") or any(c.isspace() for c in commit):
            raise VerificationError(f"commit {commit[:_SHORT]!r}: not a valid revision name")
        code, out = self.run(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                             check=False)
        if code != 0:
            raise VerificationError(f"commit {commit[:_SHORT]}: not found in {self.repo}")
        return out.strip().splitlines()[0]

    def cat(self, kind: str, oid: str) -> str:
        return self.run(["cat-file", kind, oid], what=f"{kind} {oid[:_SHORT]}")[1]

    def named_tag(self, tag: str, full: str) -> tuple[str, str, str]:
        """(name, object type, object name) of ``refs/tags/<tag>``, which must reach ``full``."""
        short = full[:_SHORT]
        ref = f"refs/tags/{tag}"
        if tag.startswith("-") or self.run(["check-ref-format", ref], check=False)[0] != 0:
            raise VerificationError(f"commit {short}: {tag!r} is not a valid tag name")
        code, out = self.run(["rev-parse", "--verify", "--quiet", ref], check=False)
        if code != 0:
            raise VerificationError(f"commit {short}: no signed tag points at it "
                                    f"(tag {tag} does not exist)")
        oid = out.strip()
        kind = self.run(["cat-file", "-t", oid], what=f"commit {short}")[1].strip()
        code, out = self.run(["rev-parse", "--verify", "--quiet", f"{oid}^{{commit}}"],
                             check=False)
        if code != 0 or out.strip() != full:
            raise VerificationError(f"commit {short}: no signed tag points at it (tag {tag} "
                                    f"points at {out.strip()[:_SHORT] or 'no commit'})")
        return tag, kind, oid

    def tags_at(self, full: str) -> list[tuple[str, str, str]]:
        """Every tag whose (peeled) target is ``full``, as (name, object type, object name)."""
        out = self.run(["for-each-ref", f"--points-at={full}",
                        "--format=%(refname:strip=2) %(objecttype) %(objectname)", "refs/tags"],
                       what=f"commit {full[:_SHORT]}")[1]
        found = []
        for line in out.splitlines():
            parts = line.rsplit(" ", 2)
            if len(parts) == 3:
                found.append((parts[0], parts[1], parts[2]))
        return found
