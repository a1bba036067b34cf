"""The bad-input corpus: each case under tests/badinput/cases/ is the valid base fleet
(tests/badinput/base/) with one defect; validation must name it exactly, quickly, and not
crash."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from reconciler.core.validation import validate_repository

CORPUS = Path(__file__).resolve().parents[1] / "badinput"
CASES = sorted(p.name for p in (CORPUS / "cases").iterdir() if p.is_dir())


def build(case: str, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "base", repo, symlinks=True)
    shutil.copytree(CORPUS / "cases" / case, repo, symlinks=True, dirs_exist_ok=True)
    (repo / "expect.txt").unlink()
    if case == "big-file":
        with (repo / "huge.yaml").open("wb") as fh:
            fh.write(b"# filler\n" * (50 * 1024 * 1024 // 9))
            fh.write(b"\n" * (50 * 1024 * 1024 - fh.tell()))
    return repo


def verbatim(case: str) -> list[dict[str, str]]:
    path = CORPUS / "cases" / case / "verbatim.json"
    return json.loads(path.read_text()) if path.exists() else []


def expectations(case: str) -> list[str]:
    text = (CORPUS / "cases" / case / "expect.txt").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_corpus_has_enough_cases() -> None:
    assert len(CASES) >= 30


def test_base_is_valid(tmp_path: Path) -> None:
    report = validate_repository(CORPUS / "base")
    assert [d.format() for d in report.errors] == []
    assert [d.format() for d in report.diagnostics] == []


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_named(case: str, tmp_path: Path) -> None:
    repo = build(case, tmp_path)
    # CPU time, not wall time: the machines are shared, and the promise is about the work
    # bad input costs, which a loaded neighbour does not change
    started = time.process_time()
    report = validate_repository(repo)
    elapsed = time.process_time() - started
    lines = [d.format() for d in report.errors]
    for expected in expectations(case):
        assert any(expected in line for line in lines), f"{expected!r} not in {lines}"
    exact = verbatim(case)
    for want in exact:  # hostile values: valid, and rendered byte for byte
        comps = {c.key: c for p in report.placements[want["target"]] for c in p.components}
        assert comps[want["component"]].properties[want["property"]] == want["value"]
    assert report.ok if exact else not report.ok, lines
    assert elapsed < 1.0, f"{case} took {elapsed:.2f}s of CPU"
