"""reconciler.core.yamlio: documents, line index, duplicates and limits of one YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.yamlio import MAX_NODES, YamlFileError, read_documents

MULTI = """\
# comment before the first document
a: 1
---
b:
  c: [x, y]
  d:
    - e: 1
---
# an empty document is dropped
---
last: true
"""


def write(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_multi_document_file_keeps_order_and_drops_empty_documents(tmp_path: Path) -> None:
    docs = read_documents(write(tmp_path, MULTI))
    assert [d.data for d in docs] == [{"a": 1}, {"b": {"c": ["x", "y"], "d": [{"e": 1}]}},
                                      {"last": True}]
    assert [d.line for d in docs] == [2, 4, 11]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param(("b",), 4, id="top-level-key"),
        pytest.param(("b", "c"), 5, id="nested-key"),
        pytest.param(("b", "c", 1), 5, id="flow-sequence-item"),
        pytest.param(("b", "d", 0), 7, id="block-sequence-item"),
        pytest.param(("b", "d", 0, "e"), 7, id="key-inside-item"),
        pytest.param(("b", "d", 0, "missing"), 7, id="unknown-child-falls-back-to-parent"),
        pytest.param(("nothing",), 4, id="unknown-key-falls-back-to-document"),
    ],
)
def test_line_of_field(tmp_path: Path, path: tuple[str | int, ...], line: int) -> None:
    doc = read_documents(write(tmp_path, MULTI))[1]
    assert doc.line_of(path) == line


def test_duplicate_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    doc = read_documents(write(tmp_path, "a: 1\nb:\n  x: 1\n  x: 2\na: 3\n"))[0]
    assert set(doc.duplicates) == {(("b", "x"), 4), (("a",), 5)}
    assert doc.line_of(("a",)) == 1  # the first definition is the one indexed


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "base: &b {x: 1}\nother: &o {y: 2}\nm:\n  <<: *b\n  <<: *o\n"
    doc = read_documents(write(tmp_path, text))[0]
    assert doc.duplicates == ()


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        pytest.param("a: [1, 2\nb: 3\n", 2, "invalid YAML", id="unclosed-flow"),
        pytest.param("a: 1\n  b: 2\n", 2, "invalid YAML", id="bad-indent"),
        pytest.param(b"a: ok\nb: \xff\n", 2, "not valid UTF-8", id="non-utf8"),
        pytest.param("a: !!python/object:os.system x\n", 1, "invalid YAML", id="python-tag"),
        pytest.param("a: &a [*a]\n", 1, "more than", id="recursive-alias"),
    ],
)
def test_unreadable_files_name_the_line(tmp_path: Path, content: str | bytes, line: int,
                                        fragment: str) -> None:
    with pytest.raises(YamlFileError) as info:
        read_documents(write(tmp_path, content))
    assert info.value.line == line
    assert fragment in str(info.value)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(YamlFileError, match=str(MAX_NODES)):
        read_documents(write(tmp_path, "\n".join(lines) + "\n"))


def test_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "a: " + "x" * 200 + "\n")
    with pytest.raises(YamlFileError, match="larger than the limit of 100") as info:
        read_documents(path, max_bytes=100)
    assert info.value.line == 0
    assert read_documents(path, max_bytes=1000)[0].data == {"a": "x" * 200}


def test_missing_file_is_a_yaml_file_error(tmp_path: Path) -> None:
    with pytest.raises(YamlFileError, match="cannot read"):
        read_documents(tmp_path / "absent.yaml")


def test_scalars_keep_safe_types(tmp_path: Path) -> None:
    text = "i: 3\nf: 1.5\nb: yes\ns: '3'\nn: null\nd: 2024-01-02\nl: [1, two]\n"
    data = read_documents(write(tmp_path, text))[0].data
    assert data["i"] == 3 and data["f"] == 1.5 and data["s"] == "3" and data["n"] is None
    assert data["l"] == [1, "two"]
    assert data["b"] is True  # YAML 1.1 boolean, as PyYAML reads it
