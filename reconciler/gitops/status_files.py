"""The files on a status branch, as text: what a status file says, and the heartbeat file.

A status file (``status/<site path>/<target>.yaml``, written by ``reconciler.engine.status``)
is read into :class:`~reconciler.gitops.status_cache.BlobFacts` by :func:`facts_of`: the
fields the fleet table shows, the instances, the number of validation errors, and the whole
document as JSON. A file that is not what it should be gives facts that say why, never an
exception.

Next to the status files of its site, a daemon keeps ``status/<site path>/.heartbeat``: the
time it last said "still here" (:func:`heartbeat_file`). The daemon rewrites it every
``status.heartbeat`` seconds even when nothing else changed, so that a silent site can be told
from an idle one at the cost of one small commit per period, and no target's own file (and
history) changes for it. The name has no ``.yaml`` suffix, so readers of target files pass
it by.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import yaml

from reconciler.gitops.status_cache import BlobFacts
from reconciler.gitops.status_parse import load_status

__all__ = ["HEARTBEAT_FILE", "document_of", "facts_of", "format_time", "heartbeat_file",
           "heartbeat_of", "jsonable", "parse_time"]

HEARTBEAT_FILE = ".heartbeat"


def heartbeat_file(site_path: str, moment: dt.datetime) -> bytes:
    """The content of a site's heartbeat file."""
    return (f"apiVersion: reconciler/v1\nkind: SiteHeartbeat\nsite: {site_path}\n"
            f"heartbeat: '{format_time(moment)}'\n").encode()


def heartbeat_of(raw: bytes) -> dt.datetime | None:
    """The time a heartbeat file gives, None when it gives none."""
    return parse_time(facts_of(raw).heartbeat)


def document_of(raw: bytes) -> str:
    """A status file as JSON text; ``null`` when it is not a readable mapping."""
    return facts_of(raw, document=True).document or "null"


def facts_of(raw: bytes, *, document: bool = False) -> BlobFacts:
    """What a status file (or a heartbeat file) says; problems become ``problem``. With
    ``document``, the whole file as JSON too (the facts' ``document``; "" without)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BlobFacts(problem=f"not UTF-8 text (byte {exc.start})", fatal=True)
    try:
        doc = load_status(text)
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        return BlobFacts(problem=f"invalid YAML{where}: {exc.problem or exc.context}",
                         fatal=True)
    except yaml.YAMLError as exc:
        return BlobFacts(problem=f"invalid YAML: {exc}", fatal=True)
    if not isinstance(doc, dict):
        return BlobFacts(problem=f"not a mapping but {type(doc).__name__}", fatal=True)
    change = doc.get("lastChange")
    problem = ""
    if change is not None and parse_time(change) is None:
        problem = f"field lastChange {change!r} is not an ISO 8601 time"
    instances = doc.get("instances")
    errors = doc.get("errors")
    return BlobFacts(
        site=_text(doc.get("site")), target=_text(doc.get("target")),
        phase=_text(doc.get("phase")), message=_text(doc.get("message")),
        observed=_text(doc.get("observedRevision")),
        # files of daemons that wrote no appliedRevision applied what they observed
        applied=_text(doc.get("appliedRevision", doc.get("observedRevision"))),
        last_good=_text(doc.get("lastGoodRevision")), last_change=_time_text(change),
        heartbeat=_time_text(doc.get("heartbeat")), problem=problem,
        instances=json.dumps(_instances(instances) if isinstance(instances, Mapping) else []),
        errors=len(errors) if isinstance(errors, list) else 0,
        document=_json(doc) if document else "")


def _json(doc: Mapping[Any, Any]) -> str:
    """The document as compact JSON; timestamps as ISO strings."""
    try:  # most documents are plain JSON data: json does the walk, in C
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_plain)
    except (TypeError, ValueError):  # e.g. a key json cannot take (a date)
        return json.dumps(jsonable(doc), separators=(",", ":"), ensure_ascii=False)


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)  # a set, bytes, ...: its text rather than nothing


def _instances(instances: Mapping[Any, Any]) -> list[list[str]]:
    out = []
    for name, item in instances.items():
        fields = item if isinstance(item, Mapping) else {}
        rolled = fields.get("rolledBack")
        failed = rolled.get("failedRelease") if isinstance(rolled, Mapping) else None
        out.append([str(name), _text(fields.get("solution")), _text(fields.get("phase")),
                    _text(fields.get("release")), _text(failed)])
    return out


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _time_text(value: object) -> str:
    moment = parse_time(value)
    return moment.isoformat() if moment is not None else ""


def parse_time(value: object) -> dt.datetime | None:
    """An ISO 8601 time (a string, or a datetime as YAML reads an unquoted one), in UTC
    when it names no zone; None for anything else."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """``2026-11-23T04:10:00Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jsonable(value: Any) -> Any:
    """YAML data as JSON-serialisable data (timestamps become ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
