"""load_status gives exactly what PyYAML's safe loader gives (with libyaml's parser, as the
readers use it): on status files as the daemon writes them, on thousands of generated
documents full of awkward strings, on hand-written YAML and on text that is not YAML at all
(both raise)."""

from __future__ import annotations

import datetime as dt
import random
import string
from typing import Any

import pytest
import yaml

from reconciler.engine.status import build_status, render_status
from reconciler.gitops.status_parse import YAML_LOADER, load_status

AWKWARD = [
    "", " ", "yes", "No", "ON", "null", "~", "Null", "true", "1", "1.5", "0x1F", "0o17",
    "1_000", "1:20", "1e3", ".inf", ".NaN", "-", "-1", "+1", "2026-11-23",
    "2026-11-23T04:10:00Z", "2026-11-23 04:10:00", "=", "<<", "a: b", "a:b", "a #b", "a#b",
    "#c", "- x", "[x]", "{x: 1}", "&a", "*a", "!t", "|", ">", "%x", "@x", "`x", "'q'",
    '"d"', "it's", 'say "hi"', "tab\there", "cr\rhere", "new\nline", "two\n\nbreaks",
    "trailing ", " leading", "é accent", "snow ☃", "nel\x85", "ls\u2028", "bell\x07",
    "comma, here", "(paren)", "path/to/file.yaml", "/abs/path", "x" * 130,
    "word " * 40, "a  b", "ends:", "?", "? x", "!!str x", "---", "...", "a -- b", "C:\\dir",
]


def _text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.45:
        return rng.choice(AWKWARD)
    if pick < 0.7:
        return " ".join(rng.choice(AWKWARD) for _ in range(rng.randint(1, 6)))
    alphabet = string.ascii_letters + string.digits + " :#-'\"/.,!?&*|>{}[]\n\té☃"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 140)))


def _value(rng: random.Random, depth: int) -> Any:
    pick = rng.random()
    if depth < 3 and pick < 0.2:
        return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 3 and pick < 0.3:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if pick < 0.35:
        return rng.choice([None, True, False, 0, 7, -3, 2.5, 10**12])
    return _text(rng)


def _key(rng: random.Random) -> str:
    return rng.choice(["phase", "message", "c0", "my-app", "on", "1", "a b", "x.y",
                       "lastChange", "yes", "errors", "k:", "é"]) + rng.choice(["", "", "2"])


def _dump(doc: Any) -> str:
    # the options of reconciler.engine.status, which writes the files
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def _same(text: str) -> None:
    try:
        expected = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        with pytest.raises(yaml.YAMLError):
            load_status(text)
        assert exc is not None
        return
    got = load_status(text)
    assert got == expected, text
    assert repr(got) == repr(expected), text  # the same types too (1 is not True)


def test_generated_documents_read_the_same_as_pyyaml() -> None:
    rng = random.Random(20261130)
    for _ in range(3000):
        doc = {_key(rng): _value(rng, 0) for _ in range(rng.randint(1, 8))}
        _same(_dump(doc))


def test_status_files_as_the_daemon_writes_them() -> None:
    status = build_status(target="press-01", site="eu/berlin/line-1", observed="a" * 40,
                          applied="b" * 40, last_good="b" * 40, result=None,
                          failure="conf/c0: apply failed: it's \"broken\" " + "word " * 30)
    text = render_status(status, "2026-11-23T04:10:00+00:00").decode()
    assert "\n  " in text.split("message:", 1)[1].split("\n", 1)[1][:3] or len(text) > 100
    _same(text)
    doc = load_status(text)
    assert doc["phase"] == "Failed" and doc["lastChange"] == "2026-11-23T04:10:00+00:00"
    assert doc["message"].startswith("conf/c0: apply failed: it's \"broken\" word word")


@pytest.mark.parametrize("text", [
    "phase: Ready\nlastChange: 2026-11-23T04:10:00Z\n",  # a timestamp: datetime
    "metadata: {name: t}\ninstances: {app: {phase: Ready}}\nerrors: []\n",  # flow style
    "a: 1\na: 2\n",  # a duplicate key: the last one wins
    "# a comment\nphase: Ready # and another\n",
    "---\nphase: Ready\n",
    "phase: Ready\n...\n",
    "list:\n  - a\n  - b\n",  # an indented sequence
    "text: |\n  two\n  lines\n",
    "text: >\n  folded\n  text\n",
    "anchor: &a x\nalias: *a\n",
    "tagged: !!str 1\n",
    "just words\n",
    "",
    "\n\n",
    "- a\n- b: 1\n  c:\n    d: e\n- - nested\n",
    "a:\nb: 1\n",
    "a: 'multi\n  line'\n",
    "a: \"escaped \\u00e9 \\n\"\n",
    "a: plain\n  continued\n    further\n",
    "a: x\n\n  y\n",
    "a:\tb\n",
    "a: b\r\n",
    "\ufeffa: b\n",
    "a: b\n  c: d\n",
    "a: b: c\n",
    "a: [1, 2\n",
    "a: 'unterminated\n",
    "a:\n  - x\n b: 1\n",
    " a: 1\n",
    "a: 1\n b: 2\n",
    "a:b\n",
    "key: - x\n",
    "1: one\n2026-01-01: day\n",
    "on: yes\n",
    "site: ---\n", "site: ...\n", "site: --- x\n", "site: ... x\n", "a: 1\nb: ---x\n",
    "a: \x00\n",
])
def test_hand_written_and_broken_text_reads_the_same(text: str) -> None:
    _same(text)


def test_timestamps_keep_their_type() -> None:
    doc = load_status("lastChange: 2026-11-23T04:10:00Z\nquoted: '2026-11-23T04:10:00Z'\n")
    assert doc["lastChange"] == dt.datetime(2026, 11, 23, 4, 10, tzinfo=dt.UTC)
    assert doc["quoted"] == "2026-11-23T04:10:00Z"
