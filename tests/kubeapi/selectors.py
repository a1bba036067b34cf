"""Label and field selectors of list and deletecollection requests.

Implements the selector grammar of the kube-apiserver (``a=b,c!=d,e in (x,y),f notin (z),g,!h``
for labels; ``metadata.name=x`` / ``metadata.namespace!=y`` for fields). A malformed selector
is a 400 BadRequest, as on a real server. Called by ``tests.kubeapi.server``.
"""

from __future__ import annotations

import re
from typing import Any

from tests.kubeapi.resources import ApiStatus

__all__ = ["match_fields", "match_labels"]

_SET_EXPR = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_EXPR = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split(selector: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate requirements.
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def match_labels(selector: str, obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for req in _split(selector):
        m = _SET_EXPR.match(req)
        if m:
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            present = m.group(1) in labels and labels[m.group(1)] in values
            if present != (m.group(2) == "in"):
                return False
            continue
        m = _EQ_EXPR.match(req)
        if m:
            equal = labels.get(m.group(1)) == m.group(3)
            if equal != (m.group(2) != "!="):
                return False
            continue
        m = _EXISTS.match(req)
        if m:
            if (m.group(2) in labels) == bool(m.group(1)):
                return False
            continue
        raise ApiStatus.bad_request(f"unable to parse requirement: {req.strip()!r}")
    return True


def match_fields(selector: str, obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for req in _split(selector):
        m = _EQ_EXPR.match(req)
        if not m:
            raise ApiStatus.bad_request(f"invalid selector: '{selector}'; can't understand "
                                        f"'{req.strip()}'")
        field, op, value = m.groups()
        if field in ("metadata.name", "metadata.namespace"):
            actual = str(meta.get(field.split(".", 1)[1], ""))
        elif field == "status.phase":
            actual = str((obj.get("status") or {}).get("phase", ""))
        else:
            raise ApiStatus.bad_request(f'field label not supported: {field}')
        if (actual == value) != (op != "!="):
            return False
    return True
