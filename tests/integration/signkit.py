"""Signing keys made for a test module: SSH keys with ssh-keygen, OpenPGP keys with
``gpg --quick-gen-key`` in a private temporary ``GNUPGHOME``, and the trust stores a site
would configure for them (an allowed-signers file, a keyring holding public keys only).

Used by the approval tests (``test_approvals.py``, ``test_cli_approve.py``)::

    @pytest.fixture(scope="module")
    def keys(tmp_path_factory):
        with made_keys(tmp_path_factory.mktemp("keys")) as made:
            yield made
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.fleetkit import clean_env

NEEDS_SIGNING_TOOLS = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("git", "gpg", "ssh-keygen", "gpgconf")),
    reason="git, gpg and ssh-keygen are needed to make and check signatures")

# SSH keys: alice and mallory are in the site's allowed signers, eve is not
SSH_TRUSTED = {"alice": "alice@example.org", "mallory": "mallory@example.org"}
SSH_KEYS = ("alice", "mallory", "eve")
# OpenPGP keys: release is in the site's keyring, intruder is not
GPG_UIDS = {"release": "Release Key <release@example.org>",
            "intruder": "Intruder <intruder@example.org>"}


@dataclass(frozen=True)
class Keys:
    """Signing material and the trust stores of a site that trusts some of it."""

    root: Path
    allowed_signers: Path  # SSH_TRUSTED principals and their keys
    keyring: Path  # GnuPG home holding the public half of the release key only
    signer_home: Path  # GnuPG home holding the private keys of release and intruder
    fingerprints: Mapping[str, str]  # OpenPGP primary key fingerprint by key name

    def signing(self, who: str) -> tuple[list[str], dict[str, str]]:
        """git ``-c`` options and environment that make ``git tag -s`` sign as ``who``."""
        if who in GPG_UIDS:
            return (["-c", "gpg.format=openpgp", "-c", f"user.signingkey={who}@example.org"],
                    {"GNUPGHOME": str(self.signer_home)})
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.root / who}"], {}

    def config(self, who: str) -> dict[str, str]:
        """Repository config (``git config KEY VALUE``) that makes a plain ``git tag -s``
        sign as ``who``; the environment from :meth:`signing` is needed as well."""
        options, _ = self.signing(who)
        return dict(item.split("=", 1) for item in options[1::2])


def run(args: Sequence[str], cwd: Path | None = None,
        env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=clean_env(env), capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _gpg_home() -> Path:
    # gpg-agent's socket lives in the home; pytest's tmp paths can exceed the socket path limit
    home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    home.chmod(0o700)
    return home


@contextlib.contextmanager
def made_keys(root: Path) -> Iterator[Keys]:
    """Make every key under ``root`` (GnuPG homes under /tmp); agents stopped at the end."""
    for name in SSH_KEYS:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(root / name)])
    allowed = root / "allowed_signers"
    allowed.write_text("".join(f"{principal} {(root / f'{name}.pub').read_text()}"
                               for name, principal in SSH_TRUSTED.items()))
    signer, keyring = _gpg_home(), _gpg_home()
    as_signer = {"GNUPGHOME": str(signer)}
    try:
        fingerprints = {}
        for name, uid in GPG_UIDS.items():
            run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid,
                 "ed25519", "sign", "never"], env=as_signer)
            listing = run(["gpg", "--batch", "--with-colons", "--fingerprint",
                           f"{name}@example.org"], env=as_signer)
            fingerprints[name] = next(line.split(":")[9] for line in listing.splitlines()
                                      if line.startswith("fpr:"))
        exported = root / "release.asc"
        exported.write_text(run(["gpg", "--batch", "--armor", "--export",
                                 "release@example.org"], env=as_signer))
        run(["gpg", "--batch", "--quiet", "--import", str(exported)],
            env={"GNUPGHOME": str(keyring)})
        yield Keys(root, allowed, keyring, signer, fingerprints)
    finally:
        for home in (signer, keyring):
            subprocess.run(["gpgconf", "--kill", "gpg-agent"],
                           env=clean_env({"GNUPGHOME": str(home)}), check=False,
                           capture_output=True, timeout=30)
            shutil.rmtree(home, ignore_errors=True)
