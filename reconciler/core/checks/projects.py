"""Projects: every file has one owner, and what a project holds stays inside its bounds.

With projects declared (``reconciler.core.projects``, docs/tenancy.md), one revision is checked
for: declarations under ``projects/`` with one platform project, known members, levels and
sites, and keys that parse; every manifest file owned by exactly one project; fleet-level
documents (Settings, the hierarchy, the declarations) in the platform's files; a solution's
files in its own project; a project's targets and instances (named, selected and placed)
inside its site subtrees; an instance deploying its own project's solutions or the
platform's; parameter values of a project's solutions set only at the levels its
``roles.parameters`` list and at sites its instances may reach; rollout approvers among its
``roles.approvers``; and the bindings of every placement (provider, namespace, file root)
inside its bounds. Each finding names the file, the project and the bound. Without projects
nothing is checked (no tenancy). Called by ``reconciler.core.validation``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from reconciler.core.checks.findings import Findings, near
from reconciler.core.checks.parameters import PSEUDO_LEVELS
from reconciler.core.manifest_files import referenced_paths
from reconciler.core.model import Fleet, Instance, Source
from reconciler.core.projects import (
    DECLARATIONS_DIR,
    FLEET_FILES,
    Ownership,
    Project,
    fingerprint_problem,
    glob_claims,
    glob_problem,
    is_fleet_level,
    ssh_key_problem,
)
from reconciler.core.rendering import Placement

__all__ = ["ProjectChecks", "check_projects"]

_WHAT = {"providers": "provider", "namespaces": "namespace", "fileRoots": "file root"}


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "none"


class _Bounds:
    """The questions every check asks of one fleet and its projects."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.own = Ownership(fleet.projects)

    def project_of(self, path: str) -> Project | None:
        """The project a file belongs to (None: claimed by several, reported once)."""
        if is_fleet_level(path):
            return self.fleet.projects.get(self.own.platform)
        claims = self.own.claims(path)
        if len(claims) > 1:
            return None
        return self.fleet.projects.get(claims[0] if claims else self.own.platform)

    def within(self, site: str, project: Project) -> bool:
        """Whether ``site`` is inside one of ``project``'s site subtrees."""
        if project.sites is None:
            return True
        chain = {s.name for s in self.fleet.site_chains.get(site, ())}
        return any((ref := self.fleet.find_site(r)) is not None and ref.name in chain
                   for r in project.sites)

    def reaches(self, site: str, project: Project) -> bool:
        """Whether ``site`` is inside or above one of ``project``'s site subtrees."""
        if project.sites is None or self.within(site, project):
            return True
        return any((ref := self.fleet.find_site(r)) is not None and site in
                   {s.name for s in self.fleet.site_chains.get(ref.name, ())}
                   for r in project.sites)

    def outside(self, project: Project, what: str) -> str:
        return f"outside project '{project.name}''s {what}"


def check_projects(fleet: Fleet, manifest_files: Iterable[str], findings: Findings) -> None:
    """The checks of the documents as written (see the module docstring)."""
    if not fleet.projects:
        return
    bounds = _Bounds(fleet)
    _check_platform(fleet, findings)
    for declared in fleet.projects.values():
        _check_declaration(bounds, declared, findings)
    for path in sorted(manifest_files):
        if is_fleet_level(path):
            continue
        claims = bounds.own.claims(path)
        if not claims:
            findings.add(path, 0, "", "", "not owned by any project: add a glob matching it to "
                         "one project's spec.paths (the platform project's for fleet-level "
                         "files)")
        elif len(claims) > 1:
            findings.add(path, 0, "", "", f"owned by several projects ({', '.join(claims)}): "
                         "a path belongs to one project")
    _check_fleet_documents(bounds, findings)
    _check_solutions(bounds, findings)
    for target in fleet.targets.values():
        project = bounds.project_of(target.source.path)
        if project is not None and target.site in fleet.sites \
                and not bounds.within(target.site, project):
            findings.add(target.source.path, target.source.line_of("spec", "site"),
                         f"Target/{target.name}", "spec.site",
                         f"site '{fleet.site_path(target.site)}' is "
                         f"{bounds.outside(project, 'sites')} ({_quoted(project.sites or ())})")
    for inst in fleet.instances.values():
        project = bounds.project_of(inst.source.path)
        if project is not None:
            _check_instance(bounds, project, inst, findings)
    _check_site_parameters(bounds, findings)


