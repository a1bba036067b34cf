"""requirements.lock, the one lock of every package: what the venv holds, what pyproject.toml
asks for, and when the Makefile rebuilds the venv.

`make` installs .venv from the lock (`make lock` re-resolves it); the Dockerfile installs the
image with it as constraints (tests/integration/test_systemd_unit.py checks that side). So the
venv the tests run in must hold exactly the lock's pins, and the lock must satisfy every
requirement of pyproject.toml, build tools included, or a changed pyproject.toml would be
tested with what it does not ask for.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.integration.old_python import write_old_python

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(*, everywhere: bool = False) -> dict[str, list[tuple[str, Requirement]]]:
    """Normalised name -> (version, requirement) of each line; those applying here unless
    ``everywhere`` (a universal lock may pin a package for another platform only)."""
    pins: dict[str, list[tuple[str, Requirement]]] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        assert not req.extras and req.url is None, line
        if everywhere or req.marker is None or req.marker.evaluate():
            pins.setdefault(_norm(req.name), []).append((spec.version, req))
    return pins


def test_lock_pins_each_package_once_here() -> None:
    twice = {name: found for name, found in _pins().items() if len(found) > 1}
    assert twice == {}


def test_venv_holds_exactly_the_lock() -> None:
    """What the tests run with is what the lock pins: every installed package, dev tools and
    build tools included, and nothing else but the project itself."""
    installed = {_norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("reconciler")
    pinned = {name: found[0][0] for name, found in _pins().items()}
    assert installed == pinned, "rebuild the venv from the lock: rm -rf .venv && make test"


def test_lock_satisfies_every_requirement_of_pyproject() -> None:
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"],
              *PYPROJECT["build-system"]["requires"], "pip"]
    pins = _pins(everywhere=True)
    for text in wanted:
        req = Requirement(text)
        found = pins.get(_norm(req.name))
        assert found, f"{text}: not in requirements.lock (run `make lock`)"
        for version, _ in found:
            assert req.specifier.contains(version, prereleases=True), \
                f"{text}: the lock pins {version} (run `make lock`)"


def test_lock_says_how_to_refresh_it() -> None:
    head = LOCK.read_text().split("\n\n", 1)[0]
    assert "make lock" in head


# -- when the Makefile rebuilds the venv --------------------------------------------------------


def _make_q(tree: Path, venv: Path) -> int:
    """`make -q` of the venv's stamp: 0 when it is up to date, 1 when it would be rebuilt."""
    done = subprocess.run(["make", "-q", f"VENV={venv}", f"{venv}/.installed-stamp"],
                          cwd=tree, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON")})
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The Makefile and the files its venv rule reads, older than a venv made after them."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tree / name)
        os.utime(tree / name, (1_000_000_000, 1_000_000_000))
    return tree


def _venv(tree: Path, python: Path) -> Path:
    venv = tree / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python)
    (venv / ".installed-stamp").touch()
    return venv


def test_venv_is_rebuilt_when_the_lock_changes(tree: Path) -> None:
    venv = _venv(tree, Path(sys.executable))
    assert _make_q(tree, venv) == 0
    (tree / "requirements.lock").touch()
    assert _make_q(tree, venv) == 1


def test_venv_of_a_too_old_python_is_rebuilt_whatever_its_stamp(tree: Path,
                                                                tmp_path: Path) -> None:
    venv = _venv(tree, write_old_python(tmp_path / "old"))
    assert _make_q(tree, venv) == 1


def test_venv_whose_python_is_gone_is_rebuilt(tree: Path, tmp_path: Path) -> None:
    venv = _venv(tree, tmp_path / "removed" / "python3")
    assert _make_q(tree, venv) == 1
