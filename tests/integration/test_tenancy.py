"""Tenancy at the site, with real signed commits: each new commit that touches a project's
paths must be signed by one of its members, as its parent declares them
(reconciler/gitops/tenancy.py, docs/tenancy.md).

The fleet (``tenancykit``) has three projects: the platform (``pat``) owns ``sites/`` and the
declarations; ``line-ops`` (alice, dave by SSH; olga, gus by OpenPGP) and ``quality`` (bob by
Ed25519 SSH, carol by ECDSA SSH) own their ``teams/<name>/`` directories.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.errors import VerificationError
from reconciler.core.loading import load_fleet
from reconciler.core.validation import validate_repository
from reconciler.gitops.tenancy import TenancyCheck, Violation, check_commits
from tests.integration.signkit import NEEDS_SIGNING_TOOLS
from tests.integration.tenancykit import People, Repo, fleet_files, made_people, project

pytestmark = NEEDS_SIGNING_TOOLS

LINE_OPS = "teams/line-ops/solution.yaml"
QUALITY = "teams/quality/solution.yaml"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    with made_people(tmp_path_factory.mktemp("people")) as made:
        yield made


@pytest.fixture
def repo(tmp_path: Path, people: People) -> Repo:
    made = Repo(tmp_path / "fleet", people)
    made.commit("pat", fleet_files(people), "the fleet")
    return made


def check(repo: Repo, old: str, new: str = "HEAD", **kw: bool) -> TenancyCheck:
    return check_commits(repo.path, old, repo.head(new), gpg_keyring=repo.people.keyring, **kw)


def edit(repo: Repo, path: str, text: str = "# changed\n") -> dict[str, str]:
    return {path: repo.read(path) + text}


def brief(found: TenancyCheck) -> list[tuple[str, str, str, str]]:
    return [(v.commit, v.path, v.project, v.signer.split(" ")[0]) for v in found.violations]


def test_the_fleet_validates(repo: Repo) -> None:
    report = validate_repository(repo.path)
    assert [d.format() for d in report.errors] == []
    assert sorted(report.fleet.projects) == ["line-ops", "platform", "quality"]


def test_a_team_changes_its_own_solution(repo: Repo) -> None:
    base = repo.head()
    repo.commit("alice", edit(repo, LINE_OPS))
    repo.commit("carol", edit(repo, QUALITY))  # ECDSA: checked by ssh-keygen
    repo.commit("olga", edit(repo, LINE_OPS))  # OpenPGP, key in the site's keyring
    found = check(repo, base)
    assert found.commits == 3 and found.violations == () and found.ok
    assert found.blocked_instances(load_fleet(repo.path).fleet) == {}


def test_a_team_changes_another_teams_solution(repo: Repo, people: People) -> None:
    base = repo.head()
    ok = repo.commit("alice", edit(repo, LINE_OPS))
    bad = repo.commit("bob", edit(repo, LINE_OPS))
    repo.commit("bob", edit(repo, QUALITY))
    found = check(repo, base)
    assert brief(found) == [(bad, LINE_OPS, "line-ops", "bob")]
    violation = found.violations[0]
    assert violation.signer.startswith("bob (SHA256:")
    assert "who is not a member of project 'line-ops'" in violation.reason
    assert violation.describe().startswith(f"commit {bad[:12]} changes {LINE_OPS} of project "
                                           "line-ops: signed by bob (SHA256:")
    assert not found.ok and found.blocked_projects == {"line-ops"}
    assert not found.blocks_everything
    blocked = found.blocked_instances(load_fleet(repo.path).fleet)
    assert set(blocked) == {"line-ops-app"}  # quality's instance carries on
    assert check(repo, ok, ok).violations == ()


def test_the_platform_changes_the_hierarchy_but_not_a_teams_paths(repo: Repo) -> None:
    base = repo.head()
    repo.commit("pat", edit(repo, "sites/eu.yaml"))
    assert check(repo, base).ok
    bad = repo.commit("pat", edit(repo, QUALITY))
    found = check(repo, base)
    assert brief(found) == [(bad, QUALITY, "quality", "pat")]
    assert "platform members sign fleet-level files and declarations, not a project's own " \
           "paths" in found.violations[0].reason


def test_a_team_member_cannot_change_the_hierarchy(repo: Repo) -> None:
    base = repo.head()
    bad = repo.commit("alice", edit(repo, "sites/eu.yaml"))
    found = check(repo, base)
    assert brief(found) == [(bad, "sites/eu.yaml", "platform", "alice")]
    assert found.blocks_everything
    assert set(found.blocked_instances(load_fleet(repo.path).fleet)) == {"line-ops-app",
                                                                         "quality-app"}


def test_unsigned_and_unknown_signers(repo: Repo, people: People) -> None:
    base = repo.head()
    unsigned = repo.commit(None, edit(repo, LINE_OPS))
    gus = repo.commit("gus", edit(repo, LINE_OPS))  # a member, but the site lacks his key
    eve = repo.commit("eve", {"teams/line-ops/new.txt": "x\n"})
    found = check(repo, base)
    assert brief(found) == [(unsigned, LINE_OPS, "line-ops", "unsigned"),
                            (gus, LINE_OPS, "line-ops", people.fingerprints["gus"][-16:]),
                            (eve, "teams/line-ops/new.txt", "line-ops", "SHA256:" +
                             found.violations[2].signer.split(":", 1)[1])]
    assert found.violations[0].reason == "the commit is not signed"
    assert "signed by unknown key" in found.violations[1].reason
    assert "not a member of project 'line-ops'" in found.violations[2].reason


def test_an_unsigned_merge_of_signed_commits(repo: Repo) -> None:
    base = repo.head()
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("alice", edit(repo, LINE_OPS, "# feature\n"))
    repo.git("checkout", "-q", "main")
    repo.commit("bob", edit(repo, QUALITY))
    repo.git("merge", "-q", "--no-ff", "--no-gpg-sign", "-m", "merge feature", "feature")
    found = check(repo, base)
    assert found.commits == 3 and found.violations == ()
    strict = check(repo, base, signed_merges=True)
    merge = repo.head()
    assert brief(strict) == [(merge, LINE_OPS, "line-ops", "unsigned")]
    assert strict.violations[0].reason.startswith("merges must be signed")


def test_an_unsigned_merge_that_resolves_a_conflict(repo: Repo) -> None:
    base = repo.head()
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("alice", edit(repo, LINE_OPS, "# theirs\n"))
    repo.git("checkout", "-q", "main")
    repo.commit("dave", edit(repo, LINE_OPS, "# ours\n"))
    merge = _merge_with(repo, "feature", {LINE_OPS: repo.read(LINE_OPS) + "# resolved\n"})
    found = check(repo, base)
    assert brief(found) == [(merge, LINE_OPS, "line-ops", "unsigned")]
    assert found.violations[0].reason.startswith("the merge writes it itself")
    signed = _merge_with(repo, "feature", {LINE_OPS: repo.read(LINE_OPS) + "# again\n"},
                         who="alice")
    assert all(v.commit != signed for v in check(repo, base).violations)


def _merge_with(repo: Repo, branch: str, files: dict[str, str], who: str | None = None) -> str:
    """A merge of ``branch`` into HEAD whose tree is HEAD's with ``files`` written."""
    for rel, text in files.items():
        (repo.path / rel).write_text(text)
    repo.git("add", "-A")
    tree = repo.git("write-tree")
    sign = ["-S"] if who else ["--no-gpg-sign"]
    commit = repo.git("commit-tree", *sign, "-p", "HEAD", "-p", branch, "-m", "merge", tree,
                      who=who)
    repo.git("update-ref", "refs/heads/main", commit)
    return commit


