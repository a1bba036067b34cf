"""Which approvals of a wave count, read from a daemon's mirror with real signed tags.

Approval tags are made in a working repository with ``git tag -s`` by SSH and OpenPGP keys
(``signkit``), and fetched into a bare mirror with the refspec the daemon uses for one
(instance, wave, release); :func:`approvals_for` reads them there with the site's trust stores.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops.approvals import (
    ApprovalCheck,
    approval_refspec,
    approval_tag,
    approvals_for,
)
from reconciler.gitops.verification import VerifyMode, VerifyPolicy
from tests.integration.signkit import NEEDS_SIGNING_TOOLS, Keys, made_keys, run

pytestmark = NEEDS_SIGNING_TOOLS

INSTANCE, WAVE, RELEASE = "telemetry-eu", "canary", "1.5.0"
APPROVERS = ("alice@example.org", "ops-lead@example.org")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with made_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


class Repo:
    """A working repository where approvals are tagged, and the daemon's bare mirror."""

    def __init__(self, root: Path, keys: Keys) -> None:
        self.keys = keys
        self.work = root / "work"
        self.mirror = root / "mirror.git"
        self.work.mkdir()
        run(["git", "init", "-q", "-b", "main"], self.work)
        run(["git", "commit", "-q", "--allow-empty", "-m", "fleet"], self.work)
        run(["git", "init", "-q", "--bare", str(self.mirror)])

    def tag(self, who: str | None, name: str, *, light: bool = False) -> str:
        """An approval tag ``name`` at HEAD: signed by ``who``, annotated but unsigned when
        None, lightweight with ``light``."""
        if light:
            run(["git", "tag", name], self.work)
            return name
        options, env = self.keys.signing(who) if who else ([], {})
        run(["git", *options, "tag", "-s" if who else "-a", "-m", f"approve {name}", name],
            self.work, env)
        return name

    def approve(self, who: str | None, *, wave: str = WAVE, release: str = RELEASE,
                label: str | None = None) -> str:
        return self.tag(who, approval_tag(INSTANCE, wave, release, label or who or "nobody"))

    def fetch(self, wave: str = WAVE, release: str = RELEASE) -> None:
        """What the daemon does: fetch only the approvals it waits on."""
        run(["git", "fetch", "-q", str(self.work), approval_refspec(INSTANCE, wave, release)],
            self.mirror)

    def check(self, policy: VerifyPolicy, approvers: tuple[str, ...] = APPROVERS,
              wave: str = WAVE, release: str = RELEASE) -> ApprovalCheck:
        self.fetch(wave, release)
        return approvals_for(self.mirror, INSTANCE, wave, release, policy=policy,
                             approvers=approvers)


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> Repo:
    return Repo(tmp_path, keys)


def ssh_policy(keys: Keys) -> VerifyPolicy:
    return VerifyPolicy(mode=VerifyMode.COMMIT, allowed_signers=keys.allowed_signers)


def gpg_policy(keys: Keys, mode: VerifyMode = VerifyMode.TAG) -> VerifyPolicy:
    return VerifyPolicy(mode=mode, allowed_signers=keys.allowed_signers, gpg_home=keys.keyring)


def reasons(check: ApprovalCheck) -> list[str]:
    return [a.reason for a in check.approvals]


def test_an_approval_signed_by_an_approver_counts(repo: Repo, keys: Keys) -> None:
    tag = repo.approve("alice", label="alice@example.org")
    check = repo.check(ssh_policy(keys))
    assert check.approved and not check.advisory
    (approval,) = check.approvals
    assert (approval.tag, approval.counts, approval.approver, approval.signer,
            approval.method) == (tag, True, "alice@example.org", "alice@example.org", "ssh")
    assert approval.key is not None and approval.key.startswith("SHA256:")
    assert check.approved_by == ("alice@example.org",)
    assert check.reason == f"approved by alice@example.org (tag {tag})"


def test_an_approval_by_a_trusted_signer_who_is_no_approver_does_not_count(
        repo: Repo, keys: Keys) -> None:
    tag = repo.approve("mallory")
    check = repo.check(ssh_policy(keys))
    assert not check.approved
    (approval,) = check.approvals
    assert not approval.counts and approval.signer == "mallory@example.org"
    assert approval.reason == (f"approval {tag} is signed by mallory@example.org, who is not "
                               "an approver of telemetry-eu")
    # what status says while the wave waits
    assert check.reason == ("no approval counts (reconciler approve telemetry-eu --wave "
                            f"canary --release 1.5.0): {approval.reason}")


def test_no_approver_listed_means_no_signed_approval_counts(repo: Repo, keys: Keys) -> None:
    repo.approve("alice")
    (approval,) = repo.check(ssh_policy(keys), approvers=()).approvals
    assert not approval.counts
    assert approval.reason.endswith("who is not an approver of telemetry-eu "
                                    "(spec.rollout.approvers lists nobody)")


@pytest.mark.parametrize(("who", "light", "expected"), [
    (None, False, "is not signed"),
    (None, True, "is a lightweight tag, which cannot be signed"),
    ("eve", False, "signed by unknown key SHA256:"),
    ("intruder", False, "signed by unknown key"),
])
def test_unsigned_and_unknown_signatures_do_not_count(repo: Repo, keys: Keys, who: str | None,
                                                      light: bool, expected: str) -> None:
    tag = repo.tag(who, approval_tag(INSTANCE, WAVE, RELEASE, "someone"), light=light)
    check = repo.check(gpg_policy(keys))
    assert not check.approved
    (approval,) = check.approvals
    assert approval.reason.startswith(f"approval {tag}") and expected in approval.reason
    assert expected in check.reason


