"""reconciler.daemon.notification_queue: the on-disk queue, the sent states, the rate limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.daemon.notification_payloads import TargetState
from reconciler.daemon.notification_queue import (
    DiskQueue,
    SentStore,
    TokenBucket,
    discard_unknown,
)


def fill(queue: DiskQueue, *names: str) -> int:
    return queue.put("ev", "2025-01-01T00:00:00+00:00", [(f"/{n}", {"n": n}) for n in names])


def drain(queue: DiskQueue) -> list[str]:
    out = []
    while (item := queue.head()) is not None:
        out.append(str(item.body["n"]))
        queue.done(item.seq)
    return out


def test_deliveries_come_out_in_order_and_outlive_the_process(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, "slack", limit=10)
    assert fill(queue, "a", "b") == 0
    assert fill(queue, "c") == 0
    assert len(queue) == 3
    head = queue.head()
    assert head is not None and (head.path, head.event, dict(head.body)) == ("/a", "ev",
                                                                           {"n": "a"})
    reopened = DiskQueue(tmp_path, "slack", limit=10)
    assert drain(reopened) == ["a", "b", "c"]
    assert list(tmp_path.iterdir()) == []
    # the numbering follows the highest queued; an empty queue starts again at 1
    fill(reopened, "d")
    assert [p.name for p in tmp_path.iterdir()] == ["slack.000000000001.json"]


def test_the_bound_drops_the_oldest_but_never_the_delivery_in_flight(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, "hook", limit=2)
    assert fill(queue, "a", "b", "c") == 1
    assert drain(DiskQueue(tmp_path, "hook", limit=2)) == ["b", "c"]

    fill(queue, "d", "e")
    head = queue.head()
    assert head is not None and queue.claim(head.seq)  # being sent
    assert fill(queue, "f") == 1
    assert queue.head() == head  # d stays; e went
    queue.release(head.seq)  # not delivered: waiting for a retry, droppable again
    assert fill(queue, "g") == 1
    assert drain(queue) == ["f", "g"]
    assert not queue.claim(head.seq)  # gone: the sender must look at the head again


def test_an_unreadable_delivery_is_skipped(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, "hook", limit=5)
    fill(queue, "a", "b")
    (tmp_path / "hook.000000000001.json").write_text("{half a")
    assert drain(queue) == ["b"]


def test_queues_are_per_sink_and_those_of_removed_sinks_are_discarded(tmp_path: Path) -> None:
    fill(DiskQueue(tmp_path, "slack", limit=5), "s")
    fill(DiskQueue(tmp_path, "old-sink", limit=5), "o")
    (tmp_path / "sent.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not ours")
    assert len(DiskQueue(tmp_path, "teams", limit=5)) == 0
    assert discard_unknown(tmp_path, ["slack", "teams"]) == ["old-sink.000000000001.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "sent.json", "slack.000000000001.json"]


def test_sent_states_per_sink_survive_a_restart(tmp_path: Path) -> None:
    store = SentStore(tmp_path, ["slack", "github"])
    assert store.get("slack") == {}
    ready = TargetState("press", "eu/berlin", "Ready", "a" * 40, "not kept")
    store.set({"slack": {"press": ready}})
    again = SentStore(tmp_path, ["slack", "github"])
    assert again.get("slack") == {"press": TargetState("press", "eu/berlin", "Ready", "a" * 40)}
    assert again.get("github") == {}
    assert json.loads((tmp_path / "sent.json").read_text()) == {
        "github": {}, "slack": {"press": {"commit": "a" * 40, "phase": "Ready",
                                          "site": "eu/berlin"}}}
    # a sink no longer configured is forgotten at the next write
    SentStore(tmp_path, ["github"]).set({"github": {}})
    assert json.loads((tmp_path / "sent.json").read_text()) == {"github": {}}


@pytest.mark.parametrize("content", ["[1, 2]", "{broken", '{"slack": {"press": 3}}'])
def test_a_damaged_sent_file_counts_as_nothing_sent(tmp_path: Path, content: str) -> None:
    (tmp_path / "sent.json").write_text(content)
    assert SentStore(tmp_path, ["slack"]).get("slack") == {}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    for _ in range(3):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() == pytest.approx(2.0)
    clock.now += 1.5
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait_time() == 0.0
    bucket.take()
    clock.now += 1000  # a long quiet time earns no more than the burst
    for _ in range(3):
        assert bucket.wait_time() == 0.0
        bucket.take()
    assert bucket.wait_time() > 0


def test_no_rate_limit_when_the_interval_is_zero() -> None:
    bucket = TokenBucket(0.0, 1, clock=Clock())
    for _ in range(100):
        assert bucket.wait_time() == 0.0
        bucket.take()
