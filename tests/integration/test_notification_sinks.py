"""One sink at the wire, and the notifier's sender threads, against real HTTP servers on
127.0.0.1: which answers are delivered, retried or refused, that no redirect is followed,
that secrets stay out of what is logged, that deliveries keep to the rate limit and that a run
never waits for a slow server."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.errors import ConfigError
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notification_queue import QueuedDelivery
from reconciler.daemon.notification_settings import (
    NotificationSettings,
    SinkKind,
    SinkSettings,
)
from reconciler.daemon.notification_sinks import Result, Sink
from reconciler.daemon.notifications import Notifier
from reconciler.engine.pipeline import RunSummary
from reconciler.engine.status import Phase, TargetStatus
from tests.integration.notifykit import Answer, Received, Recorder
from tests.integration.test_status_push import free_port

TOKEN = "glpat-verysecrettoken"
ITEM = QueuedDelivery(1, "e1", "2025-01-01T00:00:00+00:00", "/projects/7/statuses/abc",
                      {"state": "success"})


@pytest.fixture
def servers() -> Iterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for r in started:
        r.stop()


def serve(servers: list[Recorder], *answers: Answer, delay: float = 0.0) -> Recorder:
    """A server answering ``answers`` in turn (the last one from then on)."""
    def answer(_request: Received) -> Answer:
        time.sleep(delay)
        count = len(recorder.received())
        return answers[min(count, len(answers)) - 1]

    recorder = Recorder(answer=answer).start()
    servers.append(recorder)
    return recorder


def gitlab(tmp_path: Path, base: str, timeout: float = 5.0) -> Sink:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return Sink(SinkSettings("gl", SinkKind.GITLAB, token_file=token, base_url=base,
                             repository="7", timeout=timeout))


@pytest.mark.parametrize(("answer", "result", "status", "retry_after"), [
    (Answer(201, b"{}"), Result.DELIVERED, 201, 0.0),
    (Answer(204, b""), Result.DELIVERED, 204, 0.0),
    (Answer(500, b"oops"), Result.RETRY, 500, 0.0),
    (Answer(503, b"busy", {"Retry-After": "7"}), Result.RETRY, 503, 7.0),
    (Answer(429, b"slow down", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
     Result.RETRY, 429, 0.0),
    (Answer(408, b""), Result.RETRY, 408, 0.0),
    (Answer(404, b"no such project"), Result.REJECTED, 404, 0.0),
    (Answer(422, b"description too long"), Result.REJECTED, 422, 0.0),
])
def test_what_each_answer_means(tmp_path: Path, servers: list[Recorder], answer: Answer,
                                result: Result, status: int, retry_after: float) -> None:
    recorder = serve(servers, answer)
    outcome = gitlab(tmp_path, recorder.url + "/api/v4").send(ITEM)
    assert (outcome.result, outcome.status, outcome.retry_after) == (result, status,
                                                                     retry_after)
    (got,) = recorder.received()
    assert got.path == "/api/v4/projects/7/statuses/abc"
    assert got.headers["private-token"] == TOKEN
    assert got.body == b'{"state":"success"}'


def test_a_redirect_is_not_followed(tmp_path: Path, servers: list[Recorder]) -> None:
    recorder = serve(servers, Answer(302, b"", {"Location": "/elsewhere"}))
    outcome = gitlab(tmp_path, recorder.url).send(ITEM)
    assert (outcome.result, outcome.status) == (Result.REJECTED, 302)
    assert [r.path for r in recorder.received()] == ["/projects/7/statuses/abc"]


def test_an_unreachable_or_silent_server_is_retried(tmp_path: Path,
                                                    servers: list[Recorder]) -> None:
    refused = gitlab(tmp_path, f"http://127.0.0.1:{free_port()}").send(ITEM)
    assert refused.result is Result.RETRY and "Connection refused" in refused.detail
    slow = serve(servers, Answer(201), delay=3)
    started = time.monotonic()
    timed_out = gitlab(tmp_path, slow.url, timeout=0.5).send(ITEM)
    assert timed_out.result is Result.RETRY and time.monotonic() - started < 2.5


def test_secrets_in_an_answer_are_masked(tmp_path: Path, servers: list[Recorder]) -> None:
    recorder = serve(servers, Answer(401, f"bad token {TOKEN}".encode()))
    outcome = gitlab(tmp_path, recorder.url).send(ITEM)
    assert outcome.result is Result.REJECTED
    assert TOKEN not in outcome.detail and "bad token ***" in outcome.detail


@pytest.mark.parametrize(("content", "problem"), [
    (None, "urlFile"), ("", "is empty"), ("file:///etc/passwd", "is not an http(s) URL")])
def test_a_sink_whose_secret_file_is_unusable_stops_the_start(
        tmp_path: Path, content: str | None, problem: str) -> None:
    url_file = tmp_path / "url"
    if content is not None:
        url_file.write_text(content)
    with pytest.raises(ConfigError) as raised:
        Sink(SinkSettings("slack", SinkKind.SLACK, url_file=url_file))
    assert problem in raised.value.message
    assert "passwd" not in raised.value.message  # the URL is not repeated


def summary(phase: Phase, revision: str) -> RunSummary:
    return RunSummary(revision, (TargetStatus("press", "eu/berlin", phase, "m", revision,
                                              revision, revision, {}, ()),), 0.1)


def notifier(tmp_path: Path, url: str, **settings: float) -> tuple[Notifier, Metrics]:
    key = tmp_path / "hmac"
    key.write_text("k" * 16)
    metrics = Metrics(process_collectors=False)
    sink = SinkSettings("hook", SinkKind.WEBHOOK, url=url, secret_file=key)
    return Notifier(NotificationSettings(sinks=(sink,), **settings),  # type: ignore[arg-type]
                    state_dir=tmp_path / "state", site="eu/berlin", metrics=metrics), metrics


def metric(metrics: Metrics, name: str, **labels: str) -> float | None:
    value: float | None = metrics.registry.get_sample_value(name, labels)
    return value


def test_deliveries_keep_to_the_rate_limit_and_a_refused_one_is_dropped(
        tmp_path: Path, servers: list[Recorder]) -> None:
    def answer(request: Received) -> Answer:
        refused = request.json()["changes"][0]["phase"] == "Degraded"
        return Answer(410, b"gone") if refused else Answer(200, b"ok")

    recorder = Recorder(answer=answer).start()
    servers.append(recorder)
    notify, metrics = notifier(tmp_path, recorder.url + "/hook", rate_interval=0.4,
                               rate_burst=1)
    notify.start()
    try:
        for i, phase in enumerate((Phase.READY, Phase.DEGRADED, Phase.FAILED, Phase.READY)):
            notify.after_run(summary(phase, f"{i:040d}"))
        got = recorder.wait_for(4)
        assert [g.json()["changes"][0]["phase"] for g in got] == [
            "Ready", "Degraded", "Failed", "Ready"]
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        assert min(gaps) >= 0.3, gaps  # one per 0.4 s, give or take the clocks
        deadline = time.monotonic() + 10
        while metric(metrics, "reconciler_notifications_sent_total", sink="hook") != 3.0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric(metrics, "reconciler_notifications_dropped_total", sink="hook",
                      reason="rejected") == 1.0
        assert metric(metrics, "reconciler_notifications_queued", sink="hook") == 0.0
    finally:
        notify.stop()


def test_a_run_never_waits_for_a_slow_sink(tmp_path: Path, servers: list[Recorder]) -> None:
    slow = serve(servers, Answer(200), delay=3)
    notify, _ = notifier(tmp_path, slow.url + "/hook", rate_interval=0)
    notify.start()
    try:
        started = time.monotonic()
        notify.after_run(summary(Phase.READY, "a" * 40))
        slow.wait_for(1)  # the sender is now waiting for the answer
        notify.after_run(summary(Phase.FAILED, "b" * 40))
        notify.after_run(summary(Phase.READY, "c" * 40))
        assert time.monotonic() - started < 2.5
    finally:
        notify.stop(timeout=0.5)
