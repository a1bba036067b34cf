"""References between documents: every name must lead somewhere, and nothing may loop.

Sites name a parent (known, no cycle, no deeper than the hierarchy) and scope parameters to
solutions that exist; targets name a known site and bind each role once; components name
known, other components in ``dependsOn``, without a cycle; instances name a known solution (or
a released version of it), known targets, known selector sites and a known profile, and
should select at least one target. Called by ``reconciler.core.validation``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from reconciler.core.checks.findings import Findings, near
from reconciler.core.diagnostics import Severity
from reconciler.core.model import Fleet, Instance, Solution

__all__ = [
    "ReleaseLookup",
    "check_components",
    "check_instances",
    "check_sites",
    "check_targets",
    "check_unplaced",
    "pinned_releases",
]

# (solution, version) -> the released Solution, or why it cannot be had
ReleaseLookup = Callable[[str, str], "Solution | str"]


def check_sites(fleet: Fleet, findings: Findings) -> None:
    """Parents known and acyclic, chains no deeper than the hierarchy, scoped solutions known."""
    levels = fleet.settings.hierarchy
    for site in fleet.sites.values():
        src = site.source
        if (site.parent is not None and site.parent not in fleet.sites
                and ("Site", site.parent) not in fleet.broken):
            findings.add(
                src.path,
                src.line_of("spec", "parent"),
                f"Site/{site.name}",
                "spec.parent",
                f"unknown parent site '{site.parent}'" + near(site.parent, fleet.sites),
            )
    reported: set[str] = set()
    for name in sorted(fleet.sites):
        path: list[str] = []
        current: str | None = name
        while current is not None and current in fleet.sites and current not in path:
            path.append(current)
            current = fleet.sites[current].parent
        if current is not None and current in path:
            cycle = path[path.index(current) :]
            if not reported.intersection(cycle):
                reported.update(cycle)
                first = fleet.sites[min(cycle)]
                loop = " -> ".join([*cycle, current])
                findings.add(
                    first.source.path,
                    first.source.line_of("spec", "parent"),
                    f"Site/{first.name}",
                    "spec.parent",
                    f"cycle in site parents: {loop}",
                )
    for site in fleet.sites.values():
        chain = fleet.site_chains[site.name]
        depth = len(chain)
        # a chain whose top still has a known parent was cut by a cycle: already reported
        cut = chain[0].parent is not None and chain[0].parent in fleet.sites
        if site.name not in reported and not cut and depth > len(levels):
            findings.add(
                site.source.path,
                site.source.line_of("spec", "parent"),
                f"Site/{site.name}",
                "spec.parent",
                f"site is {depth} levels deep but the hierarchy has "
                f"{len(levels)} ({', '.join(levels)})",
            )
        for sol in site.solution_params:
            if sol not in fleet.solutions and ("Solution", sol) not in fleet.broken:
                findings.add(
                    site.source.path,
                    site.source.line_of("spec", "solutionParams", sol),
                    f"Site/{site.name}",
                    f"spec.solutionParams.{sol}",
                    f"unknown solution '{sol}'" + near(sol, fleet.solutions),
                )


def check_targets(fleet: Fleet, findings: Findings) -> None:
    """A target's site is known and each of its roles is bound once."""
    for target in fleet.targets.values():
        src = target.source
        obj = f"Target/{target.name}"
        if target.site not in fleet.sites and ("Site", target.site) not in fleet.broken:
            findings.add(
                src.path,
                src.line_of("spec", "site"),
                obj,
                "spec.site",
                f"unknown site '{target.site}'" + near(target.site, fleet.sites),
            )
        roles: set[str] = set()
        for i, binding in enumerate(target.bindings):
            if binding.role in roles:
                findings.add(
                    src.path,
                    src.line_of("spec", "bindings", i, "role"),
                    obj,
                    f"spec.bindings[{i}].role",
                    f"role '{binding.role}' bound twice",
                )
            roles.add(binding.role)


def check_components(fleet: Fleet, findings: Findings) -> None:
    """Component names unique in their solution; ``dependsOn`` names others, without a cycle."""
    for solution in fleet.solutions.values():
        src = solution.source
        obj = f"Solution/{solution.name}"
        names = [c.name for c in solution.components]
        for comp in solution.components:
            base = ("spec", "components", comp.index)
            if names.count(comp.name) > 1 and names.index(comp.name) != comp.index:
                findings.add(
                    src.path,
                    src.line_of(*base, "name"),
                    obj,
                    f"spec.components[{comp.index}].name",
                    f"duplicate component name '{comp.name}'",
                )
            for j, dep in enumerate(comp.depends_on):
                if dep not in names or dep == comp.name:
                    why = (
                        "a component cannot depend on itself"
                        if dep == comp.name
                        else f"unknown component '{dep}'" + near(dep, names)
                    )
                    findings.add(
                        src.path,
                        src.line_of(*base, "dependsOn", j),
                        obj,
                        f"spec.components[{comp.index}].dependsOn[{j}]",
                        why,
                    )
        _depends_cycle(solution, findings)


