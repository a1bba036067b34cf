"""`make test` on a machine without npm: helm and kubectl cannot be installed, the run goes on
with their tests skipped and says so plainly; CI (REQUIRE_TOOLS=1, set by .ci/run) fails
instead. The Makefile's `test-tools` step, which `make test` runs before pytest, is run with a
PATH that holds no npm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def without_npm(tmp_path: Path) -> dict[str, str]:
    """A PATH with only the commands the step needs, npm not among them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("uname", "bash", "python3", "tar"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    # not what the make running these tests was given (.ci/run passes REQUIRE_TOOLS=1)
    env = {k: v for k, v in os.environ.items()
           if k not in ("REQUIRE_TOOLS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return {**env, "PATH": str(bin_dir)}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "scripts/install-tools.sh"):
        shutil.copy(ROOT / name, tree / name)
    return tree


def _make(tree: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make
    return subprocess.run([make, "test-tools", *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=60)


def test_without_npm_the_tests_run_and_the_skip_is_said(tree: Path,
                                                         without_npm: dict[str, str]) -> None:
    out = _make(tree, without_npm)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "npm is not installed" in out.stderr
    assert "apt-get install npm" in out.stderr
    assert "helm and kubectl tests are SKIPPED" in out.stderr
    assert not (tree / ".tools").exists()


def test_ci_insists_on_the_tools(tree: Path, without_npm: dict[str, str]) -> None:
    out = _make(tree, without_npm, "REQUIRE_TOOLS=1")
    assert out.returncode != 0, out.stdout + out.stderr
    assert "npm is not installed" in out.stderr and "REQUIRE_TOOLS=1" in out.stderr


def test_ci_runs_make_test_requiring_the_tools() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test REQUIRE_TOOLS=1" in script
    assert "missing+=(npm)" in script
