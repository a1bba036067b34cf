"""The diffs of the offline plan: what differs between two descriptions of a component,
as YAML, and between the repository files a component names, as unified diffs.

Only what differs is formatted (:func:`changed_parts`): the properties and parameters whose
values differ, not the whole component, so the cost of a plan follows the size of its changes.
Used by :mod:`reconciler.engine.review`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.engine.review_digests import tree_digest

__all__ = ["MAX_DIFF", "changed_parts", "cut", "file_diff", "yaml_lines"]

MAX_DIFF = 8_000  # characters of diff shown per component


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """YAML for diffs: libyaml's emitter when it is there; text of several lines as a block,
    so that a changed line of a file's content is one changed line of the diff."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value,
                                   style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def yaml_lines(value: Any) -> list[str]:
    text: str = yaml.dump(value, Dumper=_Dumper, sort_keys=True, allow_unicode=True,
                          width=100, default_flow_style=False)
    return text.splitlines(keepends=True)


def file_diff(label: str, old: Path | None, new: Path | None) -> str:
    """A unified diff of two repository files or directories (text files only)."""
    before = tree_digest(old) if old is not None else {}
    after = tree_digest(new) if new is not None else {}
    out: list[str] = []
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) == after.get(rel):
            continue
        name = label if rel == "." else f"{label}/{rel}"
        texts: list[list[str]] = []
        for root, table in ((old, before), (new, after)):
            if root is None or rel not in table:
                texts.append([])
                continue
            raw = (root if rel == "." else root / rel).read_bytes()
            try:
                texts.append(raw.decode("utf-8").splitlines(keepends=True))
            except UnicodeDecodeError:
                texts.append([f"<binary, {len(raw)} bytes, sha256 {table[rel][:12]}>\n"])
        out.extend(difflib.unified_diff(texts[0], texts[1], f"a/{name}", f"b/{name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def changed_parts(old: Mapping[str, Any], new: Mapping[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """What differs between two shown components, for the diff: ``type`` and ``dependsOn``
    when they differ, and the properties and parameters whose values differ (compared as
    values: only these are formatted)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in ("type", "dependsOn"):
        if old.get(name) != new.get(name):
            before[name], after[name] = old.get(name), new.get(name)
    for section in ("properties", "params"):
        was, now = old.get(section) or {}, new.get(section) or {}
        keys = [k for k in sorted(set(was) | set(now), key=str)
                if k not in was or k not in now or was[k] != now[k]]
        if keys:
            before[section] = {k: was[k] for k in keys if k in was}
            after[section] = {k: now[k] for k in keys if k in now}
    return before, after


def cut(diff: str) -> str:
    if len(diff) > MAX_DIFF:
        return diff[:MAX_DIFF] + f"\n[diff truncated: {len(diff)} characters in all]\n"
    return diff
