"""A stand-in `python3` that behaves like an interpreter older than the project supports.

The Makefile's tests put it on PATH (or name it with PYTHON=) to see what a newcomer with an
old Python meets. It answers the way Python 3.9 would at the process boundary: `-c CODE` runs
CODE with ``sys.version_info`` at 3.9.18, `-m venv DIR` makes a venv whose python links back to
this stand-in (as a real venv links to its interpreter), and anything else (pip among it)
fails the way pip fails on a project that requires Python 3.11.
"""

from __future__ import annotations

import sys
from pathlib import Path

VERSION = "3.9.18"

_SCRIPT = '''\
#!{python}
"""Stand-in for Python {version} (tests/integration/old_python.py)."""
import os
import shutil
import sys
from pathlib import Path

VERSION = tuple(int(p) for p in "{version}".split(".")) + ("final", 0)
args = sys.argv[1:]
if args in (["--version"], ["-V"]):
    print("Python {version}")
    sys.exit(0)
if args[:1] == ["-c"]:
    sys.version_info = VERSION
    sys.version = "{version} (stand-in)"
    sys.argv = ["-c", *args[2:]]
    exec(compile(args[1], "<string>", "exec"), {{"__name__": "__main__"}})
    sys.exit(0)
if args[:2] == ["-m", "venv"]:
    target = Path(args[-1])
    if "--clear" in args:
        shutil.rmtree(target, ignore_errors=True)
    (target / "bin").mkdir(parents=True, exist_ok=True)
    me = os.path.realpath(__file__)
    for name in ("python", "python3", "python3.9"):
        link = target / "bin" / name
        if not link.is_symlink():
            link.symlink_to(me)
    (target / "pyvenv.cfg").write_text(f"home = {{os.path.dirname(me)}}\\nversion = {version}\\n")
    sys.exit(0)
print("ERROR: Package 'reconciler' requires a different Python: {version} not in '>=3.11'",
      file=sys.stderr)
sys.exit(1)
'''


def write_old_python(directory: Path) -> Path:
    """``directory/python3``, a stand-in for Python 3.9; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "python3"
    path.write_text(_SCRIPT.format(python=sys.executable, version=VERSION))
    path.chmod(0o755)
    return path
