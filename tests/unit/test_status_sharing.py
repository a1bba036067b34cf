"""reconciler.engine.status: statuses kept between runs share what they say alike (the
instances of targets at the same revision with the same results), and say exactly what they
would say on their own."""

from __future__ import annotations

import gc
import json

from reconciler.engine.results import ComponentPhase, ComponentResult, TargetResult
from reconciler.engine.status import (
    StatusRenderer,
    TargetStatus,
    build_status,
    canonical,
    render_status,
)

REV = "a" * 40


def result(target: str, *, message: str = "") -> TargetResult:
    return TargetResult(target, REV, tuple(
        ComponentResult(f"app/{name}", "app", name, "file",
                        ComponentPhase.DEGRADED if message and name == "two"
                        else ComponentPhase.READY,
                        message if name == "two" else "", REV)
        for name in ("one", "two")))


def status(target: str, *, message: str = "") -> TargetStatus:
    return build_status(target=target, site="hq/line-1", observed=REV, applied=REV,
                        last_good=REV, result=result(target, message=message),
                        solutions={"app": "app"}, releases={"app": "r-1"},
                        instances={"app": {"revision": REV}})


def test_targets_saying_the_same_share_their_instances() -> None:
    one, two = status("t1"), status("t2")
    assert one.instances is two.instances
    assert canonical(one) != canonical(two)  # the target's name differs
    degraded = status("t3", message="worse")
    assert degraded.instances is not one.instances
    assert degraded.instances["app"]["phase"] == "Degraded"
    assert one.instances["app"]["phase"] == "Ready"


def test_what_a_status_says_is_unchanged() -> None:
    body = json.loads(canonical(status("t1")))
    assert body["instances"] == {"app": {
        "solution": "app", "release": "r-1", "phase": "Ready", "revision": REV,
        "components": {"one": {"phase": "Ready", "provider": "file", "revision": REV},
                       "two": {"phase": "Ready", "provider": "file", "revision": REV}}}}
    assert list(body["instances"]["app"]) == sorted(body["instances"]["app"])
    shown = status("t1").instances["app"]
    assert list(shown) == ["solution", "release", "phase", "components", "revision"]


def test_statuses_have_no_instance_dict() -> None:
    assert not hasattr(status("t1"), "__dict__")


def live_statuses() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is TargetStatus)


def test_the_renderer_keeps_one_status_of_a_target() -> None:
    # a run where every status changed must not keep the last run's texts and statuses as
    # well (they would stay until the run after); nor re-render what it rendered before
    renderer = StatusRenderer()
    old = status("t1")
    text, rendered = renderer.canonical(old), renderer.render(old, "2026-01-01")
    assert text == canonical(old) and rendered == render_status(old, "2026-01-01")
    renderer.next_run()
    new = status("t1", message="worse")
    before = live_statuses()
    assert renderer.canonical(new) == canonical(new)
    assert renderer.render(new, "2026-01-02") == render_status(new, "2026-01-02")
    del old
    assert live_statuses() == before - 1  # no collection needed: nothing else held it
    # asked again, in this run or the next: the same text, nothing rendered again
    renderer.next_run()
    assert renderer.canonical(new) is renderer.canonical(new)
    assert renderer.render(new, "2026-01-02") == render_status(new, "2026-01-02")
    again = build_status(target="t1", site="hq/line-1", observed=REV, applied=REV,
                         last_good=REV, result=result("t1", message="worse"),
                         solutions={"app": "app"}, releases={"app": "r-1"},
                         instances={"app": {"revision": REV}})
    assert renderer.render(again, "2026-01-02") == render_status(new, "2026-01-02")
