"""The files on a status branch, as text: what a status file says, and the heartbeat file.

A status file (``status/<site path>/<target>.yaml``, written by ``reconciler.engine.status``)
is read into :class:`~reconciler.gitops.status_cache.BlobFacts` by :func:`facts_of`: the
fields the fleet table shows, the instances, the number of validation errors, and the whole
document as JSON. A file that is not what it should be gives facts that say why, never an
exception. Files of the layout the daemons write are read by their shape
(``reconciler.gitops.status_shapes``, a few microseconds each), any other by
``reconciler.gitops.status_parse``; :func:`facts_row` gives the facts without the object, for
readers of thousands of files.

Next to the status files of its site, a daemon keeps ``status/<site path>/.heartbeat``: the
time it last said "still here" (:func:`heartbeat_file`). The daemon rewrites it every
``status.heartbeat`` seconds even when nothing else changed, so that a silent site can be told
from an idle one at the cost of one small commit per period, and no target's own file (and
history) changes for it. The name has no ``.yaml`` suffix, so readers of target files pass
it by.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from reconciler.gitops.status_cache import BlobFacts
from reconciler.gitops.status_parse import load_status
from reconciler.gitops.status_shapes import shaped

__all__ = ["HEARTBEAT_FILE", "document_of", "facts_of", "facts_row", "format_time",
           "heartbeat_file", "heartbeat_of", "jsonable", "parse_time"]

HEARTBEAT_FILE = ".heartbeat"
_CACHE_LIMIT = 50_000
_INSTANCES: dict[tuple[tuple[str, ...], ...], str] = {}  # instance lists, as JSON
_TIMES: dict[str, str] = {}  # time texts, in ISO format ("" : no time)
_TEXTS: dict[str, str] = {}  # values as written -> their text (unquoted), one object each
_PLANS: dict[object, _RowPlan | None] = {}  # by shape
_ABSENT, _NULL = -1, -2  # a fact's place in a shape when it has no value
_EMPTIES = frozenset({"{}", "[]"})


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
    row, text = facts_row(raw, document=document)
    facts = BlobFacts(*row)
    return dataclasses.replace(facts, document=text) if text else facts


def facts_row(raw: bytes, *, document: bool = False) -> tuple[tuple[Any, ...], str]:
    """:func:`facts_of` as the fields of :class:`BlobFacts` but the document (its
    :meth:`~BlobFacts.row`), and the document ("" without ``document``): what a reader of
    thousands of files keeps, made without the object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _fatal(f"not UTF-8 text (byte {exc.start})"), ""
    fast = shaped(text)  # the layout the daemons write, read by its shape
    if fast is not None:
        try:
            plan = _PLANS[fast.shape]
        except KeyError:
            if len(_PLANS) >= _CACHE_LIMIT:
                _PLANS.clear()
            plan = _PLANS[fast.shape] = _RowPlan.of(fast.shape.fields)
        row = plan.row(fast.values) if plan is not None else _row(fast.fields())
        return row, fast.json() if document else ""
    try:
        doc = load_status(text)
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        return _fatal(f"invalid YAML{where}: {exc.problem or exc.context}"), ""
    except yaml.YAMLError as exc:
        return _fatal(f"invalid YAML: {exc}"), ""
    if not isinstance(doc, dict):
        return _fatal(f"not a mapping but {type(doc).__name__}"), ""
    return _row(doc), _json(doc) if document else ""


def _fatal(problem: str) -> tuple[Any, ...]:
    return BlobFacts(problem=problem, fatal=True).row()


