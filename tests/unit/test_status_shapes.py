"""Status files read by their shape give exactly what PyYAML's safe loader gives, and the facts
the fleet table shows are those of the whole document: on status files as the daemons write
them (odd names and messages, unicode, long messages folded over lines, errors, holds,
rollbacks, releases), on the layouts of older daemons, on thousands of generated documents and
on hand-written text. Files that are not of the layout taken are left to the full parser."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from reconciler.core.diagnostics import Diagnostic
from reconciler.engine.executing import ComponentPhase, ComponentResult, TargetResult
from reconciler.engine.status import build_status, render_status
from reconciler.gitops.status_cache import BlobFacts
from reconciler.gitops.status_files import facts_of, heartbeat_file, parse_time
from reconciler.gitops.status_parse import YAML_LOADER
from reconciler.gitops.status_shapes import shaped
from tests.unit.test_status_parse import AWKWARD, _dump, _key, _text, _value

NAMES = ["press-01", "a", "x.y", "on", "yes", "n", "null", "0b1", "1e3", "ab12", "é-line",
         "line 7", "it's", "t" * 60, "UPPER", "a/b", "café", "deadbeef", "1234"]


def expected_facts(raw: bytes, document: bool = True) -> BlobFacts:
    """The facts of a file as the full parser gives them (the reference)."""
    try:
        doc = yaml.load(raw.decode("utf-8"), Loader=YAML_LOADER)
    except (UnicodeDecodeError, yaml.YAMLError):
        return facts_of(raw, document=document)  # not the fast path's business
    if not isinstance(doc, dict):
        return facts_of(raw, document=document)

    def text(value: object) -> str:
        return "" if value is None else str(value)

    def when(value: object) -> str:
        moment = parse_time(value)
        return moment.isoformat() if moment is not None else ""

    change = doc.get("lastChange")
    instances = doc.get("instances")
    listed = []
    for name, item in (instances.items() if isinstance(instances, Mapping) else ()):
        fields = item if isinstance(item, Mapping) else {}
        rolled = fields.get("rolledBack")
        failed = rolled.get("failedRelease") if isinstance(rolled, Mapping) else None
        listed.append([str(name), text(fields.get("solution")), text(fields.get("phase")),
                       text(fields.get("release")), text(failed)])
    errors = doc.get("errors")
    return BlobFacts(
        site=text(doc.get("site")), target=text(doc.get("target")),
        phase=text(doc.get("phase")), message=text(doc.get("message")),
        observed=text(doc.get("observedRevision")),
        applied=text(doc.get("appliedRevision", doc.get("observedRevision"))),
        last_good=text(doc.get("lastGoodRevision")), last_change=when(change),
        heartbeat=when(doc.get("heartbeat")),
        problem=f"field lastChange {change!r} is not an ISO 8601 time"
        if change is not None and parse_time(change) is None else "",
        instances=json.dumps(listed), errors=len(errors) if isinstance(errors, list) else 0,
        document=json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                            default=lambda v: v.isoformat() if isinstance(v, dt.date)
                            else str(v)) if document else "")


def check(text: str) -> bool:
    """The file read by its shape (when it is taken) is what PyYAML reads; its facts are
    the reference's either way. Whether it was taken."""
    raw = text.encode()
    assert facts_of(raw, document=True) == expected_facts(raw), text
    assert facts_of(raw) == expected_facts(raw, document=False), text
    found = shaped(text)
    if found is None:
        return False
    doc = yaml.load(text, Loader=YAML_LOADER)
    assert found.document() == doc, text
    assert repr(found.document()) == repr(doc), text  # the same types too
    assert found.json() == json.dumps(doc, separators=(",", ":"), ensure_ascii=False), text
    return True


