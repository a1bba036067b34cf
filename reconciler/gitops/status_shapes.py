"""Status files of the layout the daemons write, read by their shape.

A fleet's status files (``reconciler.engine.status``) differ in their values far more than in
their layout: the same keys, nested the same way, file after file. :func:`shaped` checks a
whole file against that layout with one regular expression (every line ``key: value`` or
``key:``, the key a plain word, the value a plain string PyYAML reads as itself, a revision,
a single-quoted string on one line, ``{}`` or ``[]``), then takes the lines' keys and
indentation (the file's *shape*) apart from its values. The structure of a shape is worked
out once and kept; a file of a known shape costs a few passes of the regular expression
engine and a lookup, not a walk of its lines in Python. :meth:`Shaped.fields` builds only the
fields the fleet table needs, :meth:`Shaped.document` the whole document, :meth:`Shaped.json`
its JSON text without building it.

Anything else (a sequence, a value folded over lines, a double-quoted string, a comment, a
duplicate key, an indentation that does not nest) is not taken: :func:`shaped` returns None
and the caller reads the file with ``reconciler.gitops.status_parse``. What is taken gives
exactly what PyYAML's safe loader gives; the unit tests compare both on generated files.
Used by ``reconciler.gitops.status_files``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Shaped", "shaped"]

# words PyYAML resolves to a bool or null (YAML 1.1; y and n too, to be safe): no key or
# plain value may be one
_RESERVED = frozenset(w for word in ("yes", "no", "true", "false", "on", "off", "null", "y", "n")
                      for w in (word, word.capitalize(), word.upper()))
_KEY = r"[A-Za-z][A-Za-z0-9_./-]*"
# what PyYAML's reader takes for no printable character, or for a line break (NEL, LS, PS);
# and the byte order mark
_UNPRINTABLE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff"
# what a plain string may hold after its start (and ":", but not at the end of a word)
_PLAIN = r"""A-Za-z0-9_./()+,=;'"!@%&*?|<>\[\]{}\\"""
_VALUE = (
    # a plain string: it starts with a letter, "/", a number and a word or a version with
    # two dots, so it is no number, time or indicator; no ": " or " #" in it, no blank at
    # its end or two in a row (and, checked apart, no reserved word)
    rf"(?:[A-Za-z/]|[0-9]+ [A-Za-z]|[0-9]+\.[0-9]+\.)"
    rf"(?:[{_PLAIN}:-]*[{_PLAIN}-])?(?: [{_PLAIN}:-]*[{_PLAIN}-])*"
    # a revision: hex digits with a letter (but no binary number such as 0b1)
    r"|(?=[0-9]*[a-f])(?!0b[01_]*\n)[0-9a-f]+"
    # one line in single quotes, '' for a quote
    rf"|'[^'{_UNPRINTABLE}]*(?:''[^'{_UNPRINTABLE}]*)*'"
    r"|\{\}|\[\]"
)
# atomic: a value matched is not taken apart again when a later line fails (which with a
# few dozen values that two alternatives match would take exponential time); the plain
# alternative matches as far as any other could, so nothing that fits is refused
_FILE = re.compile(rf"(?: *{_KEY}:(?: (?>{_VALUE}))?\n)++")
_VALUES = re.compile(r": (.*)")  # a line's value: after the first ": " (no key has one)
_SHAPE = re.compile(r": .*")
_EMPTY_DICT, _EMPTY_LIST = "{}", "[]"
_SHAPES_LIMIT = 5000
_ENCODED_LIMIT = 20_000
# the fields of a status file the fleet table reads (reconciler.gitops.status_files)
_FIELDS = ("site", "target", "phase", "message", "observedRevision", "appliedRevision",
           "lastGoodRevision", "lastChange", "heartbeat", "errors")
_INSTANCE_FIELDS = ("solution", "phase", "release", "rolledBack")

# a shape's structure: key -> the index of its value, None (null) or a nested structure
_Node = int | None | dict[str, Any]


class _Shape:
    """What one shape is: its structure, the part of it the fleet table reads, and its JSON
    text cut where the values go."""

    __slots__ = ("fields", "pieces", "tree")

    def __init__(self, tree: dict[str, _Node]) -> None:
        self.tree = tree
        self.fields = {key: tree[key] for key in _FIELDS if key in tree}
        instances = tree.get("instances", False)
        if isinstance(instances, dict):  # of each instance, the fields read
            self.fields["instances"] = {
                name: {key: node[key] for key in _INSTANCE_FIELDS if key in node}
                if isinstance(node, dict) else node for name, node in instances.items()}
        elif instances is not False:
            self.fields["instances"] = instances
        pieces: list[str] = []
        text: list[str] = []
        _json_pieces(tree, text, pieces)
        pieces.append("".join(text))
        self.pieces = pieces


