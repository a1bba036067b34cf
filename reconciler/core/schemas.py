"""The raw shapes of the manifest kinds, as cerberus schemas.

The loader validates every document against the schema of its kind before it builds the frozen
values of ``reconciler.core.model`` from it; cross-object rules (references, cycles, parameter
values) are checked afterwards by ``reconciler.core.validation``.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.projects import PROJECT_SCHEMA
from reconciler.core.rollouts import ROLLOUT_SCHEMA
from reconciler.core.windows import WINDOWS_SCHEMA

__all__ = ["KIND_SCHEMAS", "PARAM_NAME", "PATTERN_HELP", "document_schema"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
SEMVER = (r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")

PATTERN_HELP = {
    DNS_LABEL: "must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a "
               "letter or digit)",
    PARAM_NAME: "must be an identifier (letters, digits and '_', not starting with a digit)",
    LABEL_KEY: "is not a valid label key",
    LABEL_VALUE: "is not a valid label value",
    SEMVER: "must be a semantic version such as 1.4.0",
}

_NAME: dict[str, Any] = {"type": "string", "required": True, "regex": DNS_LABEL,
                         "maxlength": 63, "empty": False}
_LABELS: dict[str, Any] = {
    "type": "dict",
    "keysrules": {"type": "string", "regex": LABEL_KEY, "maxlength": 253},
    "valuesrules": {"type": "string", "regex": LABEL_VALUE, "maxlength": 63},
}
_PARAMS: dict[str, Any] = {"type": "dict", "keysrules": {"type": "string", "regex": PARAM_NAME}}
_NAMES: dict[str, Any] = {"type": "list", "schema": {"type": "string", "empty": False}}

_SETTINGS = {
    "hierarchy": {"type": "list", "required": True, "minlength": 1,
                  "schema": {"type": "string", "regex": DNS_LABEL}},
    "defaults": {"type": "dict", "schema": {
        "interval": {"type": "integer", "min": 10},
        "jitter": {"type": "integer", "min": 0},
        "retries": {"type": "integer", "min": 0, "max": 100},
        "retryDelay": {"type": "number", "min": 0},
        "healthTimeout": {"type": "integer", "min": 1},
    }},
    "status": {"type": "dict", "schema": {
        "layout": {"type": "string", "allowed": ["per-site", "shared"]},
        "branch": {"type": "string", "regex": r"^[A-Za-z0-9][-A-Za-z0-9_./]*$"},
    }},
    "ignore": _NAMES,
    "description": {"type": "string"},
}

_SITE = {
    "parent": {"type": "string", "regex": DNS_LABEL},
    "params": _PARAMS,
    "solutionParams": {"type": "dict", "keysrules": {"type": "string", "regex": DNS_LABEL},
                       "valuesrules": _PARAMS},
    "description": {"type": "string"},
    "windows": WINDOWS_SCHEMA,
    "suspend": {"type": "boolean"},
}

_TARGET = {
    "site": {"type": "string", "required": True, "regex": DNS_LABEL},
    "params": _PARAMS,
    "bindings": {"type": "list", "schema": {"type": "dict", "schema": {
        "role": {"type": "string", "required": True, "empty": False},
        "provider": {"type": "string", "required": True, "empty": False},
        "config": {"type": "dict"},
    }}},
    "description": {"type": "string"},
    "windows": WINDOWS_SCHEMA,
    "suspend": {"type": "boolean"},
}

# our keys in a parameter definition; every other key is a cerberus rule
PARAMETER_KEYS = frozenset({"editableAt", "description", "secret"})

_SOLUTION = {
    "parameters": {"type": "dict", "keysrules": {"type": "string", "regex": PARAM_NAME},
                   "valuesrules": {"type": "dict"}},
    "profiles": {"type": "dict", "keysrules": {"type": "string", "regex": DNS_LABEL},
                 "valuesrules": _PARAMS},
    "components": {"type": "list", "required": True, "schema": {"type": "dict", "schema": {
        "name": _NAME,
        "type": {"type": "string", "required": True, "empty": False},
        "properties": {"type": "dict"},
        "dependsOn": {"type": "list", "schema": {"type": "string", "regex": DNS_LABEL}},
        "description": {"type": "string"},
    }}},
    "description": {"type": "string"},
}

_INSTANCE = {
    "solution": {"type": "string", "required": True, "regex": DNS_LABEL},
    "version": {"type": "string", "regex": SEMVER},
    "targets": {"type": "dict", "required": True, "schema": {
        "names": {"type": "list", "schema": {"type": "string", "regex": DNS_LABEL}},
        "selector": {"type": "dict", "schema": {
            "sites": {"type": "list", "schema": {"type": "string", "empty": False}},
            "matchLabels": _LABELS,
        }},
    }},
    "profile": {"type": "string", "regex": DNS_LABEL},
    "params": _PARAMS,
    "suspend": {"type": "boolean"},
    "onFailure": {"type": "string", "allowed": ["rollback", "stay"]},
    "windows": WINDOWS_SCHEMA,
    "rollout": ROLLOUT_SCHEMA,
    "description": {"type": "string"},
}

KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "Settings": _SETTINGS,
    "Site": _SITE,
    "Target": _TARGET,
    "Solution": _SOLUTION,
    "Instance": _INSTANCE,
    "Project": PROJECT_SCHEMA,
}


def document_schema(kind: str) -> dict[str, Any]:
    """The schema of a whole document (envelope + the kind's spec)."""
    return {
        "apiVersion": {"type": "string", "required": True},
        "kind": {"type": "string", "required": True},
        "metadata": {"type": "dict", "required": True, "schema": {
            "name": _NAME,
            "labels": _LABELS,
            "annotations": {"type": "dict", "valuesrules": {"type": "string"}},
        }},
        "spec": {"type": "dict", "required": kind != "Settings",
                 "schema": KIND_SCHEMAS[kind]},
    }
