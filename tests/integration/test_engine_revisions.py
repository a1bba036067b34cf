"""Which revision each target is held to, against real files and real git.

The rule (``reconciler.engine.revisions``): the run's newest revision when it is usable for the
target (trusted, readable, and without a validation error that concerns the target), else the
target's last good revision (drift still repaired), else nothing. First as a table of the
choice itself, on validation reports of real repositories; then as runs of the engine over a
history of real commits, where what is enforced shows in the files a target holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import default_registry
from reconciler.core.validation import Report, validate_repository
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.pipeline import Reconciler, RunSummary
from reconciler.engine.revisions import Basis, RevisionChoice, choose_revision
from reconciler.engine.status import Phase
from reconciler.gitops.verification import VerifyMode
from tests.integration.fleetkit import (
    FleetRepo,
    file_component,
    instance,
    settings,
    site,
    solution,
    target,
)

NEW = "n" * 40
GOOD = "g" * 40


def write_fleet(repo: FleetRepo, content: str, *, alpha_level: object = 1,
                broken_settings: bool = False) -> None:
    """Targets ``alpha`` and ``beta`` at line ``hq/line-1``, one file component each
    (``app.conf`` holding ``content``). ``alpha_level`` is alpha's value of an integer
    parameter (a string makes the revision invalid for alpha alone); ``broken_settings``
    makes it invalid for every target."""
    repo.write("reconciler.yaml", {"apiVersion": "reconciler/v1", "kind": "Settings",
                                   "metadata": {"name": "fleet"},
                                   "spec": {"hierarchy": "plant"}} if broken_settings
               else settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1", params={"level": alpha_level}),
                                target("beta", "line-1"),
                                instance("app", "app", names=["alpha", "beta"])])
    repo.write("solutions/app.yaml", solution(
        "app", [file_component("conf", "app.conf", content)],
        parameters={"level": {"type": "integer", "default": 1}}))


# ---------------------------------------------------------------- the choice, as a table

@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    out: dict[str, Report] = {}
    for name, kwargs in {"valid": {}, "invalid-for-alpha": {"alpha_level": "high"},
                         "invalid-for-all": {"broken_settings": True}}.items():
        repo = FleetRepo(tmp_path_factory.mktemp(name))
        write_fleet(repo, "release A\n", **kwargs)  # type: ignore[arg-type]
        out[name] = validate_repository(repo.work)
    return out


@dataclass(frozen=True)
class Case:
    report: str | None  # which report the newest revision has; None: not validated
    target: str = "alpha"
    last_good: str = GOOD
    blocked: str = ""
    unusable: str = ""


CHOICES: list[tuple[str, Case, RevisionChoice]] = [
    ("new commit, valid", Case("valid"), RevisionChoice(NEW, Basis.NEWEST)),
    ("valid, never good before", Case("valid", last_good=""),
     RevisionChoice(NEW, Basis.NEWEST)),
    ("invalid for this target", Case("invalid-for-alpha"),
     RevisionChoice(GOOD, Basis.LAST_GOOD)),
    ("invalid for this target, no last good", Case("invalid-for-alpha", last_good=""),
     RevisionChoice("", Basis.NONE)),
    ("invalid for another target", Case("invalid-for-alpha", target="beta"),
     RevisionChoice(NEW, Basis.NEWEST)),
    ("invalid for every target", Case("invalid-for-all", target="beta"),
     RevisionChoice(GOOD, Basis.LAST_GOOD)),
    ("not signed by a trusted key", Case(None, blocked="no signature"),
     RevisionChoice(GOOD, Basis.LAST_GOOD)),
    ("blocked, no last good", Case(None, blocked="no signature", last_good=""),
     RevisionChoice("", Basis.NONE)),
    ("cannot be checked out", Case(None, unusable="checkout failed"),
     RevisionChoice(GOOD, Basis.LAST_GOOD)),
]


@pytest.mark.parametrize(("case", "expected"), [(c, e) for _, c, e in CHOICES],
                         ids=[name for name, _, _ in CHOICES])
def test_choice(reports: dict[str, Report], case: Case, expected: RevisionChoice) -> None:
    report = reports[case.report] if case.report is not None else None
    choice = choose_revision(case.target, NEW, last_good=case.last_good, report=report,
                             blocked=case.blocked, unusable=case.unusable)
    assert (choice.revision, choice.basis) == (expected.revision, expected.basis)
    # the newest revision's errors for the target travel with a fallback, for its status
    want = report.errors_for(case.target) if report is not None else []
    assert list(choice.errors) == (want if choice.basis is not Basis.NEWEST else [])


# ---------------------------------------------------------------- the choice, in runs

def engine(repo: FleetRepo, state: Path, **overrides: object) -> Reconciler:
    config = EngineSettings(repo_url=repo.url, site="hq", state_dir=state, retries=0,
                            health_poll_interval=0.05,
                            policy=LocalPolicy(file_roots=(state / "files",)),
                            **overrides)  # type: ignore[arg-type]
    return Reconciler(config, default_registry())


@dataclass(frozen=True)
class Step:
    """One commit and a run; per target the phase, the revision applied and the last good
    one (as the number of the step that made it, 0: none) and the file's content."""

    change: Callable[[FleetRepo], None]
    expect: dict[str, tuple[Phase, int, int, str | None]]


