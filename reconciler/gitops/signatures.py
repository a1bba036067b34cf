"""Read a signature verifier's verdict: which format signs an object, and what git said.

``reconciler.gitops.verification`` runs ``git verify-commit --raw`` / ``git verify-tag --raw``
and hands the output here. The answer is never taken from git's exit code alone: an SSH
signature is good only when ssh-keygen printed ``Good "git" signature for <principal>`` (which
it prints only when the key matched an allowed signer), an OpenPGP one only when gpg's status
lines hold one ``GOODSIG`` and one ``VALIDSIG`` and none of the failure keywords. Anything
else is a :class:`Signature` that is not ok, with the reason in words for the operator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Signature", "last_line", "read_gpg", "read_ssh", "signature_method"]

# Status keywords that make an OpenPGP signature unacceptable, whatever else was printed.
_GPG_FAILURES = {
    "BADSIG": "bad signature",
    "EXPSIG": "signature expired",
    "EXPKEYSIG": "signing key expired",
    "REVKEYSIG": "signing key revoked",
    "ERRSIG": "signature could not be checked",
}

_SSH_GOOD = re.compile(
    r'^Good "git" signature for (?P<who>.+) with (?P<algo>\S+) key (?P<fpr>\S+)$')
_SSH_ANON_GOOD = re.compile(r'^Good "git" signature with (?P<algo>\S+) key (?P<fpr>\S+)$')

_SIG_MARKERS = {
    "-----BEGIN SSH SIGNATURE-----": "ssh",
    "-----BEGIN PGP SIGNATURE-----": "gpg",
    "-----BEGIN PGP MESSAGE-----": "gpg",
    "-----BEGIN SIGNED MESSAGE-----": "x509",
}


@dataclass(frozen=True)
class Signature:
    """The verifier's verdict on one signed object."""

    ok: bool
    method: str | None
    signer: str | None = None
    key: str | None = None
    problem: str = ""  # why it is not acceptable, when not ok


def read_ssh(code: int, output: str) -> Signature:
    """The verdict on an SSH signature from git's exit ``code`` and ssh-keygen's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        good = _SSH_GOOD.match(line)
        if good and code == 0:
            return Signature(True, "ssh", signer=good["who"], key=good["fpr"])
    for line in lines:
        anon = _SSH_ANON_GOOD.match(line)
        if anon:
            return Signature(False, "ssh", key=anon["fpr"], problem=(
                f"signed by unknown key {anon['fpr']} (not in verify.allowedSigners)"))
    text = " ".join(lines)
    if "incorrect signature" in text:
        problem = "bad signature (the signed content or the signature was altered)"
    elif "Couldn't parse" in text or "unsupported key type" in text or "invalid" in text:
        problem = f"malformed SSH signature ({last_line(lines)})"
    elif "expired" in text or "not yet valid" in text:
        problem = f"signing key not valid at the commit time ({last_line(lines)})"
    else:
        problem = f"SSH signature not accepted ({last_line(lines)})"
    return Signature(False, "ssh", problem=problem)


def read_gpg(code: int, output: str, *, configured: bool) -> Signature:
    """The verdict on an OpenPGP signature from git's exit ``code`` and gpg's status lines
    (``configured``: a keyring was given, which words the unknown-key case)."""
    status: dict[str, list[list[str]]] = {}
    for line in output.splitlines():
        if line.startswith("[GNUPG:] "):
            word, *args = line[len("[GNUPG:] "):].split(" ")
            status.setdefault(word, []).append(args)
    if "NO_PUBKEY" in status:
        keyid = status["NO_PUBKEY"][0][0] if status["NO_PUBKEY"][0] else "?"
        where = "not in verify.gpgKeyring" if configured else "no verify.gpgKeyring configured"
        return Signature(False, "gpg", key=keyid,
                          problem=f"signed by unknown key {keyid} ({where})")
    for word, meaning in _GPG_FAILURES.items():
        if word in status:
            args = status[word][0]
            who = " ".join(args[1:]) if word != "ERRSIG" else ""
            keyid = args[0] if args else "?"
            detail = f"key {keyid}" + (f", {who}" if who else "")
            return Signature(False, "gpg", key=keyid, problem=f"{meaning} ({detail})")
    good, valid = status.get("GOODSIG", []), status.get("VALIDSIG", [])
    if code == 0 and len(good) == 1 and len(valid) == 1 and len(valid[0]) >= 10:
        return Signature(True, "gpg", signer=" ".join(good[0][1:]), key=valid[0][9])
    lines = [line for line in output.splitlines() if line.strip()]
    return Signature(False, "gpg", problem=f"OpenPGP signature not accepted ({last_line(lines)})")


def signature_method(raw: str, kind: str) -> str | None:
    """Which format signs this object, read from the object itself (None: unsigned)."""
    if kind == "commit":
        header, _, _ = raw.partition("\n\n")
        for line in header.splitlines():
            if line.startswith(("gpgsig ", "gpgsig-sha256 ")):
                marker = line.split(" ", 1)[1].strip()
                return _SIG_MARKERS.get(marker, "unknown")
        return None
    for line in raw.splitlines():
        if line.strip() in _SIG_MARKERS:
            return _SIG_MARKERS[line.strip()]
    return None


def last_line(lines: Sequence[str]) -> str:
    """The verifier's last word, short enough for a status message."""
    return lines[-1][:200] if lines else "no output from the verifier"
