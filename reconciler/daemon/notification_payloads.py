"""What a notification says, per sink kind: pure functions from target states to JSON bodies.

The notifier (``reconciler.daemon.notifications``) keeps, per sink, the state of every served
target it last told that sink about (:class:`TargetState`: phase and the commit it is about)
and compares it with each run's statuses. Chat-like sinks hear of phase changes
(:func:`phase_changes` -> :class:`Event`, then :func:`webhook_body`, :func:`slack_body` or
:func:`teams_body`); commit-status sinks hear of a change of their site's state on a commit
(:func:`commit_statuses`, then :func:`forge_request`). The shapes are those the services
document; docs/notifications.md shows each.

The commit a target's state is about is the revision it was reconciled toward: its applied
revision once it is Ready, else the newest revision it saw (the one that failed, is invalid,
unsigned or still progressing), so a failure is reported on the commit that caused it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import API_VERSION
from reconciler.daemon.notification_settings import SinkKind, SinkSettings
from reconciler.engine.status import Phase, TargetStatus

__all__ = ["Change", "CommitStatus", "Event", "TargetState", "commit_statuses",
           "forge_request", "phase_changes", "slack_body", "state_of", "teams_body",
           "webhook_body"]

MAX_LISTED = 10  # changes spelt out in a chat message; the rest are counted
MAX_MESSAGE = 300  # characters of a target's status message in a chat message
MAX_DESCRIPTION = 140  # GitHub refuses longer commit status descriptions

# worst first: the order in which phases are listed and a site's state is chosen
SEVERITY = ("Blocked", "Invalid", "Failed", "Degraded", "Progressing", "Pending", "Ready")
_EMOJI = {"Ready": ":white_check_mark:", "Progressing": ":hourglass_flowing_sand:",
          "Pending": ":grey_question:", "Degraded": ":warning:", "Failed": ":x:",
          "Invalid": ":no_entry:", "Blocked": ":lock:"}
_COLOUR = {"Ready": "Good", "Progressing": "Accent", "Pending": "Default",
           "Degraded": "Warning", "Failed": "Attention", "Invalid": "Attention",
           "Blocked": "Attention"}
# each forge's word for a phase, and its states worst first
_STATES: dict[SinkKind, tuple[dict[str, str], tuple[str, ...]]] = {
    SinkKind.GITHUB: ({"Ready": "success", "Progressing": "pending", "Pending": "pending",
                       "Degraded": "failure", "Failed": "failure", "Invalid": "error",
                       "Blocked": "error"}, ("error", "failure", "pending", "success")),
    SinkKind.GITLAB: ({"Ready": "success", "Progressing": "running", "Pending": "pending",
                       "Degraded": "failed", "Failed": "failed", "Invalid": "failed",
                       "Blocked": "failed"}, ("failed", "running", "pending", "success")),
    SinkKind.GITEA: ({"Ready": "success", "Progressing": "pending", "Pending": "pending",
                      "Degraded": "warning", "Failed": "failure", "Invalid": "error",
                      "Blocked": "error"}, ("error", "failure", "warning", "pending",
                                            "success")),
}


@dataclass(frozen=True)
class TargetState:
    """What a sink was last told of one target."""

    target: str
    site: str  # the target's site path
    phase: str
    commit: str  # the revision the phase is about (module docstring)
    message: str = ""

    def record(self) -> dict[str, str]:
        """Persisted form; the message is not needed to tell a change."""
        return {"site": self.site, "phase": self.phase, "commit": self.commit}

    @classmethod
    def from_record(cls, target: str, raw: Mapping[str, Any]) -> TargetState:
        return cls(target, str(raw.get("site", "")), str(raw.get("phase", "")),
                   str(raw.get("commit", "")))


def state_of(status: TargetStatus) -> TargetState:
    commit = status.applied_revision if status.phase is Phase.READY and \
        status.applied_revision else status.observed_revision
    return TargetState(status.target, status.site, status.phase.value, commit,
                       status.message)


@dataclass(frozen=True)
class Change:
    """One target's phase, new or different from what the sink was last told."""

    now: TargetState
    previous: TargetState | None  # None: the sink hears of the target for the first time


