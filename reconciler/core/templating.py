"""Sandboxed templating of component properties and repository files.

Expressions are written ``${{ params.NAME }}`` (Jinja2 syntax inside); blocks, rarely needed,
are ``${% ... %}``. The engine is Jinja2's immutable sandbox, narrowed further: the only
lookups are keys of mappings and indexes of lists, so no template can reach a Python attribute
or method (``${{ params.__class__ }}`` is simply undefined), and calls are refused. Undefined
names are errors, never empty strings.

A property whose whole value is one expression keeps the value's type (``${{ params.replicas }}``
stays an int); anything else is string interpolation. Used by ``reconciler.core.rendering`` for
properties and by providers for files they render (``render_text``).

Text whose only template syntax is lookups (``${{ params.x }}``, ``${{ site.labels['y'] |
tojson }}``) is rendered by ``reconciler.core.template_lookups`` with the same result;
everything else, and every error, comes from Jinja.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.core.errors import TemplateError
from reconciler.core.template_lookups import MISS, TextLookups, compile_lookup, compile_text

__all__ = [
    "ROOT_NAMES",
    "has_template",
    "referenced_paths",
    "render_text",
    "render_value",
    "undeclared_roots",
]

ROOT_NAMES = frozenset({"params", "target", "site", "instance", "solution"})
_MARK = "${{"
_BLOCK = "${%"
_WHOLE = re.compile(r"^\s*\$\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class _Undefined(jinja2.StrictUndefined):
    """Fails on any use, with a message that names the missing key."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        name = self._undefined_name
        if self._undefined_hint:
            raise jinja2.UndefinedError(self._undefined_hint)
        raise jinja2.UndefinedError(f"'{name}' is undefined")

    __str__ = __iter__ = __len__ = __bool__ = __eq__ = __hash__ = _fail_with_undefined_error


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with attribute access replaced by key lookup only."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return self.undefined(hint=f"'{attribute}' is undefined", obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            if argument in obj:
                return obj[argument]
        elif isinstance(obj, list | tuple | str) and isinstance(argument, int | slice):
            try:
                return obj[argument]
            except IndexError:
                pass
        return self.undefined(hint=f"'{argument}' is undefined", obj=obj, name=str(argument))

    def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        raise SecurityError("calls are not allowed in templates")


_ENV = _Sandbox(
    variable_start_string=_MARK,
    variable_end_string="}}",
    block_start_string=_BLOCK,
    block_end_string="%}",
    comment_start_string="${#",
    comment_end_string="#}",
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,
)
# tojson dumps with Jinja's own arguments (sorted keys) through one encoder made once, not one
# made for each call as json.dumps does with any argument: the same text, in half the time
_ENCODER = json.JSONEncoder(sort_keys=True)


def _dumps(obj: Any, **kwargs: Any) -> str:
    if kwargs == {"sort_keys": True}:
        return _ENCODER.encode(obj)
    return json.dumps(obj, **kwargs)


_ENV.policies["json.dumps_function"] = _dumps
# Jinja's default globals (range, dict, lipsum, cycler, joiner, namespace) are all callables,
# which the sandbox refuses anyway; without them every render also skips copying them into
# its context, a quarter of the cost of rendering a short property.
_ENV.globals.clear()


def has_template(value: str) -> bool:
    return _MARK in value or _BLOCK in value


@functools.lru_cache(maxsize=8192)
def _template(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


@functools.lru_cache(maxsize=8192)
def _expression(expr: str) -> Any:
    return _ENV.compile_expression(expr, undefined_to_none=False)


def _whole_expression(text: str) -> str | None:
    match = _WHOLE.match(text)
    if match is None:
        return None
    expr = match.group("expr")
    if _MARK in expr or "}}" in expr or _BLOCK in text:
        return None
    return expr


def _fail(source: str, exc: Exception) -> TemplateError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateError(f"{source}: template syntax error: {exc.message}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"{source}: not allowed in a sandboxed template: {exc}")
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(f"{source}: {exc.message}")
    return TemplateError(f"{source}: template failed: {exc}")


Renderer = Callable[[Mapping[str, Any]], Any]


@functools.lru_cache(maxsize=8192)
def _prepared(value: str) -> tuple[str | None, Renderer | None]:
    """(the whole expression or None, what renders the value without Jinja or None)."""
    expr = _whole_expression(value)
    if expr is not None:
        lookup = compile_lookup(_ENV, expr, ROOT_NAMES)
        return expr, None if lookup is None else lookup.value
    text = _text(value)
    return None, None if text is None else text.render


def render_value(value: str, context: Mapping[str, Any], *, source: str) -> Any:
    """Render one string property; a single whole expression keeps its type."""
    if not has_template(value):
        return value
    expr, fast = _prepared(value)
    if fast is not None:  # text and lookups only (see template_lookups): Jinja's result
        result = fast(context)
        if result is not MISS:
            # a filter's Markup made a plain str, as below
            return str(result) if isinstance(result, str) else result
    try:
        if expr is not None:
            result = _expression(expr)(**context)
            if isinstance(result, jinja2.Undefined):
                result._fail_with_undefined_error()
            if isinstance(result, str) and type(result) is not str:
                # filters such as tojson return markupsafe.Markup: a str subclass that
                # safe YAML cannot dump and that HTML-escapes whatever is appended to it
                return str(result)
            return result
        return _template(value).render(**context)
    except (jinja2.TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
        raise _fail(source, exc) from None


def render_text(text: str, context: Mapping[str, Any], *, source: str) -> str:
    """Render a whole file (or any text) with string interpolation."""
    if not has_template(text):
        return text
    fast = _text(text)
    if fast is not None:
        result = fast.render(context)
        if isinstance(result, str):
            return result
    try:
        return _template(text).render(**context)
    except (jinja2.TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
        raise _fail(source, exc) from None


@functools.lru_cache(maxsize=8192)
def _text(text: str) -> TextLookups | None:
    """``text`` as text and lookups, for rendering it and for analysing it."""
    return compile_text(_ENV, text, ROOT_NAMES)


@functools.lru_cache(maxsize=8192)
def _parsed(text: str) -> nodes.Template:
    return _ENV.parse(text)


def _parse(text: str, source: str) -> nodes.Template:
    """The syntax tree of ``text`` (cached: validation walks each template twice).

    Callers only read the tree; it must not be modified.
    """
    try:
        return _parsed(text)
    except jinja2.TemplateSyntaxError as exc:
        raise _fail(source, exc) from None


def undeclared_roots(text: str, *, source: str) -> set[str]:
    """Top-level names a template uses that are not among ``ROOT_NAMES``."""
    if _text(text) is not None:  # lookups from ROOT_NAMES through known filters only
        return set()
    tree = _parse(text, source)
    try:
        # this compiles the tree, which is where an unknown filter or test is found
        return set(meta.find_undeclared_variables(tree)) - ROOT_NAMES
    except jinja2.TemplateSyntaxError as exc:
        raise _fail(source, exc) from None


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        head = _chain(node.node)
        return None if head is None else (*head, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        head = _chain(node.node)
        return None if head is None else (*head, str(node.arg.value))
    return None


def referenced_paths(text: str, *, source: str) -> Iterator[tuple[str, ...]]:
    """Every lookup chain a template makes, e.g. ``("params", "replicas")``."""
    lookups = _text(text)
    if lookups is not None:  # as Jinja's tree gives them: see TextLookups.chains
        yield from lookups.chains()
        return
    tree = _parse(text, source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain is not None and len(chain) >= 2:
            yield chain