def status_text(rng: random.Random) -> str:
    """A status file as a daemon renders it: most with ordinary names and messages, the
    others with awkward ones."""
    odd = rng.random() < 0.4

    def pick(ordinary: list[str], awkward: list[str]) -> str:
        return rng.choice(awkward if odd else ordinary)

    name = pick(["press-01", "line-7-t3", "gw"], NAMES)
    message = pick(["3 components ready", "waiting for health", "apply failed: timeout"],
                   [rng.choice(AWKWARD) if rng.random() < 0.5 else _text(rng)])
    components = tuple(
        ComponentResult(key=f"inst/{c}", instance=pick(["inst", "app"], ["inst", "on", "café"]),
                        component=c, provider=rng.choice(["file", "helm", "script"]),
                        phase=rng.choice(list(ComponentPhase)),
                        message=rng.choice(["", message, "ok", "word " * 30]),
                        revision=pick(["", "a" * 40], ["", "0b1", "1234"]))
        for c in rng.sample(NAMES if odd else ["agent", "config", "certs"], rng.randint(0, 3)))
    errors = [Diagnostic(path=rng.choice(["targets/a.yaml", "x: y"]), line=rng.randint(1, 9),
                         obj=f"Target/{name}", field=rng.choice(["spec", "", "a.b"]),
                         message=_text(rng))
              for _ in range(rng.choice([0, 0, 0, 0, 0, 1, 3]))]
    views = {"inst": {"phase": "RolledBack", "message": message,
                      "rolledBack": {"failedRelease": pick(["1.2.0"], ["on", "", "1.2"]),
                                     "to": "1.1.0"}}} if rng.random() < 0.2 else {}
    status = build_status(
        target=name, site=pick(["eu/berlin/l1", "a"], ["é/b", "x y/z", "on"]),
        observed=pick(["a" * 40], ["", "0b1"]), applied=pick(["b" * 40], ["", "1e3"]),
        last_good=pick(["c" * 40], ["", "yes"]), errors=errors,
        result=TargetResult(name, "a" * 40, components) if components else None,
        solutions={"inst": pick(["sol"], ["yes", ""]), "on": "s2", "app": "s3"},
        releases={"inst": pick(["", "1.4.0"], ["2", "1.4"])}, instances=views,
        hold={"by": "ops", "until": "2026-12-01T00:00:00Z"} if rng.random() < 0.1 else None,
        failure=message if rng.random() < 0.2 else "")
    stamp = pick(["2026-11-23T04:10:00+00:00"], ["2026-11-23T04:10:00Z", "yesterday",
                                                 "2026-13-01T00:00:00Z"])
    return render_status(status, stamp).decode()


def test_status_files_as_the_daemons_write_them() -> None:
    rng = random.Random(20261201)
    taken = sum(check(status_text(rng)) for _ in range(800))
    assert taken > 250  # most files of a fleet are read by their shape


def test_heartbeat_files_are_read_by_their_shape() -> None:
    text = heartbeat_file("eu/berlin/l1", dt.datetime(2026, 11, 23, 4, 10, tzinfo=dt.UTC))
    assert check(text.decode())


def test_generated_documents() -> None:
    rng = random.Random(20261130)
    taken = 0
    for _ in range(1500):
        doc = {_key(rng): _value(rng, 0) for _ in range(rng.randint(1, 8))}
        taken += check(_dump(doc))
    assert taken > 50


OLD_LAYOUT = """apiVersion: reconciler/v1
kind: TargetStatus
metadata: {name: press-01}
site: eu/berlin
target: press-01
phase: Ready
message: "3 components in sync"
observedRevision: 4f2c0d1e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d
lastGoodRevision: 4f2c0d1e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d
lastChange: "2026-11-23T04:10:00Z"
instances: {line-app: {phase: Ready}}
errors: []
"""


