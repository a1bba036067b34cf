"""reconciler.core.templating: typed whole expressions, interpolation, the sandbox, static
analysis."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from reconciler.core.errors import TemplateError
from reconciler.core.templating import (
    has_template,
    referenced_paths,
    render_text,
    render_value,
    undeclared_roots,
)

CONTEXT: dict[str, Any] = {
    "params": {"n": 3, "f": 1.5, "b": True, "s": "text", "items": ["a", "b"],
               "conf": {"k": 1, "deep": {"x": [10, 20]}}, "none": None, "empty": ""},
    "target": {"name": "t1", "labels": {"role": "gw"}},
    "site": {"name": "l1", "path": "eu/berlin/l1", "labels": {"line": "1"}},
    "instance": {"name": "inst", "labels": {}},
    "solution": {"name": "app", "labels": {}},
}


def render(text: str) -> Any:
    return render_value(text, CONTEXT, source="test.yaml: Solution/app: spec.x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("${{ params.n }}", 3, id="int"),
        pytest.param("${{ params.f }}", 1.5, id="float"),
        pytest.param("${{ params.b }}", True, id="bool"),
        pytest.param("${{ params.none }}", None, id="none"),
        pytest.param("${{ params.items }}", ["a", "b"], id="list"),
        pytest.param("${{ params.conf }}", {"k": 1, "deep": {"x": [10, 20]}}, id="dict"),
        pytest.param("${{params.n}}", 3, id="no-inner-blanks"),
        pytest.param("\n ${{ params.n }}\n", 3, id="blank-lines-around"),
        pytest.param("${{ params.conf['deep'].x[0] }}", 10, id="item-and-index"),
        pytest.param("${{ params.n * 2 }}", 6, id="arithmetic"),
        pytest.param("${{ params.items | length }}", 2, id="filter-keeps-type"),
        pytest.param("${{ params.b and params.n > 2 }}", True, id="boolean-expression"),
        pytest.param("${{ params.s }}", "text", id="string"),
        pytest.param("${{ target.name }}", "t1", id="target-name"),
        pytest.param("${{ site.labels.line }}", "1", id="site-label"),
        pytest.param("${{ params.missing | default(7) }}", 7, id="default-for-missing-key"),
        pytest.param("${{ params.empty | default('x', true) }}", "x", id="default-for-empty"),
        pytest.param("${{ params.conf | tojson }}", '{"deep": {"x": [10, 20]}, "k": 1}',
                     id="tojson-is-plain-str"),
    ],
)
def test_whole_expression_keeps_its_type(text: str, expected: Any) -> None:
    result = render(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("n=${{ params.n }}", "n=3", id="prefix"),
        pytest.param("${{ params.n }}/${{ params.s }}", "3/text", id="two-expressions"),
        pytest.param("${{ params.items }}x", "['a', 'b']x", id="list-as-text"),
        pytest.param("v=${{ params.items | tojson }}", 'v=["a", "b"]', id="tojson-inline"),
        pytest.param("${% for i in params.items %}[${{ i }}]${% endfor %}", "[a][b]",
                     id="block"),
        pytest.param("${% if params.b %}yes${% else %}no${% endif %}", "yes", id="if-block"),
        pytest.param("a${# comment #}${{ params.n }}b", "a3b", id="comment"),
        pytest.param("{{ 7 * 7 }} {% raw %}", "{{ 7 * 7 }} {% raw %}",
                     id="plain-jinja-syntax-is-text"),
        pytest.param("cost: $5 and ${HOME} and $(x)", "cost: $5 and ${HOME} and $(x)",
                     id="dollar-without-braces"),
        pytest.param("<b>${{ params.s }}</b> & ${{ '<i>' }}", "<b>text</b> & <i>",
                     id="no-html-escaping"),
        pytest.param("x\n${{ params.n }}\n", "x\n3\n", id="trailing-newline-kept"),
    ],
)
def test_anything_else_is_string_interpolation(text: str, expected: str) -> None:
    result = render(text)
    assert result == expected
    assert type(result) is str


def test_trailing_blank_after_whole_expression_counts_as_whole() -> None:
    # a YAML block scalar adds a newline; it must not turn an int into "3\n"
    assert render("${{ params.n }}\n") == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("${{ params.nope }}", "'nope' is undefined", id="undefined-param"),
        pytest.param("x ${{ params.nope }}", "'nope' is undefined", id="undefined-interpolated"),
        pytest.param("${{ nothing }}", "'nothing' is undefined", id="undefined-root"),
        pytest.param("${{ site.labels.zone }}", "'zone' is undefined", id="undefined-label"),
        pytest.param("${{ params.items[5] }}", "'5' is undefined", id="index-out-of-range"),
        pytest.param("${{ params.n + params.nope }}", "undefined",
                     id="undefined-in-arithmetic"),
        pytest.param("${{ params.__class__ }}", "'__class__' is undefined", id="dunder-attr"),
        pytest.param("${{ params.s.upper }}", "'upper' is undefined", id="str-method-attr"),
        pytest.param("${{ params.conf.items }}", "'items' is undefined", id="dict-method-attr"),
        pytest.param("${{ params['__class__'] }}", "'__class__' is undefined", id="dunder-item"),
        pytest.param("${{ params.items.__len__ }}", "undefined", id="list-dunder"),
        pytest.param("${{ range(10) }}", "calls are not allowed", id="call-global"),
        pytest.param("${{ params.s.upper() }}", "calls are not allowed", id="call-method"),
        pytest.param("${{ lipsum() }}", "calls are not allowed", id="call-lipsum"),
        pytest.param("${% for x in range(9**9) %}${% endfor %}", "calls are not allowed",
                     id="call-in-block"),
        pytest.param("${{ params.n / 0 }}", "template failed", id="division-by-zero"),
        pytest.param("${{ params.n + }}", "template syntax error", id="syntax"),
        pytest.param("${% if %}", "template syntax error", id="block-syntax"),
        pytest.param("${{ cycler.__init__.__globals__ }}", "undefined", id="globals-escape"),
    ],
)
def test_errors_are_template_errors_naming_the_source(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text)
    assert fragment in info.value.message
    assert info.value.message.startswith("test.yaml: Solution/app: spec.x: ")
    assert info.value.reason == "TemplateFailed"


def test_render_text_always_interpolates() -> None:
    text = "# generated\nn: ${{ params.n }}\nitems: ${{ params.items | tojson }}\n"
    out = render_text(text, CONTEXT, source="agent.conf.tmpl")
    assert out == '# generated\nn: 3\nitems: ["a", "b"]\n'
    assert yaml.safe_load(out) == {"n": 3, "items": ["a", "b"]}
    assert render_text("${{ params.n }}", CONTEXT, source="f") == "3"
    assert render_text("no templates here", CONTEXT, source="f") == "no templates here"
    with pytest.raises(TemplateError, match=r"^f: 'x' is undefined"):
        render_text("${{ params.x }}", CONTEXT, source="f")


def test_values_are_never_rendered_twice() -> None:
    context = {**CONTEXT, "params": {**CONTEXT["params"], "v": "${{ params.n }}"}}
    assert render_value("${{ params.v }}", context, source="s") == "${{ params.v }}".replace(
        "v", "n", 1)
    assert render_value("<${{ params.v }}>", context, source="s") == "<${{ params.n }}>"
    assert render_text("${{ params.v }}", context, source="s") == "${{ params.n }}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("${{ x }}", True, id="expression"),
        pytest.param("${% if x %}${% endif %}", True, id="block"),
        pytest.param("{{ x }}", False, id="plain-jinja"),
        pytest.param("$ {{ x }}", False, id="split-marker"),
        pytest.param("", False, id="empty"),
    ],
)
def test_has_template(text: str, expected: bool) -> None:
    assert has_template(text) is expected


@pytest.mark.parametrize(
    ("text", "roots"),
    [
        pytest.param("${{ params.a }} ${{ site.name }}", set(), id="known-roots"),
        pytest.param("${{ param.a }}", {"param"}, id="misspelt-root"),
        pytest.param("${{ env.HOME }} ${{ os }}", {"env", "os"}, id="two-unknown"),
        pytest.param("${% for i in params.items %}${{ i }}${% endfor %}", set(),
                     id="loop-variable-is-declared"),
    ],
)
def test_undeclared_roots(text: str, roots: set[str]) -> None:
    assert undeclared_roots(text, source="s") == roots


@pytest.mark.parametrize(
    ("text", "chains"),
    [
        pytest.param("${{ params.a }}", {("params", "a")}, id="attribute"),
        pytest.param("${{ params['b'] }}", {("params", "b")}, id="item"),
        pytest.param("${{ site.labels.zone }}", {("site", "labels"), ("site", "labels", "zone")},
                     id="nested"),
        pytest.param("${{ params.a | default(params.b) }} x ${{ target.name }}",
                     {("params", "a"), ("params", "b"), ("target", "name")}, id="several"),
        pytest.param("${{ params[params.k] }}", {("params", "k")}, id="dynamic-key-skipped"),
    ],
)
def test_referenced_paths(text: str, chains: set[tuple[str, ...]]) -> None:
    assert set(referenced_paths(text, source="s")) == chains


def test_static_analysis_reports_syntax_errors() -> None:
    with pytest.raises(TemplateError, match=r"^src: template syntax error"):
        undeclared_roots("${{ params. }}", source="src")
    with pytest.raises(TemplateError, match=r"^src: template syntax error"):
        list(referenced_paths("${% for %}", source="src"))