def test_a_merge_that_undoes_the_mainline_with_an_old_version(repo: Repo) -> None:
    base = repo.head()
    old_text = repo.read(LINE_OPS)
    repo.commit("alice", edit(repo, LINE_OPS))
    merge = _merge_with(repo, base, {LINE_OPS: old_text})
    found = check(repo, base)
    assert brief(found) == [(merge, LINE_OPS, "line-ops", "unsigned")]
    assert found.violations[0].reason.startswith("the merge takes a version that none of the "
                                                 "commits it brings in wrote")


def test_a_key_added_and_used_in_one_commit(repo: Repo, people: People) -> None:
    base = repo.head()
    added = project(people, "line-ops", ["alice", "dave", "olga", "gus", "eve"])
    bad = repo.commit("eve", {"projects/line-ops.yaml": added, **edit(repo, LINE_OPS)})
    later = repo.commit("eve", edit(repo, LINE_OPS))  # the unauthorised declaration is ignored
    found = check(repo, base)
    assert brief(found) == [(bad, "projects/line-ops.yaml", "platform", "SHA256:" +
                             found.violations[0].signer.split(":", 1)[1]),
                            (bad, LINE_OPS, "line-ops", found.violations[1].signer),
                            (later, LINE_OPS, "line-ops", found.violations[2].signer)]
    assert "becomes a member of project 'line-ops' only in this commit (a commit never " \
           "authorises itself)" in found.violations[1].reason
    assert found.blocks_everything


def test_a_member_added_by_the_platform_signs_afterwards(repo: Repo, people: People) -> None:
    base = repo.head()
    added = project(people, "line-ops", ["alice", "dave", "olga", "gus", "eve"])
    repo.commit("pat", {"projects/line-ops.yaml": added})
    repo.commit("eve", edit(repo, LINE_OPS))
    assert check(repo, base).violations == ()