@dataclass(frozen=True)
class Event:
    """The phase changes of one run, for one sink."""

    id: str  # the same on every delivery attempt, so a receiver can drop repeats
    time: str  # ISO 8601, UTC
    site: str  # the site the daemon serves, as configured
    site_id: str
    changes: tuple[Change, ...]
    counts: Mapping[str, int]  # phase -> targets, over every served target


def phase_changes(before: Mapping[str, TargetState],
                  after: Mapping[str, TargetState]) -> tuple[Change, ...]:
    """Targets of ``after`` whose phase differs from ``before`` (or that it lacks)."""
    return tuple(Change(now, before.get(name)) for name, now in sorted(after.items())
                 if name not in before or before[name].phase != now.phase)


def _ordered(phases: Mapping[str, int]) -> list[tuple[str, int]]:
    rank = {p: i for i, p in enumerate(SEVERITY)}
    return sorted(phases.items(), key=lambda kv: (rank.get(kv[0], -1), kv[0]))


def _summary(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} target{'s' if total != 1 else ''}: " + ", ".join(
        f"{n} {p}" for p, n in _ordered(counts))


def _headline(event: Event) -> str:
    if len(event.changes) == 1:
        change = event.changes[0]
        was = f" (was {change.previous.phase})" if change.previous is not None else ""
        return f"{event.site}: {change.now.target} is {change.now.phase}{was}"
    return f"{event.site}: {len(event.changes)} targets changed phase"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def webhook_body(event: Event) -> dict[str, Any]:
    """The generic webhook's JSON (documented in docs/notifications.md)."""
    return {
        "apiVersion": API_VERSION, "kind": "PhaseChanges", "id": event.id,
        "time": event.time, "site": event.site, "siteId": event.site_id,
        "summary": dict(_ordered(event.counts)),
        "changes": [{"target": c.now.target, "site": c.now.site, "phase": c.now.phase,
                     "previousPhase": c.previous.phase if c.previous else None,
                     "revision": c.now.commit,
                     "previousRevision": c.previous.commit if c.previous else None,
                     "message": c.now.message} for c in event.changes],
    }


