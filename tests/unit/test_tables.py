"""The plain-text table every table of the CLI is printed with."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.core.tables import render


@pytest.mark.parametrize(("rows", "options", "expected"), [
    pytest.param([], {}, "", id="nothing"),
    pytest.param([], {"header": ("NAME", "STATUS")}, "NAME  STATUS", id="header-only"),
    pytest.param(
        [("demo-gateway", "lab", "Ready", "3 components ready"),
         ("hmi", "lab/lab-hq/demo", "Failed", "apply failed: timeout")],
        {"header": ("TARGET", "SITE", "PHASE", "MESSAGE")},
        "TARGET        SITE             PHASE   MESSAGE\n"
        "demo-gateway  lab              Ready   3 components ready\n"
        "hmi           lab/lab-hq/demo  Failed  apply failed: timeout",
        id="header-and-rows"),
    pytest.param(
        [("a", "long message that is never padded"), ("bb", "")],
        {},
        "a   long message that is never padded\nbb",
        id="last-column-not-padded-no-trailing-blanks"),
    pytest.param(
        [("file", "ok", "Files."), ("x", "failed", "")],
        {"min_widths": (4, 6)},
        "file  ok      Files.\nx     failed",
        id="minimum-widths"),
    pytest.param(
        [("a-solution-name-longer-than-28-chars", "1.0.0", "2026-01-01")],
        {"min_widths": (28, 12), "gaps": " "},
        "a-solution-name-longer-than-28-chars 1.0.0        2026-01-01",
        id="content-wider-than-minimum"),
    pytest.param(
        [("2026-01-01T00:00:00+00:00", "Ready", "1234567890ab", "ok"),
         ("2026-01-01T00:01:00+00:00", "Progressing", "", "")],
        {"min_widths": (0, 11, 12), "gaps": ("  ", " ", " ")},
        "2026-01-01T00:00:00+00:00  Ready       1234567890ab ok\n"
        "2026-01-01T00:01:00+00:00  Progressing",
        id="a-gap-per-column"),
])
def test_render(rows: list[tuple[str, ...]], options: dict[str, Any], expected: str) -> None:
    assert render(rows, **options) == expected


def test_rows_must_have_as_many_cells_as_the_header() -> None:
    with pytest.raises(ValueError, match="3 cells"):
        render([("a", "b", "c")], header=("A", "B"))


def test_cells_and_gaps_are_written_as_they_are() -> None:
    rows = [("100%", "%s", "50% done"), ("é", "%(x)s", "")]
    assert render(rows, gaps=" % ") == "100% % %s    % 50% done\né    % %(x)s %"