def test_a_member_removed_before_the_merge_no_longer_counts(repo: Repo,
                                                            people: People) -> None:
    base = repo.head()
    repo.git("checkout", "-q", "-b", "feature")
    written = repo.commit("dave", edit(repo, LINE_OPS))
    repo.git("checkout", "-q", "main")
    repo.commit("pat", {"projects/line-ops.yaml": project(people, "line-ops",
                                                           ["alice", "olga", "gus"])})
    repo.git("merge", "-q", "--no-ff", "--no-gpg-sign", "-m", "merge feature", "feature")
    found = check(repo, base)
    merge = repo.head()
    assert brief(found) == [(written, LINE_OPS, "line-ops", "dave")]
    assert found.violations[0].merge == merge
    assert f"where merge {merge[:12]} brings the commit in" in found.violations[0].reason


def test_a_revert_resolves_a_violation(repo: Repo) -> None:
    base = repo.head()
    before = repo.read(QUALITY)
    repo.commit("alice", edit(repo, QUALITY))
    assert not check(repo, base).ok
    repo.commit("bob", {QUALITY: before})
    found = check(repo, base)
    assert len(found.violations) == 1 and found.violations[0].resolved
    assert found.ok and found.blocked_instances(load_fleet(repo.path).fleet) == {}
    repo.commit("bob", edit(repo, QUALITY, "# after the revert\n"))  # builds on it
    assert check(repo, base).ok
    partly = repo.commit("eve", edit(repo, QUALITY, "# eve again\n"))
    repo.commit("bob", edit(repo, QUALITY, "# bob on top\n"))  # not a revert: still blocked
    assert [v.commit for v in check(repo, base).blocking] == [partly]
    pats = repo.commit("pat", {QUALITY: before})  # a revert by someone not allowed: no
    assert [v.commit for v in check(repo, base).blocking] == [partly, pats]
    added = repo.commit("eve", {"teams/quality/extra.txt": "x\n"})
    repo.commit("bob", {"teams/quality/extra.txt": None})
    assert (added, True) in [(v.commit, v.resolved) for v in check(repo, base).violations]


def test_roles_of_a_project(repo: Repo, people: People) -> None:
    roles = {"solutions": ["alice"], "parameters": [{"members": ["dave"], "levels": ["instance"]}]}
    repo.commit("pat", {"projects/line-ops.yaml": project(people, "line-ops", roles=roles)})
    base = repo.head()
    instance = "teams/line-ops/instance.yaml"
    repo.commit("alice", edit(repo, LINE_OPS))  # alice writes solutions
    repo.commit("dave", {instance: repo.read(instance) + "  params: {port: 1}\n"})
    repo.commit("alice", {instance: repo.read(instance).replace("[t1]", "[t1, t2]")})
    assert check(repo, base).violations == ()
    solution = repo.commit("dave", edit(repo, LINE_OPS))
    template = repo.commit("dave", {"teams/line-ops/conf.tmpl": "x\n"})
    params = repo.commit("alice", {instance: repo.read(instance).replace("port: 1", "port: 2")})
    found = check(repo, base)
    assert brief(found) == [(solution, LINE_OPS, "line-ops", "dave"),
                            (template, "teams/line-ops/conf.tmpl", "line-ops", "dave"),
                            (params, instance, "line-ops", "alice")]
    assert [v.reason for v in found.violations] == [
        "dave may not change project 'line-ops''s solutions (roles.solutions: alice)",
        "dave may not change project 'line-ops''s solutions (roles.solutions: alice)",
        "alice may not set project 'line-ops''s parameters on instances (roles.parameters at "
        "level instance: dave)"]


def test_no_projects_no_tenancy(tmp_path: Path, people: People) -> None:
    repo = Repo(tmp_path / "plain", people)
    base = repo.commit(None, {"a.txt": "1\n"})
    repo.commit(None, {"a.txt": "2\n"})
    found = check(repo, base)
    assert found.commits == 1 and found.ok and found.violations == ()


def test_projects_declared_in_the_range_count_from_then_on(tmp_path: Path,
                                                           people: People) -> None:
    repo = Repo(tmp_path / "late", people)
    base = repo.commit(None, {"a.txt": "1\n"})
    repo.commit(None, fleet_files(people))  # no declarations at its parent: no tenancy yet
    bad = repo.commit(None, edit(repo, LINE_OPS))
    assert brief(check(repo, base)) == [(bad, LINE_OPS, "line-ops", "unsigned")]
    assert check_commits(repo.path, None, bad).violations[0].commit == bad


def test_a_rename_asks_both_owners(repo: Repo) -> None:
    base = repo.head()
    (repo.path / "teams/line-ops/solution.yaml").rename(repo.path / "teams/quality/moved.yaml")
    bad = repo.commit("alice")
    found = check(repo, base)
    assert brief(found) == [(bad, "teams/quality/moved.yaml", "quality", "alice")]


def test_bad_revisions_are_a_verification_error(repo: Repo) -> None:
    with pytest.raises(VerificationError):
        check_commits(repo.path, "--all", repo.head())
    with pytest.raises(VerificationError):
        check_commits(repo.path, "0" * 40, repo.head())


def test_violations_are_values() -> None:
    v = Violation("c" * 40, "p", "proj", "unsigned", "the commit is not signed")
    assert v.describe() == f"commit {'c' * 12} changes p of project proj: the commit is not " \
                           "signed"
