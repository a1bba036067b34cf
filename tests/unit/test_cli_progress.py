"""The progress line: what is drawn, how often, and nothing at all off a terminal."""

from __future__ import annotations

import io

from reconciler.cli.progress import Progress, ProgressObserver
from reconciler.engine.run_observer import NO_OBSERVER, target_done

ERASE = "\r\x1b[K"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_that_is_not_a_terminal_gets_nothing() -> None:
    out = io.StringIO()
    with Progress(stream=out) as progress:
        progress.report("plan", 1, 3, "a")
        progress.report("validating head")
    assert not progress.enabled
    assert out.getvalue() == ""


def test_redraws_are_limited_but_a_stage_and_its_end_are_always_drawn() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(stream=out, enabled=True, interval=0.5, clock=clock)
    progress.report("validating base")
    progress.report("comparing", 1, 1000, "t1")  # a new stage: drawn at once
    for done in range(2, 1000):
        clock.now += 0.001
        progress.report("comparing", done, 1000, f"t{done}")
    progress.report("comparing", 1000, 1000, "t1000")
    progress.close()
    lines = out.getvalue().split(ERASE)
    assert lines[1] == "validating base…"
    assert lines[2] == "comparing: 1/1000 targets (0%) t1"
    assert "comparing: 501/1000 targets (50%) t501" in lines  # 0.5 s later
    assert lines[-2] == "comparing: 1000/1000 targets (100%) t1000"
    assert lines[-1] == ""  # erased at the end
    assert len(lines) < 10


def test_the_observer_hook_reaches_only_observers_that_follow_progress() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, enabled=True)
    target_done(ProgressObserver(progress, "sync"), "cell-2", 2, 2)
    target_done(NO_OBSERVER, "cell-2", 2, 2)  # a no-op
    assert out.getvalue() == ERASE + "sync: 2/2 targets (100%) cell-2"
