"""The engine in-process, against real git and real files: one target's reconcile with the
file provider, a site upgraded with today's ``state.json``, the run's log context, the fetch
backoff under an injected clock, and what the daemon asks the engine."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import default_registry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.pipeline import Reconciler
from reconciler.engine.run_observer import RunObserver
from reconciler.engine.state_store import TargetRecord
from reconciler.engine.status import Phase
from tests.integration.fleetkit import (
    FleetRepo,
    file_component,
    instance,
    settings,
    site,
    solution,
    target,
)


def write_fleet(repo: FleetRepo, content: str, *, alpha_level: object = 1) -> None:
    """Targets ``alpha`` and ``beta`` at ``hq/line-1``, one file component each; a string
    ``alpha_level`` makes the revision invalid for alpha alone."""
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1", params={"level": alpha_level}),
                                target("beta", "line-1"),
                                instance("app", "app", names=["alpha", "beta"])])
    repo.write("solutions/app.yaml", solution(
        "app", [file_component("conf", "app.conf", content)],
        parameters={"level": {"type": "integer", "default": 1}}))


def fleet(root: Path, content: str = "release A\n") -> FleetRepo:
    repo = FleetRepo(root / "fleet")
    write_fleet(repo, content)
    repo.commit("two targets")
    return repo


@dataclass
class Recorder:
    """A RunObserver that remembers what it was told."""

    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)

    def revision(self, sha: str) -> None:
        self.calls.append(("revision", (sha,)))

    def fetch_failed(self) -> None:
        self.calls.append(("fetch_failed", ()))

    def record_target(self, target: str, phase: str | enum.Enum, *, applied: int = 0,
                      failed: int = 0, pruned: int = 0, drifted: int = 0,
                      success: bool) -> None:
        self.calls.append(("record_target", (target, phase, applied, drifted, success)))

    def forget_target(self, target: str) -> None:
        self.calls.append(("forget_target", (target,)))

    def observe_run(self, duration: float) -> None:
        self.calls.append(("observe_run", ()))

    def named(self, name: str) -> list[tuple[object, ...]]:
        return [args for call, args in self.calls if call == name]


def engine(repo: FleetRepo, state: Path, *, observer: RunObserver | None = None,
           clock: Clock | None = None, **overrides: object) -> Reconciler:
    config = EngineSettings(repo_url=repo.url, site="hq", state_dir=state, retries=0,
                            health_poll_interval=0.05,
                            policy=LocalPolicy(file_roots=(state / "files",)),
                            **overrides)  # type: ignore[arg-type]
    if clock is None:
        return Reconciler(config, default_registry(), observer=observer)
    return Reconciler(config, default_registry(), observer=observer, clock=clock)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- one target's reconcile

def test_one_target_reconcile_with_the_file_provider(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    recorder = Recorder()
    reconciler = engine(repo, state, observer=recorder)
    revision = reconciler.fetcher.fetch().revision
    assert revision is not None and revision.commit == repo.head()
    newest = reconciler.revisions.newest(revision)
    assert newest.report is not None and not newest.blocked and not newest.unusable
    alpha = newest.report.fleet.targets["alpha"]

    status, result = reconciler.targets.reconcile(alpha, newest)
    assert status.phase is Phase.READY, status.message
    assert result is not None and result.applied == 1 and result.drifted == 0
    conf = state / "files" / "alpha" / "app.conf"
    assert conf.read_text() == "release A\n"
    assert not (state / "files" / "beta").exists()  # one target, only that one
    record = reconciler.store.get("alpha")
    assert (record.applied, record.last_good, record.site) == \
        (revision.commit, revision.commit, "hq/line-1")
    assert recorder.named("record_target") == [("alpha", "Ready", 1, 0, True)]
    first_change = record.last_change

    # a hand edit is drift: repaired, counted, and the status content is the same
    conf.write_text("edited\n")
    status, result = reconciler.targets.reconcile(alpha, newest)
    assert status.phase is Phase.READY and result is not None
    assert (result.applied, result.drifted) == (1, 1)
    assert conf.read_text() == "release A\n"
    assert reconciler.store.get("alpha").last_change == first_change
    assert recorder.named("record_target")[-1] == ("alpha", "Ready", 1, 1, True)

    # in sync: nothing applied
    status, result = reconciler.targets.reconcile(alpha, newest)
    assert result is not None and result.applied == 0 and status.phase is Phase.READY


def test_a_target_that_left_is_retired(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    recorder = Recorder()
    reconciler = engine(repo, state, observer=recorder)
    assert reconciler.run("sync").ok
    repo.write("targets.yaml", [target("alpha", "line-1", params={"level": 1}),
                                instance("app", "app", names=["alpha"])])
    repo.commit("beta leaves")
    summary = reconciler.run("sync")
    assert [s.target for s in summary.statuses] == ["alpha"]
    assert not (state / "files" / "beta" / "app.conf").exists()
    assert "beta" not in reconciler.store
    assert not (state / "inventory" / "beta.json").exists()
    assert recorder.named("forget_target") == [("beta",)]
    assert "beta" not in json.loads((state / "state.json").read_text())["targets"]


# ---------------------------------------------------------------- upgrade in place

def test_a_site_upgraded_with_todays_state_file_keeps_its_last_good_revisions(
        tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    good = repo.head()
    state = tmp_path / "state"
    assert engine(repo, state).run("sync").ok  # the files of the good revision are applied
    # state.json exactly as the daemon before the state store wrote it (write_json: one
    # space indent, sorted keys, a key only once set)
    legacy = {"revision": good, "targets": {
        "alpha": {"applied": good, "digest": "0" * 64,
                  "lastChange": "2026-03-01T10:00:00+00:00", "lastGood": good,
                  "site": "hq/line-1"},
        "beta": {"applied": good, "digest": "1" * 64,
                 "lastChange": "2026-03-01T10:00:05+00:00", "lastGood": good,
                 "site": "hq/line-1"}}}
    (state / "state.json").write_text(json.dumps(legacy, indent=1, sort_keys=True) + "\n")

    write_fleet(repo, "release B\n", alpha_level="high")  # invalid for alpha alone
    new = repo.commit("B, invalid for alpha")
    upgraded = engine(repo, state)
    assert upgraded.store.get("alpha") == TargetRecord(
        applied=good, last_good=good, site="hq/line-1", digest="0" * 64,
        last_change="2026-03-01T10:00:00+00:00")
    (state / "files" / "alpha" / "app.conf").write_text("edited\n")
    summary = upgraded.run("sync")
    by_target = {s.target: s for s in summary.statuses}
    assert by_target["alpha"].phase is Phase.INVALID
    assert (by_target["alpha"].applied_revision, by_target["alpha"].last_good_revision) == \
        (good, good)
    assert (state / "files" / "alpha" / "app.conf").read_text() == "release A\n"
    assert by_target["beta"].phase is Phase.READY
    assert (state / "files" / "beta" / "app.conf").read_text() == "release B\n"
    written = json.loads((state / "state.json").read_text())
    assert written["revision"] == new
    assert written["targets"]["alpha"]["lastGood"] == good
    assert written["targets"]["beta"]["lastGood"] == new
    assert set(written["targets"]["alpha"]) == {"applied", "digest", "lastChange", "lastGood",
                                                "site"}


# ---------------------------------------------------------------- the run's log context

def test_provider_lines_carry_the_run_id_and_the_revision(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    with capture_logs(processors=[merge_contextvars]) as logs:
        summary = engine(repo, state).run("sync")
    assert summary.ok, summary
    written = [e for e in logs if e["event"] == "file_written"]
    assert len(written) == 2, logs
    assert all(e.get("run_id") and e.get("revision") == repo.head()[:12] for e in written), \
        written
    assert {e["run_id"] for e in written} == {summary.run_id}
    finished = [e for e in logs if e["event"] == "run_finished"]
    assert finished and finished[0]["run_id"] == summary.run_id
    assert finished[0]["site"] == "hq"


def test_each_run_has_its_own_id_and_none_is_left_bound(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    reconciler = engine(repo, tmp_path / "state")
    with capture_logs(processors=[merge_contextvars]) as logs:
        first = reconciler.run("sync")
        second = reconciler.run("sync")
    assert first.run_id and second.run_id and first.run_id != second.run_id
    runs = {e.get("run_id") for e in logs if e["event"] == "run_finished"}
    assert runs == {first.run_id, second.run_id}
    with capture_logs(processors=[merge_contextvars]) as after:
        structlog.get_logger("test").info("outside_a_run")
    assert "run_id" not in after[0] and "revision" not in after[0]


# ---------------------------------------------------------------- fetch backoff

def test_fetch_backs_off_from_an_unreachable_server(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    clock = Clock()
    recorder = Recorder()
    reconciler = engine(repo, state, observer=recorder, clock=clock)
    assert reconciler.run("sync").ok
    away = repo.remote.with_name("away.git")
    repo.remote.rename(away)

    failed = reconciler.run("schedule")
    assert failed.revision == repo.head() and failed.fetch_error  # the last fetched commit
    assert failed.ok
    assert len(recorder.named("fetch_failed")) == 1
    assert reconciler.fetcher.failures == 1 and reconciler.fetcher.offline

    clock.now += 5  # within the first delay (10 s): no fetch
    waited = reconciler.run("schedule")
    assert "next attempt in 5s" in waited.fetch_error, waited.fetch_error
    assert len(recorder.named("fetch_failed")) == 1

    clock.now += 6  # past it: fetch again, fail again, and wait twice as long
    reconciler.run("schedule")
    assert len(recorder.named("fetch_failed")) == 2
    assert reconciler.fetcher.next_attempt == clock.now + 20.0

    away.rename(repo.remote)
    clock.now += 1
    assert "next attempt in 19s" in reconciler.run("schedule").fetch_error
    # a webhook (or an explicit sync) asks the server at once
    forced = reconciler.run("webhook")
    assert forced.fetch_error == "" and forced.status_pushed
    assert reconciler.fetcher.failures == 0 and not reconciler.fetcher.offline


# ---------------------------------------------------------------- what the daemon asks

def test_what_the_daemon_asks_the_engine(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    reconciler = engine(repo, tmp_path / "state")
    assert reconciler.current_revision == "" and reconciler.current_report() is None
    assert reconciler.tracked_ref.kind in ("branch", "auto")
    assert reconciler.tracked_ref.value == "main"
    summary = reconciler.run("sync")
    assert reconciler.current_revision == summary.revision == repo.head()
    report = reconciler.current_report()
    assert report is not None and report is reconciler.report_of(summary.revision)
    assert sorted(report.fleet.targets) == ["alpha", "beta"]
    assert reconciler.report_of("0" * 40) is None
    assert not reconciler.cancelled()
    reconciler.newer_revision()
    assert reconciler.cancelled()
    reconciler.run("sync")  # a new run: the news was for the last one
    assert not reconciler.newer.is_set()
    reconciler.stop()
    assert reconciler.cancelled() and reconciler.stop_event.is_set()