@pytest.mark.parametrize(("text", "taken"), [
    (OLD_LAYOUT, False),  # flow mappings and double quotes: the full parser
    (OLD_LAYOUT.replace(" {name: press-01}", "\n  name: press-01").replace('"', "'")
     .replace(" {line-app: {phase: Ready}}", "\n  line-app:\n    phase: Ready"), True),
    ("phase: Ready\nlastChange: 2026-11-23T04:10:00Z\n", False),  # a time: a datetime
    ("phase: Ready\nlastChange: '2026-11-23T04:10:00Z'\n", True),
    ("phase: yes\n", False), ("phase: 'yes'\n", True), ("on: x\n", False),
    ("y: x\n", False), ("phase: Null\n", False), ("phase: NULL_\n", True),
    ("observedRevision: 0b1\n", False), ("observedRevision: 0b12\n", True),
    ("observedRevision: 1234\n", False), ("observedRevision: 12a4\n", True),
    ("observedRevision: 1e3\n", True), ("message: 3 components ready\n", True),
    ("message: 3 4\n", False), ("message: a  b\n", False), ("message: a \n", False),
    ("message: a #b\n", False), ("message: 'a #b'\n", True), ("message: ''\n", True),
    ("message: ''''\n", True), ("message: 'it''s'\n", True), ("message: '''\n", False),
    ("message: 'a' b\n", False), ("message: 'caf\u00e9 \u2603 \U0001f600'\n", True),
    ("message: 'nel\x85'\n", False), ("message: 'ls\u2028'\n", False),
    ("message: 'bom\ufeff'\n", False), ("message: 'tab\t'\n", False),
    ("message: 'bell\x07'\n", False), ("message: 'del\x7f'\n", False),
    ("\ufeffphase: Ready\n", False), ("phase: Ready", False), ("", False), ("\n", False),
    ("phase: Ready\n\nsite: a\n", False), ("phase: Ready\r\n", False),
    ("# c\nphase: Ready\n", False), ("---\nphase: Ready\n", False),
    ("phase: Ready\nphase: Failed\n", False),  # duplicates: PyYAML keeps the last
    ("instances:\n  a:\n    phase: Ready\n  a:\n    phase: Failed\n", False),
    ("instances:\n  a:\n    phase: Ready\n  b:\n    phase: Failed\n", True),
    ("instances:\n  a:\n  b: x\n", True), ("instances: {}\n", True),
    ("instances: []\n", True), ("instances: x\n", True), ("instances:\n", True),
    ("instances:\nphase: Ready\n", True),
    ("instances:\n   a:\n      phase: Ready\n   b: x1\n", True),  # other indentations
    ("instances:\n  a:\n    phase: Ready\n   b: x\n", False),  # between two levels
    ("a:\n  b: c\n d: e\n", False), (" a: b\n", False),
    ("message: a\n  continued\n", False), ("message: a\n  b: c\n", False),
    ("message: |\n  text\n", False), ("message: >\n  text\n", False),
    ("errors:\n- message: x\n", False), ("errors: []\n", True), ("errors: {}\n", True),
    ("lastChange: {}\n", True), ("lastChange: []\n", True), ("lastChange:\n", True),
    ("lastChange:\n  at: x\n", True), ("site:\n  a: b\n", True),
    ("instances:\n  a:\n    solution:\n      x: z\n    rolledBack:\n      failedRelease:"
     " '1.2'\n", True),
    ("instances:\n  a:\n    rolledBack: x\n", True),
    ("key:value\n", False), ("key: &a x\n", False), ("key: !!str x\n", False),
    ("key: [a]\n", False), ("key: {a: b}\n", False), ('key: "x"\n', False),
    ("a.b/c-d_e: f\n", True), ("1a: b\n", False), ("message: /path/to (x), y+z=w\n", True),
    ("message: -x\n", False), ("message: x:\n", False), ("message: ~\n", False),
    ("message: =\n", False), ("message: .inf\n", False), ("release: 1.4.0\n", True),
    ("release: 1.4\n", False), ("release: 1.4.0-rc.1+b2\n", True), ("release: 1.4e+5\n", False),
    ("release: 1:20\n", False), ("message: 1 a:20\n", True), ("message: a:b\n", True),
    ("message: a: b\n", False), ("message: it's \"quoted\" \\ [x] {y} a;b!@%&*?|<>\n", True),
    ("message: a #b\n", False), ("message: a#b\n", False), ("y: z\n", False),
    ("message: x\nsite: y\n", False), ("observedRevision: abc1\n", True),
    ("appliedRevision:\nobservedRevision: abc1\n", True), ("heartbeat: {}\n", True),
    ("heartbeat: 'x'\nlastChange: nope\n", True), ("instances:\n  a: {}\n  b: []\n", True),
    ("instances:\n  a:\n    rolledBack: {}\n", True),
    ("instances:\n  a:\n    rolledBack:\n      failedRelease:\n", True),
    ("instances:\n  a:\n    rolledBack:\n      failedRelease:\n        x: z\n", True),
    ("instances:\n  a:\n    phase: 'it''s'\n    release: 1.2.3\n", True),
    ("target:\n  a: b\nphase: Ready\n", True), ("heartbeat:\n  a: b\n", True),
])
def test_hand_written_text(text: str, taken: bool) -> None:
    assert check(text) is taken


