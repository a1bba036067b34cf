"""Validation of the kubernetes provider's binding config and component properties.

Pure functions called through ``KubernetesProvider.check_config`` and ``check_properties``
(``kubernetes.py``) when a revision is validated: unknown keys, wrong types, paths that leave
the repository, what the site's local policy forbids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reconciler.provider_api import LocalPolicy, Problem

from .kube_manifests import manifest_path_problem

__all__ = ["PROPERTIES", "check_config", "check_properties", "templated"]

_CONFIG_TYPES: dict[str, type] = {"kubeconfig": str, "context": str, "inCluster": bool,
                                  "namespace": str}
PROPERTIES = ("manifests", "resources", "force", "ignore", "healthTimeout", "prune")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def templated(value: Any) -> bool:
    """True for a value still holding an expression (checked again once rendered)."""
    return isinstance(value, str) and "${{" in value


def check_config(config: Mapping[str, Any], policy: LocalPolicy) -> list[Problem]:
    """Problems of a binding config: unknown keys, wrong types, what the policy forbids."""
    problems: list[Problem] = []
    for key, value in config.items():
        expected = _CONFIG_TYPES.get(key)
        if expected is None:
            problems.append(Problem(key, "unknown key; expected one of "
                                    + ", ".join(_CONFIG_TYPES)))
        elif not isinstance(value, expected):
            problems.append(Problem(key, f"must be a {expected.__name__}, "
                                    f"not {type(value).__name__}"))
    if config.get("inCluster") is True and config.get("kubeconfig"):
        problems.append(Problem("inCluster", "cannot be combined with kubeconfig"))
    namespace = config.get("namespace")
    if isinstance(namespace, str):
        if not _DNS_LABEL.match(namespace):
            problems.append(Problem("namespace", f"{namespace!r} is not a valid namespace "
                                    "name (lowercase DNS label)"))
        elif policy.namespaces is not None and namespace not in policy.namespaces:
            problems.append(Problem("namespace", f"namespace {namespace!r} is not allowed "
                                    "by the local policy (allowed: "
                                    f"{', '.join(sorted(policy.namespaces)) or 'none'})"))
    return problems

def check_properties(properties: Mapping[str, Any]) -> list[Problem]:
    """Problems of a component's properties (templated values are checked once rendered)."""
    problems: list[Problem] = [
        Problem(key, "unknown property; expected one of " + ", ".join(PROPERTIES))
        for key in properties if key not in PROPERTIES]
    if "manifests" not in properties and "resources" not in properties:
        problems.append(Problem("manifests", "one of manifests or resources is required"))
    manifests = properties.get("manifests")
    if manifests is not None and not templated(manifests):
        items = [manifests] if isinstance(manifests, str) else manifests
        if not isinstance(items, list):
            problems.append(Problem("manifests", "must be a path or a list of paths"))
        else:
            for index, item in enumerate(items):
                field = "manifests" if isinstance(manifests, str) else f"manifests.{index}"
                problem = manifest_path_problem(item) if isinstance(item, str) else \
                    "must be a path (string)"
                if problem is not None:
                    problems.append(Problem(field, problem))
    resources = properties.get("resources")
    if resources is not None and not templated(resources):
        if not isinstance(resources, list):
            problems.append(Problem("resources", "must be a list of Kubernetes objects"))
        else:
            for index, item in enumerate(resources):
                if not isinstance(item, Mapping):
                    problems.append(Problem(f"resources.{index}",
                                            "must be a Kubernetes object (a mapping)"))
                elif not item.get("apiVersion") or not item.get("kind"):
                    problems.append(Problem(f"resources.{index}",
                                            "apiVersion and kind are required"))
    for key in ("force", "prune"):
        value = properties.get(key)
        if value is not None and not templated(value) and not isinstance(value, bool):
            problems.append(Problem(key, "must be true or false"))
    ignore = properties.get("ignore")
    if ignore is not None and not templated(ignore):
        if not isinstance(ignore, list):
            problems.append(Problem("ignore", "must be a list of JSON pointers"))
        else:
            for index, pointer in enumerate(ignore):
                if not isinstance(pointer, str) or not pointer.startswith("/"):
                    problems.append(Problem(f"ignore.{index}", "must be a JSON pointer "
                                            "such as /spec/replicas"))
    timeout = properties.get("healthTimeout")
    if timeout is not None and not templated(timeout) and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or timeout <= 0):
        problems.append(Problem("healthTimeout", "must be a positive number of seconds"))
    return problems
