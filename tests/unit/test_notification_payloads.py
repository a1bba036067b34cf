"""reconciler.daemon.notification_payloads: what each sink kind is told, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.daemon.notification_payloads import (
    MAX_DESCRIPTION,
    MAX_LISTED,
    Change,
    CommitStatus,
    Event,
    TargetState,
    commit_statuses,
    forge_request,
    phase_changes,
    slack_body,
    state_of,
    teams_body,
    webhook_body,
)
from reconciler.daemon.notification_settings import SinkKind, SinkSettings
from reconciler.engine.status import Phase, TargetStatus

A, B, C = "a" * 40, "b" * 40, "c" * 40


def ts(target: str, phase: str, commit: str = A, message: str = "") -> TargetState:
    return TargetState(target, "eu/berlin", phase, commit, message)


def status(phase: Phase, observed: str, applied: str) -> TargetStatus:
    return TargetStatus("press", "eu/berlin", phase, "msg", observed, applied, applied, {}, ())


@pytest.mark.parametrize(("phase", "observed", "applied", "commit"), [
    (Phase.READY, B, B, B),
    (Phase.READY, "", A, A),  # ready on what it applied
    (Phase.FAILED, B, A, B),  # the failure belongs to the commit that failed
    (Phase.PROGRESSING, B, A, B),
    (Phase.INVALID, B, A, B),
    (Phase.BLOCKED, B, A, B),
    (Phase.PENDING, "", "", ""),
])
def test_the_commit_a_state_is_about(phase: Phase, observed: str, applied: str,
                                     commit: str) -> None:
    state = state_of(status(phase, observed, applied))
    assert (state.phase, state.commit, state.message) == (phase.value, commit, "msg")


@pytest.mark.parametrize(("before", "after", "changed"), [
    ({}, {"x": ts("x", "Ready")}, [("x", None, "Ready")]),
    ({"x": ts("x", "Ready")}, {"x": ts("x", "Ready")}, []),
    ({"x": ts("x", "Ready")}, {"x": ts("x", "Ready", B)}, []),  # a new commit, same phase
    ({"x": ts("x", "Ready")}, {"x": ts("x", "Failed", B)}, [("x", "Ready", "Failed")]),
    ({"x": ts("x", "Ready"), "y": ts("y", "Ready")},
     {"y": ts("y", "Degraded"), "x": ts("x", "Failed")},
     [("x", "Ready", "Failed"), ("y", "Ready", "Degraded")]),  # name order
    ({"gone": ts("gone", "Ready")}, {}, []),  # a target no longer served is no alert
])
def test_phase_changes(before: dict[str, TargetState], after: dict[str, TargetState],
                       changed: list[tuple[str, str | None, str]]) -> None:
    found = phase_changes(before, after)
    assert [(c.now.target, c.previous.phase if c.previous else None, c.now.phase)
            for c in found] == changed


@pytest.mark.parametrize(("kind", "phases", "state"), [
    (SinkKind.GITHUB, ["Ready", "Ready"], "success"),
    (SinkKind.GITHUB, ["Ready", "Progressing"], "pending"),
    (SinkKind.GITHUB, ["Pending", "Degraded"], "failure"),
    (SinkKind.GITHUB, ["Failed", "Invalid"], "error"),
    (SinkKind.GITHUB, ["Blocked"], "error"),
    (SinkKind.GITLAB, ["Ready", "Progressing"], "running"),
    (SinkKind.GITLAB, ["Pending"], "pending"),
    (SinkKind.GITLAB, ["Progressing", "Invalid"], "failed"),
    (SinkKind.GITLAB, ["Degraded"], "failed"),
    (SinkKind.GITEA, ["Ready", "Degraded"], "warning"),
    (SinkKind.GITEA, ["Degraded", "Failed"], "failure"),
    (SinkKind.GITEA, ["Failed", "Blocked"], "error"),
    (SinkKind.GITEA, ["Ready", "Pending"], "pending"),
    (SinkKind.GITHUB, ["Ready", "SomethingNew"], "error"),  # an unknown phase is not success
])
def test_a_site_state_on_a_commit_is_its_worst_target(kind: SinkKind, phases: list[str],
                                                      state: str) -> None:
    after = {f"t{i}": ts(f"t{i}", p) for i, p in enumerate(phases)}
    (found,) = commit_statuses(kind, {}, after)
    assert (found.commit, found.state) == (A, state)


@pytest.mark.parametrize(("before", "after", "posted"), [
    # first time: every commit
    ({}, {"x": ts("x", "Ready"), "y": ts("y", "Failed", B)},
     [(A, "success", "1/1 targets Ready"), (B, "failure", "0/1 targets Ready; Failed: y")]),
    # nothing changed
    ({"x": ts("x", "Ready")}, {"x": ts("x", "Ready")}, []),
    # the same state in other words for the forge (Failed -> Degraded): nothing to post
    ({"x": ts("x", "Failed")}, {"x": ts("x", "Degraded")}, []),
    # a new commit, same phase: the new commit gets its status
    ({"x": ts("x", "Ready")}, {"x": ts("x", "Ready", B)}, [(B, "success", "1/1 targets Ready")]),
    # two targets on one commit, one fails
    ({"x": ts("x", "Ready"), "y": ts("y", "Ready")},
     {"x": ts("x", "Ready"), "y": ts("y", "Failed")},
     [(A, "failure", "1/2 targets Ready; Failed: y")]),
    # listed worst first
    ({}, {"x": ts("x", "Degraded"), "y": ts("y", "Invalid"), "z": ts("z", "Ready")},
     [(A, "error", "1/3 targets Ready; Invalid: y; Degraded: x")]),
    # no commit known (nothing fetched yet): nothing to post on
    ({}, {"x": ts("x", "Pending", "")}, []),
])
def test_commit_statuses_only_for_commits_whose_state_changed(
        before: dict[str, TargetState], after: dict[str, TargetState],
        posted: list[tuple[str, str, str]]) -> None:
    found = commit_statuses(SinkKind.GITHUB, before, after)
    assert [(s.commit, s.state, s.description) for s in found] == posted


def test_a_long_description_is_cut_to_what_github_takes() -> None:
    after = {f"target-{i:03d}": ts(f"target-{i:03d}", "Failed") for i in range(40)}
    (found,) = commit_statuses(SinkKind.GITHUB, {}, after)
    assert len(found.description) == MAX_DESCRIPTION and found.description.endswith("…")


def sink(kind: SinkKind, **over: Any) -> SinkSettings:
    fields: dict[str, Any] = {"name": kind.value, "kind": kind, "base_url": "http://x",
                              "repository": "fleet/config", **over}
    return SinkSettings(**fields)


@pytest.mark.parametrize(("settings", "path", "body"), [
    (sink(SinkKind.GITHUB), f"/repos/fleet/config/statuses/{A}",
     {"state": "success", "context": "reconciler/eu_berlin", "description": "d"}),
    (sink(SinkKind.GITEA, context="ci/{site}/edge", target_url="https://dash/x"),
     f"/repos/fleet/config/statuses/{A}",
     {"state": "success", "context": "ci/eu_berlin/edge", "description": "d",
      "target_url": "https://dash/x"}),
    (sink(SinkKind.GITLAB, repository="group/sub/fleet"),
     f"/projects/group%2Fsub%2Ffleet/statuses/{A}",
     {"state": "success", "name": "reconciler/eu_berlin", "description": "d"}),
    (sink(SinkKind.GITLAB, repository="42"), f"/projects/42/statuses/{A}",
     {"state": "success", "name": "reconciler/eu_berlin", "description": "d"}),
])
def test_forge_requests(settings: SinkSettings, path: str, body: dict[str, Any]) -> None:
    assert forge_request(settings, CommitStatus(A, "success", "d"), "eu_berlin") == (path, body)


def event(*changes: Change, counts: dict[str, int] | None = None) -> Event:
    return Event("e1", "2025-01-02T03:04:05+00:00", "eu/berlin", "eu_berlin", changes,
                 counts or {"Ready": 1})


FAILED = Change(ts("press", "Failed", B, "start: exit code 1 <&> details"),
                ts("press", "Ready", A))
FIRST = Change(ts("hmi", "Ready", A, "2 components ready"), None)


def test_webhook_body() -> None:
    assert webhook_body(event(FAILED, FIRST, counts={"Ready": 3, "Failed": 1})) == {
        "apiVersion": "reconciler/v1", "kind": "PhaseChanges", "id": "e1",
        "time": "2025-01-02T03:04:05+00:00", "site": "eu/berlin", "siteId": "eu_berlin",
        "summary": {"Failed": 1, "Ready": 3},
        "changes": [
            {"target": "press", "site": "eu/berlin", "phase": "Failed",
             "previousPhase": "Ready", "revision": B, "previousRevision": A,
             "message": "start: exit code 1 <&> details"},
            {"target": "hmi", "site": "eu/berlin", "phase": "Ready", "previousPhase": None,
             "revision": A, "previousRevision": None, "message": "2 components ready"}]}


@pytest.mark.parametrize(("changes", "header", "lines"), [
    ((FAILED,), "eu/berlin: press is Failed (was Ready)",
     [f":x: *press* Ready → *Failed* at `{B[:12]}`\n>start: exit code 1 &lt;&amp;&gt; details"]),
    ((FIRST,), "eu/berlin: hmi is Ready",
     [f":white_check_mark: *hmi* *Ready* at `{A[:12]}`\n>2 components ready"]),
    ((FAILED, FIRST), "eu/berlin: 2 targets changed phase", None),
])
def test_slack_body(changes: tuple[Change, ...], header: str, lines: list[str] | None) -> None:
    body = slack_body(event(*changes))
    assert set(body) == {"text", "blocks"}
    assert body["text"] == f"{header}. 1 target: 1 Ready"
    head, section, context = body["blocks"]
    assert head == {"type": "header", "text": {"type": "plain_text", "text": header}}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    if lines is not None:
        assert section["text"]["text"] == "\n".join(lines)
    assert context == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "1 target: 1 Ready · site eu/berlin"}]}


def test_chat_messages_list_a_few_changes_and_count_the_rest() -> None:
    many = tuple(Change(ts(f"t{i:02d}", "Failed"), ts(f"t{i:02d}", "Ready"))
                 for i in range(MAX_LISTED + 5))
    slack = slack_body(event(*many))["blocks"][1]["text"]["text"]
    assert slack.count("*Failed*") == MAX_LISTED and slack.endswith("… and 5 more")
    card = teams_body(event(*many))["attachments"][0]["content"]["body"]
    assert sum(b["type"] == "Container" for b in card) == MAX_LISTED
    assert {"type": "TextBlock", "text": "… and 5 more", "wrap": True} in card


@pytest.mark.parametrize(("changes", "colour"), [
    ((FIRST,), "Good"), ((FAILED, FIRST), "Attention"),
    ((Change(ts("x", "Degraded"), None),), "Warning"),
    ((Change(ts("x", "Progressing"), None),), "Accent"),
])
def test_teams_body_is_an_adaptive_card_in_a_message(changes: tuple[Change, ...],
                                                      colour: str) -> None:
    body = teams_body(event(*changes))
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert (card["$schema"], card["type"], card["version"]) == (
        "http://adaptivecards.io/schemas/adaptive-card.json", "AdaptiveCard", "1.4")
    assert card["body"][0]["color"] == colour and card["body"][0]["weight"] == "Bolder"
    assert card["body"][-1]["text"] == "1 target: 1 Ready · site eu/berlin"


def test_teams_card_of_one_change() -> None:
    card = teams_body(event(FAILED))["attachments"][0]["content"]["body"]
    assert card[1] == {"type": "Container", "items": [
        {"type": "TextBlock", "text": f"press: Ready → Failed at {B[:12]}", "weight": "Bolder",
         "color": "Attention", "wrap": True},
        {"type": "TextBlock", "text": "start: exit code 1 <&> details", "isSubtle": True,
         "wrap": True, "spacing": "None"}]}
