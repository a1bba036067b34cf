"""Providers: bindings name installed providers the local policy allows, and the providers'
own checks pass.

For every target binding: the provider is installed (or why it failed to load), the site's
policy allows it, and the provider accepts the binding's config. For every rendered
placement: each component's role is bound on the target, properties a provider takes
untemplated hold no template, repository paths are sound (``reconciler.core.checks.paths``), and
the provider accepts the rendered properties. Called by ``reconciler.core.validation``.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.paths import PathChecks
from reconciler.core.checks.templates import contains_template
from reconciler.core.model import Binding, ComponentDef, Fleet, Solution
from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import ProviderRegistry
from reconciler.core.rendering import Placement

__all__ = ["ProviderChecks", "check_bindings"]


def check_bindings(
    fleet: Fleet, registry: ProviderRegistry, policy: LocalPolicy, findings: Findings
) -> None:
    """Each binding's provider is installed and allowed, and accepts the binding's config."""
    allowed = policy.allowed_providers
    for target in fleet.targets.values():
        src = target.source
        obj = f"Target/{target.name}"
        for i, binding in enumerate(target.bindings):
            where = ("spec", "bindings", i)
            provider = registry.get(binding.provider)
            if provider is None:
                findings.add(
                    src.path,
                    src.line_of(*where, "provider"),
                    obj,
                    f"spec.bindings[{i}].provider",
                    registry.describe_missing(binding.provider),
                    target=target.name,
                )
                continue
            if allowed is not None and binding.provider not in allowed:
                findings.add(
                    src.path,
                    src.line_of(*where, "provider"),
                    obj,
                    f"spec.bindings[{i}].provider",
                    f"the local policy does not allow provider '{binding.provider}' "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'})",
                    target=target.name,
                )
                continue
            for problem in provider.check_config(binding.config, policy):
                at: tuple[str | int, ...]
                if problem.field == "provider":  # about the binding itself (e.g. policy)
                    fld, at = f"spec.bindings[{i}].provider", (*where, "provider")
                else:
                    fld = f"spec.bindings[{i}].config" + (
                        f".{problem.field}" if problem.field else ""
                    )
                    at = (*where, "config", *problem.field.split("."))
                findings.add(src.path, src.line_of(*at), obj, fld, problem.message,
                             target=target.name)


class ProviderChecks:
    """The provider side of every rendered placement."""

    def __init__(self, registry: ProviderRegistry, paths: PathChecks, findings: Findings) -> None:
        self.registry = registry
        self.paths = paths
        self.findings = findings
        # a solution's component definitions by name, the solution kept (see _definitions)
        self._definitions: dict[int, tuple[Solution, dict[str, ComponentDef]]] = {}
        # a provider's untemplated and path properties, each sorted
        self._properties: dict[type[Any], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def _components(self, solution: Solution) -> dict[str, ComponentDef]:
        found = self._definitions.get(id(solution))
        if found is None or found[0] is not solution:
            found = self._definitions[id(solution)] = (
                solution, {c.name: c for c in solution.components})
        return found[1]

    def _provider_properties(self, provider: type[Any]) -> tuple[tuple[str, ...],
                                                                 tuple[str, ...]]:
        found = self._properties.get(provider)
        if found is None:
            found = self._properties[provider] = (
                tuple(sorted(getattr(provider, "untemplated", frozenset()))),
                tuple(sorted(getattr(provider, "path_properties", frozenset()))))
        return found

    def check_placement(self, placement: Placement) -> None:
        target, solution = placement.target, placement.solution
        src = solution.source
        obj = f"Solution/{solution.name}"
        instance = placement.instance.name
        comps = self._components(solution)
        bindings: dict[str, Binding | None] = {}  # the target's binding of each role
        for component in placement.components:
            comp = comps[component.name]
            base = ("spec", "components", comp.index)
            if component.type in bindings:
                binding = bindings[component.type]
            else:
                binding = bindings[component.type] = target.binding(component.type)
            if binding is None:
                roles = ", ".join(b.role for b in target.bindings) or "none"
                self.findings.add(
                    target.source.path,
                    target.source.line_of("spec", "bindings"),
                    f"Target/{target.name}",
                    "spec.bindings",
                    f"no binding for role '{component.type}' needed by component "
                    f"'{component.name}' of solution '{solution.name}' (bound roles: "
                    f"{roles})",
                    target=target.name,
                    instance=instance,
                )
                continue
            provider = self.registry.get(binding.provider)
            if provider is None:
                continue  # reported on the target
            untemplated, path_properties = self._provider_properties(provider)
            for prop in untemplated:
                raw = comp.properties.get(prop)
                if raw is not None and contains_template(raw):
                    self.findings.add(
                        src.path,
                        src.line_of(*base, "properties", prop),
                        obj,
                        f"spec.components[{comp.index}].properties.{prop}",
                        f"templates are not allowed in '{prop}' for provider "
                        f"'{binding.provider}' (parameters reach it another way)",
                        target=target.name,
                        instance=instance,
                    )
            for prop in path_properties:
                if prop in component.properties:
                    self.paths.check(component.properties[prop], placement, comp.index, prop)
            for problem in provider.check_properties(component.properties):
                parts = problem.field.split(".") if problem.field else []
                self.findings.add(
                    src.path,
                    src.line_of(*base, "properties", *parts),
                    obj,
                    f"spec.components[{comp.index}].properties"
                    + (f".{problem.field}" if problem.field else ""),
                    problem.message,
                    target=target.name,
                    instance=instance,
                )
