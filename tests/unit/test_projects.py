"""Project values: the document as the loader builds it, path ownership, roles, and the site
policy narrowed to a project (reconciler/core/projects.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.loading import load_fleet
from reconciler.core.model import Source
from reconciler.core.projects import (
    NO_PLATFORM,
    Member,
    Ownership,
    ParameterRole,
    Project,
    glob_problem,
    normalize_ssh_key,
    project_policy,
)
from reconciler.core.provider_api import LocalPolicy
from tests.unit.checkkit import SETTINGS

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZ3lGn1H5y2V2mO3mB2LJ8fZ7yX9zJ3i1m1m1m1m1m1"
       " alice@laptop")
FPR = "7D45392F6C5A398D2D16C869044EFC4376C9DCDB"
SRC = Source("projects/p.yaml", 1)

PROJECTS = f"""\
apiVersion: reconciler/v1
kind: Project
metadata: {{name: platform}}
spec:
  platform: true
  paths: [sites/**]
  members:
    - {{name: root, openpgp: "{FPR[:20]} {FPR[20:]}"}}
---
apiVersion: reconciler/v1
kind: Project
metadata: {{name: line-ops, labels: {{team: ops}}}}
spec:
  paths: [teams/line-ops/**]
  sites: [eu]
  providers: [file]
  namespaces: [line-ops]
  fileRoots: [/srv/line-ops]
  members:
    - name: alice
      ssh: "{KEY}"
    - {{name: bob, openpgp: [{FPR}]}}
  roles:
    solutions: [alice]
    parameters:
      - {{members: [bob], levels: [line, instance]}}
    approvers: [alice]
"""


def test_the_loader_builds_projects(tmp_path: Path) -> None:
    (tmp_path / "reconciler.yaml").write_text(SETTINGS)
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "all.yaml").write_text(PROJECTS)
    loaded = load_fleet(tmp_path)
    assert [d.format() for d in loaded.diagnostics] == []
    projects = loaded.fleet.projects
    assert sorted(projects) == ["line-ops", "platform"]
    ops = projects["line-ops"]
    assert ops.labels == {"team": "ops"}
    assert ops.paths == ("teams/line-ops/**",)
    assert ops.sites == ("eu",) and ops.providers == frozenset({"file"})
    assert ops.namespaces == frozenset({"line-ops"}) and ops.file_roots == ("/srv/line-ops",)
    assert ops.solution_authors == ("alice",) and ops.approvers == ("alice",)
    assert ops.parameter_roles == (ParameterRole(("bob",), ("line", "instance")),)
    assert ops.source.path == "projects/all.yaml"
    alice = ops.member("alice")
    assert alice is not None and alice.ssh_keys == {" ".join(KEY.split()[:2])}
    assert projects["platform"].platform and projects["platform"].sites is None
    assert projects["platform"].members[0].fingerprints == {FPR}


def test_a_project_with_a_misspelled_field_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / "reconciler.yaml").write_text(SETTINGS)
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "p.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Project\nmetadata: {name: p}\n"
        "spec:\n  path: [a/**]\n")
    loaded = load_fleet(tmp_path)
    assert not loaded.fleet.projects
    assert any("spec.path" in d.format() and "unknown field" in d.message
               for d in loaded.diagnostics), [d.format() for d in loaded.diagnostics]


def _project(name: str, *paths: str, platform: bool = False, **kw: object) -> Project:
    return Project(name, SRC, platform=platform, paths=paths, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("glob", "path", "owned"), [
    ("teams/a/**", "teams/a/s/solution.yaml", True),
    ("teams/a/**", "teams/a", True),
    ("teams/a/**", "teams/ab/x.yaml", False),
    ("teams/a", "teams/a/deep/x.yaml", True),  # a directory owns what is under it
    ("teams/a/", "teams/a/x.yaml", True),
    ("teams/*/apps", "teams/b/apps/x.yaml", True),
    ("teams/*", "teams/b/apps/x.yaml", True),
    ("*.yaml", "top.yaml", True),
    ("*.yaml", "dir/top.yaml", False),
    ("**/*.tmpl", "a/b/c.tmpl", True),
    ("**/*.tmpl", "c.tmpl", True),
    ("a/**/z.yaml", "a/z.yaml", True),
    ("a/**/z.yaml", "a/b/c/z.yaml", True),
    ("a/?.yaml", "a/b.yaml", True),
    ("a/?.yaml", "a/bc.yaml", False),
    ("a.b/[x]", "a.b/[x]", True),  # no character classes: brackets are literal
    ("/abs/**", "abs/x", False),  # malformed: owns nothing
])
def test_globs(glob: str, path: str, owned: bool) -> None:
    assert _project("p", glob).claims(path) is owned


