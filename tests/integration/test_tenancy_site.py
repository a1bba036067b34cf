"""Tenancy enforced by the site daemon: a team's change signed by someone outside the team
is Blocked on the target, while the other team's instance on the same target moves on.

Real signed commits (SSH keys made in the test, tests/integration/tenancykit.py), the engine
in this process with signature verification on, real files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import default_registry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.pipeline import Reconciler
from reconciler.gitops.verification import VerifyMode
from tests.integration.signkit import NEEDS_SIGNING_TOOLS
from tests.integration.tenancykit import People, Repo, fleet_files, made_people

pytestmark = [NEEDS_SIGNING_TOOLS, pytest.mark.timeout(120)]

LINE_OPS = "teams/line-ops/solution.yaml"
QUALITY = "teams/quality/solution.yaml"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    with made_people(tmp_path_factory.mktemp("people")) as made:
        yield made


def engine(repo: Repo, state: Path, people: People) -> Reconciler:
    signers = state.parent / "allowed_signers"
    signers.write_text("".join(f"{name} {key}\n" for name, key in people.ssh.items()))
    settings = EngineSettings(repo_url=str(repo.path), site="eu", state_dir=state, retries=0,
                              health_poll_interval=0.05,
                              policy=LocalPolicy(file_roots=(state / "files",)),
                              verify_mode=VerifyMode.COMMIT, verify_allowed_signers=signers,
                              verify_gpg_keyring=people.keyring)
    return Reconciler(settings, default_registry())


def version(repo: Repo, path: str, number: int) -> dict[str, str]:
    text = repo.read(path)
    return {path: text.replace(text[text.index('"version '):text.index('"}')],
                               f'"version {number}')}


def conf(state: Path, team: str) -> str:
    return (state / "files" / "t1" / f"{team}.conf").read_text()


def test_a_change_by_someone_outside_the_team_is_blocked_for_that_team_only(
        tmp_path: Path, people: People) -> None:
    repo = Repo(tmp_path / "fleet", people)
    files = fleet_files(people)
    files["sites/eu.yaml"] = files["sites/eu.yaml"].replace("/srv/t1", "files/t1")
    repo.commit("pat", files, "the fleet")
    state = tmp_path / "state"
    rec = engine(repo, state, people)
    assert rec.run().ok
    assert conf(state, "line-ops") == conf(state, "quality") == "version 1"

    # line-ops changes its own solution: applied
    repo.commit("alice", version(repo, LINE_OPS, 2))
    assert rec.run().ok and conf(state, "line-ops") == "version 2"

    # bob (quality) changes line-ops' solution, then his own team's
    bad = repo.commit("bob", version(repo, LINE_OPS, 3))
    repo.commit("bob", version(repo, QUALITY, 2))
    summary = rec.run()
    assert conf(state, "line-ops") == "version 2"  # stays on its last good revision
    assert conf(state, "quality") == "version 2"  # the other project carries on
    status = summary.statuses[0]
    assert status.phase.value == "Blocked", status
    blocked = status.instances["line-ops-app"]
    assert blocked["phase"] == "Blocked"
    assert bad[:12] in blocked["blocked"] and "line-ops" in blocked["blocked"]
    assert "bob" in blocked["blocked"]
    assert status.instances["quality-app"]["phase"] == "Ready"

    # a line-ops member reverts bob's change: nothing blocks any more
    repo.commit("alice", version(repo, LINE_OPS, 2))
    repo.commit("alice", version(repo, LINE_OPS, 4))
    assert rec.run().ok and conf(state, "line-ops") == "version 4"
