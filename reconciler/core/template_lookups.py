"""Templates that are only text and lookups, rendered without running a Jinja template.

Nearly every property a fleet templates is text with lookup chains in it,
``${{ params.lineId }}``, ``${{ site.labels['product'] }}``, now and then through filters
without arguments (``${{ params.signals | tojson }}``), rendered once per component of every
target. :mod:`reconciler.core.templating` renders those here, for the same result Jinja gives:

* the root name is one of the names templates may use, looked up in the context;
* each step is looked up by the environment's own ``getattr``/``getitem`` (the sandbox's:
  keys of mappings, indexes of lists), a plain dict's key directly, which is what they do;
* each filter is the environment's own, called as compiled templates call it: given the
  evaluation context or the environment first when it asks for them (a filter that asks for
  the template's context is left to Jinja);
* interpolated values are ``str()``-ed and joined, as Jinja's output is.

Anything else answers :data:`MISS` and the caller renders with Jinja: other syntax (found
when the text is read), and, when rendering, a lookup that finds nothing, a filter that
fails or whose result is undefined. So every error is Jinja's own, message included.
A text is rendered by a small function written for it when it is first rendered (as Jinja
compiles a template); templating also reads a text's names and chains off its lookups
(:meth:`TextLookups.chains`) instead of compiling Jinja's tree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import jinja2
from jinja2.nodes import EvalContext

__all__ = ["MISS", "Lookup", "TextLookups", "compile_lookup", "compile_text"]

MISS: Final = object()  # not rendered here: ask Jinja

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# a step: .name, ['key'], ["key"] (no escapes), [index]
_STEP = re.compile(rf"\.(?P<attr>{_NAME})|\['(?P<single>[^'\\]*)'\]|\[\"(?P<double>[^\"\\]*)\"\]"
                   r"|\[(?P<index>0|[1-9][0-9]*)\]")
_STEPS = rf"(?:\.{_NAME}|\['[^'\\]*'\]|\[\"[^\"\\]*\"\]|\[(?:0|[1-9][0-9]*)\])*"
_EXPRESSION = re.compile(rf"\s*(?P<root>{_NAME})(?P<steps>{_STEPS})"
                         rf"(?P<filters>(?:\s*\|\s*{_NAME})*)\s*")
_FILTER = re.compile(_NAME)
_START, _END = "${{", "}}"


Getter = Callable[[Any, Any], Any]
Step = tuple[Getter, str | int]  # the environment's getattr or getitem, the key
Filter = Callable[[Any], Any]


def _evaluate(context: Mapping[str, Any], root: str, steps: tuple[Step, ...],
              filters: tuple[Filter, ...]) -> Any:
    """What a lookup chain and its filters evaluate to, or MISS; may raise."""
    if root not in context:
        return MISS
    obj = context[root]
    for getter, key in steps:
        if type(obj) is dict:
            # the sandbox's getattr and getitem on a dict: its key, when it has it
            if key not in obj:
                return MISS
            obj = obj[key]
        else:
            obj = getter(obj, key)
            if isinstance(obj, jinja2.Undefined):
                return MISS
    if filters:
        for call in filters:
            obj = call(obj)
        if isinstance(obj, jinja2.Undefined):
            return MISS
    return obj


class Lookup:
    """One lookup chain and its filters: ``params.retention['days'] | string``."""

    __slots__ = ("filters", "root", "steps")

    def __init__(self, root: str, steps: tuple[Step, ...], filters: tuple[Filter, ...]) -> None:
        self.root = root
        self.steps = steps
        self.filters = filters

    def value(self, context: Mapping[str, Any]) -> Any:
        """What the expression evaluates to, or MISS."""
        try:
            return _evaluate(context, self.root, self.steps, self.filters)
        except Exception:  # Jinja says what went wrong, the same way
            return MISS


class _Missing(Exception):
    """A lookup found nothing: the text is left to Jinja."""


def _step(obj: Any, key: str | int, getter: Getter) -> Any:
    """A step from anything but a dict, through the environment's getattr or getitem."""
    found = getter(obj, key)
    if isinstance(found, jinja2.Undefined):
        raise _Missing
    return found


