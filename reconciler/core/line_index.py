"""A document's line index kept compactly: what a :class:`~reconciler.core.model.Source`
holds once the loader is done with the document.

The YAML reader gives every document a dict of field path -> line (one tuple per path, one
int per line). A fleet keeps the index of every document it was built from for as long as
the revision is in use, so that an error or a parameter's provenance can name its line: in a
daemon serving 5,000 targets that was most of the memory the fleet model took. Documents of
one kind mostly have the same fields in the same order, so a :class:`LineIndex` keeps the
paths of such documents once (a :class:`Paths` shared by every index with those paths) and
its own lines as four bytes each. It reads like the dict it was made from (same keys, same
order, same values). Made by :meth:`~reconciler.core.model.Source.__post_init__`.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["LineIndex", "Paths", "compact_lines"]

FieldPath = tuple[str | int, ...]

_LINE = struct.Struct("<I")
_MAX_LINE = 2 ** 32 - 1
# paths shared by the documents seen lately; bounded, so a long-running daemon reading
# revision after revision keeps no more than this many shapes (a shape no longer found is
# made again, which costs memory only while both copies are in use)
_MAX_SHAPES = 1024
_shapes: dict[tuple[FieldPath, ...], Paths] = {}
_paths: dict[FieldPath, FieldPath] = {}
_lock = threading.Lock()


@dataclass(frozen=True, slots=True, eq=False)
class Paths:
    """The field paths of a line index, in order, and the position of each."""

    paths: tuple[FieldPath, ...]
    positions: Mapping[FieldPath, int]


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class LineIndex(Mapping[FieldPath, int]):
    """Field path -> line, the paths shared (see the module docstring)."""

    shape: Paths
    lines: bytes  # one unsigned 32-bit little-endian line per path, in the paths' order

    def __getitem__(self, path: FieldPath) -> int:
        return int(_LINE.unpack_from(self.lines, 4 * self.shape.positions[path])[0])

    def get(self, path: FieldPath, default: int | None = None) -> int | None:  # type: ignore[override]
        position = self.shape.positions.get(path)
        if position is None:
            return default
        return int(_LINE.unpack_from(self.lines, 4 * position)[0])

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self.shape.paths)

    def __len__(self) -> int:
        return len(self.shape.paths)

    def __repr__(self) -> str:
        return f"LineIndex({dict(self)!r})"


def compact_lines(lines: Mapping[FieldPath, int]) -> Mapping[FieldPath, int]:
    """``lines`` as a :class:`LineIndex`, or ``lines`` itself when it is one already, is
    empty, or holds a line that does not fit (then nothing is gained or it cannot be)."""
    if not lines or isinstance(lines, LineIndex):
        return lines
    values = tuple(lines.values())
    if not all(type(v) is int and 0 <= v <= _MAX_LINE for v in values):
        return lines
    key = tuple(lines)
    with _lock:
        shape = _shapes.get(key)
        if shape is None:
            if len(_shapes) >= _MAX_SHAPES:
                _shapes.clear()
                _paths.clear()
            paths = tuple(_paths.setdefault(p, p) for p in key)
            shape = _shapes[paths] = Paths(paths, {p: i for i, p in enumerate(paths)})
    return LineIndex(shape, struct.pack(f"<{len(values)}I", *values))
