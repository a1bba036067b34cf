"""``rollback`` and ``history`` through the installed command, against real repositories.

``rollback`` edits the Instance's file with a YAML-aware edit: a flow-style ``spec`` or a file
with CRLF line endings comes out changed only by its version. ``history --target`` reads a
target's status history with a constant number of git processes however long the history is
(counted by a ``git`` on ``PATH`` that logs each call and runs the real one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.fleetkit import FleetRepo, clean_env, git, reconciler

INSTANCES = "instances/telemetry.yaml"


EU_SPEC = ("spec:\n  solution: telemetry-agent\n  targets:\n    selector:\n      sites: [eu]\n"
           "      matchLabels:\n        role: gateway\n")
EU_FLOW = ("spec: {solution: telemetry-agent, targets: {selector: {sites: [eu], "
           "matchLabels: {role: gateway}}}}  # flow\n")


@pytest.mark.parametrize(("before", "after"), [
    pytest.param(EU_SPEC, EU_SPEC.replace("  targets:", "  version: 1.0.0\n  targets:"),
                 id="block-insert"),
    pytest.param(EU_SPEC.replace("  targets:", '  version: "1.1.0"  # pinned\n  targets:'),
                 EU_SPEC.replace("  targets:", '  version: "1.0.0"  # pinned\n  targets:'),
                 id="block-replace"),
    pytest.param(EU_FLOW, EU_FLOW.replace("telemetry-agent,", "telemetry-agent, version: 1.0.0,"),
                 id="flow-insert"),
])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_rollback_changes_only_the_version(tmp_path: Path, before: str, after: str,
                                           newline: str) -> None:
    repo = FleetRepo.from_example(tmp_path / "fleet")
    for version in ("1.0.0", "1.1.0"):
        assert reconciler("release", "--repo", str(repo.work), "telemetry-agent",
                          version).returncode == 0
    text = repo.read(INSTANCES).replace(EU_SPEC, before)
    repo.write(INSTANCES, text.replace("\n", newline).encode())
    repo.commit("instances as people write them")
    original = repo.path(INSTANCES).read_bytes()

    out = reconciler("rollback", "--repo", str(repo.work), "telemetry-eu", "--to", "1.0.0")

    assert out.returncode == 0, out.describe()
    expected = original.replace(before.replace("\n", newline).encode(),
                                after.replace("\n", newline).encode())
    assert expected != original
    assert repo.path(INSTANCES).read_bytes() == expected
    assert git(repo.work, "rev-parse", "--abbrev-ref", "HEAD") == "rollback/telemetry-eu-v1.0.0"
    assert git(repo.work, "status", "--porcelain") == ""


# ---------------------------------------------------------------- history --target

def _git_logger(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with a ``git`` that appends its arguments to a log, then runs the real git."""
    real = shutil.which("git")
    assert real is not None
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    log = tmp_path / "git-calls.log"
    shim = shim_dir / "git"
    shim.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    return {"PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}, log


def _status(phase: str, message: str, revision: str) -> str:
    return (f"kind: TargetStatus\nsite: eu/a\ntarget: cell\nphase: {phase}\n"
            f"appliedRevision: {revision}\nmessage: '{message}'\n")


def _status_history(root: Path, changes: int) -> Path:
    """A clone whose status branch holds ``changes`` status changes of target ``cell``, a
    change of another target, a move to another site and a deletion."""
    repo = root / "clone"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "fleet")
    git(repo, "checkout", "-q", "--orphan", "reconciler-status/eu_a")
    status = repo / "status/eu/a"
    status.mkdir(parents=True)
    when = 1_700_000_000

    def commit(message: str) -> None:
        nonlocal when
        when += 60  # one commit a minute: the log's order is the order of the changes
        git(repo, "add", "-A")
        done = subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo,
                              env=clean_env({"GIT_COMMITTER_DATE": f"@{when} +0000",
                                             "GIT_AUTHOR_DATE": f"@{when} +0000"}),
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    for i in range(changes):
        phase = ("Progressing", "Ready", "Failed")[i % 3]
        (status / "cell.yaml").write_text(_status(phase, f"run {i}, all  said", f"{i:040x}"))
        commit(f"status {i}")
    (status / "press.yaml").write_text(_status("Ready", "other target", "f" * 40))
    commit("another target")
    (status / "broken").mkdir()
    (status / "cell.yaml").rename(status / "broken/cell.yaml")
    commit("moved")
    (status / "broken/cell.yaml").unlink()
    commit("gone")
    return repo


def _expected(repo: Path) -> list[dict[str, str]]:
    """The entries as ``git show`` of each changed file tells them."""
    import yaml

    entries = []
    log = git(repo, "log", "--format=@%H %cI", "--name-only", "reconciler-status/eu_a", "--",
              ":(glob)status/**/cell.yaml")
    commit = date = ""
    for line in log.splitlines():
        if line.startswith("@"):
            commit, date = line[1:].split(" ", 1)
        elif line.strip():
            raw = git(repo, "show", f"{commit}:{line.strip()}", check=False)
            doc = yaml.safe_load(raw) or {}
            entries.append({"commit": commit, "date": date, "phase": doc.get("phase", "?"),
                            "revision": str(doc.get("appliedRevision", ""))[:12],
                            "message": doc.get("message", "")})
    return entries


@pytest.mark.parametrize("changes", [2, 7])
def test_history_of_a_target_costs_a_fixed_number_of_git_processes(tmp_path: Path,
                                                                    changes: int) -> None:
    repo = _status_history(tmp_path, changes)
    env, calls = _git_logger(tmp_path)
    expected = _expected(repo)
    assert len(expected) == changes + 2  # every change, the move, the deletion

    as_json = reconciler("history", "--repo", str(repo), "--target", "cell", "--format",
                         "json", env=env)
    as_text = reconciler("history", "--repo", str(repo), "--target", "cell", env=env)

    assert as_json.returncode == 0, as_json.describe()
    assert json.loads(as_json.stdout) == expected
    assert as_text.returncode == 0, as_text.describe()
    assert [line.rstrip() for line in as_text.stdout.splitlines()] == [
        f"{e['date']}  {e['phase']:<11} {e['revision']:<12} {e['message']}".rstrip()
        for e in expected]
    logged = calls.read_text().splitlines()
    assert len(logged) <= 2 * 4, logged  # two commands; no git process per entry


def test_history_did_you_mean_costs_a_fixed_number_of_git_processes(tmp_path: Path) -> None:
    repo = _status_history(tmp_path, 3)
    git(repo, "branch", "reconciler-status/eu_b", "HEAD~3")  # a second status branch
    env, calls = _git_logger(tmp_path)

    out = reconciler("history", "--repo", str(repo), "--target", "pres", env=env)

    assert out.returncode == 1, out.describe()
    assert "no target 'pres' on the status branches" in out.stderr
    assert "did you mean press?" in out.stderr
    assert len(calls.read_text().splitlines()) <= 4
