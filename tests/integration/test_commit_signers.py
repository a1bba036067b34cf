"""Who signed each commit, read in bulk (reconciler/gitops/commit_signers.py, sshsig.py):
good and altered signatures by Ed25519 (checked in-process), ECDSA (ssh-keygen) and OpenPGP
keys (one gpg for the range, going on after a bad signature), and the malformed ones."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.projects import normalize_ssh_key
from reconciler.gitops.commit_signers import read_signers, split_commit
from reconciler.gitops.gitrun import Git
from reconciler.gitops.sshsig import SshsigError, parse_sshsig, verify_in_process
from tests.integration.signkit import NEEDS_SIGNING_TOOLS, run
from tests.integration.tenancykit import People, Repo, made_people

pytestmark = NEEDS_SIGNING_TOOLS


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    with made_people(tmp_path_factory.mktemp("people")) as made:
        yield made


def _altered(repo: Repo, commit: str) -> str:
    """A copy of ``commit`` whose message was changed after signing."""
    raw = repo.git("cat-file", "commit", commit) + "\n"
    changed = raw.replace("\nchange\n", "\nchanged after signing\n")
    assert changed != raw
    path = repo.path.parent / "altered"
    path.write_text(changed)
    return repo.git("hash-object", "-t", "commit", "-w", str(path))


def test_signers_of_every_kind(tmp_path: Path, people: People) -> None:
    repo = Repo(tmp_path / "r", people)
    made = {who: repo.commit(who, {f"{who}.txt": who}) for who in
            ("alice", "carol", "olga", "gus")}
    made["unsigned"] = repo.commit(None, {"u.txt": "u"})
    bad = {who: _altered(repo, made[who]) for who in ("alice", "carol", "olga")}
    more = repo.commit("olga", {"after.txt": "x"})  # gpg goes on after a bad signature
    found = read_signers(Git(repo.path, working_copy=True),
                         [*made.values(), *bad.values(), more], gpg_keyring=people.keyring)
    alice, carol, olga, gus = (found[made[w]] for w in ("alice", "carol", "olga", "gus"))
    assert alice.ok and alice.method == "ssh" and alice.key.startswith("SHA256:")
    assert alice.ssh_key == normalize_ssh_key(people.ssh["alice"])
    assert carol.ok and carol.ssh_key == normalize_ssh_key(people.ssh["carol"])
    assert olga.ok and people.fingerprints["olga"] in olga.fingerprints
    assert olga.key == people.fingerprints["olga"]
    assert not gus.ok and "unknown key" in gus.problem
    assert found[more].ok
    assert not found[made["unsigned"]].ok and found[made["unsigned"]].shown == "unsigned"
    for who, commit in bad.items():
        assert not found[commit].ok, who
        assert "bad signature" in found[commit].problem or "not accepted" in \
            found[commit].problem, (who, found[commit].problem)
    by_keygen = read_signers(Git(repo.path, working_copy=True),
                             [*made.values(), *bad.values(), more], gpg_keyring=people.keyring,
                             in_process=False)
    assert {c: (s.ok, s.ssh_key) for c, s in by_keygen.items()} == \
        {c: (s.ok, s.ssh_key) for c, s in found.items()}


def test_malformed_signatures(tmp_path: Path, people: People) -> None:
    repo = Repo(tmp_path / "r", people)
    signed = repo.commit("olga", {"a.txt": "a"})
    raw = repo.git("cat-file", "commit", signed) + "\n"
    header, _, body = raw.partition("\n\n")
    lines = header.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("gpgsig "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    armored = "\n".join([lines[start][7:], *(line[1:] for line in lines[start + 1:end])])
    data = armored.splitlines()
    packet = base64.b64decode("".join(x for x in data[2:-2]))
    doubled = base64.b64encode(packet + packet).decode()
    forged = [f"gpgsig {data[0]}", " ", *(f" {doubled[i:i + 64]}"
                                          for i in range(0, len(doubled), 64)),
              f" {data[-1]}"]
    x509 = ["gpgsig -----BEGIN SIGNED MESSAGE-----", " abc", " -----END SIGNED MESSAGE-----"]
    commits = {}
    for name, sig in (("two packets", forged), ("x509", x509)):
        text = "\n".join([*lines[:start], *sig, *lines[end:]]) + "\n\n" + body
        path = tmp_path / name.replace(" ", "-")
        path.write_text(text)
        commits[name] = repo.git("hash-object", "-t", "commit", "-w", str(path))
    found = read_signers(Git(repo.path, working_copy=True), commits.values(),
                         gpg_keyring=people.keyring)
    assert "not exactly one signature packet" in found[commits["two packets"]].problem
    assert "X.509" in found[commits["x509"]].problem


def _sign(tmp_path: Path, people: People, who: str, namespace: str = "git") -> str:
    payload = tmp_path / f"{who}-{namespace}"
    payload.write_bytes(b"tree 0000\n\nhello\n")
    run(["ssh-keygen", "-Y", "sign", "-n", namespace, "-f", str(people.root / who),
         str(payload)])
    return Path(f"{payload}.sig").read_text()


def test_sshsig_in_process(tmp_path: Path, people: People) -> None:
    sig = parse_sshsig(_sign(tmp_path, people, "alice"))
    assert sig.public_key == normalize_ssh_key(people.ssh["alice"])
    assert verify_in_process(sig, b"tree 0000\n\nhello\n") is True
    assert verify_in_process(sig, b"tree 0000\n\nhello!\n") is False
    with pytest.raises(SshsigError, match="namespace 'file'"):
        parse_sshsig(_sign(tmp_path, people, "alice", "file"))
    ecdsa = parse_sshsig(_sign(tmp_path, people, "carol"))
    assert verify_in_process(ecdsa, b"tree 0000\n\nhello\n") is True
    assert verify_in_process(ecdsa, b"x") is False
    for kind in ("rsa", "ecdsa-384", "ecdsa-521"):
        key_type, _, bits = kind.partition("-")
        run(["ssh-keygen", "-q", "-t", key_type, *(["-b", bits] if bits else []), "-N", "",
             "-f", str(tmp_path / kind)])
        payload = tmp_path / f"{kind}.txt"
        payload.write_bytes(b"payload")
        run(["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(tmp_path / kind), str(payload)])
        sig = parse_sshsig(Path(f"{payload}.sig").read_text())
        assert verify_in_process(sig, b"payload") is True, kind
        assert verify_in_process(sig, b"payloae") is False, kind


def test_split_commit_as_git_cuts_it() -> None:
    raw = (b"tree 1\nparent 2\nauthor a\ncommitter c\ngpgsig -----BEGIN X-----\n abc\n "
           b"-----END X-----\ngpgsig-sha256 -----BEGIN Y-----\n def\n -----END Y-----\n"
           b"mergetag object 3\n more\n\nmessage\n gpgsig not a header\n")
    payload, signature = split_commit(raw)
    assert signature == b"-----BEGIN X-----\nabc\n-----END X-----\n"
    assert payload == (b"tree 1\nparent 2\nauthor a\ncommitter c\nmergetag object 3\n more\n"
                       b"\nmessage\n gpgsig not a header\n")
    payload, signature = split_commit(raw, b"gpgsig-sha256")
    assert signature == b"-----BEGIN Y-----\ndef\n-----END Y-----\n"
    assert split_commit(b"tree 1\n\nmsg\n") == (b"tree 1\n\nmsg\n", None)
