"""A quick yes to "does this document fit its schema?", before cerberus is asked.

Cerberus checks a document rule by rule through a general machinery: at 10,000 targets that
is a fifth of loading a fleet. :func:`conforms` walks a document and its schema together for
the rules our schemas use (``type``, ``required``, ``regex``, ``schema``, ``empty``,
``keysrules``, ``valuesrules``, ``min``, ``max``, ``minlength``, ``maxlength``, ``allowed``)
and answers True only when every rule certainly holds; anything else — a rule it does not
know, a value it is not sure of (``None``, a boolean where a number is expected, a field the
schema does not name), a rule that fails — answers False, and the loader asks cerberus, which
has the last word and words the findings. So a True is always cerberus's answer too; a False
only costs the time it saves otherwise. Used by ``reconciler.core.loading``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["conforms"]

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "dict": dict, "list": list, "boolean": bool, "integer": int,
    "number": (int, float)}
_KNOWN = frozenset({"type", "required", "regex", "schema", "empty", "keysrules", "valuesrules",
                    "min", "max", "minlength", "maxlength", "allowed"})


@functools.lru_cache(maxsize=256)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex if regex.endswith("$") else regex + "$")  # as cerberus does


def conforms(document: Any, fields: Mapping[str, Any]) -> bool:
    """Whether ``document`` certainly fits the cerberus schema ``fields`` (False: ask
    cerberus)."""
    return isinstance(document, dict) and _fields(document, fields)


def _fields(value: dict[Any, Any], fields: Mapping[str, Any]) -> bool:
    for key in value:
        if key not in fields:
            return False  # unknown fields are not allowed: cerberus says so
    for key, rules in fields.items():
        if key in value:
            if not _value(value[key], rules):
                return False
        elif rules.get("required"):
            return False
    return True


def _value(value: Any, rules: Mapping[str, Any]) -> bool:
    if value is None or not _KNOWN.issuperset(rules):
        return False
    kind = rules.get("type")
    if kind is not None:
        expected = _TYPES.get(kind) if isinstance(kind, str) else None
        if expected is None or not isinstance(value, expected) \
                or (kind != "boolean" and isinstance(value, bool)):
            return False
    if rules.get("empty") is False and isinstance(value, (str, list, dict)) and not value:
        return False
    if "regex" in rules and (not isinstance(value, str)
                             or not _pattern(rules["regex"]).match(value)):
        return False
    if "allowed" in rules and (not isinstance(value, str) or value not in rules["allowed"]):
        return False
    if ("min" in rules or "max" in rules) and not (
            isinstance(value, (int, float)) and _within(value, rules, "min", "max")):
        return False
    if ("minlength" in rules or "maxlength" in rules) and not (
            isinstance(value, (str, list, dict))
            and _within(len(value), rules, "minlength", "maxlength")):
        return False
    schema = rules.get("schema")
    if schema is not None:
        if isinstance(value, dict):
            if not _fields(value, schema):
                return False
        elif isinstance(value, list):
            if not all(_value(item, schema) for item in value):
                return False
        else:
            return False
    if "keysrules" in rules or "valuesrules" in rules:
        if not isinstance(value, dict):
            return False
        keys, values = rules.get("keysrules"), rules.get("valuesrules")
        if keys is not None and not all(_value(k, keys) for k in value):
            return False
        if values is not None and not all(_value(v, values) for v in value.values()):
            return False
    return True


def _within(value: float, rules: Mapping[str, Any], low: str, high: str) -> bool:
    return (low not in rules or value >= rules[low]) and (high not in rules or value <= rules[high])
