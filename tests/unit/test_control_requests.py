"""What the daemon does with a request on its control socket: the checks of each request, who
the asker is (the kernel's word, ``sudo_user`` only from root), the hold store it changes, the
runs it asks for, and the error answers of anything malformed.

The actions run against a real :class:`HoldStore` in a temporary state directory; the daemon's
side (trigger a run, ask for a retry) is a recorder, and the clock is fixed.
"""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.daemon.control_requests import ControlActions, Peer, identify, parse_request
from reconciler.engine.holds import Hold, HoldStore

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ROOT = Peer(pid=100, uid=0, gid=0)
NOBODY = Peer(pid=101, uid=pwd.getpwnam("nobody").pw_uid, gid=65534)


class Recorder:
    """The daemon's side of the actions: what was asked of it."""

    def __init__(self, served: tuple[str, ...] | None = ("press-1", "press-2")) -> None:
        self.triggers: list[str] = []
        self.retries: list[str] = []
        self.served_targets = served

    def served(self) -> tuple[str, ...] | None:
        return self.served_targets


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def actions(state: Path, daemon: Recorder) -> ControlActions:
    state.mkdir(exist_ok=True)
    return ControlActions(holds=HoldStore.load(state / "holds.json"), now=lambda: NOW,
                          retry=daemon.retries.append, trigger=daemon.triggers.append,
                          served=daemon.served, state_dir=state, site="eu/berlin/line-1")


def hold_request(**fields: Any) -> dict[str, Any]:
    return {"request": "hold", "target": "press-1",
            "until": (NOW + timedelta(hours=2)).isoformat(), "reason": "production run",
            **fields}


def saved(state: Path) -> list[dict[str, Any]]:
    holds: list[dict[str, Any]] = json.loads((state / "holds.json").read_text())["holds"]
    return holds


# -- who asks ------------------------------------------------------------------------------

def test_root_may_name_the_user_it_acts_for_through_sudo() -> None:
    assert identify(ROOT, "ann") == "ann"
    assert identify(ROOT, "") == "root"


def test_anyone_else_is_the_user_of_their_uid_whatever_they_claim() -> None:
    assert identify(NOBODY, "ann") == "nobody"
    assert identify(Peer(pid=1, uid=4_000_000, gid=1), "") == "uid 4000000"


# -- hold ------------------------------------------------------------------------------------

def test_a_hold_is_saved_with_the_asker_and_a_run_is_triggered(state: Path) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer(hold_request(sudo_user="ann"), ROOT)
    assert answer["ok"] is True, answer
    assert answer["hold"] == {"target": "press-1", "until": "2026-11-30T10:00:00+00:00",
                              "reason": "production run", "by": "ann",
                              "since": "2026-11-30T08:00:00+00:00"}
    assert saved(state) == [answer["hold"]]
    assert daemon.triggers == ["hold"]


def test_a_hold_from_another_user_records_that_user_not_the_claimed_one(state: Path) -> None:
    answer = actions(state, Recorder()).answer(hold_request(sudo_user="ann"), NOBODY)
    assert answer["hold"]["by"] == "nobody"


def test_a_hold_keeps_the_timezone_it_was_given_in(state: Path) -> None:
    local = (NOW + timedelta(hours=3)).astimezone(timezone(timedelta(hours=1)))
    answer = actions(state, Recorder()).answer(hold_request(until=local.isoformat()), ROOT)
    assert answer["hold"]["until"] == "2026-11-30T12:00:00+01:00"


def test_a_site_wide_hold_needs_no_target(state: Path) -> None:
    answer = actions(state, Recorder()).answer(hold_request(target=""), ROOT)
    assert answer["ok"] and answer["hold"]["target"] == ""


def test_a_hold_on_a_target_the_daemon_does_not_serve_is_refused_naming_both(
        state: Path) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer(hold_request(target="press-3"), ROOT)
    assert answer["ok"] is False and answer["reason"] == "UnknownTarget"
    assert "'press-3'" in answer["error"] and "press-1, press-2" in answer["error"]
    assert daemon.triggers == [] and not (state / "holds.json").exists()


