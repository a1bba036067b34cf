"""Pure parts of the helm provider's rollbacks: the deployed states a record keeps, the
``helm history`` and ``helm rollback`` command lines for helm 3 and helm 4, and the choice of
the revision to roll back to."""

from __future__ import annotations

from dataclasses import replace

import pytest
from reconciler_providers.helm_commands import (
    ChartRef,
    ChartSource,
    Connection,
    HelmVersion,
    ReleaseSpec,
    values_digest,
)
from reconciler_providers.helm_history import (
    HISTORY_MAX,
    DeployedState,
    HistoryEntry,
    RollbackPlan,
    deployed_state,
    history_argv,
    next_history,
    parse_history,
    plan_rollback,
    recorded_states,
    rollback_argv,
)

from reconciler.core.errors import PermanentError

HELM3 = HelmVersion(3, 17, 2)
HELM4 = HelmVersion(4, 1, 4)
CONN = Connection(kubeconfig="/etc/k.yaml", context="edge", namespace="lines")
DIR_CHART = ChartRef(ChartSource.DIRECTORY, "/repo/solutions/d/chart", "mini", "0.1.0",
                     "solutions/d/chart", "sha256:chart-a")
REPO_CHART = ChartRef(ChartSource.REPOSITORY, "https://charts.example.net", "mini", "0.1.0",
                      "https://charts.example.net mini")
SPEC_A = ReleaseSpec(release="rel", namespace="lines", chart=DIR_CHART, values={"value": "A"},
                     timeout="90s")
SPEC_B = replace(SPEC_A, values={"value": "B"})


def _entry(revision: int, status: str = "superseded", chart: str = "mini-0.1.0",
           description: str = "Upgrade complete") -> HistoryEntry:
    return HistoryEntry(revision, f"2026-11-30T05:20:4{revision}.000000001Z", status, chart,
                        description)


def _state(spec: ReleaseSpec, revision: int) -> DeployedState:
    return deployed_state(spec, _entry(revision, "deployed"))


# ---------------------------------------------------------------- command lines

@pytest.mark.parametrize(("helm", "wait"), [(HELM3, "--wait"), (HELM4, "--wait=watcher")])
def test_rollback_argv_waits_cleans_up_and_targets_the_release(helm: HelmVersion,
                                                               wait: str) -> None:
    argv = rollback_argv(helm, "/bin/helm", "rel", 3, "lines", CONN, "90s")
    assert argv[:4] == ["/bin/helm", "rollback", "rel", "3"]
    assert wait in argv and "--cleanup-on-fail" in argv
    assert argv[argv.index("--timeout") + 1] == "90s"
    assert argv[argv.index("--namespace") + 1] == "lines"
    assert argv[argv.index("--kube-context") + 1] == "edge"
    # rollback has no rollback-on-failure flag in either version
    assert "--atomic" not in argv and "--rollback-on-failure" not in argv


def test_history_argv_asks_for_json_and_optionally_the_newest_only() -> None:
    argv = history_argv("/bin/helm", "rel", "lines", Connection())
    assert argv[:3] == ["/bin/helm", "history", "rel"]
    assert argv[argv.index("--output") + 1] == "json" and "--max" not in argv
    newest = history_argv("/bin/helm", "rel", "lines", CONN, last=1)
    assert newest[newest.index("--max") + 1] == "1" and "--kube-context" in newest


def test_parse_history_sorts_by_revision_and_rejects_garbage() -> None:
    text = ('[{"revision":2,"updated":"2026-11-30T05:20:45.865Z","status":"deployed",'
            '"chart":"mini-0.1.0","app_version":"","description":"Upgrade complete"},'
            '{"revision":1,"updated":"2026-11-30T05:20:45.779Z","status":"superseded",'
            '"chart":"mini-0.1.0","app_version":"","description":"Install complete"}]')
    entries = parse_history(text, "rel")
    assert [e.revision for e in entries] == [1, 2]
    assert entries[1] == HistoryEntry(2, "2026-11-30T05:20:45.865Z", "deployed", "mini-0.1.0",
                                      "Upgrade complete")
    assert parse_history("", "rel") == []
    with pytest.raises(PermanentError, match="'rel'"):
        parse_history("{not json", "rel")


# ---------------------------------------------------------------- the record's history

