"""`make demo` from a fresh clone of the project, run to the end the way a newcomer runs it:
a bare remote from example-repo/, a site daemon for the demo line, status pushed, the status
table and the status commit printed; then a parameter change pushed to the remote reaches the
files, and `make demo-stop` stops the daemon.

The clone reuses this checkout's virtual environment (VENV=...) so the test does not install
every package again; `make test` (which CI runs) builds that environment from scratch with the
same Makefile rule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def run(cmd: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MAKEFLAGS": ""})


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    dest = tmp_path / "reconciler"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def test_make_demo_from_a_fresh_clone(clone: Path) -> None:
    stamp = VENV / ".installed-stamp"
    if not stamp.exists():
        pytest.skip("run through `make test`, which builds the virtual environment")
    # -o: the shared environment is up to date; never rebuild it from the clone (that would
    # repoint its editable install at the temporary clone)
    venv = [f"VENV={VENV}", "-o", str(stamp)]
    try:
        out = run(["make", "demo", *venv], clone)
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        assert re.search(r"lab/lab-hq/demo\s+demo-gateway\s+Ready", text), text
        assert re.search(r"lab/lab-hq/demo\s+demo-hmi\s+Ready", text), text
        commit = re.search(r"status commit ([0-9a-f]{12}) on reconciler-status/lab_lab-hq_demo",
                           text)
        assert commit, text
        remote = clone / "demo-state" / "remote.git"
        head = subprocess.run(["git", "--git-dir", str(remote), "rev-parse",
                               "reconciler-status/lab_lab-hq_demo"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert head.startswith(commit.group(1))
        conf = clone / "demo-state/site/files/demo-gateway/telemetry/agent.conf"
        assert "sample_rate_seconds = 2" in conf.read_text()

        # the README's next step: change a parameter in the remote, the files follow
        work = clone / "demo-state" / "work"
        demo = work / "targets" / "demo.yaml"
        demo.write_text(demo.read_text().replace("sampleRate: 2", "sampleRate: 7"))
        subprocess.run(["git", "-C", str(work), "commit", "-qam", "samples every 7 s"],
                       check=True)
        subprocess.run(["git", "-C", str(work), "push", "-q"], check=True)
        deadline = time.monotonic() + 30
        while "sample_rate_seconds = 7" not in conf.read_text():
            assert time.monotonic() < deadline, conf.read_text()
            time.sleep(0.2)
    finally:
        stop = run(["make", "demo-stop", *venv], clone)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped the demo daemon" in stop.stdout
    assert not (clone / "demo-state" / "daemon.pid").exists()
