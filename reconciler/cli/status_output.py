"""What ``reconciler status`` prints: the fleet table and its roll-ups, or JSON.

The text is one table of every target (state, applied revision, how long ago the site was
heard from, last change, message), then the roll-ups per instance and per site, then one
line of totals. On a terminal the states are coloured (``NO_COLOR`` turns that off); piped,
the text is plain. Messages are cut to one line of 60 characters unless ``--wide``.

The JSON (``--format json``, schema in docs/status.md) is written as it is produced: a few
hundred targets at a time, their whole status files read from the cache in one query, so
neither the document nor the status files are ever held in memory at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

import click

from reconciler.core import tables
from reconciler.gitops.fleet_status import StatusReader
from reconciler.gitops.fleet_view import FleetView, InstanceOnTarget, TargetView, format_age
from reconciler.gitops.status_files import format_time

__all__ = ["SCHEMA_VERSION", "colour_wanted", "write_json", "write_text"]

SCHEMA_VERSION = 1
_MESSAGE_WIDTH = 60
_STRING = json.encoder.encode_basestring_ascii  # a string as json.dumps writes it
_DOCUMENTS_PER_WRITE = 400  # targets written at once, their documents read in one query
_COLOURS = {"Ready": "green", "Failed": "red", "Invalid": "red", "Blocked": "red",
            "Degraded": "red", "Unreadable": "red", "RolledBack": "red",
            "Progressing": "yellow", "Waiting": "yellow",
            "Pending": "yellow", "Stale": "magenta", "Unknown": "bright_black",
            "Orphaned": "bright_black"}


def colour_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set or ``TERM`` is ``dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def write_text(view: FleetView, out: TextIO, *, source: str, ref: str, wide: bool,
               colour: bool, reported: bool = True) -> None:
    """The table, the roll-ups and the totals; ``reported`` is false when no status file
    was found at all."""
    if not view.rows:
        out.write(f"no status files found in {source}\n" if not view.revision else
                  f"no target matches in {source} at {view.revision[:12]}\n")
    else:
        _table(view, out, wide=wide, colour=colour)
        rollups = [(r.name, r.solution, r.summary()) for r in view.instance_rollups()]
        if rollups:
            out.write("\n" + tables.render(rollups, header=("INSTANCE", "SOLUTION", "TARGETS"))
                      + "\n")
        sites = [(s.path, s.level or "-", s.summary()) for s in view.site_rollups()]
        if sites:
            out.write("\n" + tables.render(sites, header=("SITE", "LEVEL", "TARGETS")) + "\n")
    counts = view.counts()
    totals = ", ".join(f"{n} {state}" for state, n in counts.most_common()) or "no targets"
    where = f"at {view.revision[:12]} ({ref})" if view.revision else "(no fleet model)"
    out.write(f"\n{len(view)} targets {where}: {totals}; stale after "
              f"{format_age(view.stale_after)}\n")
    if view.rows and not reported:
        out.write(f"no status files found in {source}: no site has reported yet\n")


def _table(view: FleetView, out: TextIO, *, wide: bool, colour: bool) -> None:
    header = ["SITE", "TARGET", "PHASE", "REVISION", "SEEN", "LAST CHANGE", "MESSAGE"]
    if wide:
        header[4:4] = ["OBSERVED"]
    rows = []
    # what the rows repeat (messages, revisions, times) is made once each
    messages: dict[str, str] = {}
    revisions: dict[str, str] = {"": "-"}
    times: dict[object, str] = {None: "-"}
    for row in view.rows:
        entry = row.entry
        message = row.message
        if row.errors and entry is not None:
            message += f" [{len(row.errors) + row.more_errors} validation error(s) at " \
                       f"{view.revision[:12]}]"
        if not wide:
            short = messages.get(message)
            if short is None:
                short = messages[message] = _one_line(message)
            message = short
        if entry is None:
            cells = [row.site, row.target, row.state, "-", format_age(row.age), "-", message]
        else:
            applied = revisions.get(entry.applied_revision)
            if applied is None:
                applied = revisions[entry.applied_revision] = entry.applied_revision[:8]
            changed = times.get(entry.last_change)
            if changed is None:
                assert entry.last_change is not None
                changed = times[entry.last_change] = format_time(entry.last_change)
            cells = [row.site, row.target, row.state, applied, format_age(row.age), changed,
                     message]
        if wide:
            cells[4:4] = [entry.observed_revision[:8] or "-" if entry else "-"]
        rows.append(cells)
    text = tables.render(rows, header=header)
    if not colour:
        out.write(text + "\n")
        return
    offset = (max(len(r.site) for r in view.rows) if view.rows else 0)
    offset = max(offset, len("SITE")) + 2
    offset += max([len(r.target) for r in view.rows] + [len("TARGET")]) + 2
    lines = text.split("\n")
    out.write(lines[0] + "\n")
    for line, row in zip(lines[1:], view.rows, strict=True):
        end = offset + len(row.state)
        styled = click.style(row.state, fg=_COLOURS.get(row.state), bold=row.state != "Ready")
        out.write(line[:offset] + styled + line[end:] + "\n")


def _one_line(message: str) -> str:
    """A message on one line of at most ``_MESSAGE_WIDTH`` characters."""
    message = " ".join(message.split())
    if len(message) > _MESSAGE_WIDTH:
        message = message[:_MESSAGE_WIDTH - 3] + "..."
    return message


def write_json(view: FleetView, reader: StatusReader, out: TextIO, *, source: str, ref: str,
               branches: Mapping[str, str], model_error: str | None) -> None:
    """The document of docs/status.md, streamed."""
    head = {"schemaVersion": SCHEMA_VERSION, "source": source, "ref": ref,
            "revision": view.revision or None, "generatedAt": format_time(view.now),
            "staleAfter": view.stale_after, "modelError": model_error,
            "branches": dict(branches)}
    out.write(json.dumps(head, indent=None)[:-1] + ', "targets": [')
    text = _TargetText()
    rows = view.rows
    for start in range(0, len(rows), _DOCUMENTS_PER_WRITE):
        batch = rows[start:start + _DOCUMENTS_PER_WRITE]
        documents = reader.document_texts(row.entry for row in batch if row.entry)
        out.write(("\n  " if start == 0 else ",\n  ") + ",\n  ".join([
            f'{text.row(row)}, "status": '
            f'{(documents.get(row.entry.blob) or "null") if row.entry else "null"}}}'
            for row in batch]))
    instances = [{"name": r.name, "solution": r.solution, "version": r.version or None,
                  "targets": r.total, "readyOnVersion": r.ready_on_version,
                  "counts": dict(r.counts), "summary": r.summary()}
                 for r in view.instance_rollups()]
    sites = [{"path": s.path, "level": s.level, "targets": s.total, "counts": dict(s.counts),
              "health": s.health, "summary": s.summary()} for s in view.site_rollups()]
    out.write("\n], " + json.dumps({"instances": instances, "sites": sites,
                                     "counts": dict(view.counts()), "ready": view.ready})[1:]
              + "\n")


def target_json(view: FleetView, row: TargetView) -> dict[str, Any]:
    """One target as the JSON of docs/status.md (without its ``status`` document)."""
    entry = row.entry
    return {
        "site": row.site, "target": row.target, "state": row.state,
        "phase": entry.phase if entry else None, "message": row.message,
        "appliedRevision": entry.applied_revision or None if entry else None,
        "observedRevision": entry.observed_revision or None if entry else None,
        "lastGoodRevision": entry.last_good_revision or None if entry else None,
        "current": row.current, "inFleet": row.in_fleet,
        "lastChange": format_time(entry.last_change) if entry and entry.last_change else None,
        "lastSeen": format_time(entry.last_seen) if entry and entry.last_seen else None,
        "ageSeconds": round(row.age) if row.age is not None else None,
        "instances": [{"name": i.name, "solution": i.solution, "version": i.version or None,
                       "state": i.state, "release": i.release or None} for i in row.instances],
        "validationErrors": list(row.errors), "moreValidationErrors": row.more_errors,
        "reportedErrors": entry.errors if entry else 0,
        "branch": entry.branch if entry else None, "path": entry.path if entry else None,
        "error": entry.error if entry else None,
    }


class _TargetText:
    """``json.dumps(target_json(view, row))`` without its closing brace, written without
    the dict: strings through json's own encoder, and the text of what the rows of a fleet
    repeat (states, messages, revisions, times, instances) made once each."""

    def __init__(self) -> None:
        self._texts: dict[str | None, str] = {None: "null"}
        self._times: dict[dt.datetime | None, str] = {None: "null"}
        self._instances: dict[tuple[InstanceOnTarget, ...], str] = {(): "[]"}

    def row(self, row: TargetView) -> str:
        entry, string, text = row.entry, _STRING, self._text
        if entry is None:
            reported = ('"phase": null, "message": ' + text(row.message)
                        + ', "appliedRevision": null, "observedRevision": null, '
                        '"lastGoodRevision": null')
            seen = '"lastChange": null, "lastSeen": null'
            found = '"reportedErrors": 0, "branch": null, "path": null, "error": null'
        else:
            reported = (f'"phase": {text(entry.phase)}, "message": {text(row.message)}, '
                        f'"appliedRevision": {text(entry.applied_revision or None)}, '
                        f'"observedRevision": {text(entry.observed_revision or None)}, '
                        f'"lastGoodRevision": {text(entry.last_good_revision or None)}')
            seen = (f'"lastChange": {self._time(entry.last_change)}, '
                    f'"lastSeen": {self._time(entry.last_seen)}')
            found = (f'"reportedErrors": {entry.errors}, "branch": {text(entry.branch)}, '
                     f'"path": {string(entry.path)}, "error": {text(entry.error)}')
        errors = json.dumps(list(row.errors)) if row.errors else "[]"
        return (f'{{"site": {string(row.site)}, "target": {string(row.target)}, '
                f'"state": {text(row.state)}, {reported}, '
                f'"current": {"true" if row.current else "false"}, '
                f'"inFleet": {"true" if row.in_fleet else "false"}, {seen}, '
                f'"ageSeconds": {"null" if row.age is None else round(row.age)}, '
                f'"instances": {self._instances_text(row.instances)}, '
                f'"validationErrors": {errors}, "moreValidationErrors": {row.more_errors}, '
                f'{found}')

    def _text(self, value: str | None) -> str:
        found = self._texts.get(value)
        if found is None:
            assert value is not None  # there from the start
            found = self._texts[value] = _STRING(value)
        return found

    def _time(self, moment: dt.datetime | None) -> str:
        found = self._times.get(moment)
        if found is None:
            assert moment is not None
            found = self._times[moment] = _STRING(format_time(moment))
        return found

    def _instances_text(self, instances: tuple[InstanceOnTarget, ...]) -> str:
        found = self._instances.get(instances)
        if found is None:
            text = self._text
            found = self._instances[instances] = "[" + ", ".join(
                f'{{"name": {text(i.name)}, "solution": {text(i.solution)}, '
                f'"version": {text(i.version or None)}, "state": {text(i.state)}, '
                f'"release": {text(i.release or None)}}}' for i in instances) + "]"
        return found
