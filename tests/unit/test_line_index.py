"""reconciler.core.line_index: a source's line index reads like the dict the YAML reader made,
and documents with the same fields share their paths."""

from __future__ import annotations

import pickle
from pathlib import Path

import yaml

from reconciler.core.line_index import LineIndex, compact_lines
from reconciler.core.loading import load_fleet
from reconciler.core.model import Source
from reconciler.core.yamlio import line_at, parse_documents

TEXT = """\
apiVersion: reconciler/v1
kind: Target
metadata:
  name: t{n}
spec:
  site: s
  bindings:
  - role: config-file
    provider: file
    config: {{root: files/t{n}}}
  params:
    replicas: {n}
"""


def index(text: str) -> dict[tuple[str | int, ...], int]:
    [document] = parse_documents(text)
    return dict(document.lines)


def test_reads_like_the_dict_it_was_made_from() -> None:
    raw = index(TEXT.format(n=1))
    lines = Source("t.yaml", 1, raw).lines
    assert isinstance(lines, LineIndex)
    assert dict(lines) == raw and list(lines) == list(raw) and len(lines) == len(raw)
    assert lines == raw
    for path, line in raw.items():
        assert lines[path] == line and lines.get(path) == line and path in lines
    assert lines.get(("spec", "nope")) is None and ("spec", "nope") not in lines
    for path in [("spec", "bindings", 0, "config", "root", "deeper"), ("spec", "params", "x"),
                 ("nowhere",), ()]:
        assert line_at(lines, path, 99) == line_at(raw, path, 99)


def test_documents_with_the_same_fields_share_their_paths() -> None:
    one, two = (Source("t.yaml", 1, index(TEXT.format(n=n))).lines for n in (1, 2))
    assert isinstance(one, LineIndex) and isinstance(two, LineIndex)
    assert one.shape is two.shape
    other = Source("t.yaml", 1, index(TEXT.format(n=3) + "  description: x\n")).lines
    assert isinstance(other, LineIndex) and other.shape is not one.shape


def test_what_cannot_be_kept_compactly_stays_a_dict() -> None:
    kept: list[dict[tuple[str | int, ...], int]] = [{}, {("a",): -1}, {("a",): 2 ** 32},
                                                     {("a",): True}]
    for raw in kept:
        assert compact_lines(raw) is raw
    made = compact_lines({("a",): 3})
    assert compact_lines(made) is made


def test_loaded_sources_are_compact_and_survive_pickling(tmp_path: Path) -> None:
    docs = [yaml.safe_load(TEXT.format(n=n)) for n in (1, 2)]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    (tmp_path / "targets.yaml").write_text(text)
    numbered = text.splitlines()
    replicas = len(numbered) - numbered[::-1].index("    replicas: 2")  # t2's, the last one
    fleet = load_fleet(tmp_path).fleet
    t1, t2 = fleet.targets["t1"].source, fleet.targets["t2"].source
    assert isinstance(t1.lines, LineIndex) and isinstance(t2.lines, LineIndex)
    assert t1.lines.shape is t2.lines.shape
    assert t2.line_of("spec", "params", "replicas") == replicas
    back = pickle.loads(pickle.dumps(t2))
    assert dict(back.lines) == dict(t2.lines) and back.line_of("spec", "params") == replicas - 1
