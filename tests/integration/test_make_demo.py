"""`make demo` from a fresh clone of the project, run the way a newcomer runs it: a bare remote
from example-repo/, a site daemon for the demo line, status pushed, the status table and the
status commit printed; then the walkthrough it prints (and the README shows) typed as it is,
on a machine where git knows no user too; a second `make demo` that keeps the user's commits,
`make demo-reset` and `make demo-stop`; and a first `make demo` with a too-old Python.

Most tests reuse this checkout's virtual environment (VENV=...) so they do not install every
package again; `make test` (which CI runs) builds that environment from scratch with the same
Makefile rule, and one slow test here rebuilds a venv left by a too-old Python for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.old_python import VERSION as OLD_VERSION
from tests.integration.old_python import write_old_python

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
STAMP = VENV / ".installed-stamp"
# -o: the shared environment is up to date; never rebuild it from the clone (that would
# repoint its editable install at the temporary clone)
SHARED = [f"VENV={VENV}", "-o", str(STAMP)]
IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
            "EMAIL")

needs_venv = pytest.mark.skipif(not STAMP.exists(),
                                reason="run through `make test`, which builds the venv")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # a fresh make, not a sub-make of the one running the tests (nor its PYTHON= or VENV=)
    base = {k: v for k, v in (os.environ if env is None else env).items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "VENV", "REQUIRE_TOOLS")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=base)


def sh(line: str, cwd: Path, env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    return run(["bash", "-c", line], cwd, env, timeout=60)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    dest = tmp_path / "reconciler"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


@pytest.fixture
def no_identity(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine where git knows no user: no config, no variables."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1")
    return env


@pytest.fixture
def make(clone: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """`make TARGET` in the clone with the shared venv; the demo daemon is stopped after."""

    def call(target: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run(["make", target, *SHARED], clone, env)

    yield call
    call("demo-stop")


def printed_walkthrough(stdout: str) -> list[str]:
    """The indented command lines the demo prints under "Try a change"."""
    tail = stdout.split("Try a change", 1)[1]
    block = re.search(r"\n\n((?:  \S.*\n)+)", tail)
    assert block, stdout
    return [line.strip() for line in block[1].splitlines()]


def readme_walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"Change a parameter and push.*?```sh\n(.*?)```", text, re.S)
    assert block, "README: no walkthrough after 'Change a parameter and push'"
    return [line.strip() for line in block[1].splitlines() if line.strip()]


def poll(line: str, cwd: Path, env: dict[str, str] | None, done: Callable[[str], bool],
         timeout: float) -> str:
    """Run LINE until its output satisfies DONE; the user's `sleep` becomes a bounded wait."""
    deadline = time.monotonic() + timeout
    while True:
        out = sh(line, cwd, env)
        if out.returncode == 0 and done(out.stdout):
            return out.stdout
        assert time.monotonic() < deadline, f"{line}: {out.returncode} {out.stdout}{out.stderr}"
        time.sleep(0.2)