def _depends_cycle(solution: Solution, findings: Findings) -> None:
    """The first ``dependsOn`` cycle of a solution (one is enough to fix at a time)."""
    deps = {c.name: [d for d in c.depends_on if d != c.name] for c in solution.components}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in deps.get(name, []):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in deps:
        if name not in state:
            cycle = visit(name)
            if cycle:
                comp = next(c for c in solution.components if c.name == cycle[0])
                findings.add(
                    solution.source.path,
                    solution.source.line_of("spec", "components", comp.index, "dependsOn"),
                    f"Solution/{solution.name}",
                    f"spec.components[{comp.index}].dependsOn",
                    f"cycle in dependsOn: {' -> '.join(cycle)}",
                )
                return


def pinned_releases(
    fleet: Fleet, releases: ReleaseLookup | None, findings: Findings
) -> dict[str, Solution | None]:
    """Instance -> the released solution its ``version`` pins (None: not to be had).

    Only instances with a version are in the answer, and only when ``releases`` can look tags
    up; without it each such instance gets a warning and is checked and rendered at the head.
    """
    found: dict[str, Solution | None] = {}
    for inst in fleet.instances.values():
        if not inst.version:
            continue
        src = inst.source
        where = (src.path, src.line_of("spec", "version"), f"Instance/{inst.name}", "spec.version")
        if releases is None:
            findings.add(*where, f"version {inst.version} not checked (the repository's tags "
                         "are not available here); the head solution is shown",
                         severity=Severity.WARNING, instance=inst.name)
            continue
        release = releases(inst.solution, inst.version)
        if isinstance(release, str):
            findings.add(*where, release, instance=inst.name)
            found[inst.name] = None
        else:
            found[inst.name] = release
    return found


def check_instances(
    fleet: Fleet, solutions: Mapping[str, Solution | None], findings: Findings
) -> None:
    """Solution, target names, selector sites and profile of every instance are known.

    ``solutions`` maps each instance to the solution it is checked against (its release, or
    the head one), None when there is none.
    """
    for inst in fleet.instances.values():
        src = inst.source
        obj = f"Instance/{inst.name}"
        solution = solutions.get(inst.name)
        if solution is None and ("Solution", inst.solution) not in fleet.broken:
            findings.add(
                src.path,
                src.line_of("spec", "solution"),
                obj,
                "spec.solution",
                f"unknown solution '{inst.solution}'" + near(inst.solution, fleet.solutions),
                instance=inst.name,
            )
        for i, name in enumerate(inst.names):
            if name not in fleet.targets and ("Target", name) not in fleet.broken:
                findings.add(
                    src.path,
                    src.line_of("spec", "targets", "names", i),
                    obj,
                    f"spec.targets.names[{i}]",
                    f"unknown target '{name}'" + near(name, fleet.targets),
                    instance=inst.name,
                )
        if inst.selector is not None:
            for i, ref in enumerate(inst.selector.sites):
                if fleet.find_site(ref) is None:
                    findings.add(
                        src.path,
                        src.line_of("spec", "targets", "selector", "sites", i),
                        obj,
                        f"spec.targets.selector.sites[{i}]",
                        f"unknown site '{ref}'" + near(ref.rsplit("/", 1)[-1], fleet.sites),
                        instance=inst.name,
                    )
        if (solution is not None and inst.profile is not None
                and inst.profile not in solution.profiles):
            findings.add(
                src.path,
                src.line_of("spec", "profile"),
                obj,
                "spec.profile",
                f"unknown profile '{inst.profile}' of solution '{solution.name}'"
                + near(inst.profile, solution.profiles),
                instance=inst.name,
            )


def check_unplaced(instances: Iterable[Instance], findings: Findings) -> None:
    """A warning for each rendered instance whose targets and selector chose no target."""
    for inst in instances:
        findings.add(
            inst.source.path,
            inst.source.line_of("spec", "targets"),
            f"Instance/{inst.name}",
            "spec.targets",
            "selects no target",
            severity=Severity.WARNING,
            instance=inst.name,
        )
