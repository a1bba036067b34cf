"""Suite-wide set-up: a git identity for the commits tests make (a fresh CI machine has
none), and the project's tool directory on PATH (helm and kubectl from scripts/install-tools.sh)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

for key, value in {
    "GIT_AUTHOR_NAME": "Reconciler Tests",
    "GIT_AUTHOR_EMAIL": "tests@reconciler.invalid",
    "GIT_COMMITTER_NAME": "Reconciler Tests",
    "GIT_COMMITTER_EMAIL": "tests@reconciler.invalid",
}.items():
    os.environ.setdefault(key, value)

# the installed `reconciler` command of this venv first, then the project's tools
_paths = [str(Path(sys.executable).parent), str(ROOT / ".tools" / "bin")]
os.environ["PATH"] = os.pathsep.join([*_paths, os.environ.get("PATH", "")])