def test_glob_problems() -> None:
    assert glob_problem("teams/a/**") is None
    assert glob_problem("/etc/**") is not None
    assert glob_problem("teams/../x") is not None


def test_ownership() -> None:
    own = Ownership({"platform": _project("platform", "sites/**", platform=True),
                     "a": _project("a", "teams/a/**"), "b": _project("b", "teams/**")})
    assert own.active and own.platform == "platform"
    assert own.owners("reconciler.yaml") == ("platform",)
    assert own.owners("projects/a.yaml") == ("platform",)
    assert own.owners("sites/eu.yaml") == ("platform",)
    assert own.owners("README.md") == ("platform",)  # claimed by none: the platform's
    assert own.owners("teams/a/x.yaml") == ("a", "b")  # an overlap: both
    assert own.owners("teams/c/x.yaml") == ("b",)
    assert own.project_of("teams/c/x.yaml") is own.projects["b"]
    assert own.project_of("teams/a/x.yaml") is None
    assert Ownership({}).owners("teams/a/x.yaml") == ()
    assert not Ownership({}).active
    assert Ownership({"a": _project("a", "x/**")}).owners("reconciler.yaml") == (NO_PLATFORM,)


def test_members_and_roles() -> None:
    project = Project("p", SRC, members=(Member("alice", (KEY, "not a key")),
                                         Member("bob", (), (FPR.lower(), "ABCD"))),
                      solution_authors=("alice",),
                      parameter_roles=(ParameterRole(("bob",), ("line",)),),
                      approvers=("alice",))
    blob = normalize_ssh_key(KEY)
    assert blob is not None and blob == " ".join(KEY.split()[:2])
    assert project.member_by_key(ssh_key=blob) is project.members[0]
    assert project.member_by_key(fingerprints=[FPR]) is project.members[1]
    assert project.member_by_key(fingerprints=["ABCD"]) is None
    assert project.may_author_solutions("alice") and not project.may_author_solutions("bob")
    assert project.may_set_parameters("bob", "line")
    assert not project.may_set_parameters("bob", "instance")
    assert not project.may_set_parameters("alice", "line")
    assert project.parameter_levels == {"line"}
    assert project.may_approve("alice") and not project.may_approve("bob")
    assert not project.may_approve("carol")
    free = Project("q", SRC, members=(Member("carol"),))
    assert free.may_author_solutions("carol") and free.may_set_parameters("carol", "x")
    assert free.parameter_levels is None and free.may_approve("carol")


def test_ssh_keys_must_be_what_they_say() -> None:
    assert normalize_ssh_key("ssh-rsa " + KEY.split()[1]) is None  # the blob says ed25519
    assert normalize_ssh_key("ssh-ed25519 !!!") is None
    assert normalize_ssh_key("ssh-dss AAAA") is None


def test_the_site_policy_narrowed_to_a_project(tmp_path: Path) -> None:
    site = LocalPolicy(allowed_providers=frozenset({"file", "script"}),
                       file_roots=(tmp_path / "srv",), namespaces=None, base_dir=tmp_path)
    project = Project("p", SRC, providers=frozenset({"file", "kubernetes"}),
                      namespaces=frozenset({"ops"}),
                      file_roots=(str(tmp_path / "srv" / "ops"), "/etc", "srv/rel"))
    narrowed = project_policy(site, project)
    assert narrowed.allowed_providers == {"file"}
    assert narrowed.namespaces == {"ops"}
    assert narrowed.file_roots == (tmp_path / "srv" / "ops", tmp_path / "srv" / "rel")
    assert project_policy(site, Project("free", SRC)) == site
