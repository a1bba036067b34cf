"""reconciler.core.template_lookups: text and lookup chains rendered without a Jinja template
give what Jinja gives, values, types and errors alike, over generated templates and contexts."""

from __future__ import annotations

import datetime
import json
import random
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2
import pytest
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from markupsafe import Markup

from reconciler.core.errors import TemplateError
from reconciler.core.template_lookups import MISS, compile_lookup, compile_text
from reconciler.core.templating import (
    _ENV,
    ROOT_NAMES,
    _chain,
    _expression,
    _fail,
    _prepared,
    _template,
    _whole_expression,
    has_template,
    referenced_paths,
    render_text,
    render_value,
    undeclared_roots,
)


class Keys(Mapping[str, Any]):
    """A mapping that is not a dict: the sandbox's own lookups answer for it."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


PARAMS: dict[str, Any] = {
    "n": 3, "f": 1.5, "big": 1e20, "nan": float("nan"), "b": True, "none": None, "zero": 0,
    "s": "tëxt <b>&'\"", "empty": "", "items": ["a", "b"], "nums": [3, 1, 2],
    "conf": {"k": 1, "deep": {"x": [10, 20]}, "0": "zero-key", 0: "int-key", "é": "accent",
             "a b": "space", "it's": "quote", "}": "brace", "true": "t", "if": "i",
             "items": "an items key"},
    "emptydict": {}, "emptylist": [], "markup": Markup("<i>m</i>"),
    "day": datetime.date(2024, 2, 29), "raw": b"bytes", "pair": (1, "two"),
    "dicts": [{"name": "x"}, {"name": "y"}], "unicode": "😀 \u2028 \x85",
    "nested": [[1, [2, {"z": "deep"}]]],
}
SITE = {"name": "l1", "path": "eu/berlin/l1", "level": "line",
        "labels": {"product": "p", "line": "1"}}
CONTEXTS: list[dict[str, Any]] = [
    {"params": PARAMS, "target": {"name": "t1", "labels": {"role": "gw"}, "site": "l1"},
     "site": SITE, "instance": {"name": "inst", "labels": {}},
     "solution": {"name": "app", "labels": {}}},
    {"params": OrderedDict(PARAMS), "target": Keys({"name": "t2", "labels": Keys({})}),
     "site": Keys({**SITE, "labels": OrderedDict(SITE["labels"])}),
     "instance": {"name": "inst", "labels": {"a": "b"}}, "solution": {"name": "app"}},
    {"params": {"n": "not a number", "items": "ab", "conf": ["x"], "s": None},
     "target": {"name": "t3"}},
]

ROOTS = [*sorted(ROOT_NAMES), "nothing", "self", "true", "none", "loop", "range", "cycler"]
STEPS = [".n", ".f", ".s", ".b", ".none", ".items", ".nums", ".conf", ".deep", ".x", ".k",
         ".name", ".labels", ".product", ".path", ".z", ".nested", ".dicts", ".markup",
         ".day", ".raw", ".pair", ".unicode", ".nan", ".big", ".emptydict", ".emptylist",
         "['k']", '["deep"]', "[0]", "[1]", "[2]", "[5]", "['0']", "['é']", "['a b']",
         '["it\'s"]', "['}']", ".true", ".if", ".items", ".__class__", ".keys", ".upper",
         "['s']", "[00]", ".0", "[-1]", "['a\\'b']", "[ 'k' ]", ". k"]
FILTERS = [f for f in sorted(_ENV.filters) if f != "random"] + ["nosuch", "default(7)",
                                                                "d('x', true)", "join(',')"]
SPACES = ["", " ", "  ", "\t", "\n", " \u3000"]
TEXTS = ["", "a", " = ", "$", "{", "}", "}}", "{{", "${", "$$", "%}", "é😀", "\n", "\r\n",
         "${# c #}", "${% if true %}x${% endif %}", "<&>", "${{", "'"]


def existing(rng: random.Random) -> str:
    """A chain that finds something in the first context, written one way or another."""
    root = rng.choice(sorted(ROOT_NAMES))
    text, obj = root, CONTEXTS[0][root]
    while rng.random() < 0.7:
        if isinstance(obj, dict) and obj:
            key = rng.choice(list(obj))
            if isinstance(key, str) and key.isidentifier() and key.isascii() \
                    and rng.random() < 0.6:
                text += f".{key}"
            else:
                text += f"[{key!r}]" if rng.random() < 0.8 else f'["{key}"]'
        elif isinstance(obj, list | tuple | str) and obj:
            index = rng.randrange(len(obj))
            text += f"[{index}]"
            key = index
        else:
            break
        obj = obj[key]
    return text


def expression(rng: random.Random) -> str:
    if rng.random() < 0.4:
        text = existing(rng)
    else:
        text = rng.choice(ROOTS if rng.random() < 0.3 else ["params", "site", "target"])
        text += "".join(rng.choice(STEPS) for _ in range(rng.choice([0, 1, 1, 2, 2, 3])))
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        text += rng.choice(SPACES) + "|" + rng.choice(SPACES) + rng.choice(FILTERS)
    if rng.random() < 0.05:
        text = rng.choice(["-", "+", "(", "not "]) + text
    if rng.random() < 0.05:
        text += rng.choice([" -", " +", ")", " + 1", " ~ 'x'", "()"])
    return rng.choice(SPACES) + text + rng.choice(SPACES)


def template(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.4:
        return rng.choice(["", " ", "\n "]) + "${{" + expression(rng) + "}}" \
            + rng.choice(["", "\n", " "])
    pieces = [rng.choice(TEXTS)]
    for _ in range(rng.randint(1, 3)):
        pieces += ["${{" + expression(rng) + "}}", rng.choice(TEXTS)]
    return "".join(pieces)


def outcome(run: Any) -> tuple[Any, ...]:
    try:
        value = run()
    except TemplateError as exc:
        return ("error", exc.message)
    except Exception as exc:  # what templating lets through, Jinja's filters' own errors
        return ("raised", type(exc), str(exc))
    # generators and iterators have their address in their repr
    return ("ok", type(value), re.sub(r" at 0x[0-9a-f]+", "", repr(value)))


def by_jinja(value: str, context: Mapping[str, Any]) -> Any:
    """render_value with Jinja alone, as templating renders what it does not render itself."""
    if not has_template(value):
        return value
    try:
        expr = _whole_expression(value)
        if expr is not None:
            result = _expression(expr)(**context)
            if isinstance(result, type(_ENV.undefined())):
                result._fail_with_undefined_error()
            return str(result) if isinstance(result, str) else result
        return _template(value).render(**context)
    except CAUGHT as exc:
        raise _fail("s", exc) from None


def text_by_jinja(text: str, context: Mapping[str, Any]) -> Any:
    try:
        return _template(text).render(**context)
    except CAUGHT as exc:
        raise _fail("s", exc) from None


CAUGHT = (jinja2.TemplateError, SecurityError, TypeError, ValueError, ArithmeticError)


def corpus() -> list[str]:
    rng = random.Random(11)
    return [template(rng) for _ in range(1500)]


def test_render_value_gives_what_jinja_gives() -> None:
    fast = 0
    differ = []
    for text in corpus():
        if _prepared(text)[1] is not None:
            fast += 1
        for context in CONTEXTS:
            mine = outcome(lambda: render_value(text, context, source="s"))  # noqa: B023
            theirs = outcome(lambda: by_jinja(text, context))  # noqa: B023
            if mine != theirs:
                differ.append((text, mine, theirs))
    assert differ == []
    assert fast > 300  # the corpus does go through the lookups


def test_render_text_gives_what_jinja_gives() -> None:
    differ = []
    for text in corpus()[:600]:
        for context in CONTEXTS:
            mine = outcome(lambda: render_text(text, context, source="s"))  # noqa: B023
            theirs = outcome(lambda: text_by_jinja(text, context))  # noqa: B023
            if mine != theirs:
                differ.append((text, mine, theirs))
    assert differ == []


FLEET_TEMPLATES = [
    "${{ params.replicas }}",
    "# c1 of sol-07 on ${{ target.name }} (${{ site.path }})\nline = ${{ params.lineId }}\n"
    "signals = ${{ params.signals | tojson }}\nretention_days = ${{ params.retention.days }}\n"
    "product = ${{ site.labels.product }}\n",
    "${{ site.labels['product'] }}-${{ params.conf[\"k\"] }}-${{ params.items[0] }}",
    "${{params.signals|tojson}}",
]


@pytest.mark.parametrize("text", FLEET_TEMPLATES)
def test_lookups_and_plain_filters_are_rendered_without_jinja(text: str) -> None:
    assert _prepared(text)[1] is not None


@pytest.mark.parametrize(
    "text",
    ["${{ params.n + 1 }}", "${% if x %}${% endif %}", "a ${# c #}", "${{- params.n }}",
     "${{ params.n -}}", "${{ params.s | default('x') }}", "${{ nothing.n }}",
     "${{ params['a\\'b'] }}", "${{ params . n }}", "${{ params.n | nosuch }}", "a\r\nb${{ x }}",
     "${{ params.s", "${{ true }}", "${{ self.n }}"],
)
def test_anything_else_is_left_to_jinja(text: str) -> None:
    expr = _whole_expression(text)
    if expr is not None:
        assert compile_lookup(_ENV, expr, ROOT_NAMES) is None
    else:
        assert compile_text(_ENV, text, ROOT_NAMES) is None


def test_what_finds_nothing_is_left_to_jinja() -> None:
    context = CONTEXTS[0]
    for expr in ["params.nope", "params.items[5]", "params.conf.items.x", "params.s.upper",
                 "params.emptylist | first", "params.n | length", "instance.labels.x"]:
        lookup = compile_lookup(_ENV, expr, ROOT_NAMES)
        assert lookup is not None
        assert lookup.value(context) is MISS
    text = compile_text(_ENV, "a ${{ params.n }} ${{ params.nope }}", ROOT_NAMES)
    assert text is not None
    assert text.render(context) is MISS


def test_the_chains_and_names_of_lookups_are_those_of_jinjas_tree() -> None:
    analysed = 0
    for text in corpus():
        if compile_text(_ENV, text, ROOT_NAMES) is None:
            continue
        analysed += 1
        tree = _ENV.parse(text)
        chains = [chain for node in tree.find_all((nodes.Getattr, nodes.Getitem))
                  if (chain := _chain(node)) is not None and len(chain) >= 2]
        assert list(referenced_paths(text, source="s")) == chains, text
        assert undeclared_roots(text, source="s") \
            == set(meta.find_undeclared_variables(tree)) - ROOT_NAMES == set(), text
    assert analysed > 300


@pytest.mark.parametrize(
    "value",
    [["a", "b"], {"b": 1, "a": [1.5, None, True]}, "<é>&'", 3, float("nan"), {1: "x", 2: "y"},
     {1: "x", "b": "y"}, {"k": {1, 2}}, [{"z": 1, "a": {"y": 2, "b": 3}}], (1, "t")],
)
@pytest.mark.parametrize("kwargs", [{"sort_keys": True}, {"sort_keys": True, "indent": 2}])
def test_tojson_dumps_as_json_dumps(value: Any, kwargs: dict[str, Any]) -> None:
    dumps = _ENV.policies["json.dumps_function"]
    assert outcome(lambda: dumps(value, **kwargs)) == outcome(lambda: json.dumps(value, **kwargs))


def test_a_text_is_written_as_a_function_once_when_first_rendered() -> None:
    text = compile_text(_ENV, "a ${{ params.n }} b", ROOT_NAMES)
    assert text is not None
    assert text._render is None  # analysed only: nothing written
    assert text.render(CONTEXTS[0]) == "a 3 b"
    written = text._render
    assert text.render({"params": {"n": 4}}) == "a 4 b"
    assert text._render is written