def _check_platform(fleet: Fleet, findings: Findings) -> None:
    platforms = sorted((p for p in fleet.projects.values() if p.platform), key=lambda p: p.name)
    if not platforms:
        first = min(fleet.projects.values(), key=lambda p: (p.source.path, p.name))
        findings.add(first.source.path, first.source.line, f"Project/{first.name}",
                     "spec.platform", "no project is the platform (spec.platform: true): the "
                     "fleet-level files (reconciler.yaml, projects/, the hierarchy) have no "
                     "owner")
    for extra in platforms[1:]:
        findings.add(extra.source.path, extra.source.line_of("spec", "platform"),
                     f"Project/{extra.name}", "spec.platform",
                     f"only one project may be the platform ({platforms[0].name} is already)")


def _check_declaration(bounds: _Bounds, project: Project, findings: Findings) -> None:
    src, obj = project.source, f"Project/{project.name}"

    def add(fld: tuple[str | int, ...], message: str) -> None:
        name = ".".join(f"[{p}]" if isinstance(p, int) else p for p in fld).replace(".[", "[")
        findings.add(src.path, src.line_of("spec", *fld), obj, f"spec.{name}", message)

    if not src.path.startswith(DECLARATIONS_DIR + "/"):
        findings.add(src.path, src.line, obj, "", f"a Project is declared under "
                     f"{DECLARATIONS_DIR}/ at the repository root, where every site reads "
                     "the declarations from")
    for i, glob in enumerate(project.paths):
        problem = glob_problem(glob)
        if problem is None and not project.platform and any(
                glob_claims(glob, f) for f in (*FLEET_FILES, f"{DECLARATIONS_DIR}/x.yaml")):
            problem = (f"{glob!r} claims fleet-level files (reconciler.yaml, "
                       f"{DECLARATIONS_DIR}/), which belong to the platform project")
        if problem:
            add(("paths", i), problem)
    for i, ref in enumerate(project.sites or ()):
        if bounds.fleet.find_site(ref) is None:
            add(("sites", i), f"unknown site '{ref}'"
                + near(ref.rsplit("/", 1)[-1], bounds.fleet.sites))
    seen: set[str] = set()
    for i, member in enumerate(project.members):
        if member.name in seen:
            add(("members", i, "name"), f"member '{member.name}' is declared twice")
        seen.add(member.name)
        if not member.ssh and not member.openpgp:
            add(("members", i), f"member '{member.name}' has no key (ssh or openpgp)")
        for key, values, check in (("ssh", member.ssh, ssh_key_problem),
                                   ("openpgp", member.openpgp, fingerprint_problem)):
            for j, value in enumerate(values):
                problem = check(value)
                if problem:
                    add(("members", i, key, j) if len(values) > 1 else ("members", i, key),
                        problem)
    _check_roles(bounds, project, seen, add)


def _check_roles(bounds: _Bounds, project: Project, members: set[str], add: Any) -> None:
    def known(names: Sequence[str], *where: str | int) -> None:
        for i, name in enumerate(names):
            if name not in members:
                add(("roles", *where, i), f"unknown member '{name}'" + near(name, members))

    levels = (*bounds.fleet.settings.hierarchy, *PSEUDO_LEVELS)
    known(project.solution_authors or (), "solutions")
    for i, role in enumerate(project.parameter_roles or ()):
        known(role.members, "parameters", i, "members")
        for j, level in enumerate(role.levels):
            if level not in levels:
                add(("roles", "parameters", i, "levels", j),
                    f"unknown level '{level}' (levels: {', '.join(levels)})")
    known(project.approvers or (), "approvers")


