"""Who signed each commit of a range: the key behind every good signature, read in bulk.

``reconciler.gitops.tenancy`` asks, for up to thousands of new commits at once, which key made
each commit's signature; whether that key belongs to a project member is its own question.
``git verify-commit`` per commit (a git process and one or two verifier processes each) costs
about 10 ms a commit on an edge box, so this module does the same checks in bulk:

* every commit object comes out of one ``git cat-file --batch``; the signed payload is the
  object without its signature headers, cut exactly as git cuts it;
* SSH signatures are parsed here (``reconciler.gitops.sshsig``); Ed25519, ECDSA and RSA
  ones are checked in-process, others (security keys) by ``ssh-keygen -Y check-novalidate``,
  which checks the signature against the key it carries and prints ``Good "git" signature``;
* OpenPGP signatures are checked by one ``gpg --verify-files`` for the whole range: each
  commit becomes a signed message (its signature packet, then a literal data packet holding
  the payload: the form of a message PGP 2 signed), one file each, and gpg's status lines
  are read per file (``FILE_START`` .. ``FILE_DONE``) with the verdict rules of
  ``reconciler.gitops.signatures``. gpg stops at the first bad signature; the files after it
  are checked by a new run. Keys come from the site's keyring (``verify.gpgKeyring``) in a
  private ``GNUPGHOME``, exactly as ``git verify-commit`` gets them.

A signature packet that is not exactly one OpenPGP signature, a signature in an unknown
format, an X.509 one and an unsigned commit are each a :class:`Signer` that is not ``ok``,
with the reason in words.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.errors import ReconcilerError, VerificationError
from reconciler.core.processes import run as run_process
from reconciler.gitops.gitrun import Git
from reconciler.gitops.signatures import read_gpg, signature_method
from reconciler.gitops.sshsig import SshsigError, fingerprint, parse_sshsig, verify_in_process
from reconciler.gitops.verification import VerifyMode, VerifyPolicy, _trust_env

__all__ = ["UNSIGNED", "Signer", "read_signers", "split_commit"]

_TIMEOUT = 60.0
_WORKERS = max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class Signer:
    """What one commit's signature established."""

    ok: bool  # a good signature by the key below
    method: str | None = None  # "ssh", "gpg"; None: unsigned
    ssh_key: str | None = None  # SSH: the signing key, "<type> <base64>"
    fingerprints: frozenset[str] = field(default_factory=frozenset)  # OpenPGP: primary, signing
    key: str = ""  # the key as people see it: SHA256:... or an OpenPGP fingerprint
    problem: str = ""  # why it does not count, when not ok

    @property
    def shown(self) -> str:
        """The signer in a message: its key, or ``unsigned``."""
        return self.key or ("unsigned" if self.method is None else f"a {self.method} key")


UNSIGNED = Signer(False, problem="unsigned")


def split_commit(raw: bytes, header: bytes = b"gpgsig") -> tuple[bytes, bytes | None]:
    """A commit object's signed payload and its signature (None: unsigned), cut as git's
    ``parse_buffer_signed_by_header`` cuts them: ``header`` (``gpgsig``, or
    ``gpgsig-sha256`` in a SHA-256 repository) and its continuation lines are the signature;
    every ``gpgsig*`` header is left out of the payload."""
    payload: list[bytes] = []
    signature: list[bytes] = []
    in_signature = other = False
    pos, end = 0, len(raw)
    while pos < end:
        nl = raw.find(b"\n", pos)
        nxt = end if nl < 0 else nl + 1
        line = raw[pos:nxt]
        sig: bytes | None = None
        if in_signature and line[:1] == b" ":
            sig = line[1:]
        elif line.startswith(header + b" "):
            sig, other = line[len(header) + 1:], False
        elif line.startswith(b"gpgsig"):
            other = True
        elif other and line[:1] != b" ":
            other = False
        if sig is not None:
            signature.append(sig)
            in_signature = True
        else:
            if line[:1] == b"\n":
                nxt = end
                line = raw[pos:end]
            if not other:
                payload.append(line)
            in_signature = False
        pos = nxt
    return b"".join(payload), (b"".join(signature) if signature else None)


