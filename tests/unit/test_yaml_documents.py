"""reconciler.core.yamlio builds plain documents in one walk of the node graph: what it reads
is what PyYAML's safe constructor and the line index give, data, lines, duplicates and errors
alike, over the repository's own YAML files and generated tricky documents."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core import yamlio
from reconciler.core.yamlio import MAX_NODES, YamlFileError, parse_documents, read_documents

ROOT = Path(__file__).resolve().parents[2]


def by_constructor(text: str) -> list[yamlio.YamlDocument]:
    """Every document as PyYAML's safe constructor builds it, indexed after."""
    loader = yamlio._Loader(text)
    out = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if yamlio._expanded_size(node, {}, MAX_NODES) > MAX_NODES:
                raise YamlFileError(node.start_mark.line + 1,
                                    f"document expands to more than {MAX_NODES} nodes "
                                    "(recursive or exponential aliases?)")
            data = loader.construct_document(node)
            lines: dict[Any, int] = {}
            dups: list[Any] = []
            yamlio._index(node, (), lines, dups)
            out.append(yamlio.YamlDocument(data, node.start_mark.line + 1, lines, tuple(dups)))
    finally:
        loader.dispose()
    return [d for d in out if d.data is not None]


def by_constructor_as_read(text: str) -> list[yamlio.YamlDocument]:
    """by_constructor, its errors said as read_documents says them."""
    try:
        return by_constructor(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlFileError(line, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(0, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlFileError(0, "invalid YAML: nesting too deep") from None


def described(read: Any) -> Any:
    try:
        docs = read()
    except YamlFileError as exc:
        return ("error", exc.line, exc.message)
    except Exception as exc:  # what read_documents lets through (a date that does not exist)
        return ("raised", type(exc), str(exc))
    # repr tells 1, 1.0, True and "1" apart, and shows the order of the keys
    return [(repr(d.data), d.line, list(d.lines.items()), d.duplicates) for d in docs]


def mine(text: str) -> Any:
    return described(lambda: parse_documents(text))


def theirs(text: str) -> Any:
    return described(lambda: by_constructor_as_read(text))


SCALARS = ["1", "0x1F", "0o17", "017", "1_000", "+5", "-0", "1:30", "190:20:30", "1.5",
           ".inf", "-.Inf", ".NaN", "1e3", "6.8523015e+5", "1_000.5", "yes", "No", "on", "OFF",
           "true", "False", "~", "null", "", "2002-12-14", "2001-12-14t21:59:43.10-05:00",
           "2001-12-15 2:59:43.10", "abc", "'quoted'", '"dq \\u00e9 \\n"', "!!str 1",
           "!!int '7'", "!!float 1", "!!binary aGVsbG8=", "!!timestamp 2002-12-14",
           "!!bool yes", "!!null ''", "'<<'", "é", "'it''s'", "!!map {a: 1}", "!!seq [1]"]
ODD_SCALARS = ["2024-13-45", "!foo x", "!!python/tuple [1]", "=", "!!set {a, b}",
               "!!omap [a: 1]", "!!str [1]", "!!int x"]
KEYS = ["a", "b", "a", "1", "'1'", "yes", "~", "2002-12-14", "'<<'", "1.5", "!!str k", "é",
        "'a b'", "!!binary aGk="]
ODD_KEYS = ["<<", "=", "[x]", "{a: 1}"]


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.anchors: list[str] = []

    def node(self, depth: int) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08 and self.anchors:
            return f"*{rng.choice(self.anchors)}"
        if roll < 0.15:
            name = f"a{len(self.anchors)}"
            text = f"&{name} {self.node(depth + 1)}"
            self.anchors.append(name)
            return text
        if depth < 3 and roll < 0.35:
            pairs = [f"{self.key()}: {self.node(depth + 1)}"
                     for _ in range(rng.randint(0, 3))]
            return "{" + ", ".join(pairs) + "}"
        if depth < 3 and roll < 0.5:
            return "[" + ", ".join(self.node(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        return rng.choice(ODD_SCALARS if rng.random() < 0.02 else SCALARS)

    def key(self) -> str:
        return self.rng.choice(ODD_KEYS if self.rng.random() < 0.02 else KEYS)

    def document(self) -> str:
        rng = self.rng
        self.anchors = []
        out = []
        for _ in range(rng.randint(1, 6)):
            key = self.key()
            roll = rng.random()
            if roll < 0.2:
                out.append(f"{key}:")
                out += [f"  {self.key()}: {self.node(1)}"
                        for _ in range(rng.randint(1, 3))]
            elif roll < 0.35:
                out.append(f"{key}:")
                out += [f"- {self.node(1)}" for _ in range(rng.randint(1, 3))]
            elif roll < 0.4 and self.anchors:
                out += [f"{key}:", f"  <<: *{rng.choice(self.anchors)}", "  z: 1"]
            else:
                out.append(f"{key}: {self.node(1)}")
        return "\n".join(out) + "\n"

    def text(self) -> str:
        roll = self.rng.random()
        if roll < 0.1:
            return f"{self.node(0)}\n"
        if roll < 0.2:
            return f"- {self.node(1)}\n- {self.node(1)}\n"
        return "---\n".join(self.document() for _ in range(self.rng.randint(1, 3)))


def test_generated_documents_read_as_the_constructor_reads_them() -> None:
    generator = Generator(5)
    differ = []
    read = 0
    for _ in range(2500):
        text = generator.text()
        found = mine(text)
        if found != theirs(text):
            differ.append((text, found, theirs(text)))
        read += isinstance(found, list)
    assert differ == []
    assert read > 1000  # most of them are documents, not errors


def test_the_repository_files_read_as_the_constructor_reads_them() -> None:
    files = [p for p in ROOT.glob("[!.]*/**/*.y*ml") if ".venv" not in p.parts]
    assert len(files) > 30
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue  # tests/badinput has some: read_documents refuses them before parsing
        assert described(lambda: read_documents(path)) == theirs(text), path  # noqa: B023


@pytest.mark.parametrize(
    "text",
    ["a: &x {b: 1}\nc: *x\n", "m:\n  <<: {a: 1}\n  b: 2\n", "s: !!set {a, b}\n",
     "? [1, 2]\n: x\n", "t: !custom 1\n", "= : 1\n"],
)
def test_aliases_merge_keys_and_other_tags_go_to_the_constructor(text: str) -> None:
    assert mine(text) == theirs(text)
    loader = yamlio._Loader(text)
    try:
        node = loader.get_single_node()
        with pytest.raises(yamlio._Unusual):
            yamlio._plain(loader, node, (), {}, [], set())
    finally:
        loader.dispose()


def test_an_alias_shares_the_object_as_the_constructor_does() -> None:
    data = parse_documents("a: &x {b: [1]}\nc: *x\n")[0].data
    assert data["a"] is data["c"]
