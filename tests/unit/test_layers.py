"""The package tree: every package is shipped, and the layer contract is the one documented."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    found = {"reconciler_providers"}
    for init in (ROOT / "reconciler").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _packages_on_disk()


def test_the_layers_are_those_the_architecture_page_draws() -> None:
    (layers,) = [c for c in PYPROJECT["tool"]["importlinter"]["contracts"]
                 if c["type"] == "layers"]
    assert layers["layers"] == [
        "reconciler.cli", "reconciler.daemon", "reconciler.engine",
        "reconciler.gitops | reconciler_providers", "reconciler.provider_api",
        "reconciler.core"]
    page = (ROOT / "docs" / "architecture.md").read_text()
    for layer in ("reconciler/cli/", "reconciler/daemon/", "reconciler/engine/",
                  "reconciler/gitops/", "providers/", "reconciler/provider_api.py",
                  "reconciler/core/"):
        assert layer in page, layer


def test_no_module_of_the_layers_is_over_a_few_hundred_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in (ROOT / "reconciler").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 420} == {}


def test_the_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout, done.stdout
