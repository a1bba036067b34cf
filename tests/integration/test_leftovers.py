"""Temporary files of writes killed half-way: a restart removes ours, and only ours.

A write is killed for real: a child process runs the project's own writer (the ``file``
provider's apply, the state files' ``write_atomic``) with a small file-size limit and the
kernel's default action for SIGXFSZ, so the kernel kills it in the middle of writing the
temporary file, before the rename. The restart is the installed ``reconciler sync --once``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.core.statefiles import create_temp, is_temp_name, remove_leftovers
from tests.integration.fleetkit import (
    DEMO_SITE,
    FleetRepo,
    Site,
    clean_env,
    make_site,
    sync,
)

LAYOUT = "dashboard/layout.json"

# Python ignores SIGXFSZ (a write past RLIMIT_FSIZE then fails with EFBIG and the writer
# cleans up); with the default action restored the kernel kills the process mid-write,
# exactly like a power cut or SIGKILL would, and no cleanup code runs.
_KILLED_WRITER = """
import resource, signal, sys
from pathlib import Path
from reconciler.core.provider_api import Component, LocalPolicy, ProviderContext
from reconciler.core.statefiles import write_atomic
from reconciler_providers.file import FileProvider

kind, state, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if kind == "file":
    context = ProviderContext(target="demo-hmi", binding="hmi-files", state_dir=state,
                              policy=LocalPolicy(file_roots=(state / "files",), base_dir=state))
    provider = FileProvider({"root": "files/demo-hmi"}, context)
    component = Component(
        name="layout", type="config-file", properties={"path": arg, "content": "x" * 65536},
        params={}, instance="hmi", solution="hmi", target="demo-hmi", site="lab",
        revision="0" * 40, base_dir=state, repo_root=state)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
if kind == "file":
    provider.apply(component, None)
else:
    write_atomic(state / arg, b"x" * 65536)
"""


def _kill_mid_write(kind: str, state: Path, arg: str) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, kind, str(state), arg],
                          env=clean_env(), capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGXFSZ, done.stderr.decode(errors="replace")


def _hidden(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(".")}


@pytest.fixture
def demo(tmp_path: Path) -> tuple[FleetRepo, Site]:
    repo = FleetRepo.from_example(tmp_path / "fleet")
    return repo, make_site(tmp_path, "demo", repo=repo.url, site=DEMO_SITE)


def test_restart_removes_leftovers_of_killed_writes_and_keeps_look_alikes(
        demo: tuple[FleetRepo, Site], tmp_path: Path) -> None:
    _, s = demo
    sync(s)
    layout = s.file("demo-hmi", LAYOUT)
    good = layout.read_bytes()
    dirs = {"files": layout.parent, "state": s.state, "inventory": s.state / "inventory"}
    before = {key: _hidden(d) for key, d in dirs.items()}

    _kill_mid_write("file", s.state, LAYOUT)
    _kill_mid_write("state", s.state, "state.json")
    _kill_mid_write("state", s.state, "inventory/demo-hmi.json")
    _kill_mid_write("state", s.state, "inventory/demo-hmi.json")  # one more per kill

    leftovers = {key: _hidden(d) - before[key] for key, d in dirs.items()}
    assert [len(leftovers[k]) for k in ("files", "state", "inventory")] == [1, 1, 2], leftovers
    assert layout.read_bytes() == good  # the rename never happened
    (name,) = leftovers["files"]
    assert (layout.parent / name).stat().st_size == 4096  # cut off mid-write

    # files that look like ours but are not: a user's editor backup, our prefix with another
    # shape, a symlink with exactly our shape, our exact shape outside the managed dirs
    keep = [layout.parent / ".layout.json.k3j4h5g6.tmp",
            layout.parent / ".reconciler-tmp.notours.tmp",
            layout.parent / (name + ".bak"),
            s.state / ".state.json.abcd1234",
            s.state / "inventory" / ".demo-hmi.json.tmp"]
    for path in keep:
        path.write_text("a user's file\n")
    link = layout.parent / name.replace(name[16:32], "f" * 16)
    link.symlink_to(layout.parent / ".layout.json.k3j4h5g6.tmp")
    elsewhere = tmp_path / "elsewhere" / name
    elsewhere.parent.mkdir()
    elsewhere.write_text("not under a directory the daemon manages\n")

    restart = sync(s)

    logged = {Path(f).name for e in restart.events("leftover_files_removed") for f in e["files"]}
    assert logged == set().union(*leftovers.values())
    for key, d in dirs.items():
        assert not leftovers[key] & _hidden(d), f"{key}: {sorted(leftovers[key] & _hidden(d))}"
    for path in keep:
        assert path.read_text() == "a user's file\n", path
    assert link.is_symlink() and elsewhere.is_file()
    assert layout.read_bytes() == good


def test_a_temporary_file_still_being_written_is_kept(tmp_path: Path) -> None:
    """A sweep removes only what no live writer holds: two daemons may share a file root."""
    root = tmp_path / "root"
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path\n"
         "from reconciler.core.statefiles import create_temp\n"
         "fd, temp = create_temp(Path(sys.argv[1]))\n"
         "print(temp, flush=True); sys.stdin.read()", str(root / "app.conf")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env())
    try:
        assert holder.stdout is not None
        temp = Path(holder.stdout.readline().decode().strip())
        assert temp.parent == root and is_temp_name(temp.name), temp

        assert remove_leftovers(root) == []
        assert temp.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert remove_leftovers(root) == [temp]
    assert not temp.exists()


def test_our_names_are_recognised_and_nothing_else(tmp_path: Path) -> None:
    fd, temp = create_temp(tmp_path / "state.json")
    os.close(fd)
    assert is_temp_name(temp.name) and temp.name.endswith(".tmp")
    for name in ("state.json", ".state.json.abcd1234", ".reconciler-tmp.notours.tmp",
                 temp.name + ".bak", temp.name.replace(".reconciler-tmp.", ".reconciler-tmp-"),
                 "x" + temp.name):
        assert not is_temp_name(name), name
