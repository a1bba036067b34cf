"""Waves of a rollout: the split every site computes alike, and the gate between waves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.core.rollouts import (
    LAST_WAVE,
    Rollout,
    Wave,
    assign_waves,
    parse_rollout,
    rollout_problems,
)
from reconciler.engine.rollout_gate import PeerStatus, rollout_gate, wave_progress

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TARGETS = [(f"t{n:02d}", f"eu/plant-{n % 3}/line-{n}", {"role": "panel" if n % 2 else "robot"})
           for n in range(20)]


def test_a_target_is_in_the_first_wave_that_selects_it_and_the_rest_form_the_last() -> None:
    rollout = Rollout((Wave("canary", names=("t05",)), Wave("plant-1", sites=("eu/plant-1",)),
                       Wave("robots", match_labels={"role": "robot"})))
    waves = assign_waves("app", rollout, TARGETS)
    assert waves["t05"] == "canary"
    assert {t for t, w in waves.items() if w == "plant-1"} == {
        t for t, site, _ in TARGETS if site.startswith("eu/plant-1/") and t != "t05"}
    assert all(w != "robots" or TARGETS[int(t[1:])][2]["role"] == "robot"
               for t, w in waves.items())
    assert LAST_WAVE in waves.values()


def test_a_bare_site_name_selects_its_subtree() -> None:
    waves = assign_waves("app", Rollout((Wave("p2", sites=("plant-2",)),)), TARGETS)
    assert {t for t, w in waves.items() if w == "p2"} == {
        t for t, site, _ in TARGETS if "/plant-2/" in site}


def test_a_share_is_deterministic_and_rounds_up() -> None:
    rollout = Rollout((Wave("ten", share=10.0), Wave("half", share=50.0)))
    first = assign_waves("app", rollout, TARGETS)
    again = assign_waves("app", rollout, list(reversed(TARGETS)))
    assert first == again  # the order the targets come in does not matter
    assert sum(1 for w in first.values() if w == "ten") == 2  # 10 % of 20
    assert sum(1 for w in first.values() if w == "half") == 9  # 50 % of the 18 left
    other = assign_waves("other-instance", rollout, TARGETS)
    assert other != first  # each instance has its own canaries


def test_rollout_problems_name_the_field() -> None:
    raw = {"waves": [{"name": "a", "share": "120%"}, {"name": "a", "names": ["x"],
                                                      "share": 5},
                     {"name": "rest", "pause": "soon"}, {"name": "b"}]}
    problems = dict(rollout_problems(raw))
    assert "at most 100%" in problems["waves[0].share"]
    assert "defined twice" in problems["waves[1].name"]
    assert "not both" in problems["waves[1].share"]
    assert "implicit last wave" in problems["waves[2].name"]
    assert "not a duration" in problems["waves[2].pause"]
    assert "needs names" in problems["waves[3]"]
    good = parse_rollout({"approvers": ["ann"], "staleAfter": "30m", "waves": [
        {"name": "canary", "names": ["t01"], "pause": "1h", "approval": True},
        {"name": "rest-of-eu", "share": "25%"}]})
    assert good.stale_after == 1800 and good.waves[0].pause == 3600
    assert good.waves[0].approval and good.waves[1].share == 25.0


def peer(target: str, phase: str, release: str = "1.5.0", *, changed: timedelta =
         timedelta(minutes=10), seen: timedelta = timedelta(minutes=1),
         failed_release: str = "") -> PeerStatus:
    return PeerStatus(target, phase, release, NOW - changed, NOW - seen, failed_release)


ROLLOUT = Rollout((Wave("canary", names=("a", "b"), pause=1800),
                   Wave("plant", names=("c",), approval=True)))
WAVES = {"a": "canary", "b": "canary", "c": "plant", "d": LAST_WAVE}


def gate(target: str, peers: dict[str, PeerStatus | None],
         approved: tuple[bool, str] = (True, "")) -> tuple[bool, str]:
    verdict = rollout_gate(ROLLOUT, "1.5.0", "telemetry 1.5.0", target, WAVES, peers,
                           lambda wave: approved, NOW)
    return verdict.go, verdict.reason


def test_the_first_wave_goes_at_once() -> None:
    assert gate("a", {}) == (True, "")


def test_a_later_wave_waits_until_every_earlier_target_is_ready_on_the_release() -> None:
    go, why = gate("c", {"a": peer("a", "Ready"), "b": peer("b", "Ready", "1.4.0")})
    assert not go and why.startswith("wave canary: 1/2 targets Ready on telemetry 1.5.0")
    assert "waiting for b" in why


def test_never_reported_or_stale_targets_count_as_not_ready() -> None:
    assert not gate("c", {"a": peer("a", "Ready"), "b": None})[0]
    stale = peer("b", "Ready", seen=timedelta(hours=4))  # staleAfter is 3h by default
    assert not gate("c", {"a": peer("a", "Ready"), "b": stale})[0]


def test_the_pause_runs_from_when_the_last_target_became_ready() -> None:
    peers: dict[str, PeerStatus | None] = {"a": peer("a", "Ready", changed=timedelta(hours=1)),
                                           "b": peer("b", "Ready",
                                                     changed=timedelta(minutes=10))}
    verdict = rollout_gate(ROLLOUT, "1.5.0", "telemetry 1.5.0", "c", WAVES, peers,
                           lambda wave: (True, ""), NOW)
    assert not verdict.go and "pause until" in verdict.reason
    assert verdict.wake_at == NOW + timedelta(minutes=20)
    later = rollout_gate(ROLLOUT, "1.5.0", "telemetry 1.5.0", "c", WAVES, peers,
                         lambda wave: (True, ""), NOW + timedelta(minutes=21))
    assert later.go


def test_an_approval_gate_holds_its_wave() -> None:
    ready: dict[str, PeerStatus | None] = {"a": peer("a", "Ready", changed=timedelta(hours=1)),
                                           "b": peer("b", "Ready", changed=timedelta(hours=1))}
    go, why = gate("c", ready, approved=(False, "signed by mallory, not an approver"))
    assert not go and "waits for approval" in why and "mallory" in why
    assert gate("c", ready)[0]
    # the last wave needs no approval, but every earlier wave ready
    assert not gate("d", {**ready, "c": None})[0]
    assert gate("d", {**ready, "c": peer("c", "Ready", changed=timedelta(hours=1))})[0]


def test_a_failed_or_rolled_back_target_halts_every_later_wave() -> None:
    halted = {"a": peer("a", "RolledBack", "1.4.0", failed_release="1.5.0"),
              "b": peer("b", "Ready")}
    verdict = rollout_gate(ROLLOUT, "1.5.0", "telemetry 1.5.0", "d", WAVES, halted,
                           lambda wave: (True, ""), NOW)
    assert not verdict.go and verdict.halted and "halted: a in wave canary" in verdict.reason
    # a newer release starts again: the failure on 1.5.0 does not halt 1.5.1
    newer = rollout_gate(ROLLOUT, "1.5.1", "telemetry 1.5.1", "a", WAVES, halted,
                         lambda wave: (True, ""), NOW)
    assert newer.go
    progress = wave_progress(ROLLOUT, "1.5.0", WAVES, halted, NOW)
    assert [w.name for w in progress] == ["canary", "plant", LAST_WAVE]
    assert progress[0].halted_by == ("a",)