def read_signers(git: Git, commits: Iterable[str], *, gpg_keyring: Path | None = None,
                 in_process: bool = True) -> dict[str, Signer]:
    """The signer of every commit in ``commits`` (full object names). ``in_process=False``
    leaves every SSH signature to ssh-keygen (slower: to compare the two ways)."""
    wanted = sorted(set(commits))
    objects = git.read_blobs(wanted, context="reading commits") if wanted else {}
    found: dict[str, Signer] = {}
    ssh: list[tuple[str, bytes, str]] = []
    gpg: list[tuple[str, bytes, str]] = []
    for oid, raw in objects.items():
        header = b"gpgsig-sha256" if len(oid) == 64 else b"gpgsig"
        payload, signature = split_commit(raw, header)
        if signature is None:
            found[oid] = UNSIGNED
            continue
        text = signature.decode("utf-8", "replace")
        method = signature_method(text, "tag")
        if method == "ssh":
            ssh.append((oid, payload, text))
        elif method == "gpg":
            gpg.append((oid, payload, text))
        elif method == "x509":
            found[oid] = Signer(False, "x509", problem="signed with an X.509 key, which is "
                                "not supported (use SSH or OpenPGP)")
        else:
            found[oid] = Signer(False, "unknown", problem="signature in an unknown format")
    found.update(_ssh_signers(ssh, in_process))
    if gpg:
        found.update(_gpg_signers(gpg, gpg_keyring, git.path))
    return found


def _ssh_signers(items: Sequence[tuple[str, bytes, str]],
                 in_process: bool) -> dict[str, Signer]:
    found: dict[str, Signer] = {}
    left: list[tuple[str, bytes, str, str, str]] = []
    for oid, payload, text in items:
        try:
            sig = parse_sshsig(text)
        except SshsigError as exc:
            found[oid] = Signer(False, "ssh", problem=f"malformed SSH signature ({exc})")
            continue
        good = Signer(True, "ssh", ssh_key=sig.public_key, key=fingerprint(sig.key_blob))
        verdict = verify_in_process(sig, payload) if in_process else None
        if verdict is None:
            left.append((oid, payload, text, sig.public_key, good.key))
        else:
            found[oid] = good if verdict else Signer(False, "ssh", key=good.key, problem=(
                "bad signature (the signed content or the signature was altered)"))
    if left:
        with ThreadPoolExecutor(_WORKERS) as pool:
            for oid, signer in pool.map(_ssh_keygen, left):
                found[oid] = signer
    return found


def _ssh_keygen(item: tuple[str, bytes, str, str, str]) -> tuple[str, Signer]:
    """ssh-keygen's verdict on one signature, checked against the key it carries."""
    oid, payload, text, public_key, key = item
    with tempfile.TemporaryDirectory(prefix="reconciler-sshsig-") as tmp:
        sig_file = Path(tmp, "sig")
        sig_file.write_text(text)
        try:
            done = run_process(["ssh-keygen", "-Y", "check-novalidate", "-n", "git", "-s",
                                str(sig_file)], cwd=Path(tmp), env=_env({}), stdin=payload,
                               timeout=_TIMEOUT, what=f"checking the signature of {oid[:12]}")
        except ReconcilerError as exc:
            return oid, Signer(False, "ssh", key=key, problem=f"signature could not be "
                               f"checked ({exc.message})")
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode == 0 and 'Good "git" signature' in said:
        return oid, Signer(True, "ssh", ssh_key=public_key, key=key)
    lines = [line for line in said.splitlines() if line.strip()]
    return oid, Signer(False, "ssh", key=key, problem="SSH signature not accepted "
                       f"({lines[-1][:200] if lines else 'no output from ssh-keygen'})")