def try_the_change(lines: list[str], clone: Path, env: dict[str, str] | None) -> None:
    """The walkthrough typed into one shell at the clone's root, as it is written: cd into the
    work clone, change a parameter, commit and push, see the file change and the status."""
    assert re.fullmatch(r"cd demo-state/work", lines[0]), lines
    work = clone / "demo-state" / "work"
    for line in lines[1:3]:
        out = sh(line, work, env)
        assert out.returncode == 0, f"{line}: {out.stdout}{out.stderr}"
    wait = re.fullmatch(r"sleep (\d+); (.+)", lines[3])
    assert wait, lines[3]
    # the daemon applies at once; the test waits for it rather than sleeping the user's time
    poll(wait[2], work, env, lambda out: "sample_rate_seconds = 7" in out, int(wait[1]) + 30)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert len(lines) == 5, lines
    poll(lines[4], work, env,
         lambda out: re.search(rf"demo-gateway\s+Ready\s+{head[:8]}", out) is not None, 30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_venv
def test_make_demo_from_a_fresh_clone(clone: Path, make: Callable[..., Any]) -> None:
    out = make("demo")
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

    # the next step it prints, typed as printed
    try_the_change(printed_walkthrough(text), clone, None)

    stop = make("demo-stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped the demo daemon" in stop.stdout
    assert not (clone / "demo-state" / "daemon.pid").exists()


@needs_venv
def test_readme_walkthrough_works_where_git_knows_no_user(
        clone: Path, make: Callable[..., Any], no_identity: dict[str, str]) -> None:
    out = make("demo", no_identity)
    assert out.returncode == 0, out.stdout + out.stderr
    readme = readme_walkthrough()
    venv_here = os.path.relpath(VENV, clone / "demo-state" / "work")
    typed = [line.replace("../../.venv/", f"{venv_here}/") for line in readme]
    try_the_change(typed, clone, no_identity)
    # the README shows what the demo prints (with the default .venv)
    printed = [line.replace(f"{venv_here}/", "../../.venv/")
               for line in printed_walkthrough(out.stdout)]
    assert printed == readme


@needs_venv
def test_second_make_demo_keeps_the_users_commits(clone: Path,
                                                  make: Callable[..., Any]) -> None:
    first = make("demo")
    assert first.returncode == 0, first.stdout + first.stderr
    work = clone / "demo-state" / "work"
    demo = work / "targets" / "demo.yaml"
    demo.write_text(demo.read_text().replace("sampleRate: 2", "sampleRate: 7"))
    subprocess.run(["git", "-C", str(work), "commit", "-qam", "samples every 7 s"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q"], check=True)
    mine = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (work / "notes.txt").write_text("work in progress\n")  # not even committed

    second = make("demo")
    assert second.returncode == 0, second.stdout + second.stderr
    for repo in (work, clone / "demo-state" / "remote.git"):
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert head == mine, repo
    assert (work / "notes.txt").read_text() == "work in progress\n"
    assert "keeping demo-state/" in second.stdout and "make demo-reset" in second.stdout
    assert re.search(rf"demo-gateway\s+Ready\s+{mine[:8]}", second.stdout), second.stdout
    conf = clone / "demo-state/site/files/demo-gateway/telemetry/agent.conf"
    assert "sample_rate_seconds = 7" in conf.read_text()

    pid = int((clone / "demo-state" / "daemon.pid").read_text())
    reset = make("demo-reset")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not (clone / "demo-state").exists()
    assert "make demo" in reset.stdout
    deadline = time.monotonic() + 30
    while alive(pid):
        assert time.monotonic() < deadline, f"daemon {pid} still runs after demo-reset"
        time.sleep(0.1)


def test_too_old_python_is_named_before_any_venv_is_made(clone: Path, tmp_path: Path) -> None:
    old = write_old_python(tmp_path / "old")
    # the python3 on PATH is the old one, and so is a PYTHON= named one
    for args, env in (([], {**os.environ, "PATH": f"{old.parent}:{os.environ['PATH']}"}),
                      ([f"PYTHON={old}"], None)):
        out = run(["make", "demo", *args], clone, env, timeout=60)
        assert out.returncode != 0, out.stdout
        assert f"is Python {OLD_VERSION[:3]}" in out.stderr, out.stdout + out.stderr
        assert "3.11 or newer" in out.stderr and "PYTHON=python3.11" in out.stderr, out.stderr
        assert not (clone / ".venv").exists(), out.stdout + out.stderr


@pytest.mark.slow
def test_a_venv_left_by_a_too_old_python_is_rebuilt(clone: Path, tmp_path: Path) -> None:
    # what an earlier `make demo` with Python 3.9 left: a venv of that python, no stamp
    old = write_old_python(tmp_path / "old")
    subprocess.run([str(old), "-m", "venv", str(clone / ".venv")], check=True)
    python = getattr(sys, "_base_executable", sys.executable)
    try:
        out = run(["make", "demo", f"PYTHON={python}"], clone, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert re.search(r"lab/lab-hq/demo\s+demo-gateway\s+Ready", out.stdout), out.stdout
        version = run([str(clone / ".venv/bin/python"), "-c",
                       "import sys; print(sys.version_info >= (3, 11))"], clone)
        assert version.stdout.strip() == "True"
        assert (clone / ".venv" / ".installed-stamp").exists()
    finally:
        stop = run(["make", "demo-stop"], clone)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not (clone / "demo-state" / "daemon.pid").exists()
    started = re.search(r"\(pid (\d+),", out.stdout)
    assert started and not alive(int(started[1]))
