"""What a daemon keeps between idle runs, in-process against real git and real files: an idle
run hands back the component results of the run before when they are equal (one set kept,
not one per run), with its own counts of provider calls; a run that changed something hands
back its own; targets whose results are equal share them."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import default_registry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.executing import TargetResult
from reconciler.engine.pipeline import Reconciler, RunSummary
from tests.integration.fleetkit import (
    FleetRepo,
    component,
    instance,
    settings,
    site,
    solution,
    target,
)


def result(summary: RunSummary, name: str) -> TargetResult:
    return next(r for r in summary.results if r.target == name)


def test_idle_runs_keep_one_set_of_component_results(tmp_path: Path) -> None:
    repo = FleetRepo(tmp_path / "fleet")
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1"), target("beta", "line-1"),
                                instance("app", "app", names=["alpha", "beta"])])
    repo.write("solutions/app.yaml", solution("app", [
        component(name, "config-file", {"path": f"{name}.conf", "content": f"{name}\n"})
        for name in ("one", "two")]))
    repo.commit("two targets")
    state = tmp_path / "state"
    reconciler = Reconciler(EngineSettings(
        repo_url=repo.url, site="hq", state_dir=state, retries=0, health_poll_interval=0.05,
        policy=LocalPolicy(file_roots=(state / "files",))), default_registry())
    assert reconciler.run("sync").ok
    first = reconciler.run("schedule")
    # targets with equal results share them (the keys name the instance, not the target)
    assert result(first, "alpha").components is result(first, "beta").components
    second = reconciler.run("schedule")
    for name in ("alpha", "beta"):
        before, after = result(first, name), result(second, name)
        assert after.components is before.components
        assert after.provider_calls.get("observe") == 2
        assert after.provider_calls is not before.provider_calls
    (state / "files" / "alpha" / "one.conf").write_text("edited\n")
    repaired = reconciler.run("schedule")
    changed = result(repaired, "alpha")
    assert changed.components is not result(second, "alpha").components
    assert [(c.key, c.applied, c.drifted) for c in changed.components] == [
        ("app/one", True, True), ("app/two", False, False)]
    assert result(repaired, "beta").components is result(second, "beta").components
    assert (state / "files" / "alpha" / "one.conf").read_text() == "one\n"
