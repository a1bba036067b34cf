"""The last status publish, remembered across processes: a new process (``sync --once``, a
restart) whose statuses are those of the last publish renders no status file and commits
nothing; anything else - a changed status, a commit not pushed yet, a status ref that moved,
a secret value that may be in a status - renders and publishes as before.

Real git: a bare remote, each "process" a new StatusPublishing on the same state directory.
Whether files were rendered shows in a status renderer of the test that counts renders."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

from reconciler.core.secrets import register
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.published_status import RECORD_FILE
from reconciler.engine.publishing import StatusPublishing
from reconciler.engine.results import ComponentPhase, ComponentResult, TargetResult
from reconciler.engine.state_store import StateStore
from reconciler.engine.status import StatusRenderer, TargetStatus, build_status
from tests.integration.test_status_push import files_on, git, make_remote, rev

SITE = "eu/berlin"
BRANCH = "refs/heads/reconciler-status/eu_berlin"
REV = "4f2c0d1e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
T0 = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)


class CountingRenderer(StatusRenderer):
    """The status renderer, counting the files it renders."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0

    def render(self, status: TargetStatus, last_change: str) -> bytes:
        self.rendered += 1
        return super().render(status, last_change)


class Process:
    """What one process has: a state directory's store and a new publishing."""

    def __init__(self, tmp_path: Path, remote: Path, now: dt.datetime = T0,
                 **settings: Any) -> None:
        state = tmp_path / "state"
        self.renderer = CountingRenderer()
        self.store = StateStore.load(state / "state.json")
        self.publishing = StatusPublishing(
            EngineSettings(repo_url=f"file://{remote}", site=SITE, state_dir=state,
                           **settings),
            state / "repo.git", stop=threading.Event(), renderer=self.renderer,
            heartbeat=3600, clock=lambda: now)

    def publish(self, statuses: list[TargetStatus], *,
                offline: bool = False) -> tuple[str | None, bool]:
        for status in statuses:
            self.store.status_seen(status.target, site=SITE, digest=status.digest(),
                                   now="2026-11-30T09:00:00+00:00")
        return self.publishing.publish(statuses, self.store, None, REV, offline=offline)


def statuses(message: str = "", *targets: str) -> list[TargetStatus]:
    result = TargetResult("press", REV, (ComponentResult(
        "app/conf", "app", "conf", "file", ComponentPhase.FAILED, message),)) \
        if message else None
    return [build_status(target=name, site=SITE, observed=REV, applied=REV, last_good=REV,
                         result=result) for name in (targets or ("press", "oven"))]


def commits(remote: Path) -> int:
    return int(git(remote, "rev-list", "--count", BRANCH))


def test_a_new_process_with_the_statuses_of_the_last_publish_renders_nothing(
        tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    first = Process(tmp_path, remote)
    commit, pushed = first.publish(statuses())
    assert pushed and commits(remote) == 1 and first.renderer.rendered == 2
    assert (tmp_path / "state" / RECORD_FILE).is_file()

    again = Process(tmp_path, remote, T0 + dt.timedelta(minutes=30))
    assert again.publish(statuses()) == (commit, True)
    assert again.renderer.rendered == 0 and commits(remote) == 1
    assert again.publish(statuses()) == (commit, True)  # and in the same process
    assert again.renderer.rendered == 0

    changed = Process(tmp_path, remote, T0 + dt.timedelta(minutes=40))
    newer, pushed = changed.publish(statuses("", "press", "oven", "kiln"))
    assert pushed and newer != commit and commits(remote) == 2
    assert changed.renderer.rendered == 3

    late = Process(tmp_path, remote, T0 + dt.timedelta(minutes=61))  # the heartbeat is due
    beat, pushed = late.publish(statuses("", "press", "oven", "kiln"))
    assert pushed and beat != newer and commits(remote) == 3
    assert b"11:01:00Z" in files_on(remote, BRANCH)[f"status/{SITE}/.heartbeat"]


def test_a_commit_not_pushed_yet_is_pushed_by_the_next_process(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    queued, pushed = Process(tmp_path, remote).publish(statuses(), offline=True)
    assert queued and not pushed and rev(remote, BRANCH) is None
    online = Process(tmp_path, remote)
    assert online.publish(statuses()) == (queued, True)
    assert git(remote, "rev-parse", BRANCH) == queued


def test_a_record_of_another_commit_is_not_trusted(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    commit, _ = Process(tmp_path, remote).publish(statuses())
    record = tmp_path / "state" / RECORD_FILE
    raw = json.loads(record.read_text())
    record.write_text(json.dumps({**raw, "commit": "0" * 40}))

    again = Process(tmp_path, remote)
    assert again.publish(statuses()) == (commit, True)
    assert again.renderer.rendered == 2 and commits(remote) == 1  # rendered, same tree

    record.write_text("{not json")
    garbled = Process(tmp_path, remote)
    assert garbled.publish(statuses()) == (commit, True)
    assert garbled.renderer.rendered == 2


def test_a_status_holding_a_known_secret_is_rendered_and_redacted_every_time(
        tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    for secret in ("tok-4b9d1e7a", 'pa"ss\\w0rd-5c2e'):  # the second one JSON escapes
        register([secret])
        message = f"login with {secret} refused"
        commit, _ = Process(tmp_path, remote).publish(statuses(message))
        again = Process(tmp_path, remote)
        assert again.publish(statuses(message)) == (commit, True)
        assert again.renderer.rendered == 2
        text = files_on(remote, BRANCH)[f"status/{SITE}/press.yaml"]
        assert secret.encode() not in text and b"login with *** refused" in text