HISTORY = [
    Step(lambda r: write_fleet(r, "A\n"),
         {"alpha": (Phase.READY, 1, 1, "A\n"), "beta": (Phase.READY, 1, 1, "A\n")}),
    # alpha stays on step 1; beta moves on
    Step(lambda r: write_fleet(r, "B\n", alpha_level="high"),
         {"alpha": (Phase.INVALID, 1, 1, "A\n"), "beta": (Phase.READY, 2, 2, "B\n")}),
    # nobody moves; the fleet of a last good revision still says what is served
    Step(lambda r: write_fleet(r, "C\n", broken_settings=True),
         {"alpha": (Phase.INVALID, 1, 1, "A\n"), "beta": (Phase.INVALID, 2, 2, "B\n")}),
    Step(lambda r: write_fleet(r, "D\n"),
         {"alpha": (Phase.READY, 4, 4, "D\n"), "beta": (Phase.READY, 4, 4, "D\n")}),
]

FIRST_INVALID = [
    # a target that never had a good revision gets nothing
    Step(lambda r: write_fleet(r, "A\n", alpha_level="high"),
         {"alpha": (Phase.INVALID, 0, 0, None), "beta": (Phase.READY, 1, 1, "A\n")}),
    Step(lambda r: write_fleet(r, "B\n"),
         {"alpha": (Phase.READY, 2, 2, "B\n"), "beta": (Phase.READY, 2, 2, "B\n")}),
]


@pytest.mark.parametrize("history", [HISTORY, FIRST_INVALID],
                         ids=["valid-then-invalid", "invalid-first"])
def test_history(tmp_path: Path, history: list[Step]) -> None:
    repo = FleetRepo(tmp_path / "fleet")
    state = tmp_path / "state"
    reconciler = engine(repo, state)
    commits = [""]
    for number, step in enumerate(history, start=1):
        step.change(repo)
        commits.append(repo.commit(f"step {number}"))
        summary = reconciler.run("sync")
        assert summary.revision == commits[number]
        by_target = {s.target: s for s in summary.statuses}
        assert sorted(by_target) == sorted(step.expect), summary
        for name, (phase, applied, good, content) in step.expect.items():
            status = by_target[name]
            where = f"step {number}, {name}: {status.message}"
            assert status.phase is phase, where
            assert status.observed_revision == commits[number], where
            assert status.applied_revision == commits[applied], where
            assert status.last_good_revision == commits[good], where
            record = reconciler.store.get(name)
            assert (record.applied, record.last_good) == (commits[applied], commits[good])
            file = state / "files" / name / "app.conf"
            assert (file.read_text() if file.exists() else None) == content, where


def test_blocked_revision_keeps_the_last_good_one_enforced(tmp_path: Path) -> None:
    repo = FleetRepo(tmp_path / "fleet")
    state = tmp_path / "state"
    write_fleet(repo, "A\n")
    good = repo.commit("good")
    assert engine(repo, state).run("sync").ok
    # the site starts to require signatures; the next commit is not signed
    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    strict = engine(repo, state, verify_mode=VerifyMode.COMMIT, verify_allowed_signers=signers)
    write_fleet(repo, "B\n")
    unsigned = repo.commit("unsigned")
    (state / "files" / "alpha" / "app.conf").write_text("edited by hand\n")
    summary: RunSummary = strict.run("sync")
    for status in summary.statuses:
        assert status.phase is Phase.BLOCKED, status.message
        assert status.observed_revision == unsigned
        assert (status.applied_revision, status.last_good_revision) == (good, good)
    # the drift was repaired to the last good revision, nothing of the new one applied
    assert (state / "files" / "alpha" / "app.conf").read_text() == "A\n"
    assert (state / "files" / "beta" / "app.conf").read_text() == "A\n"