def _slack_escape(text: str) -> str:
    # the three characters Slack's mrkdwn asks to escape
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(event: Event) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification's fallback) and
    Block Kit ``blocks`` (a header, one section of changes, a context line)."""
    lines = []
    for change in event.changes[:MAX_LISTED]:
        now = change.now
        was = f"{change.previous.phase} → " if change.previous is not None else ""
        line = (f"{_EMOJI.get(now.phase, ':grey_question:')} *{_slack_escape(now.target)}*"
                f" {was}*{now.phase}*")
        if now.commit:
            line += f" at `{now.commit[:12]}`"
        if now.message:
            line += "\n>" + _slack_escape(_clip(now.message, MAX_MESSAGE)).replace("\n", " ")
        lines.append(line)
    if len(event.changes) > MAX_LISTED:
        lines.append(f"… and {len(event.changes) - MAX_LISTED} more")
    headline = _headline(event)
    summary = _summary(event.counts)
    return {
        "text": f"{headline}. {summary}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _clip(headline, 150)}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": _clip("\n".join(lines), 3000)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(
                f"{summary} · site {event.site}")}]},
        ],
    }


def teams_body(event: Event) -> dict[str, Any]:
    """A Teams message carrying one Adaptive Card (version 1.4) in ``attachments``: the
    shape Teams' Workflows webhooks accept (they refuse the legacy MessageCard), and that
    the retiring Office 365 connector webhooks accept as well."""
    worst = next((p for p in SEVERITY if any(c.now.phase == p for c in event.changes)),
                 "Ready")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": _headline(event), "size": "Medium", "weight": "Bolder",
         "color": _COLOUR.get(worst, "Default"), "wrap": True}]
    for change in event.changes[:MAX_LISTED]:
        now = change.now
        was = f"{change.previous.phase} → " if change.previous is not None else ""
        at = f" at {now.commit[:12]}" if now.commit else ""
        items: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": f"{now.target}: {was}{now.phase}{at}",
             "weight": "Bolder", "color": _COLOUR.get(now.phase, "Default"), "wrap": True}]
        if now.message:
            items.append({"type": "TextBlock", "text": _clip(now.message, MAX_MESSAGE),
                          "isSubtle": True, "wrap": True, "spacing": "None"})
        body.append({"type": "Container", "items": items})
    if len(event.changes) > MAX_LISTED:
        body.append({"type": "TextBlock", "text":
                     f"… and {len(event.changes) - MAX_LISTED} more", "wrap": True})
    body.append({"type": "TextBlock", "text": f"{_summary(event.counts)} · site {event.site}",
                 "isSubtle": True, "size": "Small", "wrap": True})
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard", "version": "1.4", "body": body}}]}


@dataclass(frozen=True)
class CommitStatus:
    """The site's state on one commit, in a forge's words."""

    commit: str
    state: str
    description: str


def _groups(states: Mapping[str, TargetState]) -> dict[str, list[TargetState]]:
    out: dict[str, list[TargetState]] = {}
    for name in sorted(states):
        if states[name].commit:
            out.setdefault(states[name].commit, []).append(states[name])
    return out


def _site_state(kind: SinkKind, group: Sequence[TargetState]) -> str:
    words, worst_first = _STATES[kind]
    found = {words.get(s.phase, worst_first[0]) for s in group}
    return next(w for w in worst_first if w in found)


def _description(group: Sequence[TargetState]) -> str:
    phases: dict[str, list[str]] = {}
    for s in group:
        phases.setdefault(s.phase, []).append(s.target)
    ready = len(phases.pop("Ready", []))
    parts = [f"{ready}/{len(group)} targets Ready"]
    parts += [f"{p}: {', '.join(names)}" for p, names in
              sorted(phases.items(), key=lambda kv: SEVERITY.index(kv[0])
                     if kv[0] in SEVERITY else -1)]
    return _clip("; ".join(parts), MAX_DESCRIPTION)


def commit_statuses(kind: SinkKind, before: Mapping[str, TargetState],
                    after: Mapping[str, TargetState]) -> list[CommitStatus]:
    """One status per commit whose site state (in ``kind``'s words) changed: the targets of
    ``after`` grouped by commit, compared with the same commit's group in ``before``."""
    earlier = {commit: _site_state(kind, group) for commit, group in _groups(before).items()}
    out = []
    for commit, group in _groups(after).items():
        state = _site_state(kind, group)
        if earlier.get(commit) != state:
            out.append(CommitStatus(commit, state, _description(group)))
    return out


def forge_request(sink: SinkSettings, status: CommitStatus,
                  site_id: str) -> tuple[str, dict[str, Any]]:
    """The path (below the sink's base URL) and JSON body that post ``status``."""
    context = sink.context.replace("{site}", site_id)
    sha = urllib.parse.quote(status.commit, safe="")
    if sink.kind is SinkKind.GITLAB:
        project = urllib.parse.quote(sink.repository, safe="")
        body = {"state": status.state, "name": context, "description": status.description}
        path = f"/projects/{project}/statuses/{sha}"
    else:  # GitHub and Gitea/Forgejo share the path and the field names
        owner, _, name = sink.repository.partition("/")
        body = {"state": status.state, "context": context, "description": status.description}
        path = (f"/repos/{urllib.parse.quote(owner, safe='')}/"
                f"{urllib.parse.quote(name, safe='')}/statuses/{sha}")
    if sink.target_url:
        body["target_url"] = sink.target_url
    return path, body
