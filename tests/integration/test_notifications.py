"""Alerts out: a real daemon process tells real HTTP servers on 127.0.0.1 of phase changes.

One target, ``cell``, runs a script that exits with the code its parameter says; commits
move it Ready -> Failed -> Ready. Every sink kind must receive exactly one request per
change, in the shape its service documents (the generic webhook signed with HMAC-SHA256),
nothing on idle runs and nothing again after a restart; a sink that is down gets its queue,
in order, once it is back, and what overflowed the queue is counted in a metric. No secret
(tokens, HMAC key, webhook URLs that carry a token) appears in the daemon's log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fleetkit import (
    DaemonProcess,
    FleetRepo,
    Site,
    component,
    instance,
    make_site,
    script_binding,
    settings,
    site,
    solution,
    target,
    wait_for,
)
from tests.integration.notifykit import Answer, Received, Recorder
from tests.integration.test_status_push import free_port

LINE = "hq/line-1"
CONTEXT = "reconciler/hq_line-1"
RUN_SH = """#!/bin/sh
echo "cell step for $RECONCILER_TARGET" >&2
exit "$RECONCILER_PARAM_EXITCODE"
"""
HMAC_KEY = "hmac-key-5b0e6e1c"
SLACK_TOKEN = "slacktoken0d1f2e3a4b5c"
TEAMS_SIG = "teamssig9a8b7c6d5e4f"
TOKENS = {"github": "ghp_githubtoken111", "gitlab": "glpat-gitlabtoken222",
          "forgejo": "forgejotoken333"}


def targets(exit_code: int) -> list[dict[str, Any]]:
    return [target("cell", "line-1", bindings=[script_binding("cell")],
                   params={"exitCode": exit_code}),
            instance("starter", "starter", names=["cell"], onFailure="stay")]


def cell_fleet(root: Path) -> FleetRepo:
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", targets(0))
    repo.write("solutions/starter.yaml", solution(
        "starter", [component("start", "service", {"apply": ["scripts/run.sh"]})],
        {"exitCode": {"type": "integer", "required": True}}))
    repo.write("solutions/scripts/run.sh", RUN_SH, executable=True)
    repo.commit("cell: ready")
    return repo


def set_exit_code(repo: FleetRepo, code: int) -> str:
    repo.write("targets.yaml", targets(code))
    return repo.commit(f"cell: exit {code}")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.kill()


@pytest.fixture
def servers() -> Iterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for r in started:
        r.stop()


def start(daemons: list[DaemonProcess], s: Site, name: str) -> DaemonProcess:
    d = DaemonProcess(s, s.config.parent / f"{name}.log").start()
    daemons.append(d)
    return d


def secret(directory: Path, name: str, value: str) -> str:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def answer(request: Received) -> Answer:
    """What each service answers on success."""
    if request.path.startswith(("/github/", "/gitlab/", "/forgejo/")):
        return Answer(201, b'{"id": 1}', {"Content-Type": "application/json"})
    if request.path.startswith("/workflows/"):
        return Answer(202, b"")
    return Answer(200, b"ok")


def every_sink(base: str, secrets_dir: Path) -> list[dict[str, Any]]:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    slack = f"{base}/services/T0001/B0001/{SLACK_TOKEN}"
    teams = (f"{base}/workflows/7f3a/triggers/manual/paths/invoke?api-version=1"
             f"&sig={TEAMS_SIG}")
    return [
        {"type": "webhook", "url": f"{base}/hook",
         "secretFile": secret(secrets_dir, "hmac", HMAC_KEY)},
        {"type": "slack", "urlFile": secret(secrets_dir, "slack-url", slack)},
        {"type": "teams", "urlFile": secret(secrets_dir, "teams-url", teams)},
        {"type": "github", "baseUrl": f"{base}/github", "repository": "fleet/config",
         "tokenFile": secret(secrets_dir, "github", TOKENS["github"])},
        {"type": "gitlab", "baseUrl": f"{base}/gitlab/api/v4", "repository": "fleet/config",
         "tokenFile": secret(secrets_dir, "gitlab", TOKENS["gitlab"])},
        {"type": "forgejo", "baseUrl": f"{base}/forgejo/api/v1",
         "repository": "fleet/config",
         "tokenFile": secret(secrets_dir, "forgejo", TOKENS["forgejo"])},
    ]


PREFIXES = ("/hook", "/services/", "/workflows/", "/github/", "/gitlab/", "/forgejo/")
FAST = {"retryDelay": 0.1, "retryMaxDelay": 0.5, "rateInterval": 0}


def counts(recorder: Recorder) -> dict[str, int]:
    return {p: len(recorder.received(p)) for p in PREFIXES}


def settle(d: DaemonProcess, recorder: Recorder, expected: int) -> None:
    """Every sink has ``expected`` requests, and still has after three more runs."""
    for prefix in PREFIXES:
        recorder.wait_for(expected, prefix)
    d.wait_runs(len(d.runs()) + 3, timeout=30)
    assert counts(recorder) == dict.fromkeys(PREFIXES, expected)


def test_every_sink_hears_each_phase_change_once_in_its_documented_shape(
        tmp_path: Path, daemons: list[DaemonProcess], servers: list[Recorder]) -> None:
    recorder = Recorder(answer=answer).start()
    servers.append(recorder)
    repo = cell_fleet(tmp_path / "fleet")
    rev1 = repo.head()
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE, interval=1,
                  retries={"count": 0, "delay": 0.1},
                  notifications={"sinks": every_sink(recorder.url, tmp_path / "secrets"),
                                 **FAST})
    d = start(daemons, s, "daemon")
    settle(d, recorder, 1)
    rev2 = set_exit_code(repo, 1)
    settle(d, recorder, 2)
    rev3 = set_exit_code(repo, 0)
    settle(d, recorder, 3)

    # a restart sends nothing again
    assert d.stop() == 0
    again = start(daemons, s, "restarted")
    again.wait_runs(3, timeout=30)
    assert counts(recorder) == dict.fromkeys(PREFIXES, 3)

    steps = [(None, "Ready", rev1, None), ("Ready", "Failed", rev2, rev1),
             ("Failed", "Ready", rev3, rev2)]

    # the generic webhook: its JSON, signed with HMAC-SHA256 over the exact body
    hooks = recorder.received("/hook")
    for got, (was, phase, rev, was_rev) in zip(hooks, steps, strict=True):
        body = got.json()
        assert got.path == "/hook" and got.headers["content-type"] == "application/json"
        expected_sig = hmac.new(HMAC_KEY.encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["x-reconciler-signature"] == f"sha256={expected_sig}"
        assert got.headers["x-reconciler-event"] == "phase-changes"
        assert got.headers["x-reconciler-delivery"] == body["id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", body.pop("time"))
        change = body["changes"][0]
        message = change.pop("message")
        assert body == {"apiVersion": "reconciler/v1", "kind": "PhaseChanges",
                        "id": body["id"], "site": LINE, "siteId": "hq_line-1",
                        "summary": {phase: 1},
                        "changes": [{"target": "cell", "site": LINE, "phase": phase,
                                     "previousPhase": was, "revision": rev,
                                     "previousRevision": was_rev}]}
        assert ("exit code 1" in message) is (phase == "Failed"), message
    assert len({h.json()["id"] for h in hooks}) == 3

    # Slack: text plus Block Kit blocks, posted to the URL read from its file
    for got, (was, phase, rev, _) in zip(recorder.received("/services/"), steps, strict=True):
        assert got.path == f"/services/T0001/B0001/{SLACK_TOKEN}"
        body = got.json()
        assert set(body) == {"text", "blocks"}
        assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
        headline = f"{LINE}: cell is {phase}" + (f" (was {was})" if was else "")
        assert body["blocks"][0]["text"] == {"type": "plain_text", "text": headline}
        assert body["text"].startswith(headline)
        section = body["blocks"][1]["text"]
        assert section["type"] == "mrkdwn"
        assert f"*cell* {was + ' → ' if was else ''}*{phase}* at `{rev[:12]}`" in section["text"]

    # Teams: a message with one Adaptive Card attachment
    for got, (was, phase, rev, _) in zip(recorder.received("/workflows/"), steps, strict=True):
        assert got.path.endswith(f"&sig={TEAMS_SIG}")
        body = got.json()
        assert body["type"] == "message" and len(body["attachments"]) == 1
        card = body["attachments"][0]
        assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert card["content"]["type"] == "AdaptiveCard"
        assert card["content"]["version"] == "1.4"
        texts = [b.get("text") for b in card["content"]["body"]]
        texts += [i["text"] for b in card["content"]["body"] for i in b.get("items", [])]
        assert f"cell: {was + ' → ' if was else ''}{phase} at {rev[:12]}" in texts

    # commit statuses: one context for the site, on the revision each state is about
    described = {"Ready": "1/1 targets Ready", "Failed": "0/1 targets Ready; Failed: cell"}
    github = recorder.received("/github/")
    assert [(g.path, g.json()) for g in github] == [
        (f"/github/repos/fleet/config/statuses/{rev}",
         {"state": {"Ready": "success", "Failed": "failure"}[phase], "context": CONTEXT,
          "description": described[phase]}) for _, phase, rev, _ in steps]
    for g in github:
        assert g.headers["authorization"] == f"Bearer {TOKENS['github']}"
        assert g.headers["accept"] == "application/vnd.github+json"
        assert g.headers["x-github-api-version"] == "2022-11-28"
    gitlab = recorder.received("/gitlab/")
    assert [(g.path, g.json()) for g in gitlab] == [
        (f"/gitlab/api/v4/projects/fleet%2Fconfig/statuses/{rev}",
         {"state": {"Ready": "success", "Failed": "failed"}[phase], "name": CONTEXT,
          "description": described[phase]}) for _, phase, rev, _ in steps]
    assert {g.headers["private-token"] for g in gitlab} == {TOKENS["gitlab"]}
    forgejo = recorder.received("/forgejo/")
    assert [(g.path, g.json()) for g in forgejo] == [
        (f"/forgejo/api/v1/repos/fleet/config/statuses/{rev}",
         {"state": {"Ready": "success", "Failed": "failure"}[phase], "context": CONTEXT,
          "description": described[phase]}) for _, phase, rev, _ in steps]
    assert {g.headers["authorization"] for g in forgejo} == {f"token {TOKENS['forgejo']}"}

    # no secret in the logs, nor in what the daemon keeps on disk
    sent = d.events("notification_sent")
    assert len(sent) == 18 and {e["sink"] for e in sent} == {
        "webhook", "slack", "teams", "github", "gitlab", "forgejo"}
    logs = d.text() + again.text()
    kept = b"".join(p.read_bytes() for p in (s.state / "notifications").iterdir())
    for value in (HMAC_KEY, SLACK_TOKEN, TEAMS_SIG, *TOKENS.values()):
        assert value not in logs, value
        assert value.encode() not in kept, value


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_a_sink_that_is_down_gets_its_queue_in_order_when_back_and_overflow_is_counted(
        tmp_path: Path, daemons: list[DaemonProcess], servers: list[Recorder]) -> None:
    sink_port, http_port = free_port(), free_port()
    repo = cell_fleet(tmp_path / "fleet")
    rev1 = repo.head()
    key = secret(tmp_path, "hmac", HMAC_KEY)
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE, interval=1,
                  retries={"count": 0, "delay": 0.1},
                  listen={"enabled": True, "address": "127.0.0.1", "port": http_port},
                  notifications={"sinks": [{"type": "webhook", "secretFile": key,
                                            "url": f"http://127.0.0.1:{sink_port}/hook"}],
                                 "queueLimit": 2, **FAST})
    d = start(daemons, s, "daemon")

    # nobody listens: the first change is queued and its delivery retried
    wait_for(lambda: len(d.events("notification_failed")) >= 2, 30, "failed deliveries")
    rev2 = set_exit_code(repo, 1)
    wait_for(lambda: len(d.events("notification_queued")) >= 2, 30, "a second change")
    rev3 = set_exit_code(repo, 0)
    wait_for(lambda: len(d.events("notification_queued")) >= 3, 30, "a third change")
    # the queue holds two; the oldest (the first Ready) was dropped and counted
    text = scrape(http_port)
    assert metric(text, "reconciler_notifications_dropped_total", sink="webhook",
                  reason="queue_full") == 1.0
    assert metric(text, "reconciler_notifications_queued", sink="webhook") == 2.0
    assert (metric(text, "reconciler_notifications_failed_total", sink="webhook") or 0) >= 2
    assert d.events("notification_dropped", reason="queue_full", dropped=1)
    queued = sorted((s.state / "notifications").glob("webhook.*.json"))
    assert len(queued) == 2

    # the queue outlives a restart, and nothing is queued again
    assert d.stop() == 0
    again = start(daemons, s, "restarted")
    again.wait_runs(2, timeout=30)
    assert not again.events("notification_queued")
    assert sorted((s.state / "notifications").glob("webhook.*.json")) == queued

    # the sink comes back: both deliveries, oldest first, then nothing more
    recorder = Recorder(port=sink_port).start()
    servers.append(recorder)
    got = recorder.wait_for(2, "/hook")
    again.wait_runs(len(again.runs()) + 3, timeout=30)
    assert len(recorder.received()) == 2
    assert [(c["previousPhase"], c["phase"], c["revision"]) for g in got
            for c in g.json()["changes"]] == [("Ready", "Failed", rev2),
                                              ("Failed", "Ready", rev3)]
    assert rev1 not in [c["revision"] for g in got for c in g.json()["changes"]]
    for g in got:
        expected_sig = hmac.new(HMAC_KEY.encode(), g.body, hashlib.sha256).hexdigest()
        assert g.headers["x-reconciler-signature"] == f"sha256={expected_sig}"
    wait_for(lambda: not list((s.state / "notifications").glob("webhook.*.json")), 10,
             "the queue to empty")
    text = scrape(http_port)
    assert metric(text, "reconciler_notifications_sent_total", sink="webhook") == 2.0
    assert metric(text, "reconciler_notifications_queued", sink="webhook") == 0.0
    assert HMAC_KEY not in d.text() + again.text()
