"""reconciler.core.checks.projects, run directly on the small fleet of checkkit with projects
declared: each bound a project can break is an error naming the file, the project and the
bound; no projects declared means no tenancy."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.projects import ProjectChecks, check_projects
from reconciler.core.loading import load_fleet
from reconciler.core.validation import validate_repository
from tests.unit.checkkit import INSTANCES, SITES, TARGETS, Edit, lines, render, write

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZ3lGn1H5y2V2mO3mB2LJ8fZ7yX9zJ3i1m1m1m1m1m1 a@b"
PLATFORM = f"""\
apiVersion: reconciler/v1
kind: Project
metadata: {{name: platform}}
spec:
  platform: true
  paths: [sites.yaml, targets.yaml]
  members:
    - {{name: root, ssh: "{KEY}"}}
"""
APPS = f"""\
apiVersion: reconciler/v1
kind: Project
metadata: {{name: apps}}
spec:
  paths: [solutions/**, instances.yaml]
  sites: [eu]
  providers: [file]
  fileRoots: [/srv]
  members:
    - {{name: alice, ssh: "{KEY}"}}
"""
OTHER = f"""\
apiVersion: reconciler/v1
kind: Project
metadata: {{name: other}}
spec:
  paths: [other/**]
  sites: [eu]
  members:
    - {{name: bob, ssh: "{KEY}"}}
"""
ASIA = """\
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: asia}
spec: {}
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: l2}
spec:
  parent: asia
"""
T2 = """\
---
apiVersion: reconciler/v1
kind: Target
metadata: {name: t2}
spec:
  site: l2
  bindings:
    - {role: config-file, provider: file, config: {root: /srv/t2}}
"""
DECLARED = {"projects/platform.yaml": PLATFORM, "projects/apps.yaml": APPS}


def check(tmp_path: Path, edits: list[Edit] = (),  # type: ignore[assignment]
          files: dict[str, str] | None = None, *, declared: bool = True) -> list[str]:
    """The findings of both project checks (documents, then every rendered placement)."""
    repo = write(tmp_path / "repo", edits, {**(DECLARED if declared else {}), **(files or {})})
    loaded = load_fleet(repo.resolve())
    assert [d.format() for d in loaded.diagnostics if d.is_error] == []
    findings = Findings()
    check_projects(loaded.fleet, loaded.manifest_files, findings)
    checks = ProjectChecks(loaded.fleet, findings)
    for placement in render(loaded.fleet).pairs:
        checks.check_placement(placement)
    return lines(findings)


def test_a_fleet_within_its_projects_bounds_is_clean(tmp_path: Path) -> None:
    assert check(tmp_path) == []


def test_no_projects_no_tenancy(tmp_path: Path) -> None:
    assert check(tmp_path, [("sites.yaml", "spec:\n  parent: eu", "spec:\n  parent: eu")],
                 {"other/x.yaml": ASIA}, declared=False) == []


def test_the_whole_validation_runs_the_project_checks(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", [], {**DECLARED, "stray.yaml": T2.replace("l2", "l1")})
    report = validate_repository(repo)
    assert "stray.yaml: not owned by any project" in "\n".join(
        d.format() for d in report.errors)


def test_files_owned_by_no_project_or_by_two(tmp_path: Path) -> None:
    found = check(tmp_path, [], {
        "extra/site.yaml": ASIA,
        "projects/other.yaml": OTHER.replace("other/**", "solutions/app/**")})
    assert found == [
        "extra/site.yaml: not owned by any project: add a glob matching it to one project's "
        "spec.paths (the platform project's for fleet-level files)",
        "solutions/app/solution.yaml: owned by several projects (apps, other): a path "
        "belongs to one project",
    ]


def test_declarations_live_under_projects_and_one_is_the_platform(tmp_path: Path) -> None:
    found = check(tmp_path, [], {
        "projects/platform.yaml": PLATFORM.replace("platform: true", "platform: false"),
        "solutions/app/project.yaml": OTHER.replace("paths: [other/**]",
                                                    "paths: [other/**, '**']")})
    several = "owned by several projects ({}): a path belongs to one project"
    assert found == [
        "instances.yaml: " + several.format("apps, other"),
        "projects/apps.yaml:1: Project/apps: spec.platform: no project is the platform "
        "(spec.platform: true): the fleet-level files (reconciler.yaml, projects/, the "
        "hierarchy) have no owner",
        "sites.yaml: " + several.format("other, platform"),
        "solutions/app/project.yaml: " + several.format("apps, other"),
        "solutions/app/project.yaml:1: Project/other: a Project is declared under projects/ "
        "at the repository root, where every site reads the declarations from",
        "solutions/app/project.yaml:5: Project/other: spec.paths[1]: '**' claims fleet-level "
        "files (reconciler.yaml, projects/), which belong to the platform project",
        "solutions/app/solution.yaml: " + several.format("apps, other"),
        "targets.yaml: " + several.format("other, platform"),
    ]


def test_two_platforms(tmp_path: Path) -> None:
    found = check(tmp_path, [], {"projects/other.yaml": OTHER.replace(
        "spec:\n", "spec:\n  platform: true\n")})
    assert found == ["projects/platform.yaml:5: Project/platform: spec.platform: only one "
                     "project may be the platform (other is already)"]


def test_members_roles_and_sites_of_a_declaration(tmp_path: Path) -> None:
    apps = APPS.replace("sites: [eu]", "sites: [eu, mars]").replace(
        f"- {{name: alice, ssh: \"{KEY}\"}}",
        f"- {{name: alice, ssh: \"{KEY}\"}}\n"
        "    - {name: alice, openpgp: ABCD}\n"
        "    - {name: carl, ssh: [\"ssh-ed25519 AAAA\"]}\n"
        "    - {name: dora, openpgp: 7D45392F6C5A398D2D16C869044EFC4376C9DCDB}\n"
        "  roles:\n"
        "    solutions: [alice, alicia]\n"
        "    parameters:\n"
        "      - {members: [dora], levels: [line, shelf]}\n"
        "    approvers: [zed]")
    assert check(tmp_path, [], {"projects/apps.yaml": apps}) == [
        "projects/apps.yaml:6: Project/apps: spec.sites[1]: unknown site 'mars'",
        "projects/apps.yaml:11: Project/apps: spec.members[1].name: member 'alice' is "
        "declared twice",
        "projects/apps.yaml:11: Project/apps: spec.members[1].openpgp: 'ABCD' is not an "
        "OpenPGP fingerprint (40 hexadecimal digits, or 64 for a version 5 key; a short key "
        "id is not enough)",
        "projects/apps.yaml:12: Project/apps: spec.members[2].ssh: 'ssh-ed25519 AAAA' is "
        "not an SSH public key (expected '<type> <base64> [comment]' with a type among "
        "ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, "
        "sk-ecdsa-sha2-nistp256@openssh.com, sk-ssh-ed25519@openssh.com, ssh-ed25519, "
        "ssh-rsa)",
        "projects/apps.yaml:15: Project/apps: spec.roles.solutions[1]: unknown member "
        "'alicia' (did you mean 'alice'?)",
        "projects/apps.yaml:17: Project/apps: spec.roles.parameters[0].levels[1]: unknown "
        "level 'shelf' (levels: region, line, instance, target)",
        "projects/apps.yaml:18: Project/apps: spec.roles.approvers[0]: unknown member 'zed'",
    ]


def test_fleet_level_documents_belong_to_the_platform(tmp_path: Path) -> None:
    found = check(tmp_path, [], {"solutions/app/site.yaml": ASIA.replace("l2", "l3")})
    assert found == [
        f"solutions/app/site.yaml:{line}: Site/{name}: Site/{name} is fleet-level and belongs "
        "to the platform project, but its file is owned by project 'apps'"
        for line, name in ((2, "asia"), (7, "l3"))]


WIDER = {"sites.yaml": SITES + ASIA, "targets.yaml": TARGETS + T2}


def test_an_instance_targeting_sites_outside_its_project(tmp_path: Path) -> None:
    found = check(tmp_path, [("instances.yaml", "names: [t1]",
                              "names: [t1, t2]\n    selector: {sites: [asia]}")], WIDER)
    assert found == [
        "instances.yaml:6: Instance/app: spec.targets: target 't2' is at site 'asia/l2', "
        "outside project 'apps''s sites (eu) [t2/app]",
        "instances.yaml:7: Instance/app: spec.targets.names[1]: target 't2' is at site "
        "'asia/l2', outside project 'apps''s sites (eu) [/app]",
        "instances.yaml:8: Instance/app: spec.targets.selector.sites[0]: site 'asia' is "
        "outside project 'apps''s sites (eu) [/app]",
    ]


def test_a_label_selector_reaching_outside_is_caught_per_target(tmp_path: Path) -> None:
    found = check(tmp_path, [("instances.yaml", "names: [t1]",
                              "selector: {matchLabels: {kind: box}}")],
                  {"sites.yaml": SITES + ASIA,
                   "targets.yaml": (TARGETS + T2).replace("}\nspec:", ", labels: {kind: box}}"
                                                          "\nspec:")})
    assert found == ["instances.yaml:6: Instance/app: spec.targets: target 't2' is at site "
                     "'asia/l2', outside project 'apps''s sites (eu) [t2/app]"]


def test_bindings_outside_the_providers_namespaces_and_file_roots(tmp_path: Path) -> None:
    apps = APPS.replace("providers: [file]", "providers: [script]\n  namespaces: [apps]")
    found = check(tmp_path, [("targets.yaml", "config: {root: /srv/t1}",
                              "config: {root: /var/t1, namespace: kube-system}")],
                  {"projects/apps.yaml": apps})
    binding = "instances.yaml:6: Instance/app: spec.targets: binding 'config-file' of target "
    assert found == [
        binding + "'t1' uses file root '/var/t1', outside project 'apps''s fileRoots (/srv) "
        "[t1/app]",
        binding + "'t1' uses namespace 'kube-system', outside project 'apps''s namespaces "
        "(apps) [t1/app]",
        binding + "'t1' uses provider 'file', outside project 'apps''s providers (script) "
        "[t1/app]",
    ]


def test_a_namespace_in_component_properties_is_bounded_too(tmp_path: Path) -> None:
    apps = APPS.replace("providers: [file]", "providers: [file]\n  namespaces: [apps]")
    found = check(tmp_path, [("solutions/app/solution.yaml", "path: app/conf.txt",
                              "path: app/conf.txt\n        namespace: other")],
                  {"projects/apps.yaml": apps})
    assert found == [
        "instances.yaml:6: Instance/app: spec.targets: component 'conf' uses namespace "
        "'other', outside project 'apps''s namespaces (apps) [t1/app]"]


def test_an_instance_deploys_its_own_or_the_platforms_solutions(tmp_path: Path) -> None:
    found = check(tmp_path, [], {"projects/other.yaml": OTHER,
                                 "other/instance.yaml": INSTANCES.replace("name: app",
                                                                          "name: app2")})
    assert found == [
        "other/instance.yaml:5: Instance/app2: spec.solution: deploys solution 'app' of "
        "project 'apps': a project's instances deploy its own solutions or the platform's "
        "[/app2]"]
    platform = PLATFORM.replace("paths: [sites.yaml, targets.yaml]",
                                "paths: [sites.yaml, targets.yaml, solutions/**]")
    apps = APPS.replace("paths: [solutions/**, instances.yaml]", "paths: [instances.yaml]")
    assert check(tmp_path / "2", [], {"projects/platform.yaml": platform,
                                      "projects/apps.yaml": apps}) == []


def test_a_solution_uses_only_its_projects_files(tmp_path: Path) -> None:
    found = check(tmp_path, [("solutions/app/solution.yaml", "template: conf.tmpl",
                              "template: ../../other/conf.tmpl")],
                  {"projects/other.yaml": OTHER, "other/conf.tmpl": "x\n"})
    assert found == [
        "solutions/app/solution.yaml:1: Solution/app: spec.components: uses 'other/conf.tmpl', "
        "owned by project 'other': a solution's files belong to its own project"]


def test_parameter_levels_of_a_project(tmp_path: Path) -> None:
    apps = APPS + ("  roles:\n    parameters:\n      - {members: [alice], levels: [line]}\n")
    found = check(tmp_path, [("instances.yaml", "names: [t1]",
                              "names: [t1]\n  params: {port: 8081}"),
                             ("sites.yaml", "metadata: {name: l1}\nspec:\n",
                              "metadata: {name: l1}\nspec:\n  solutionParams: {app: "
                              "{port: 1}}\n")],
                  {"projects/apps.yaml": apps})
    assert found == [
        "instances.yaml:8: Instance/app: spec.params.port: project 'apps' sets its parameters "
        "at levels line (roles.parameters), not at instance [/app]"]
    eu = [("sites.yaml", "params: {tz: Europe/Berlin}",
           "params: {tz: Europe/Berlin}\n  solutionParams: {app: {port: 2}}")]
    assert check(tmp_path / "2", eu, {"projects/apps.yaml": apps}) == [
        "sites.yaml:6: Site/eu: spec.solutionParams.app: project 'apps' sets its parameters "
        "at levels line (roles.parameters), not at region"]


def test_solution_params_at_a_site_outside_the_project(tmp_path: Path) -> None:
    found = check(tmp_path, [], {"sites.yaml": SITES + ASIA.replace(
        "metadata: {name: l2}\nspec:\n", "metadata: {name: l2}\nspec:\n"
        "  solutionParams: {app: {port: 3}}\n")})
    assert found == [
        "sites.yaml:22: Site/l2: spec.solutionParams.app: site 'asia/l2' is outside project "
        "'apps''s sites (eu)"]


def test_a_projects_target_stays_in_its_sites(tmp_path: Path) -> None:
    found = check(tmp_path, [], {**WIDER, "other/t.yaml": T2.replace("t2", "t3").replace(
        "l2", "l1"), "projects/other.yaml": OTHER.replace("[eu]", "[asia]")})
    assert found == [
        "other/t.yaml:6: Target/t3: spec.site: site 'eu/l1' is outside project 'other''s "
        "sites (asia)"]


def test_rollout_approvers_are_the_projects_approvers(tmp_path: Path) -> None:
    apps = APPS + "  roles:\n    approvers: [alice]\n"
    found = check(tmp_path, [("instances.yaml", "names: [t1]",
                              "names: [t1]\n  rollout:\n    approvers: [alice, mallory]\n"
                              "    waves: [{name: one, names: [t1]}]")],
                  {"projects/apps.yaml": apps})
    assert found == [
        "instances.yaml:9: Instance/app: spec.rollout.approvers[1]: 'mallory' may not approve "
        "project 'apps''s rollouts (roles.approvers: alice) [/app]"]