def test_a_misspelt_target_gets_a_hint(state: Path) -> None:
    answer = actions(state, Recorder()).answer(hold_request(target="pres-1"), ROOT)
    assert "did you mean 'press-1'" in answer["error"]


def test_before_the_first_run_target_names_cannot_be_checked_and_are_taken(
        state: Path) -> None:
    answer = actions(state, Recorder(served=None)).answer(hold_request(target="any"), ROOT)
    assert answer["ok"] is True and "not checked" in answer["note"]


@pytest.mark.parametrize(("change", "error"), [
    ({"until": (NOW - timedelta(minutes=1)).isoformat()}, "is not in the future"),
    ({"until": NOW.isoformat()}, "is not in the future"),
    ({"until": "2026-11-30T10:00:00"}, "must name its timezone"),
    ({"until": "tomorrow"}, "not an ISO 8601 time"),
    ({"until": 5}, "until: must be of string type"),
    ({"reason": ""}, "reason: empty values not allowed"),
    ({"reason": "   "}, "reason: say why"),
    ({"reason": "x" * 501}, "reason: max length is 500"),
    ({"reason": "two\nlines"}, "reason: one line of text"),
    ({"target": "a\x00b"}, "target:"),
    ({"colour": "blue"}, "colour: unknown field"),
    ({"sudo_user": "ann; rm -rf"}, "sudo_user:"),
])
def test_malformed_holds_are_refused_saying_what_is_wrong(state: Path, change: dict[str, Any],
                                                         error: str) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer(hold_request(**change), ROOT)
    assert answer["ok"] is False and error in answer["error"], answer
    assert daemon.triggers == []


@pytest.mark.parametrize(("field", "problem"), [("until", "until: required field"),
                                                ("reason", "reason: required field")])
def test_a_hold_needs_until_and_reason(state: Path, field: str, problem: str) -> None:
    request = hold_request()
    del request[field]
    answer = actions(state, Recorder()).answer(request, ROOT)
    assert answer["ok"] is False and problem in answer["error"], answer


def test_a_hold_that_cannot_be_written_is_an_error_answer(state: Path) -> None:
    if os.geteuid() == 0:
        state.mkdir()
        (state / "holds.json").mkdir()  # root writes anywhere: make the rename fail instead
    else:
        state.mkdir(mode=0o500)
    answer = actions(state, Recorder()).answer(hold_request(), ROOT)
    assert answer["ok"] is False and answer["reason"] == "HoldNotSaved", answer
    assert "holds.json" in answer["error"]


# -- unhold and holds --------------------------------------------------------------------------

def test_unhold_ends_the_hold_of_a_target_and_triggers_a_run(state: Path) -> None:
    daemon = Recorder()
    act = actions(state, daemon)
    act.answer(hold_request(), ROOT)
    act.answer(hold_request(target="press-2"), ROOT)
    answer = act.answer({"request": "unhold", "target": "press-1"}, ROOT)
    assert answer["ok"] and [h["target"] for h in answer["ended"]] == ["press-1"]
    assert [h["target"] for h in answer["holds"]] == ["press-2"]
    assert [h["target"] for h in saved(state)] == ["press-2"]
    assert daemon.triggers == ["hold", "hold", "unhold"]


def test_unhold_all_ends_every_hold(state: Path) -> None:
    act = actions(state, Recorder())
    act.answer(hold_request(), ROOT)
    act.answer(hold_request(target=""), ROOT)
    answer = act.answer({"request": "unhold", "all": True}, ROOT)
    assert len(answer["ended"]) == 2 and answer["holds"] == [] and saved(state) == []


def test_unhold_without_a_target_ends_the_site_wide_hold_only(state: Path) -> None:
    act = actions(state, Recorder())
    act.answer(hold_request(), ROOT)
    act.answer(hold_request(target=""), ROOT)
    answer = act.answer({"request": "unhold"}, ROOT)
    assert [h["target"] for h in answer["ended"]] == [""]
    assert [h["target"] for h in answer["holds"]] == ["press-1"]