def _check_fleet_documents(bounds: _Bounds, findings: Findings) -> None:
    fleet = bounds.fleet
    documents: list[tuple[str, str, Source | None]] = [
        ("Settings", "", fleet.settings.source),
        *(("Site", s.name, s.source) for s in fleet.sites.values()),
        *(("Project", p.name, p.source) for p in fleet.projects.values())]
    for kind, name, src in documents:
        if src is None:
            continue
        project = bounds.project_of(src.path)
        if project is not None and not project.platform:
            obj = f"{kind}/{name}" if name else kind
            findings.add(src.path, src.line, obj if name else "", "",
                         f"{obj} is fleet-level and belongs to the platform project, but its "
                         f"file is owned by project '{project.name}'")


def _check_solutions(bounds: _Bounds, findings: Findings) -> None:
    """A solution's files (templates, manifests, charts, scripts) are its project's."""
    for solution in bounds.fleet.solutions.values():
        mine = bounds.project_of(solution.source.path)
        if mine is None:
            continue
        document = {"spec": {"components": [{"properties": dict(c.properties)}
                                            for c in solution.components]}}
        for path in sorted(referenced_paths(bounds.fleet.root,
                                            [(solution.source.path, document)])):
            owner = bounds.project_of(path)
            if owner is not None and owner.name != mine.name:
                findings.add(solution.source.path, solution.source.line,
                             f"Solution/{solution.name}", "spec.components",
                             f"uses '{path}', owned by project '{owner.name}': a solution's "
                             "files belong to its own project")


def _check_instance(bounds: _Bounds, project: Project, inst: Instance,
                    findings: Findings) -> None:
    fleet, src, obj = bounds.fleet, inst.source, f"Instance/{inst.name}"

    def add(fld: tuple[str | int, ...], name: str, message: str) -> None:
        findings.add(src.path, src.line_of(*fld), obj, name, message, instance=inst.name)

    solution = fleet.solutions.get(inst.solution)
    theirs = bounds.project_of(solution.source.path) if solution is not None else None
    if theirs is not None and theirs.name != project.name and not theirs.platform:
        add(("spec", "solution"), "spec.solution",
            f"deploys solution '{inst.solution}' of project '{theirs.name}': a project's "
            "instances deploy its own solutions or the platform's")
    sites = f"{bounds.outside(project, 'sites')} ({_quoted(project.sites or ())})"
    for i, name in enumerate(inst.names):
        target = fleet.targets.get(name)
        if target is not None and target.site in fleet.sites \
                and not bounds.within(target.site, project):
            add(("spec", "targets", "names", i), f"spec.targets.names[{i}]",
                f"target '{name}' is at site '{fleet.site_path(target.site)}', {sites}")
    for i, ref in enumerate(inst.selector.sites if inst.selector else ()):
        site = fleet.find_site(ref)
        if site is not None and not bounds.within(site.name, project):
            add(("spec", "targets", "selector", "sites", i), f"spec.targets.selector.sites[{i}]",
                f"site '{ref}' is {sites}")
    levels = project.parameter_levels
    if levels is not None and "instance" not in levels:
        for pname in inst.params:
            add(("spec", "params", pname), f"spec.params.{pname}",
                f"project '{project.name}' sets its parameters at levels {_quoted(levels)} "
                "(roles.parameters), not at instance")
    for i, approver in enumerate(inst.rollout.approvers if inst.rollout else ()):
        if not project.may_approve(approver):
            allowed = project.approvers if project.approvers is not None \
                else [m.name for m in project.members]
            add(("spec", "rollout", "approvers", i), f"spec.rollout.approvers[{i}]",
                f"'{approver}' may not approve project '{project.name}''s rollouts "
                f"(roles.approvers: {_quoted(allowed)})")