def test_openpgp_approvers_match_by_fingerprint_or_email(repo: Repo, keys: Keys) -> None:
    repo.approve("release")
    fingerprint = keys.fingerprints["release"]
    spaced = " ".join(fingerprint[i:i + 4] for i in range(0, 40, 4)).lower()
    for approvers in ((fingerprint,), (spaced,), ("Release@Example.org",)):
        check = repo.check(gpg_policy(keys), approvers=approvers)
        assert check.approved, check.reason
        assert check.approvals[0].signer == "Release Key <release@example.org>"
        assert check.approvals[0].key == fingerprint
    check = repo.check(gpg_policy(keys), approvers=(keys.fingerprints["intruder"],
                                                     "intruder@example.org"))
    assert not check.approved
    assert "is signed by Release Key <release@example.org>, who is not an approver" \
        in check.reason


def test_approvals_for_another_release_or_wave_do_not_count(repo: Repo, keys: Keys) -> None:
    repo.approve("alice", release="1.4.0")
    repo.approve("alice", wave="eu")
    repo.fetch(release="1.4.0")
    repo.fetch(wave="eu")
    check = repo.check(ssh_policy(keys))
    assert not check.approved and check.approvals == ()
    assert check.reason == ("no approval yet (reconciler approve telemetry-eu --wave canary "
                            "--release 1.5.0)")
    assert repo.check(ssh_policy(keys), release="1.4.0").approved
    assert repo.check(ssh_policy(keys), wave="eu").approved


def test_a_signed_approval_copied_under_another_name_does_not_count(repo: Repo,
                                                                    keys: Keys) -> None:
    original = repo.approve("alice", wave="eu")
    # the signed tag object of wave eu, pushed as an approval of wave canary
    copied = approval_tag(INSTANCE, WAVE, RELEASE, "alice")
    run(["git", "update-ref", f"refs/tags/{copied}", f"refs/tags/{original}"], repo.work)
    (approval,) = repo.check(ssh_policy(keys)).approvals
    assert not approval.counts
    assert approval.reason == (f"approval {copied} is the signed tag {original} under another "
                               "name")


def test_with_verification_off_any_approval_tag_counts(repo: Repo) -> None:
    unsigned = repo.approve(None, label="bob")
    light = repo.tag(None, approval_tag(INSTANCE, WAVE, RELEASE, "carol"), light=True)
    check = repo.check(VerifyPolicy(), approvers=())
    assert check.approved and check.advisory
    assert [a.tag for a in check.approvals if a.counts] == sorted([unsigned, light])
    assert "verification is off" in check.approvals[0].reason


def test_one_good_approval_is_enough_and_the_others_are_explained(repo: Repo,
                                                                  keys: Keys) -> None:
    repo.approve("mallory")
    repo.approve(None, label="bob")
    repo.approve("alice")
    check = repo.check(ssh_policy(keys))
    assert check.approved and check.approved_by == ("alice@example.org",)
    assert len([r for r in reasons(check) if "not an approver" in r]) == 1
    assert len([r for r in reasons(check) if r.endswith("is not signed")]) == 1


def test_an_unusable_release_name_waits_with_the_reason(repo: Repo, keys: Keys) -> None:
    check = approvals_for(repo.mirror, INSTANCE, WAVE, "sha256:abc", policy=ssh_policy(keys),
                          approvers=APPROVERS)
    assert not check.approved and check.approvals == ()
    assert check.reason.startswith("release 'sha256:abc' cannot be part of a tag name")


def test_approvals_fetched_elsewhere_than_refs_tags_are_found(repo: Repo, keys: Keys) -> None:
    repo.approve("alice")
    into = "refs/reconciler/approvals"
    spec = approval_refspec(INSTANCE, WAVE, RELEASE, into=into)
    run(["git", "fetch", "-q", "--no-tags", str(repo.work), spec], repo.mirror)
    assert run(["git", "for-each-ref", "refs/tags"], repo.mirror) == ""
    check = approvals_for(repo.mirror, INSTANCE, WAVE, RELEASE, policy=ssh_policy(keys),
                          approvers=APPROVERS, refs=into)
    assert check.approved and check.approvals[0].tag == approval_tag(INSTANCE, WAVE, RELEASE,
                                                                     "alice")


def test_git_runs_once_to_list_and_twice_per_approval_found(repo: Repo, keys: Keys,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    repo.approve("mallory")
    repo.approve("alice")
    for release in ("1.3.0", "1.4.0"):  # fetched earlier, not looked at now
        repo.approve("alice", release=release)
        repo.fetch(release=release)
    repo.fetch()
    real = shutil.which("git")
    assert real is not None
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "git.log"
    (shim / "git").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    check = approvals_for(repo.mirror, INSTANCE, WAVE, RELEASE, policy=ssh_policy(keys),
                          approvers=APPROVERS)
    assert check.approved
    calls = log.read_text().splitlines()
    assert sum("for-each-ref" in c for c in calls) == 1
    assert len(calls) == 1 + 2 * 2, calls  # each tag: read it, verify it
