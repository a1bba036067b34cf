"""reconciler.core.checks.providers, run directly on a fleet written to a temporary directory,
with a registry holding a small provider of this file: bindings name installed, allowed
providers that accept their config; rendered components are bound and accepted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reconciler.core.checks.findings import Findings
from reconciler.core.checks.paths import PathChecks
from reconciler.core.checks.providers import ProviderChecks, check_bindings
from reconciler.core.provider_api import LocalPolicy, Problem
from reconciler.core.registry import ProviderRegistry
from tests.unit.checkkit import Edit, lines, load, render

SOLUTION = "solutions/app/solution.yaml"
PROBE = ("targets.yaml", "provider: file, config: {root: /srv/t1}", "provider: probe, config: {}")
ANY = LocalPolicy(allowed_providers=None)


class ProbeProvider:
    """What the checks see of a provider: its two pure class methods and property lists."""

    untemplated: ClassVar[frozenset[str]] = frozenset({"command"})
    path_properties: ClassVar[frozenset[str]] = frozenset({"template"})

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        problems = [Problem(key, "is not a setting") for key in sorted(config) if key != "mode"]
        if config.get("mode") == "scripts" and not policy.allow_scripts:
            problems.append(Problem("provider", "the local policy does not allow scripts"))
        return problems

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        problems = [Problem(key, "is refused") for key in sorted(properties)
                    if key.startswith("bad")]
        if isinstance(properties.get("env"), Mapping) and "X" in properties["env"]:
            problems.append(Problem("env.X", "is reserved"))
        if "path" not in properties:
            problems.append(Problem("", "needs a path"))
        return problems


REGISTRY = ProviderRegistry({"probe": ProbeProvider},  # type: ignore[dict-item]
                            failures={"broken": "ImportError: no module named broken"})


def bindings(tmp_path: Path, edits: list[Edit], policy: LocalPolicy = ANY) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    check_bindings(fleet, REGISTRY, policy, findings)
    return lines(findings)


@pytest.mark.parametrize(
    ("edits", "policy", "expected"),
    [
        pytest.param([PROBE], ANY, [], id="valid"),
        pytest.param([PROBE, ("targets.yaml", "provider: probe", "provider: probee")], ANY,
                     ["targets.yaml:7: Target/t1: spec.bindings[0].provider: provider 'probee' "
                      "is not installed (installed: probe) [t1/]"], id="not-installed"),
        pytest.param([PROBE, ("targets.yaml", "provider: probe", "provider: broken")], ANY,
                     ["targets.yaml:7: Target/t1: spec.bindings[0].provider: provider 'broken' "
                      "failed to load: ImportError: no module named broken [t1/]"],
                     id="failed-to-load"),
        pytest.param([PROBE], LocalPolicy(allowed_providers=frozenset({"file", "helm"})),
                     ["targets.yaml:7: Target/t1: spec.bindings[0].provider: the local policy "
                      "does not allow provider 'probe' (allowed: file, helm) [t1/]"],
                     id="not-allowed"),
        pytest.param([PROBE], LocalPolicy(allowed_providers=frozenset()),
                     ["targets.yaml:7: Target/t1: spec.bindings[0].provider: the local policy "
                      "does not allow provider 'probe' (allowed: none) [t1/]"],
                     id="nothing-allowed"),
        pytest.param([PROBE, ("targets.yaml", "config: {}", "config: {colour: red}")], ANY,
                     ["targets.yaml:7: Target/t1: spec.bindings[0].config.colour: is not a "
                      "setting [t1/]"], id="config-refused"),
        pytest.param([PROBE, ("targets.yaml", "config: {}", "config: {mode: scripts}")],
                     LocalPolicy(allow_scripts=False),
                     ["targets.yaml:7: Target/t1: spec.bindings[0].provider: the local policy "
                      "does not allow scripts [t1/]"], id="binding-refused-by-policy"),
    ],
)
def test_binding_checks(tmp_path: Path, edits: list[Edit], policy: LocalPolicy,
                        expected: list[str]) -> None:
    assert bindings(tmp_path, edits, policy) == expected


def components(tmp_path: Path, edits: list[Edit]) -> list[str]:
    fleet = load(tmp_path / "repo", edits)
    findings = Findings()
    checks = ProviderChecks(REGISTRY, PathChecks(fleet, findings), findings)
    for placement in render(fleet).pairs:
        checks.check_placement(placement)
    return lines(findings)


EXTRA = "        path: app/extra.txt\n"
WHERE = "solutions/app/solution.yaml:{line}: Solution/app: spec.components[1].properties"


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        pytest.param([PROBE], [], id="valid"),
        pytest.param([], [], id="provider-not-installed-is-reported-on-the-target"),
        pytest.param([PROBE, (SOLUTION, "      type: config-file\n      dependsOn",
                              "      type: database\n      dependsOn")],
                     ["targets.yaml:6: Target/t1: spec.bindings: no binding for role 'database' "
                      "needed by component 'extra' of solution 'app' (bound roles: config-file) "
                      "[t1/app]"], id="role-not-bound"),
        pytest.param([PROBE, (SOLUTION, EXTRA,
                              EXTRA + "        command: 'run ${{ params.tz }}'\n")],
                     [WHERE.format(line=21) + ".command: templates are not allowed in 'command' "
                      "for provider 'probe' (parameters reach it another way) [t1/app]"],
                     id="untemplated-property"),
        pytest.param([PROBE, (SOLUTION, EXTRA, EXTRA + "        command: [run, fast]\n")], [],
                     id="untemplated-property-without-template"),
        pytest.param([PROBE, (SOLUTION, EXTRA, EXTRA + "        template: nope.tmpl\n")],
                     [WHERE.format(line=21) + ".template: 'nope.tmpl' does not exist [t1/app]"],
                     id="path-property"),
        pytest.param([PROBE, (SOLUTION, EXTRA, EXTRA + "        bad: 1\n")],
                     [WHERE.format(line=21) + ".bad: is refused [t1/app]"],
                     id="property-refused"),
        pytest.param([PROBE, (SOLUTION, EXTRA, EXTRA + "        env:\n          X: 1\n")],
                     [WHERE.format(line=22) + ".env.X: is reserved [t1/app]"],
                     id="nested-property-refused"),
        pytest.param([PROBE, (SOLUTION, EXTRA, "")],
                     [WHERE.format(line=19) + ": needs a path [t1/app]"],
                     id="problem-with-the-whole-component"),
    ],
)
def test_component_checks(tmp_path: Path, edits: list[Edit], expected: list[str]) -> None:
    assert components(tmp_path, edits) == expected
