"""Cerberus findings as our diagnostics say them: a field path and a message a person reads.

``field_path`` spells a document path (``spec.components[1].name``); ``schema_errors``
flattens cerberus' error tree into (path, message) pairs, with a did-you-mean hint for an
unknown field and a plain explanation for our named patterns; ``closest`` is the hint itself.
Used by the loader (document schemas), the parameter checks (solution parameter rules) and
the daemon's config check.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cerberus.errors import BasicErrorHandler

from reconciler.core.schemas import PATTERN_HELP

__all__ = ["closest", "field_path", "schema_errors", "split_field"]

_MESSAGES = BasicErrorHandler.messages
_UNKNOWN_FIELD = 0x03  # cerberus' error code


def field_path(path: tuple[str | int, ...]) -> str:
    """``("spec", "components", 1, "name")`` -> ``spec.components[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def closest(word: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice most like ``word``, if one is alike enough."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def _schema_keys(schema: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
    """Keys allowed by the (dict) schema found at ``path``, for did-you-mean hints."""
    current: Any = {"type": "dict", "schema": schema}
    for part in path:
        if isinstance(part, int):
            current = current.get("schema", {}) if isinstance(current, dict) else {}
            continue
        sub = current.get("schema") if isinstance(current, dict) else None
        if not isinstance(sub, dict) or part not in sub:
            return []
        current = sub[part]
    sub = current.get("schema") if isinstance(current, dict) else None
    return list(sub) if isinstance(sub, dict) else []


def schema_errors(errors: Any, schema: Mapping[str, Any]
                  ) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(document path, message) of every leaf of a cerberus validator's ``_errors``.

    ``schema`` is the one validated against, for the hint on an unknown field (``{}``: no
    hints).
    """
    for error in errors:
        if error.child_errors:
            yield from schema_errors(error.child_errors, schema)
            continue
        path = tuple(error.document_path)
        if error.code == _UNKNOWN_FIELD:
            hint = closest(str(path[-1]), _schema_keys(schema, path[:-1]), 0.6)
            yield path, "unknown field" + (f" (did you mean '{hint}'?)" if hint else "")
        elif error.rule == "regex" and error.constraint in PATTERN_HELP:
            yield path, f"'{error.value}' {PATTERN_HELP[error.constraint]}"
        elif error.code in _MESSAGES:
            message = _MESSAGES[error.code].format(
                *error.info, constraint=error.constraint, field=error.field, value=error.value)
            yield path, message
        else:  # pragma: no cover - every cerberus code has a message
            yield path, f"invalid ({error.rule})"


def split_field(fld: str) -> list[str | int]:
    """``"a.b[2].c"`` -> ``["a", "b", 2, "c"]`` (the inverse of :func:`field_path`)."""
    parts: list[str | int] = []
    for chunk in fld.split("."):
        while "[" in chunk:
            head, _, rest = chunk.partition("[")
            if head:
                parts.append(head)
            index, _, chunk = rest.partition("]")
            parts.append(int(index))
        if chunk:
            parts.append(chunk)
    return parts