def test_unhold_of_a_target_no_longer_served_still_ends_its_hold(state: Path) -> None:
    state.mkdir()
    HoldStore.load(state / "holds.json").add(
        Hold("old-press", NOW + timedelta(hours=1), "r", "ann", NOW), NOW)
    answer = actions(state, Recorder()).answer({"request": "unhold", "target": "old-press"},
                                               ROOT)
    assert answer["ok"] and len(answer["ended"]) == 1


def test_unhold_of_nothing_held_is_fine_and_runs_nothing(state: Path) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer({"request": "unhold", "target": "press-1"}, ROOT)
    assert answer["ok"] and answer["ended"] == [] and daemon.triggers == []


def test_unhold_of_an_unknown_target_is_refused(state: Path) -> None:
    answer = actions(state, Recorder()).answer({"request": "unhold", "target": "nope"}, ROOT)
    assert answer["ok"] is False and answer["reason"] == "UnknownTarget"


def test_unhold_of_a_target_and_all_at_once_is_refused(state: Path) -> None:
    answer = actions(state, Recorder()).answer(
        {"request": "unhold", "target": "press-1", "all": True}, ROOT)
    assert answer["ok"] is False and "not both" in answer["error"]


def test_holds_lists_current_holds_and_what_is_served(state: Path) -> None:
    act = actions(state, Recorder())
    act.answer(hold_request(sudo_user="ann"), ROOT)
    answer = act.answer({"request": "holds"}, NOBODY)
    assert answer["ok"] and [h["by"] for h in answer["holds"]] == ["ann"]
    assert answer["served"] == ["press-1", "press-2"] and answer["site"] == "eu/berlin/line-1"


# -- retry and sync ----------------------------------------------------------------------------

def test_retry_asks_the_reconciler_and_triggers_a_run(state: Path) -> None:
    daemon = Recorder()
    act = actions(state, daemon)
    assert act.answer({"request": "retry", "target": "press-2"}, ROOT)["ok"]
    assert act.answer({"request": "retry"}, ROOT)["ok"]
    assert daemon.retries == ["press-2", ""] and daemon.triggers == ["retry", "retry"]


def test_retry_of_an_unknown_target_is_refused(state: Path) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer({"request": "retry", "target": "nope"}, ROOT)
    assert answer["ok"] is False and daemon.retries == [] and daemon.triggers == []


def test_sync_triggers_a_run(state: Path) -> None:
    daemon = Recorder()
    assert actions(state, daemon).answer({"request": "sync"}, NOBODY)["ok"]
    assert daemon.triggers == ["sync"]


# -- anything else ------------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "error"), [
    ([], "a request is a JSON object"),
    ("hold", "a request is a JSON object"),
    ({}, "request: required field"),
    ({"request": "reboot"}, "request: unallowed value reboot"),
    ({"request": 3}, "request: must be of string type"),
    ({"request": "sync", "target": "x"}, "target: unknown field"),
    ({"request": "retry", "target": 3}, "target: must be of string type"),
    ({"request": "unhold", "all": "yes"}, "all: must be of boolean type"),
])
def test_malformed_requests_get_an_error_answer(state: Path, payload: object,
                                                error: str) -> None:
    answer = actions(state, Recorder()).answer(payload, ROOT)
    assert answer["ok"] is False and answer["reason"] == "BadRequest"
    assert error in answer["error"], answer


def test_a_request_meant_for_another_state_directory_is_refused_before_anything(
        state: Path, tmp_path: Path) -> None:
    daemon = Recorder()
    answer = actions(state, daemon).answer(hold_request(state_dir=str(tmp_path / "other")), ROOT)
    assert answer["ok"] is False and answer["reason"] == "OtherStateDir"
    assert daemon.triggers == [] and not (state / "holds.json").exists()
    same = actions(state, daemon).answer({"request": "sync", "state_dir": str(state) + "/"},
                                         ROOT)
    assert same["ok"] is True


def test_parse_request_gives_a_value() -> None:
    request = parse_request(hold_request(sudo_user="ann"))
    assert (request.kind, request.target, request.reason, request.sudo_user) == (
        "hold", "press-1", "production run", "ann")
    assert request.until == NOW + timedelta(hours=2)