def _check_site_parameters(bounds: _Bounds, findings: Findings) -> None:
    """Values a site sets for one project's solution: at its levels, where it deploys."""
    fleet = bounds.fleet
    for site in fleet.sites.values():
        for sol in site.solution_params:
            solution = fleet.solutions.get(sol)
            project = bounds.project_of(solution.source.path) if solution else None
            if project is None or project.platform:
                continue
            where = (site.source.path, site.source.line_of("spec", "solutionParams", sol),
                     f"Site/{site.name}", f"spec.solutionParams.{sol}")
            level, levels = fleet.site_level(site.name), project.parameter_levels
            if levels is not None and level not in levels:
                findings.add(*where, f"project '{project.name}' sets its parameters at levels "
                             f"{_quoted(levels)} (roles.parameters), not at {level}")
            if not bounds.reaches(site.name, project):
                findings.add(*where, f"site '{fleet.site_path(site.name)}' is "
                             f"{bounds.outside(project, 'sites')} "
                             f"({_quoted(project.sites or ())})")


def _root_within(root: str, roots: Sequence[str]) -> bool:
    """Whether a binding's file root is one of ``roots`` or under one, compared as written
    (absolute with absolute, relative — under the site's state directory — with relative)."""
    path = PurePosixPath(os.path.normpath(root))
    return any(path == (base := PurePosixPath(os.path.normpath(r))) or path.is_relative_to(base)
               for r in roots if PurePosixPath(r).is_absolute() == path.is_absolute())


class ProjectChecks:
    """The bounds of every rendered placement: where it lands and what its bindings use."""

    def __init__(self, fleet: Fleet, findings: Findings) -> None:
        self.bounds = _Bounds(fleet)
        self.findings = findings

    def check_placement(self, placement: Placement) -> None:
        if not self.bounds.fleet.projects:
            return
        inst, target = placement.instance, placement.target
        project = self.bounds.project_of(inst.source.path)
        if project is None:
            return
        found: list[str] = []
        if target.site in self.bounds.fleet.sites and not self.bounds.within(target.site,
                                                                                project):
            found.append(f"target '{target.name}' is at site "
                         f"'{self.bounds.fleet.site_path(target.site)}', "
                         f"{self.bounds.outside(project, 'sites')} "
                         f"({_quoted(project.sites or ())})")
        roles = dict.fromkeys(c.type for c in placement.components)
        for role in roles:
            binding = target.binding(role)
            if binding is None:
                continue  # reported by the provider checks
            uses = [("providers", binding.provider)] + [
                (bound, binding.config[key]) for key, bound in (("namespace", "namespaces"),
                                                               ("root", "fileRoots"))
                if isinstance(binding.config.get(key), str)]
            for bound, value in uses:
                if not self._allows(project, bound, value):
                    found.append(f"binding '{role}' of target '{target.name}' uses "
                                 f"{_WHAT[bound]} '{value}', {self._outside(project, bound)}")
        for component in placement.components:
            namespace = component.properties.get("namespace")
            if isinstance(namespace, str) and not self._allows(project, "namespaces",
                                                               namespace):
                found.append(f"component '{component.name}' uses namespace '{namespace}', "
                             f"{self._outside(project, 'namespaces')}")
        src = inst.source
        for message in found:
            self.findings.add(src.path, src.line_of("spec", "targets"), f"Instance/{inst.name}",
                              "spec.targets", message, target=target.name, instance=inst.name)

    def _outside(self, project: Project, bound: str) -> str:
        values = {"providers": project.providers, "namespaces": project.namespaces,
                  "fileRoots": project.file_roots}[bound] or ()
        return f"{self.bounds.outside(project, bound)} ({_quoted(values)})"

    def _allows(self, project: Project, bound: str, value: str) -> bool:
        if bound == "providers":
            return project.providers is None or value in project.providers
        if bound == "namespaces":
            return project.namespaces is None or value in project.namespaces
        return project.file_roots is None or _root_within(value, project.file_roots)
