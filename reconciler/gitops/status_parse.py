"""Parse status files quickly, with exactly PyYAML's answer.

Reading a fleet's status means parsing tens of thousands of small YAML files. PyYAML costs
about 0.3 ms per status file even with libyaml's parser (the nodes and the constructors are
Python), which at 50,000 targets is longer than fetching them. The files are written by one
emitter (``yaml.safe_dump`` in ``reconciler.engine.status``) in a small, regular subset of
YAML: block mappings and sequences, one ``key: value`` per line, scalars plain or quoted.
:func:`load_status` reads that subset line by line, about ten times faster, and hands
anything else to PyYAML (``yaml.CSafeLoader`` when libyaml is there): a flow collection
that is not empty, an anchor or tag, a block scalar, a comment, a key that is not a plain
word, tabs, an indentation it does not expect. A scalar that is not obviously a plain string
(a number, a timestamp, a quoted text, a value folded over several lines) is resolved by
PyYAML on its own, so every value has the type and text PyYAML would give it. The unit tests
compare both on generated files.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["YAML_LOADER", "load_status", "load_yaml"]

YAML_LOADER: type[yaml.SafeLoader]
try:  # libyaml's parser; the constructors stay Python
    YAML_LOADER = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    YAML_LOADER = yaml.SafeLoader

# "key: value" or "key:", the key a plain word as our emitter writes names
_ENTRY = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_./-]*):(?: (.*))?\Z")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*\Z")
# a plain scalar PyYAML resolves to a string: starts with a letter, "/" or a number and a
# word ("3 components ready"), no character that could make it a number, bool, null or
# timestamp or end it early (": ", " #")
_PLAIN_STR = re.compile(r"(?:[A-Za-z/]|[0-9]+ [A-Za-z])[A-Za-z0-9_./ ()+,=-]*\Z")
# words a plain scalar of that shape still resolves to a bool or null (YAML 1.1)
_RESERVED = frozenset(
    w for word in ("yes", "no", "true", "false", "on", "off", "null", "y", "n")
    for w in (word, word.capitalize(), word.upper()))
# hex digits with a letter: no YAML 1.1 int (except binary 0b...), float or timestamp
_HEX = re.compile(r"(?=[0-9]*[a-f])(?!0b[01_]*\Z)[0-9a-f]+\Z")
# keys known to be plain text (every name a status file uses, once seen)
_KEYS: set[str] = {"apiVersion", "kind", "metadata", "name", "site", "target", "phase",
                   "message", "instances", "components", "errors"}
_KEYS_LIMIT = 10_000
# scalar texts already resolved (when not folded over lines), and to what
_TEXTS: dict[str, Any] = {}
_TEXTS_LIMIT = 100_000
_SINGLE = re.compile(r"'((?:[^']|'')*)'\Z")
# what PyYAML's reader refuses or reads as a line break (NEL, LS, PS), in ASCII text and in
# any text; and the start of a comment
_SPECIAL_ASCII = re.compile("[\x00-\x09\x0b-\x1f\x7f]")
_SPECIAL = re.compile("[^\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_COMMENT = re.compile("(?:^|[ \n])#")


class _Unsupported(Exception):
    """The text is outside the subset: PyYAML reads it."""


def load_yaml(text: str) -> Any:
    """PyYAML's ``safe_load`` with libyaml's parser when available."""
    return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader


def load_status(text: str) -> Any:
    """The document of a status file, as ``yaml.safe_load`` would return it.

    Raises what PyYAML raises for text that is not YAML.
    """
    try:
        return _Lines(text).document()
    except _Unsupported:
        return load_yaml(text)


class _Lines:
    """A block-style YAML document as lines (indent and content), read top-down."""

    def __init__(self, text: str) -> None:
        if (_SPECIAL_ASCII.search(text) if text.isascii() else _SPECIAL.search(text)) or (
                "#" in text and _COMMENT.search(text)):
            raise _Unsupported  # tabs, CR, NEL, control characters, comments
        if text.startswith(("%", "---")) or " \n" in text:
            # directives, explicit document starts; blanks at a line's end, which matter
            # inside a folded scalar
            raise _Unsupported
        lines = text.rstrip("\n ").split("\n")
        contents = [line.lstrip(" ") for line in lines]
        if "" in contents and contents != [""]:
            raise _Unsupported  # a blank line inside a folded scalar is a line break
        self.indents = [len(line) - len(content) for line, content in zip(lines, contents,
                                                                             strict=True)]
        self.indents.append(-1)  # the end: shallower than every line
        self.contents = contents if contents != [""] else []
        self.pos = 0

    def document(self) -> Any:
        if not self.contents:
            return None
        if self.indents[0] != 0:
            raise _Unsupported
        if self.contents[0].startswith("- "):
            value: Any = self.sequence(0)
        else:
            value = self.mapping(0)
        if self.pos != len(self.contents):
            raise _Unsupported
        return value

    def mapping(self, indent: int, first: str | None = None) -> dict[str, Any]:
        """Entries at ``indent``; ``first`` is an entry already split off a ``- `` line."""
        out: dict[str, Any] = {}
        indents, contents, texts = self.indents, self.contents, _TEXTS
        pos = self.pos
        while True:
            if first is not None:
                content, first = first, None
            elif indents[pos] == indent:
                content = contents[pos]
                pos += 1
            else:
                self.pos = pos
                return out
            key, colon, text = content.partition(": ")
            if not colon:
                if content[-1] != ":":
                    raise _Unsupported
                key, text = content[:-1], ""
            if key in out or (key not in _KEYS and not _plain_key(key)):
                raise _Unsupported  # duplicates, and keys PyYAML would not read as text
            if not colon:
                self.pos = pos
                at = indents[pos]
                if at > indent:
                    if contents[pos].startswith("- "):
                        raise _Unsupported  # an indented sequence
                    out[key] = self.mapping(at)
                elif at == indent and contents[pos].startswith("- "):
                    out[key] = self.sequence(indent)
                else:
                    out[key] = None
                pos = self.pos
            elif indents[pos] <= indent and text in texts:  # a value seen before
                out[key] = texts[text]
            else:
                self.pos = pos
                value = out[key] = self.scalar(text, indent + 1)
                if self.pos == pos and not isinstance(value, dict | list):
                    if len(texts) >= _TEXTS_LIMIT:
                        texts.clear()
                    texts[text] = value  # values repeat: phases, providers, revisions
                pos = self.pos

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        indents, contents = self.indents, self.contents
        while indents[self.pos] == indent and contents[self.pos].startswith("- "):
            item = contents[self.pos][2:]
            self.pos += 1
            if _ENTRY.match(item):
                out.append(self.mapping(indent + 2, first=item))
            elif item.startswith("- "):
                raise _Unsupported
            else:
                out.append(self.scalar(item, indent + 2))
        return out

    def scalar(self, text: str, deeper: int) -> Any:
        """A scalar starting with ``text``; lines indented at least ``deeper`` continue it."""
        if self.indents[self.pos] >= deeper:
            # folded over several lines: PyYAML joins them
            start = self.pos
            while self.indents[self.pos] >= deeper:
                self.pos += 1
            if text[:1] not in ("'", '"') and not _PLAIN_STR.match(text):
                raise _Unsupported
            rest = "\n ".join(self.contents[start:self.pos])
            return _resolve(f"{text}\n {rest}")
        if _PLAIN_STR.match(text):
            if text not in _RESERVED and "  " not in text:
                return text
        elif _HEX.match(text):
            return text  # a revision
        elif text == "{}":
            return {}
        elif text == "[]":
            return []
        single = _SINGLE.match(text)
        if single is not None:
            return single.group(1).replace("''", "'")
        if text[:1] in "[{&*!|>%@`?#," or text.startswith(("---", "...")):
            raise _Unsupported  # read alone, "---" and "..." would mark a document
        return _resolve(text)


def _plain_key(key: str) -> bool:
    """A key PyYAML reads as that text (remembered: a fleet's files share their keys)."""
    if _KEY.match(key) and key not in _RESERVED:
        if len(_KEYS) < _KEYS_LIMIT:
            _KEYS.add(key)
        return True
    return False


def _resolve(text: str) -> Any:
    """One scalar, resolved and built by PyYAML."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        raise _Unsupported from None
    if isinstance(value, dict | list):
        raise _Unsupported  # "a: b" is no scalar
    return value

