"""Plain-text tables: left-aligned columns for people, one row a line.

Every table the CLI prints goes through :func:`render` (``sync --once``, ``status``,
``providers``, ``history``), so they align and end their lines the same way. The last column is
never padded (it holds free text such as a message) and no line ends in blanks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["render"]


def render(
    rows: Iterable[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    gaps: str | Sequence[str] = "  ",
    min_widths: Sequence[int] = (),
) -> str:
    """The rows (and the header, if any) as aligned columns, lines joined by newlines.

    Each column but the last is as wide as its widest cell, and at least ``min_widths[i]``
    (so a listing keeps its columns where they always were). ``gaps`` separates the columns:
    one string for every gap, or one per gap.
    """
    table = [tuple(header)] if header is not None else []
    table += [tuple(row) for row in rows]
    if not table:
        return ""
    count = len(table[0])
    if len(set(map(len, table))) != 1:
        row = next(row for row in table if len(row) != count)
        raise ValueError(f"a row of {len(row)} cells in a table of {count} columns: {row}")
    between = [gaps] * (count - 1) if isinstance(gaps, str) else list(gaps)
    if len(between) != count - 1:
        raise ValueError(f"{len(between)} gaps for a table of {count} columns")
    columns = list(zip(*table, strict=True))[:-1]
    widths = [max(max(map(len, column)), min_widths[i] if i < len(min_widths) else 0)
              for i, column in enumerate(columns)]
    # one format for every line: each cell but the last left-aligned in its width (a table
    # of 50,000 rows is written in a few C calls per line, not one per cell)
    line = "".join(f"%-{width}s{gap.replace('%', '%%')}"
                   for width, gap in zip(widths, between, strict=True)) + "%s"
    return "\n".join([(line % row).rstrip() for row in table])
