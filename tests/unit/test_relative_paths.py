"""reconciler_providers._paths.relative_path_problem: what it decides is what PurePosixPath
decides (absolute, a '..' among the parts, the directory itself), over a corpus of tricky
strings."""

from __future__ import annotations

import itertools
import random
from pathlib import PurePosixPath

import pytest
from reconciler_providers._paths import relative_path_problem


def by_pure_path(value: object, *, allow_parent: bool) -> str | None:
    """The decision made with PurePosixPath, as the providers first wrote it."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if "\0" in value:
        return "must not contain a NUL byte"
    pure = PurePosixPath(value)
    if pure.is_absolute():
        return f"{value!r} must be a relative path, not an absolute one"
    if not allow_parent and ".." in pure.parts:
        return f"{value!r} must not contain '..'"
    if pure == PurePosixPath("."):
        return f"{value!r} names the directory itself, not a file"
    return None


PIECES = ["", "/", "//", "///", ".", "..", "...", "a", "..a", "é", " ", "\\", "\0",
          "\udc80", "😀"]


def corpus() -> list[str]:
    out = ["".join(p) for n in range(1, 5) for p in itertools.product(PIECES, repeat=n)]
    rng = random.Random(7)
    alphabet = "/./..a\\ \0é"
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            for _ in range(20000)]
    return out


@pytest.mark.parametrize("allow_parent", [False, True])
def test_the_same_decision_as_pure_posix_path(allow_parent: bool) -> None:
    values = corpus()
    assert len(values) > 70_000
    differ = [v for v in values if relative_path_problem(v, allow_parent=allow_parent)
              != by_pure_path(v, allow_parent=allow_parent)]
    assert differ == []


@pytest.mark.parametrize("value", [None, 0, 1.5, b"a", ["a"], {"a": 1}, "", True,
                                   PurePosixPath("a")])
def test_anything_but_a_non_empty_string_is_refused(value: object) -> None:
    for allow_parent in (False, True):
        assert relative_path_problem(value, allow_parent=allow_parent) \
            == "must be a non-empty string"


@pytest.mark.parametrize(
    ("value", "allow_parent", "expected"),
    [
        pytest.param("a/b.conf", False, None, id="plain"),
        pytest.param("//a", False, "'//a' must be a relative path, not an absolute one",
                     id="two-slashes"),
        pytest.param("a/../b", False, "'a/../b' must not contain '..'", id="parent"),
        pytest.param("a/../b", True, None, id="parent-allowed"),
        pytest.param("..", True, None, id="only-parent-allowed"),
        pytest.param("a/..b/c...", False, None, id="dots-in-names"),
        pytest.param("././/", True, "'././/' names the directory itself, not a file",
                     id="dot-and-slashes"),
        pytest.param("a/./", False, None, id="dot-after-name"),
        pytest.param("a\0", False, "must not contain a NUL byte", id="nul"),
    ],
)
def test_examples(value: str, allow_parent: bool, expected: str | None) -> None:
    assert relative_path_problem(value, allow_parent=allow_parent) == expected
