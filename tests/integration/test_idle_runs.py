"""Idle runs of one engine, in-process, against real git and real files.

A daemon keeps what a revision renders between runs (providers built once per binding and
revision, the file provider's desired paths, digests and modes, the inventory), so an idle
run costs one read and one digest per managed file. None of that may cost correctness: every
file is still looked at in every run, and a file edited, deleted, chmod-ed, or reached
through a directory swapped for a symlink between two idle runs is found (and repaired, or
refused) within one run, as a fresh process would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from reconciler_providers.file import FileProvider

from reconciler.core.provider_api import LocalPolicy, ProviderContext
from reconciler.core.registry import ProviderRegistry, default_registry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.executing import ComponentPhase, TargetResult
from reconciler.engine.pipeline import Reconciler, RunSummary
from reconciler.engine.status import Phase
from tests.integration.fleetkit import (
    FleetRepo,
    component,
    instance,
    settings,
    site,
    solution,
    target,
)

FILES = {"conf": "etc/app.conf", "env": "etc/app.env", "motd": "motd"}


class CountingFileProvider(FileProvider):
    """The file provider, counting how often it is built (a provider plug-in of the test)."""

    built: ClassVar[list[str]] = []

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(config, context)
        CountingFileProvider.built.append(context.target)


def fleet(root: Path, version: str = "1") -> FleetRepo:
    """Targets ``alpha`` and ``beta``, three files each (one of them mode 0600)."""
    repo = FleetRepo(root / "fleet")
    write(repo, version)
    repo.commit("two targets")
    return repo


def write(repo: FleetRepo, version: str) -> None:
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1"), target("beta", "line-1"),
                                instance("app", "app", names=["alpha", "beta"])])
    repo.write("solutions/app.yaml", solution("app", [
        component(name, "config-file",
                  {"path": path, "content": f"{name} v{version} on ${{{{ target.name }}}}\n",
                   **({"mode": "0600"} if name == "env" else {})})
        for name, path in FILES.items()]))


def engine(repo: FleetRepo, state: Path,
           registry: ProviderRegistry | None = None) -> Reconciler:
    config = EngineSettings(repo_url=repo.url, site="hq", state_dir=state, retries=0,
                            health_poll_interval=0.05,
                            policy=LocalPolicy(file_roots=(state / "files",)))
    return Reconciler(config, registry or default_registry())


def result(summary: RunSummary, name: str) -> TargetResult:
    return next(r for r in summary.results if r.target == name)


def assert_idle(summary: RunSummary) -> None:
    """Every target Ready, every file observed, nothing applied."""
    assert summary.ok, [s.message for s in summary.statuses]
    for name in ("alpha", "beta"):
        found = result(summary, name)
        assert found.applied == 0, found.components
        assert found.provider_calls.get("observe") == len(FILES), found.provider_calls


def repaired(summary: RunSummary, key: str) -> list[str]:
    """The keys of the components of alpha the run applied; checks they were drift."""
    found = result(summary, "alpha")
    applied = [c.key for c in found.components if c.applied]
    assert all(c.drifted for c in found.components if c.applied), found.components
    assert applied == [key], found.components
    return applied


def test_a_file_edited_deleted_or_chmod_ed_between_idle_runs_is_repaired_in_one_run(
        tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    reconciler = engine(repo, state)
    assert reconciler.run("sync").ok
    assert_idle(reconciler.run("schedule"))
    files = state / "files" / "alpha"
    conf, env, motd = (files / path for path in FILES.values())

    conf.write_text("edited by hand\n")
    repaired(reconciler.run("schedule"), "app/conf")
    assert conf.read_text() == "conf v1 on alpha\n"

    motd.unlink()
    repaired(reconciler.run("schedule"), "app/motd")
    assert motd.read_text() == "motd v1 on alpha\n"

    env.chmod(0o644)
    repaired(reconciler.run("schedule"), "app/env")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600

    # the same size and a new inode (an editor's save): found all the same
    replacement = files / "etc" / "replacement"
    replacement.write_text("conf v1 on gamma\n")
    os.replace(replacement, conf)
    repaired(reconciler.run("schedule"), "app/conf")
    assert conf.read_text() == "conf v1 on alpha\n"

    assert_idle(reconciler.run("schedule"))


def test_providers_are_built_once_per_binding_and_revision(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    registry = ProviderRegistry({"file": CountingFileProvider})  # type: ignore[dict-item]
    reconciler = engine(repo, state, registry)
    CountingFileProvider.built.clear()
    assert reconciler.run("sync").ok
    assert_idle(reconciler.run("schedule"))
    assert_idle(reconciler.run("schedule"))
    assert sorted(CountingFileProvider.built) == ["alpha", "beta"]

    write(repo, "2")
    repo.commit("version 2")
    summary = reconciler.run("sync")
    assert summary.ok and result(summary, "alpha").applied == len(FILES)
    assert_idle(reconciler.run("schedule"))
    assert sorted(CountingFileProvider.built) == ["alpha", "alpha", "beta", "beta"]
    assert (state / "files" / "beta" / "motd").read_text() == "motd v2 on beta\n"


def test_a_directory_swapped_for_a_symlink_between_idle_runs_is_refused(
        tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    reconciler = engine(repo, state)
    assert reconciler.run("sync").ok
    assert_idle(reconciler.run("schedule"))
    # the same files, outside the root, reached through a symlink where etc/ was
    etc = state / "files" / "alpha" / "etc"
    outside = tmp_path / "outside"
    etc.rename(outside)
    etc.symlink_to(outside)

    summary = reconciler.run("schedule")

    alpha = result(summary, "alpha")
    failed = [c for c in alpha.components if c.phase is ComponentPhase.FAILED]
    # the files in etc/ (applied at the same time: neither depends on the other) are refused
    assert {c.key for c in failed} == {"app/conf", "app/env"}, alpha.components
    assert all("outside" in c.message for c in failed), failed
    assert {s.target: s.phase for s in summary.statuses} == {"alpha": Phase.FAILED,
                                                             "beta": Phase.READY}
    assert (outside / "app.conf").read_text() == "conf v1 on alpha\n"  # never written


def test_a_root_swapped_for_a_symlink_out_of_the_allowed_roots_is_refused(
        tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    reconciler = engine(repo, state)
    assert reconciler.run("sync").ok
    root = state / "files" / "alpha"
    elsewhere = tmp_path / "elsewhere"
    root.rename(elsewhere)
    root.symlink_to(elsewhere)

    summary = reconciler.run("schedule")

    alpha = result(summary, "alpha")
    assert alpha.components[0].phase is ComponentPhase.FAILED, alpha.components
    assert "local policy" in alpha.components[0].message, alpha.components[0].message
    assert not result(summary, "beta").failed


def test_an_inventory_file_changed_under_the_engine_is_read_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    reconciler = engine(repo, state)
    assert reconciler.run("sync").ok
    inventory = state / "inventory" / "alpha.json"
    inventory.unlink()

    summary = reconciler.run("schedule")

    # what a fresh process makes of it: the files are in sync but not recorded, so they
    # are applied (not drift) and recorded again
    alpha = result(summary, "alpha")
    assert (alpha.applied, alpha.drifted) == (len(FILES), 0), alpha.components
    assert inventory.is_file()
    assert_idle(reconciler.run("schedule"))


def test_an_inventory_write_that_failed_is_read_again_from_the_file(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    blocked = state / "inventory" / "alpha.json"
    blocked.mkdir(parents=True)
    reconciler = engine(repo, state)

    summary = reconciler.run("sync")
    assert {s.target: s.phase for s in summary.statuses} == {"alpha": Phase.FAILED,
                                                             "beta": Phase.READY}
    blocked.rmdir()
    summary = reconciler.run("schedule")

    assert summary.ok, [s.message for s in summary.statuses]
    assert blocked.is_file()
    assert_idle(reconciler.run("schedule"))