_SHAPES: dict[str, _Shape | None] = {}


class Shaped:
    """A status file of a known shape: its structure and its values (as written)."""

    __slots__ = ("shape", "values")

    def __init__(self, shape: _Shape, values: Sequence[str]) -> None:
        self.shape = shape
        self.values = values

    def fields(self) -> dict[str, Any]:
        """The document with only the fields the fleet table reads: the same values as in
        the whole document, so what is made of them is the same."""
        return _build(self.shape.fields, self.values)  # type: ignore[no-any-return]

    def document(self) -> dict[str, Any]:
        """The whole document, as ``yaml.safe_load`` gives it."""
        built = _build(self.shape.tree, self.values)
        assert isinstance(built, dict)
        return built

    def json(self) -> str:
        """The document as compact JSON (``json.dumps(..., separators=(",", ":"),
        ensure_ascii=False)``), made from the values' text."""
        pieces = self.shape.pieces
        parts = [""] * (2 * len(pieces) - 1)  # the pieces, the values' JSON between them
        parts[0::2] = pieces
        parts[1::2] = map(_ENCODED.__getitem__, self.values)
        return "".join(parts)


def shaped(text: str) -> Shaped | None:
    """``text`` read by its shape; None when it is not of the layout taken (see the module
    docstring)."""
    if _FILE.fullmatch(text) is None:
        return None
    key = _SHAPE.sub("", text)
    try:
        shape = _SHAPES[key]
    except KeyError:
        shape = _shape_of(key)
        if len(_SHAPES) >= _SHAPES_LIMIT:
            _SHAPES.clear()
        _SHAPES[key] = shape
    if shape is None:
        return None
    values = _VALUES.findall(text)
    if not _RESERVED.isdisjoint(values):
        return None
    return Shaped(shape, values)


def _shape_of(lines_text: str) -> _Shape | None:
    """The structure of a file whose lines are ``lines_text`` (each ``key`` with a value,
    ``key:`` without one); None when it does not nest as a block mapping."""
    root: dict[str, _Node] = {}
    stack: list[tuple[int, dict[str, _Node]]] = [(0, root)]
    lines = lines_text.split("\n")[:-1]
    indents = [len(line) - len(line.lstrip(" ")) for line in lines]
    indents.append(-1)  # the end: shallower than every line
    index = 0
    for number, line in enumerate(lines):
        indent, following = indents[number], indents[number + 1]
        key = line[indent:]
        while indent < stack[-1][0]:
            stack.pop()
        if indent != stack[-1][0]:
            return None  # deeper than the mapping it is in, or between two levels
        mapping = stack[-1][1]
        if key.endswith(":"):  # no value: a nested mapping, or null
            key = key[:-1]
            node: _Node = None
            if following > indent:
                nested: dict[str, _Node] = {}
                stack.append((following, nested))
                node = nested
        elif following > indent:
            return None  # a value that goes on over the next line
        else:
            node = index
            index += 1
        if key in mapping or key in _RESERVED:
            return None  # a duplicate key (PyYAML keeps the last), a key that is no text
        mapping[key] = node
    return _Shape(root)


def _build(node: _Node, values: Sequence[str]) -> Any:
    if isinstance(node, int):
        return _value(values[node])
    if node is None:
        return None
    return {key: _value(values[item]) if item.__class__ is int else _build(item, values)
            for key, item in node.items()}


def _value(text: str) -> Any:
    first = text[0]
    if first == "'":
        return text[1:-1].replace("''", "'")
    if text == _EMPTY_DICT:
        return {}
    if text == _EMPTY_LIST:
        return []
    return text


class _Encoded(dict[str, str]):
    """A value's text -> its JSON (a fleet's files repeat most values: made once each)."""

    def __missing__(self, text: str) -> str:
        if len(self) >= _ENCODED_LIMIT:
            self.clear()
        first = text[0]
        if first == "'":
            found = json.dumps(text[1:-1].replace("''", "'"), ensure_ascii=False)
        elif text in (_EMPTY_DICT, _EMPTY_LIST):
            found = text
        elif '"' in text or "\\" in text:
            found = json.dumps(text, ensure_ascii=False)
        else:
            found = f'"{text}"'  # a plain string or a revision: ASCII JSON does not escape
        self[text] = found
        return found


_ENCODED = _Encoded()


def _json_pieces(tree: dict[str, _Node], text: list[str], pieces: list[str]) -> None:
    """The JSON of ``tree`` as literal pieces: ``pieces`` gets the text before each value."""
    text.append("{")
    for number, (key, node) in enumerate(tree.items()):
        text.append(("," if number else "") + json.dumps(key) + ":")
        if node is None:
            text.append("null")
        elif isinstance(node, int):
            pieces.append("".join(text))
            text.clear()
        else:
            _json_pieces(node, text, pieces)
    text.append("}")
