"""Setting an instance's pinned version in its YAML file, leaving every other byte as it was.

Used by :mod:`reconciler.gitops.releases` for a roll-back; kept apart so that the round-trip
YAML parser it needs is imported only by the commands that edit a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from reconciler.core.errors import ReconcilerError

__all__ = ["pin_version", "pinned"]


def pin_version(path: Path, instance: str, version: str) -> None:
    """Set ``spec.version`` of ``Instance/<instance>`` in the YAML file at ``path``: the
    version's value is replaced, or a ``version:`` entry added right after ``solution:``;
    every other byte of the file stays as it was. :class:`ReconcilerError` when the file
    has no such instance, or when the spec or its version is shared through an anchor (the
    edit would change more than this instance)."""
    edited = pinned(path.read_bytes().decode("utf-8"), instance, version, str(path))
    path.write_bytes(edited.encode("utf-8"))


def pinned(text: str, instance: str, version: str, where: str) -> str:
    """``text`` with the version of ``instance`` set.

    The round-trip parser gives the exact place of every node in the text, so the edit is a
    splice at that place: a re-emitted document would re-indent, re-quote or re-wrap lines
    a person wrote.
    """
    try:
        documents = list(YAML(typ="rt").compose_all(text))
    except YAMLError as exc:
        raise ReconcilerError(f"{where}: not valid YAML: {exc}") from exc
    spec = next((_get(d, "spec") for d in documents
                 if _scalar(_get(d, "kind")) == "Instance"
                 and _scalar(_get(_get(d, "metadata"), "name")) == instance), None)
    if not isinstance(spec, MappingNode):
        raise ReconcilerError(f"{where}: no Instance/{instance} in the file with a spec")
    if spec.anchor is not None:
        raise ReconcilerError(f"{where}: the spec of Instance/{instance} is shared by an anchor "
                              f"(&{spec.anchor}); pin its version by hand")
    current = _get(spec, "version")
    if isinstance(current, ScalarNode):
        if current.anchor is not None:
            raise ReconcilerError(f"{where}: spec.version of Instance/{instance} is shared by "
                                  f"an anchor (&{current.anchor}); pin it by hand")
        start: int = current.start_mark.index
        end: int = current.end_mark.index
        return text[:start] + _scalar_text(version, current.style) + text[end:]
    return _insert_version(text, spec, instance, version, where)


def _insert_version(text: str, spec: MappingNode, instance: str, version: str,
                    where: str) -> str:
    """``text`` with ``version: <version>`` added to ``spec`` right after its solution."""
    key = next((k for k, _ in spec.value if _scalar(k) == "solution"), None)
    value = _get(spec, "solution")
    if key is None or value is None:
        raise ReconcilerError(f"{where}: Instance/{instance} has no spec.solution")
    end: int = value.end_mark.index
    entry = f"version: {_scalar_text(version, None)}"
    if spec.flow_style:  # {solution: a, ...}: the entry goes inside the braces
        return text[:end] + ", " + entry + text[end:]
    # a block mapping: a line of its own after the solution's line (and its comment)
    eol = text.find("\n", end)
    newline = "\r\n" if eol > 0 and text[eol - 1] == "\r" else "\n"
    indent: int = key.start_mark.column
    line = " " * indent + entry + newline
    if eol < 0:
        return text + newline + line
    return text[:eol + 1] + line + text[eol + 1:]


def _get(node: Node | None, key: str) -> Node | None:
    """The value of ``key`` in a mapping node (None when it is not a mapping or lacks it)."""
    if not isinstance(node, MappingNode):
        return None
    found: Node | None = next((v for k, v in node.value if _scalar(k) == key), None)
    return found


def _scalar(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _scalar_text(version: str, style: str | None) -> str:
    """``version`` as a YAML scalar: in the quotes the old value had, plain when that reads
    back as the same string (every semantic version does), double-quoted otherwise."""
    if style == "'":
        return "'" + version.replace("'", "''") + "'"
    if style == '"' or not re.fullmatch(r"\d+\.\d+\.\d+[0-9A-Za-z.+-]*", version):
        return json.dumps(version)
    return version