def _env(extra: Mapping[str, str]) -> dict[str, bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GNUPG"))}
    env.update(LC_ALL="C", LANGUAGE="C", **extra)
    return {k: os.fsencode(v) for k, v in env.items()}


def _dearmor(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN PGP ") \
            or not lines[-1].startswith("-----END PGP "):
        raise ValueError("not an armored OpenPGP block")
    body = lines[1:-1]
    start = body.index("") + 1 if "" in body else 0  # armor headers end at a blank line
    data = [line for line in body[start:] if not line.startswith("=")]
    return base64.b64decode("".join(data), validate=True)


def _one_signature_packet(data: bytes) -> bool:
    """Whether ``data`` is exactly one OpenPGP signature packet (tag 2) and nothing else."""
    if not data or not data[0] & 0x80:
        return False
    first = data[0]
    if first & 0x40:  # new format
        tag, pos = first & 0x3F, 1
        if pos >= len(data):
            return False
        octet = data[pos]
        if octet < 192:
            size, pos = octet, pos + 1
        elif octet < 224 and pos + 1 < len(data):
            size, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
        elif octet == 255:
            size, pos = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
        else:
            return False  # partial lengths: not a signature packet's form
    else:
        tag, kind = (first >> 2) & 0x0F, first & 0x03
        if kind == 3:
            return False
        width = (1, 2, 4)[kind]
        size, pos = int.from_bytes(data[1:1 + width], "big"), 1 + width
    return tag == 2 and pos + size == len(data)


def _literal(name: bytes, payload: bytes) -> bytes:
    body = b"b" + bytes([len(name)]) + name + b"\0\0\0\0" + payload
    size = len(body)
    if size < 192:
        length = bytes([size])
    elif size < 8384:
        length = bytes([((size - 192) >> 8) + 192, (size - 192) & 0xFF])
    else:
        length = b"\xff" + size.to_bytes(4, "big")
    return bytes([0xC0 | 11]) + length + body


def _gpg_signers(items: Sequence[tuple[str, bytes, str]], keyring: Path | None,
                 repo: Path) -> dict[str, Signer]:
    found: dict[str, Signer] = {}
    policy = VerifyPolicy(VerifyMode.COMMIT if keyring else VerifyMode.NONE, gpg_home=keyring)
    with tempfile.TemporaryDirectory(prefix="reconciler-gpgsigs-") as tmp, \
            _trust_env(policy, items[0][0]) as env:
        names: dict[str, str] = {}
        for number, (oid, payload, text) in enumerate(items):
            try:
                packet = _dearmor(text)
            except (ValueError, binascii.Error):
                packet = b""
            if not _one_signature_packet(packet):
                found[oid] = Signer(False, "gpg", problem="malformed OpenPGP signature (not "
                                    "exactly one signature packet)")
                continue
            name = f"{number}.pgp"
            Path(tmp, name).write_bytes(packet + _literal(oid.encode(), payload))
            names[name] = oid
        pending = list(names)
        while pending:
            done = _verify_files(pending, Path(tmp), env, keyring is not None)
            if not done:
                for name in pending:
                    found[names[name]] = Signer(False, "gpg", problem="signature could not be "
                                                "checked (gpg stopped)")
                break
            for name, signer in done.items():
                found[names[name]] = signer
            pending = [n for n in pending if n not in done]
    return found


def _verify_files(files: Sequence[str], tmp: Path, env: Mapping[str, str],
                  configured: bool) -> dict[str, Signer]:
    """gpg's verdict on each file it got to (in order; it stops after a bad signature)."""
    try:
        done = run_process(["gpg", "--batch", "--no-tty", "--status-fd", "1",
                            "--verify-files"], cwd=tmp, env=_env(env),
                           stdin=("\n".join(files) + "\n").encode(), timeout=_TIMEOUT * 4,
                           what="checking OpenPGP signatures")
    except ReconcilerError as exc:
        raise VerificationError(f"cannot check OpenPGP signatures: {exc.message}") from exc
    blocks: dict[str, list[str]] = {}
    finished: set[str] = set()
    current: str | None = None
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("[GNUPG:] FILE_START "):
            current = line.split(" ", 3)[3] if line.count(" ") >= 3 else None
            if current is not None:
                blocks[current] = []
        elif line.startswith("[GNUPG:] FILE_DONE"):
            if current is not None:
                finished.add(current)
            current = None
        elif current is not None:
            blocks[current].append(line)
    verdicts: dict[str, Signer] = {}
    for name, lines in blocks.items():
        if name not in files:
            continue
        verdict = read_gpg(0 if name in finished else 1, "\n".join(lines), configured=configured)
        valid = next((line.split()[2:] for line in lines if line.startswith("[GNUPG:] VALIDSIG")),
                     [])
        if verdict.ok and len(valid) >= 10:
            verdicts[name] = Signer(True, "gpg", fingerprints=frozenset({valid[0].upper(),
                                                                         valid[9].upper()}),
                                    key=valid[9].upper())
        else:
            verdicts[name] = Signer(False, "gpg", key=(verdict.key or "").upper(),
                                    problem=verdict.problem or "OpenPGP signature not accepted")
    return verdicts