def test_a_state_round_trips_through_record_data() -> None:
    state = _state(SPEC_A, 1)
    assert state.values_digest == values_digest({"value": "A"})
    assert state.chart_digest == "sha256:chart-a" and state.source == ""
    assert DeployedState.from_data(state.to_data()) == state
    assert DeployedState.from_data({"revision": "x"}) is None
    assert DeployedState.from_data("nonsense") is None
    repo = deployed_state(replace(SPEC_A, chart=REPO_CHART), _entry(1, "deployed"))
    assert repo.chart_digest == "" and repo.source == "https://charts.example.net"


def test_recorded_states_only_for_the_same_release_and_namespace() -> None:
    data = {"release": "rel", "namespace": "lines",
            "history": [_state(SPEC_B, 2).to_data(), {"broken": True}, _state(SPEC_A, 1).to_data()]}
    assert recorded_states(data, SPEC_A) == [_state(SPEC_B, 2), _state(SPEC_A, 1)]
    assert recorded_states({**data, "namespace": "other"}, SPEC_A) == []
    assert recorded_states({**data, "release": "renamed"}, SPEC_A) == []
    assert recorded_states({"release": "rel", "namespace": "lines"}, SPEC_A) == []


def test_next_history_puts_the_new_state_first_once_and_stays_bounded() -> None:
    recorded = [_state(SPEC_B, 2), _state(SPEC_A, 1)]
    after_rollback = next_history(recorded, _state(SPEC_A, 3))
    # A now lives at revision 3; the older revision of the same content is dropped
    assert [s["revision"] for s in after_rollback] == [3, 2]
    many = [_state(replace(SPEC_A, values={"value": n}), n) for n in range(30, 0, -1)]
    bounded = next_history(many, _state(SPEC_A, 31))
    assert len(bounded) == HISTORY_MAX and bounded[0]["revision"] == 31
    # a revision number helm reused (the release was deleted and installed again) replaces
    # what the record said of it
    assert [s["revision"] for s in next_history(recorded, _state(SPEC_B, 1))] == [1]
    # an apply whose revision could not be read keeps what was known
    assert [s["revision"] for s in next_history(recorded, None)] == [2, 1]


# ---------------------------------------------------------------- the rollback choice

LIVE = [_entry(1), _entry(2, "deployed")]


def test_an_earlier_state_still_in_the_history_is_rolled_back_to() -> None:
    recorded = [_state(SPEC_B, 2), _state(SPEC_A, 1)]
    assert plan_rollback(SPEC_A, recorded, LIVE) == RollbackPlan(current=2, to=1)


def test_the_current_revision_a_new_state_or_a_changed_chart_are_upgraded() -> None:
    recorded = [_state(SPEC_B, 2), _state(SPEC_A, 1)]
    assert plan_rollback(SPEC_B, recorded, LIVE) is None  # B is the current revision
    assert plan_rollback(replace(SPEC_A, values={"value": "C"}), recorded, LIVE) is None
    edited = replace(DIR_CHART, digest="sha256:edited-without-a-version-bump")
    assert plan_rollback(replace(SPEC_A, chart=edited), recorded, LIVE) is None
    other_repo = replace(REPO_CHART, ref="https://mirror.example.net")
    from_repo = [deployed_state(replace(SPEC_A, chart=REPO_CHART), _entry(1, "deployed"))]
    assert plan_rollback(replace(SPEC_A, chart=REPO_CHART), from_repo, LIVE) == \
        RollbackPlan(current=2, to=1)
    assert plan_rollback(replace(SPEC_A, chart=other_repo), from_repo, LIVE) is None


def test_a_revision_helm_no_longer_has_or_that_is_not_ours_is_not_used() -> None:
    recorded = [_state(SPEC_B, 2), _state(SPEC_A, 1)]
    assert plan_rollback(SPEC_A, recorded, [_entry(2, "deployed")]) is None  # pruned
    assert plan_rollback(SPEC_A, recorded, []) is None  # release gone
    # the same number, written at another time: the release was deleted and installed again
    reused = [replace(_entry(1), updated="2027-01-01T00:00:00Z"), _entry(2, "deployed")]
    assert plan_rollback(SPEC_A, recorded, reused) is None
    failed = [_entry(1, "failed"), _entry(2, "deployed")]
    assert plan_rollback(SPEC_A, recorded, failed) is None
    other_chart = [_entry(1, chart="other-0.1.0"), _entry(2, "deployed")]
    assert plan_rollback(SPEC_A, recorded, other_chart) is None


def test_a_hand_made_revision_is_repaired_by_rolling_back_to_ours() -> None:
    # someone ran `helm upgrade --set value=evil` (revision 2) after our apply of A (1)
    assert plan_rollback(SPEC_A, [_state(SPEC_A, 1)], LIVE) == RollbackPlan(current=2, to=1)