def _row(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """The facts of a document (a mapping), in the order of :meth:`BlobFacts.row`."""
    get = doc.get
    change = get("lastChange")
    problem = ""
    last_change = _time_text(change)
    if change is not None and not last_change:
        problem = f"field lastChange {change!r} is not an ISO 8601 time"
    instances = get("instances")
    errors = get("errors")
    observed = get("observedRevision")
    return (_text(get("site")), _text(get("target")), _text(get("phase")),
            _text(get("message")), _text(observed),
            # files of daemons that wrote no appliedRevision applied what they observed
            _text(get("appliedRevision", observed)), _text(get("lastGoodRevision")),
            last_change, _time_text(get("heartbeat")), problem, False,
            _instances(instances) if isinstance(instances, Mapping) else "[]",
            len(errors) if isinstance(errors, list) else 0)


class _RowPlan:
    """Where the files of one shape keep each fact (the index of its value, or _ABSENT,
    _NULL): :func:`_row` of their fields, taken straight from their values."""

    __slots__ = ("applied", "change", "heartbeat", "instances", "texts")

    def __init__(self, texts: tuple[int, ...], applied: int, change: int, heartbeat: int,
                 instances: tuple[tuple[str, int, int, int, int], ...] | None) -> None:
        self.texts = texts  # site, target, phase, message, observed, last good
        self.applied = applied
        self.change = change
        self.heartbeat = heartbeat
        self.instances = instances  # name and the solution, phase, release, failed release

    @classmethod
    def of(cls, tree: Mapping[str, Any]) -> _RowPlan | None:
        """The plan of a shape's fields (``Shaped.shape.fields``); None when a fact is a
        mapping (its text is Python's of the mapping: :func:`_row` makes it)."""
        try:
            texts = tuple(_index(tree, key) for key in (
                "site", "target", "phase", "message", "observedRevision", "lastGoodRevision"))
            instances = None
            listed = tree.get("instances")
            if isinstance(listed, dict):
                instances = tuple(_instance_plan(name, node) for name, node in listed.items())
            return cls(texts, _index(tree, "appliedRevision"), _index(tree, "lastChange"),
                       _index(tree, "heartbeat"), instances)
        except _Unplanned:
            return None

    def row(self, values: Sequence[str]) -> tuple[Any, ...]:
        texts = _TEXTS

        def text(index: int) -> str:
            """The text of a value; one object for each (a fleet's values repeat)."""
            if index < 0:
                return ""
            value = values[index]
            found = texts.get(value)
            if found is None:
                if len(texts) >= _CACHE_LIMIT:
                    texts.clear()
                found = texts[value] = (value[1:-1].replace("''", "'") if value[0] == "'"
                                        else value)
            return found

        site, _, phase, message, observed, last_good = map(text, self.texts)
        target = ""  # every file its own: not kept
        if self.texts[1] >= 0:
            target = values[self.texts[1]]
            if target[0] == "'":
                target = target[1:-1].replace("''", "'")
        applied = observed if self.applied == _ABSENT else text(self.applied)
        last_change = problem = heartbeat = ""
        if self.change >= 0:
            change = values[self.change]
            if change in _EMPTIES:  # a mapping or a list: no time, and its repr is its text
                problem = f"field lastChange {change} is not an ISO 8601 time"
            else:
                change = text(self.change)
                last_change = _time_text(change)
                if not last_change:
                    problem = f"field lastChange {change!r} is not an ISO 8601 time"
        if self.heartbeat >= 0 and values[self.heartbeat] not in _EMPTIES:
            heartbeat = _time_text(text(self.heartbeat))
        instances = "[]"
        if self.instances is not None:
            instances = _instances_json(tuple(
                (name, text(solution), text(phase_at), text(release), text(failed))
                for name, solution, phase_at, release, failed in self.instances))
        return (site, target, phase, message, observed, applied, last_good, last_change,
                heartbeat, problem, False, instances, 0)  # a list of errors is no shape


class _Unplanned(Exception):
    """A fact of the shape is a mapping."""


def _index(tree: Mapping[str, Any], key: str) -> int:
    if key not in tree:
        return _ABSENT
    node = tree[key]
    if node is None:
        return _NULL
    if isinstance(node, dict):
        raise _Unplanned
    return int(node)


def _instance_plan(name: str, node: Any) -> tuple[str, int, int, int, int]:
    if not isinstance(node, dict):  # null or a value: no fields (a mapping only if {})
        return (name, _ABSENT, _ABSENT, _ABSENT, _ABSENT)
    rolled = node.get("rolledBack")
    failed = _index(rolled, "failedRelease") if isinstance(rolled, dict) else _ABSENT
    return (name, _index(node, "solution"), _index(node, "phase"), _index(node, "release"),
            failed)


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


def _instances(instances: Mapping[Any, Any]) -> str:
    """The instances as the JSON list of ``[name, solution, phase, release, failed
    release]``."""
    out = []
    for name, item in instances.items():
        fields = item if isinstance(item, Mapping) else {}
        rolled = fields.get("rolledBack")
        failed = rolled.get("failedRelease") if isinstance(rolled, Mapping) else None
        out.append((str(name), _text(fields.get("solution")), _text(fields.get("phase")),
                    _text(fields.get("release")), _text(failed)))
    return _instances_json(tuple(out))


def _instances_json(listed: tuple[tuple[str, str, str, str, str], ...]) -> str:
    """The JSON of an instance list (the same few lists over a fleet: made once each)."""
    found = _INSTANCES.get(listed)
    if found is None:
        if len(_INSTANCES) >= _CACHE_LIMIT:
            _INSTANCES.clear()
        found = _INSTANCES[listed] = json.dumps(listed)
    return found


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _time_text(value: object) -> str:
    """The time ``value`` gives in ISO format, "" when it gives none."""
    if value.__class__ is str:  # texts repeat (a site's files were written at once)
        found = _TIMES.get(value)
        if found is None:
            if len(_TIMES) >= _CACHE_LIMIT:
                _TIMES.clear()
            moment = parse_time(value)
            found = _TIMES[value] = moment.isoformat() if moment is not None else ""
        return found
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
    if moment.tzinfo is dt.UTC and moment.year >= 1000:  # as parsed: a third of the time
        return moment.isoformat(timespec="seconds")[:19] + "Z"
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
