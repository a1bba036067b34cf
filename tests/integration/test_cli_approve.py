"""``reconciler approve`` through the installed command, against a real fleet repository.

The working copy signs with alice's SSH key (repository config ``gpg.format=ssh``,
``user.signingkey``), as an approver would have it set up; the approval it makes is then
read back the way a daemon reads it (:func:`approvals_for`, the site's allowed signers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops.approvals import approvals_for
from reconciler.gitops.verification import VerifyMode, VerifyPolicy
from tests.integration.fleetkit import (
    FleetRepo,
    file_component,
    git,
    instance,
    reconciler,
    settings,
    site,
    solution,
    target,
)
from tests.integration.signkit import NEEDS_SIGNING_TOOLS, Keys, made_keys

pytestmark = NEEDS_SIGNING_TOOLS

TAG = "reconciler-approval/telemetry-eu/canary/1.5.0/admin@example.net"
APPROVERS = ["alice@example.org"]
ROLLOUT = {"approvers": APPROVERS,
           "waves": [{"name": "canary", "names": ["gw-1"], "approval": True},
                     {"name": "eu", "share": "10%"}]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with made_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> FleetRepo:
    fleet = FleetRepo.from_docs(tmp_path / "fleet", {
        "reconciler.yaml": settings(("region", "plant")),
        "sites.yaml": [site("eu"), site("berlin", "eu")],
        "targets.yaml": [target("gw-1", "berlin"), target("gw-2", "berlin")],
        "solutions/telemetry.yaml": solution("telemetry-agent", [
            file_component("conf", "agent.conf", "level: info\n")]),
        "instances.yaml": [
            instance("telemetry-eu", "telemetry-agent", names=["gw-1", "gw-2"],
                     version="1.5.0", rollout=ROLLOUT),
            instance("telemetry-lab", "telemetry-agent", names=["gw-2"])],
    })
    for key, value in keys.config("alice").items():
        git(fleet.work, "config", key, value)
    return fleet


def approve(repo: FleetRepo, *args: str) -> tuple[int, str, str]:
    done = reconciler("approve", "--repo", str(repo.work), *args)
    return done.returncode, done.stdout, done.stderr


def test_approve_tags_a_signed_approval_that_a_daemon_counts(repo: FleetRepo,
                                                             keys: Keys) -> None:
    code, out, err = approve(repo, "telemetry-eu", "--wave", "canary")
    assert code == 0, err
    assert f"tagged {TAG} at {repo.head()[:12]} (signed)" in out
    assert f"git push origin refs/tags/{TAG}" in out
    assert git(repo.work, "cat-file", "-t", f"refs/tags/{TAG}") == "tag"
    message = git(repo.work, "tag", "-l", "--format=%(contents:body)", TAG)
    for line in ("Instance: telemetry-eu", "Wave: canary", "Release: 1.5.0",
                 "Approved-by: fleet admin <admin@example.net>"):
        assert line in message
    assert git(repo.work, "tag", "-l", "--format=%(contents:subject)", TAG) == \
        "Approve release 1.5.0 of telemetry-eu for wave canary"
    policy = VerifyPolicy(mode=VerifyMode.COMMIT, allowed_signers=keys.allowed_signers)
    check = approvals_for(Path(repo.work, ".git"), "telemetry-eu", "canary", "1.5.0",
                          policy=policy, approvers=APPROVERS)
    assert check.approved, check.reason
    assert check.approved_by == ("alice@example.org",)


def test_approve_pushes_with_push_and_refuses_a_second_approval(repo: FleetRepo) -> None:
    code, out, err = approve(repo, "telemetry-eu", "--wave", "eu", "--release", "1.6.0",
                             "--as", "alice", "-m", "change CHG-42", "--push", repo.url)
    assert code == 0, err
    tag = "reconciler-approval/telemetry-eu/eu/1.6.0/alice"
    assert f"pushed {tag} to {repo.url}" in out
    assert git(repo.remote, "cat-file", "-t", f"refs/tags/{tag}") == "tag"
    assert "change CHG-42" in git(repo.work, "tag", "-l", "--format=%(contents)", tag)
    # a note when the wave needs no approval
    assert "wave eu of telemetry-eu does not require approval" in err
    code, _, err = approve(repo, "telemetry-eu", "--wave", "eu", "--release", "1.6.0",
                           "--as", "alice")
    assert code == 1
    assert f"Error: {tag} already exists" in err


def test_approve_unsigned_with_no_sign(repo: FleetRepo) -> None:
    code, out, err = approve(repo, "telemetry-eu", "--wave", "canary", "--no-sign")
    assert code == 0, err
    assert "(unsigned)" in out
    assert "counts only at sites with verification off" in err
    assert "BEGIN" not in git(repo.work, "cat-file", "tag", f"refs/tags/{TAG}")


@pytest.mark.parametrize(("args", "expected"), [
    (["telemetry", "--wave", "canary"],
     "no Instance/telemetry in the repository at HEAD (did you mean telemetry-eu, "
     "telemetry-lab?)"),
    (["telemetry-eu", "--wave", "canry"],
     "Instance/telemetry-eu has no wave 'canry' (its waves: canary, eu, rest)"),
    (["telemetry-lab", "--wave", "canary"],
     "Instance/telemetry-lab has no spec.rollout, so no wave to approve"),
    (["telemetry-lab", "--wave", "rest", "--release", "1.0.0"],
     "Instance/telemetry-lab has no spec.rollout, so no wave to approve"),
    (["telemetry-eu", "--wave", "canary", "--release", "sha256:ab"],
     "release 'sha256:ab' cannot be part of a tag name"),
])
def test_approve_names_what_is_wrong(repo: FleetRepo, args: list[str], expected: str) -> None:
    code, _, err = approve(repo, *args)
    assert code == 2, err
    assert expected in err
    assert git(repo.work, "tag", "-l") == ""


def test_approve_says_what_is_wrong_with_the_rollout_at_head(repo: FleetRepo) -> None:
    repo.replace("instances.yaml", "share: 10%", "share: 0%")
    repo.commit("a share of nothing")
    code, _, err = approve(repo, "telemetry-eu", "--wave", "canary")
    assert code == 2
    assert ("Instance/telemetry-eu has no spec.rollout, so no wave to approve "
            "(instances.yaml:") in err
    assert "spec.rollout.waves[1].share: must be more than 0%" in err


def test_approve_needs_a_release_when_the_instance_pins_none(repo: FleetRepo) -> None:
    repo.replace("instances.yaml", "  version: 1.5.0\n", "")
    repo.commit("telemetry-eu follows the tracked ref")
    code, _, err = approve(repo, "telemetry-eu", "--wave", "canary")
    assert code == 2
    assert "Instance/telemetry-eu pins no spec.version at HEAD: give --release" in err