def test_a_shape_seen_before_reads_its_own_values() -> None:
    first = shaped("site: a\nphase: Ready\n")
    second = shaped("site: b\nphase: 'Failed'\n")
    assert first is not None and second is not None
    assert first.document() == {"site": "a", "phase": "Ready"}
    assert second.document() == {"site": "b", "phase": "Failed"}
    assert second.fields() == {"site": "b", "phase": "Failed"}


def test_plain_values_of_every_awkward_character() -> None:
    rng = random.Random(7)
    alphabet = "aAy0123456789 :._/()+,=;'\"!@%&*?|<>[]{}\\-#eEbxo"
    taken = 0
    for _ in range(20_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        if value.startswith(("0x", "-0x", "+0x")) and len(value.split()[0]) <= 3:
            continue  # PyYAML's int constructor fails on a bare "0x" (not a YAMLError)
        taken += check(f"message: {value}\n")
    assert taken > 2000


def test_a_long_file_refused_at_its_end_is_refused_at_once() -> None:
    # values that two kinds of value match (a word and a revision), then a line outside
    # the layout: the check must not try every way of reading the values before it
    revisions = "".join(f"k{i}: e4171c929458f6e2aa328167bd9fd4b79412555e\n" for i in range(400))
    text = f"phase: Ready\n{revisions}errors:\n- x\n"
    started = time.perf_counter()
    assert shaped(text) is None
    assert time.perf_counter() - started < 1.0  # exponential: never in our lifetime
    assert check(text) is False


def test_the_fields_the_table_reads_in_every_form() -> None:
    rng = random.Random(9)
    values: list[Any] = [None, {}, [], "x", "it's", "2026-11-23T04:10:00Z", "1.2.3", "a" * 40,
                         "yes", {"failedRelease": "1.2.0"}, {"a": "b"}]

    def fields(keys: tuple[str, ...], depth: int) -> dict[str, Any]:
        return {key: fields(keys, depth + 1) if depth < 2 and rng.random() < 0.2
                else rng.choice(values) for key in rng.sample(keys, rng.randint(0, len(keys)))}

    keys = ("site", "target", "phase", "message", "observedRevision", "appliedRevision",
            "lastGoodRevision", "lastChange", "heartbeat", "errors")
    taken = 0
    for _ in range(1500):
        doc: dict[str, Any] = fields(keys, 0)
        if rng.random() < 0.8:
            doc["instances"] = {name: fields(("solution", "phase", "release", "rolledBack",
                                              "failedRelease"), 1)
                                for name in rng.sample(["app", "db", "on"], rng.randint(0, 3))}
        taken += check(_dump(doc))
    assert taken > 150  # null is written "null": left to the full parser
