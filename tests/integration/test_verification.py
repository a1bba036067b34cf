"""Signature verification against real git repositories, real SSH and OpenPGP keys.

Keys are ed25519, made once per module with ssh-keygen and ``gpg --quick-gen-key`` in private
temporary directories; the repository holds one commit per case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.core.errors import ConfigError, VerificationError
from reconciler.gitops.verification import Verified, VerifyMode, VerifyPolicy, verify_revision

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("git", "gpg", "ssh-keygen", "gpgconf")),
    reason="git, gpg and ssh-keygen are needed to make and check signatures")


def _env(gnupg: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
               GIT_AUTHOR_NAME="Fleet Admin", GIT_AUTHOR_EMAIL="admin@example.org",
               GIT_COMMITTER_NAME="Fleet Admin", GIT_COMMITTER_EMAIL="admin@example.org")
    if gnupg is not None:
        env["GNUPGHOME"] = str(gnupg)
    return env


def _run(args: list[str], cwd: Path | None = None, gnupg: Path | None = None,
         stdin: str | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=_env(gnupg), input=stdin, capture_output=True,
                          text=True, check=False, timeout=30)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout.strip()


def _gpg_home() -> Path:
    # gpg-agent's socket lives in the home; pytest's tmp paths can exceed the socket path limit
    home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    home.chmod(0o700)
    return home


def _gpg_key(home: Path, uid: str) -> None:
    _run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
          "sign", "never"], gnupg=home)


@dataclass(frozen=True)
class Fleet:
    repo: Path
    allowed_signers: Path
    keyring: Path  # GnuPG home holding only the trusted public key
    keyring_file: Path  # the same key, exported armored
    other_keyring: Path  # GnuPG home holding an unrelated key
    signer_home: Path  # GnuPG home with the private key that signs
    commits: dict[str, str]

    def policy(self, mode: str = "commit", *, ssh: bool = True,
               gpg: Path | None = None) -> VerifyPolicy:
        return VerifyPolicy(mode=VerifyMode(mode),
                            allowed_signers=self.allowed_signers if ssh else None,
                            gpg_home=gpg)


def _commit(repo: Path, message: str, *sign: str, gnupg: Path | None = None) -> str:
    _run(["git", *sign, "commit", "-q", "--allow-empty", "-m", message], repo, gnupg)
    return _run(["git", "rev-parse", "HEAD"], repo)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("verification")
    for name in ("alice", "mallory"):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
              str(root / name)])
    allowed = root / "allowed_signers"
    allowed.write_text(f"alice@example.org {(root / 'alice.pub').read_text()}")

    signer, keyring, other = _gpg_home(), _gpg_home(), _gpg_home()
    try:
        _gpg_key(signer, "Release Key <release@example.org>")
        _gpg_key(other, "Someone Else <else@example.org>")
        exported = root / "release.asc"
        exported.write_text(_run(["gpg", "--batch", "--armor", "--export",
                                  "release@example.org"], gnupg=signer))
        _run(["gpg", "--batch", "--quiet", "--import", str(exported)], gnupg=keyring)

        repo = root / "repo"
        repo.mkdir()
        _run(["git", "init", "-q", "-b", "main"], repo)
        ssh_as = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={root / 'alice'}"]
        ssh_mallory = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={root / 'mallory'}"]
        gpg_as = ["-c", "gpg.format=openpgp", "-c", "user.signingkey=release@example.org"]
        commits = {
            "unsigned": _commit(repo, "unsigned"),
            "ssh": _commit(repo, "ssh signed", *ssh_as, "-c", "commit.gpgsign=true"),
            "ssh_untrusted": _commit(repo, "mallory", *ssh_mallory, "-c", "commit.gpgsign=true"),
            "gpg": _commit(repo, "gpg signed", *gpg_as, "-c", "commit.gpgsign=true",
                           gnupg=signer),
        }
        raw = _run(["git", "cat-file", "commit", commits["ssh"]], repo)
        commits["tampered"] = _run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], repo,
                                   stdin=raw.replace("\n\nssh signed", "\n\nrm -rf everything")
                                   + "\n")
        raw_gpg = _run(["git", "cat-file", "commit", commits["gpg"]], repo)
        commits["gpg_tampered"] = _run(
            ["git", "hash-object", "-t", "commit", "-w", "--stdin"], repo,
            stdin=raw_gpg.replace("\n\ngpg signed", "\n\ngpg signed, then edited") + "\n")
        lines = raw.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("gpgsig "))
        lines[start + 1] = " " + "Z" * 70  # the base64 body no longer decodes to a signature
        commits["garbage"] = _run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], repo,
                                  stdin="\n".join(lines) + "\n")
        # release tags, all at their own commits so "which tag points here" is unambiguous
        commits["tag_signed"] = _commit(repo, "release 1")
        _run(["git", *ssh_as, "tag", "-s", "-m", "v1.0.0", "v1.0.0"], repo)
        commits["tag_gpg"] = _commit(repo, "release 2")
        _run(["git", *gpg_as, "tag", "-s", "-m", "v2.0.0", "v2.0.0"], repo, gnupg=signer)
        commits["tag_annotated"] = _commit(repo, "release 3")
        _run(["git", "tag", "-a", "-m", "v3.0.0", "v3.0.0"], repo)
        commits["tag_light"] = _commit(repo, "release 4")
        _run(["git", "tag", "v4.0.0"], repo)
        commits["tag_untrusted"] = _commit(repo, "release 5")
        _run(["git", *ssh_mallory, "tag", "-s", "-m", "v5.0.0", "v5.0.0"], repo)
        yield Fleet(repo=repo, allowed_signers=allowed, keyring=keyring, keyring_file=exported,
                    other_keyring=other, signer_home=signer, commits=commits)
    finally:
        for home in (signer, keyring, other):
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=_env(home), check=False,
                           capture_output=True, timeout=30)
            shutil.rmtree(home, ignore_errors=True)


def _blocked(fleet: Fleet, case: str, policy: VerifyPolicy, tag: str | None = None) -> str:
    commit = fleet.commits[case]
    with pytest.raises(VerificationError) as caught:
        verify_revision(fleet.repo, commit, policy=policy, tag=tag)
    message = caught.value.message
    assert commit[:12] in message, message  # every refusal names the commit
    assert caught.value.reason == "Blocked"
    return message


# -- mode commit ----------------------------------------------------------------------------


def test_ssh_signed_commit_by_allowed_signer_is_accepted(fleet: Fleet) -> None:
    result = verify_revision(fleet.repo, fleet.commits["ssh"], policy=fleet.policy())
    assert result == Verified(commit=fleet.commits["ssh"], mode=VerifyMode.COMMIT, method="ssh",
                              signer="alice@example.org", key=result.key)
    assert result.key is not None and result.key.startswith("SHA256:")


def test_commit_may_be_named_by_ref(fleet: Fleet) -> None:
    result = verify_revision(fleet.repo, "v1.0.0", policy=fleet.policy("none"))
    assert result.commit == fleet.commits["tag_signed"]


def test_ssh_signed_by_key_not_in_allowed_signers_is_rejected(fleet: Fleet) -> None:
    message = _blocked(fleet, "ssh_untrusted", fleet.policy())
    assert "unknown key SHA256:" in message and "verify.allowedSigners" in message


def test_unsigned_commit_is_rejected(fleet: Fleet) -> None:
    assert _blocked(fleet, "unsigned", fleet.policy()).endswith(": unsigned")


def test_gpg_signed_commit_is_accepted_with_the_keyring_directory(fleet: Fleet) -> None:
    result = verify_revision(fleet.repo, fleet.commits["gpg"],
                             policy=fleet.policy(ssh=False, gpg=fleet.keyring))
    assert result.method == "gpg"
    assert result.signer == "Release Key <release@example.org>"
    assert result.key is not None and len(result.key) == 40


def test_gpg_signed_commit_is_accepted_with_an_exported_key_file(fleet: Fleet) -> None:
    result = verify_revision(fleet.repo, fleet.commits["gpg"],
                             policy=fleet.policy(gpg=fleet.keyring_file))
    assert result.signer == "Release Key <release@example.org>"


def test_gpg_signed_commit_is_rejected_with_another_keyring(fleet: Fleet) -> None:
    message = _blocked(fleet, "gpg", fleet.policy(ssh=False, gpg=fleet.other_keyring))
    assert "unknown key" in message and "not in verify.gpgKeyring" in message


def test_callers_own_gnupg_home_adds_no_trust(fleet: Fleet,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the daemon user's ~/.gnupg holding the key must not make a gpg signature trusted
    monkeypatch.setenv("GNUPGHOME", str(fleet.signer_home))
    message = _blocked(fleet, "gpg", fleet.policy())
    assert "no verify.gpgKeyring configured" in message


def test_keyring_directory_is_not_written(fleet: Fleet, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring"
    shutil.copytree(fleet.keyring, keyring, ignore=shutil.ignore_patterns("S.*"))
    before = {p.name: p.stat().st_mtime_ns for p in keyring.iterdir()}
    verify_revision(fleet.repo, fleet.commits["gpg"], policy=fleet.policy(gpg=keyring))
    assert {p.name: p.stat().st_mtime_ns for p in keyring.iterdir()} == before


def test_ssh_signature_without_allowed_signers_is_rejected(fleet: Fleet) -> None:
    message = _blocked(fleet, "ssh", fleet.policy(ssh=False, gpg=fleet.keyring))
    assert "verify.allowedSigners is not configured" in message


def test_tampered_commit_is_rejected(fleet: Fleet) -> None:
    assert "bad signature" in _blocked(fleet, "tampered", fleet.policy())


def test_tampered_gpg_commit_is_rejected(fleet: Fleet) -> None:
    message = _blocked(fleet, "gpg_tampered", fleet.policy(gpg=fleet.keyring))
    assert "bad signature (key" in message and "Release Key" in message


def test_garbage_signature_is_rejected(fleet: Fleet) -> None:
    assert "malformed SSH signature" in _blocked(fleet, "garbage", fleet.policy())


def test_missing_commit_is_rejected_by_name(fleet: Fleet) -> None:
    with pytest.raises(VerificationError, match="commit 0123456789ab: not found"):
        verify_revision(fleet.repo, "0123456789abcdef", policy=fleet.policy())


@pytest.mark.parametrize("case", ["unsigned", "ssh_untrusted", "gpg", "tampered", "garbage",
                                  "gpg_tampered"])
def test_mode_none_accepts_everything(fleet: Fleet, case: str) -> None:
    result = verify_revision(fleet.repo, fleet.commits[case], policy=VerifyPolicy())
    assert result == Verified(commit=fleet.commits[case], mode=VerifyMode.NONE)


# -- mode tag -------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["v1.0.0", None])
def test_ssh_signed_tag_is_accepted(fleet: Fleet, tag: str | None) -> None:
    result = verify_revision(fleet.repo, fleet.commits["tag_signed"], policy=fleet.policy("tag"),
                             tag=tag)
    assert (result.tag, result.signer, result.method) == ("v1.0.0", "alice@example.org", "ssh")


def test_gpg_signed_tag_is_accepted(fleet: Fleet) -> None:
    result = verify_revision(fleet.repo, fleet.commits["tag_gpg"],
                             policy=fleet.policy("tag", gpg=fleet.keyring), tag="v2.0.0")
    assert (result.tag, result.method) == ("v2.0.0", "gpg")


@pytest.mark.parametrize(("case", "tag", "expected"), [
    ("tag_annotated", "v3.0.0", "tag v3.0.0: unsigned"),
    ("tag_annotated", None, "tag v3.0.0: unsigned"),
    ("tag_light", "v4.0.0", "tag v4.0.0 is a lightweight tag"),
    ("tag_light", None, "tag v4.0.0 is a lightweight tag"),
    ("tag_untrusted", "v5.0.0", "tag v5.0.0: signed by unknown key"),
    ("tag_gpg", "v2.0.0", "tag v2.0.0: signed by unknown key"),
    ("unsigned", None, "it has no tags"),
    ("tag_annotated", "v1.0.0", "tag v1.0.0 points at"),
    ("tag_signed", "v9.9.9", "tag v9.9.9 does not exist"),
])
def test_tag_mode_rejects_without_a_trusted_signed_tag(fleet: Fleet, case: str,
                                                       tag: str | None, expected: str) -> None:
    message = _blocked(fleet, case, fleet.policy("tag"), tag=tag)
    assert "no signed tag points at it" in message and expected in message


def test_signed_commit_without_tag_is_rejected_in_tag_mode(fleet: Fleet) -> None:
    assert "no signed tag points at it" in _blocked(fleet, "ssh", fleet.policy("tag"))


def test_invalid_tag_name_is_rejected(fleet: Fleet) -> None:
    assert "not a valid tag name" in _blocked(fleet, "tag_signed", fleet.policy("tag"),
                                              tag="--output=x")


# -- policy ---------------------------------------------------------------------------------


def test_policy_needs_a_trust_store_unless_mode_none() -> None:
    with pytest.raises(ConfigError, match=r"verify\.allowedSigners nor verify\.gpgKeyring"):
        VerifyPolicy(mode=VerifyMode.COMMIT)
    assert VerifyPolicy().mode is VerifyMode.NONE


def test_policy_from_config_resolves_relative_paths(tmp_path: Path) -> None:
    policy = VerifyPolicy.from_config(
        {"mode": "tag", "allowedSigners": "keys/allowed", "gpgKeyring": "/etc/x/gnupg"},
        base=tmp_path)
    assert policy == VerifyPolicy(mode=VerifyMode.TAG, allowed_signers=tmp_path / "keys/allowed",
                                  gpg_home=Path("/etc/x/gnupg"))
    assert VerifyPolicy.from_config(None) == VerifyPolicy()
    with pytest.raises(ConfigError, match=r"verify\.mode: 'signed' is not one of"):
        VerifyPolicy.from_config({"mode": "signed"})


def test_policy_problems_name_the_missing_files(tmp_path: Path, fleet: Fleet) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    problems = VerifyPolicy(mode=VerifyMode.COMMIT, allowed_signers=tmp_path / "nope",
                            gpg_home=empty).problems()
    assert problems == [f"verify.allowedSigners: {tmp_path / 'nope'} is not a readable file",
                        f"verify.gpgKeyring: {empty} holds no pubring.kbx or pubring.gpg"]
    assert fleet.policy(gpg=fleet.keyring).problems() == []
