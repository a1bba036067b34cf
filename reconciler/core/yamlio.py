"""Safe YAML reading with line numbers and hard limits.

Every manifest file goes through :func:`read_documents`: a size limit checked before reading,
strict UTF-8, ``safe_load`` semantics (libyaml's C loader when present), a bound on the number
of nodes a document expands to (so an alias bomb is refused instead of eating the machine),
duplicate mapping keys reported instead of silently overwritten, and a line index per document
so that every later error can name the line of the field it is about. Called by the loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_NODES",
    "YamlDocument",
    "YamlFileError",
    "line_at",
    "parse_documents",
    "read_documents",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # expanded nodes per document; the 1,000-target bench fleet needs < 1,000

_Loader: type[yaml.SafeLoader]
try:  # libyaml is an order of magnitude faster; both build the same node graph with marks
    _Loader = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlFileError(Exception):
    """A file that cannot be read as YAML; ``line`` is 1-based (0: the file as a whole)."""

    line: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    line: int  # first line of the document
    lines: Mapping[Path_, int]  # field path -> line of its key (or sequence item)
    duplicates: tuple[tuple[Path_, int], ...] = ()  # keys defined twice in one mapping

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known prefix of ``path`` (the document start at worst)."""
        return line_at(self.lines, path, self.line)


def line_at(lines: Mapping[Path_, int], path: Path_, default: int) -> int:
    """The line of the deepest prefix of ``path`` found in a line index, else ``default``."""
    while path:
        found = lines.get(path)
        if found is not None:
            return found
        path = path[:-1]
    return default


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = limit + 1  # a recursive alias counts as infinite
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, memo, limit) + _expanded_size(value, memo, limit)
            if size > limit:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            size += _expanded_size(item, memo, limit)
            if size > limit:
                break
    memo[id(node)] = size
    return size


def _key_seen(key: yaml.ScalarNode, path: Path_, names: set[str],
              lines: dict[Path_, int], dups: list[tuple[Path_, int]]) -> Path_:
    """The path of a mapping's key, its line noted (the first one) and a repeated name
    noted as a duplicate (``<<`` may repeat)."""
    name = key.value
    child = (*path, name)
    line = key.start_mark.line + 1
    if name in names and name != "<<":
        dups.append((child, line))
    names.add(name)
    lines.setdefault(child, line)
    return child


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int],
           dups: list[tuple[Path_, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            child = _key_seen(key, path, seen, lines, dups)
            _index(value, child, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            _index(item, child, lines, dups)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                                  f"{exc.start})") from None


_STR, _MAP, _SEQ = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:map",
                    "tag:yaml.org,2002:seq")
# the safe constructors of scalars that build a value from the scalar alone
_SCALARS = {tag: _Loader.yaml_constructors[tag] for tag in (
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary",
                                             "timestamp"))}


class _Unusual(Exception):
    """A document the plain walk leaves to PyYAML's constructor."""


def _plain(loader: Any, node: yaml.Node, path: Path_, lines: dict[Path_, int],
           dups: list[tuple[Path_, int]], seen: set[int]) -> Any:
    """What the safe constructor builds of ``node``, and its line index, in one walk; only
    for plain data: _Unusual for an alias (a node met twice), a merge key, any other tag."""
    if id(node) in seen:
        raise _Unusual
    seen.add(id(node))
    kind = node.__class__
    if kind is yaml.ScalarNode:
        if node.tag == _STR:
            return node.value
        build = _SCALARS.get(node.tag)
        if build is None:
            raise _Unusual
        return build(loader, node)
    if len(seen) > MAX_NODES:
        raise _Unusual
    if kind is yaml.MappingNode and node.tag == _MAP:
        out: dict[Any, Any] = {}
        names: set[str] = set()
        for key, value in node.value:
            if key.__class__ is not yaml.ScalarNode:
                raise _Unusual
            child = _key_seen(key, path, names, lines, dups)
            built = _plain(loader, key, path, lines, dups, seen)
            out[built] = _plain(loader, value, child, lines, dups, seen)
        return out
    if kind is yaml.SequenceNode and node.tag == _SEQ:
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            items.append(_plain(loader, item, child, lines, dups, seen))
        return items
    raise _Unusual


def _document(loader: Any, node: yaml.Node) -> YamlDocument:
    """One composed document: plain data built and indexed in one walk (most documents), or
    else checked for its expanded size, built by PyYAML's constructor and indexed after."""
    lines: dict[Path_, int] = {}
    dups: list[tuple[Path_, int]] = []
    try:
        data = _plain(loader, node, (), lines, dups, set())
    except Exception:  # anything unusual, errors included: the constructor has the last word
        if _expanded_size(node, {}, MAX_NODES) > MAX_NODES:
            raise YamlFileError(node.start_mark.line + 1,
                                f"document expands to more than {MAX_NODES} nodes "
                                "(recursive or exponential aliases?)") from None
        data = loader.construct_document(node)
        lines = {}
        dups = []
        _index(node, (), lines, dups)
    return YamlDocument(data, node.start_mark.line + 1, lines, tuple(dups))


def _documents(text: str) -> Iterator[YamlDocument]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            yield _document(loader, node)
    finally:
        loader.dispose()


def read_documents(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[YamlDocument]:
    """All documents of one YAML file, or :class:`YamlFileError` naming the line."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise YamlFileError(0, f"file is {size} bytes, larger than the limit of {max_bytes}")
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlFileError(0, f"cannot read: {exc.strerror or exc}") from None
    return parse_documents(_decode(raw))


def parse_documents(text: str) -> list[YamlDocument]:
    """All documents of YAML text, or :class:`YamlFileError` naming the line."""
    try:
        return [doc for doc in _documents(text) if doc.data is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlFileError(line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(0, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlFileError(0, "invalid YAML: nesting too deep") from None