class TextLookups:
    """Text with lookups in it: ``head``, then the value of each lookup and the text after it.

    Rendered by a function written for the text, as Jinja compiles a template (but from what
    the text is known to hold: keys and texts as literals, each root looked up once, a plain
    dict's key directly), any exception making it answer MISS."""

    __slots__ = ("_render", "head", "pieces")

    def __init__(self, head: str, lookups: tuple[Lookup, ...], texts: tuple[str, ...]) -> None:
        self.head = head
        self.pieces = tuple((lookup.root, lookup.steps, lookup.filters, text)
                            for lookup, text in zip(lookups, texts, strict=True))
        # written when first rendered: validation analyses texts it may never render
        self._render: Callable[[Mapping[str, Any]], Any] | None = None

    def render(self, context: Mapping[str, Any]) -> Any:
        """The text rendered (a str), or MISS."""
        if self._render is None:
            self._render = self._compiled()
        return self._render(context)

    def _compiled(self) -> Callable[[Mapping[str, Any]], Any]:
        names: dict[str, Any] = {"MISS": MISS, "_Missing": _Missing, "_step": _step,
                                 "_Undefined": jinja2.Undefined}
        roots = {root: f"r{i}" for i, root in enumerate(dict.fromkeys(
            root for root, _, _, _ in self.pieces))}
        lines = ["def render(context):", "  try:"]
        lines += [f"    {name} = context[{root!r}]" for root, name in roots.items()]
        out = [repr(self.head)]
        for n, (root, steps, filters, text) in enumerate(self.pieces):
            lines.append(f"    o = {roots[root]}")
            for m, (getter, key) in enumerate(steps):
                names[f"g{n}_{m}"] = getter
                # the sandbox's getattr and getitem on a dict: its key (KeyError: MISS)
                lines.append(f"    o = o[{key!r}] if type(o) is dict "
                             f"else _step(o, {key!r}, g{n}_{m})")
            for m, call in enumerate(filters):
                names[f"f{n}_{m}"] = call
                lines.append(f"    o = f{n}_{m}(o)")
            if filters:
                lines.append("    if isinstance(o, _Undefined): return MISS")
            lines.append(f"    v{n} = o if type(o) is str else str(o)")
            out += [f"v{n}", repr(text)]
        lines.append(f"    return ''.join(({', '.join(out)},))")
        lines += ["  except Exception:  # Jinja says what went wrong, the same way",
                  "    return MISS"]
        exec(compile("\n".join(lines), "<template lookups>", "exec"), names)  # noqa: S102
        return names["render"]  # type: ignore[no-any-return]

    def chains(self) -> Iterator[tuple[str, ...]]:
        """The lookup chains of the text as the lookups of Jinja's syntax tree give them
        (templating.referenced_paths): each expression's whole chain, then each shorter
        one it is made of, down to two names."""
        for root, steps, _, _ in self.pieces:
            chain = (root, *(str(key) for _, key in steps))
            for length in range(len(chain), 1, -1):
                yield chain[:length]


def compile_lookup(environment: jinja2.Environment, expression: str,
                   roots: frozenset[str]) -> Lookup | None:
    """The expression inside ``${{ }}`` as a :class:`Lookup`, None when it is anything else."""
    match = _EXPRESSION.fullmatch(expression)
    if match is None or match["root"] not in roots:
        return None
    steps: list[tuple[Getter, str | int]] = []
    for step in _STEP.finditer(match["steps"]):
        if step["attr"] is not None:
            steps.append((environment.getattr, step["attr"]))
        elif step["index"] is not None:
            steps.append((environment.getitem, int(step["index"])))
        else:
            key = step["single"] if step["single"] is not None else step["double"]
            steps.append((environment.getitem, key))
    names = _FILTER.findall(match["filters"])
    if any(name not in environment.filters for name in names):
        return None  # Jinja refuses the template: let it say so
    # one evaluation context for all (filters read it: autoescape is off)
    eval_ctx = EvalContext(environment)
    filters = [_bound_filter(environment, name, eval_ctx) for name in names]
    if any(call is None for call in filters):
        return None
    return Lookup(match["root"], tuple(steps), tuple(call for call in filters if call))


def _marker(decorator: Callable[[Any], Any]) -> Any:
    """What one of Jinja's ``pass_*`` decorators marks a function with."""
    return getattr(decorator(lambda: None), "jinja_pass_arg", None)


_PASS_EVAL_CONTEXT = _marker(jinja2.pass_eval_context)
_PASS_ENVIRONMENT = _marker(jinja2.pass_environment)


def _bound_filter(environment: jinja2.Environment, name: str,
                  eval_ctx: EvalContext) -> Filter | None:
    """The filter called as the environment calls it, with what it asks to be passed first
    (None: it wants the template's context, which only Jinja has)."""
    func = environment.filters[name]
    wants = getattr(func, "jinja_pass_arg", None)
    if wants is None:
        return func  # type: ignore[no-any-return]
    if wants is _PASS_EVAL_CONTEXT:
        return functools.partial(func, eval_ctx)
    if wants is _PASS_ENVIRONMENT:
        return functools.partial(func, environment)
    return None


def compile_text(environment: jinja2.Environment, text: str,
                 roots: frozenset[str]) -> TextLookups | None:
    """``text`` as literal pieces and lookups, None when it holds any other template syntax
    (blocks, comments, other expressions) or a carriage return (which Jinja's lexer turns
    into a newline)."""
    if "${%" in text or "${#" in text or "\r" in text:
        return None
    texts: list[str] = []
    lookups: list[Lookup] = []
    position = 0
    while True:
        start = text.find(_START, position)
        if start < 0:
            break
        end = text.find(_END, start + len(_START))
        if end < 0:
            return None
        lookup = compile_lookup(environment, text[start + len(_START):end], roots)
        if lookup is None:
            return None
        texts.append(text[position:start])
        lookups.append(lookup)
        position = end + len(_END)
    texts.append(text[position:])
    return TextLookups(texts[0], tuple(lookups), tuple(texts[1:]))
