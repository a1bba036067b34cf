"""Parameter values of one (instance, target) pair, each with where it was set.

Precedence, lowest first (DESIGN §2): solution defaults < the instance's profile < instance
params < site params from the root down to the target's site (general, then solution-scoped,
at each level) < target params. General site and target params apply to the solutions that
declare them; everything else must name a declared parameter (checked by validation).

:func:`resolve_params` resolves one pair. The render stage resolves every pair of a fleet:
through :class:`SharedParams` the layers below the target (everything but the target's own
params) are resolved once per instance, solution and site, and a target's own params are
laid over that, so the values and origins its params do not change are the objects every
target of the site shares; equal origins are made one object too (what a stored revision
keeps of them is then kept once). Pure: reads nothing but the fleet (and secret files,
through the resolver passed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import Fleet, Instance, Solution, Source, Target
from reconciler.core.secrets import is_secret_ref, secret_file

__all__ = ["Origin", "ResolvedParam", "SecretResolver", "SharedParams", "resolve_params"]

T = TypeVar("T")
SecretResolver = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a parameter value was set."""

    level: str  # "default", "profile:<name>", "instance", a hierarchy level name, "target"
    obj: str  # "Solution/web", "Site/berlin", ...
    path: str  # repository-relative file
    line: int
    field: str  # dotted field path of the setting

    def format(self) -> str:
        return f"{self.path}:{self.line} ({self.level}, {self.obj} {self.field})"


@dataclass(frozen=True, slots=True)
class ResolvedParam:
    name: str
    value: Any
    origin: Origin
    overridden: tuple[Origin, ...] = ()  # lower-precedence settings this value replaced
    secret: bool = False
    secret_ref: str = ""  # the site-local file a secretFrom value names
    error: str = ""  # why a secretFrom value could not be read (value is then a placeholder)

    @property
    def unresolved(self) -> bool:
        """A secretFrom value whose file was not read (repository-only validation, error)."""
        return bool(self.secret_ref) and (bool(self.error) or self.value is None)


Layer = tuple[Origin, Mapping[str, Any], Source]  # (origin template, values, source)


def _layers_below(fleet: Fleet, instance: Instance, site_name: str, solution: Solution
                  ) -> Iterator[Layer]:
    """Each layer of settings below the target's own, lowest precedence first.

    A released solution's settings are named ``<tag>:<path>`` (``app/v1.2.0:solution.yaml``):
    they come from the tag, not from the tracked revision.
    """
    src = solution.source
    sol_path = f"{solution.release}:{src.path}" if solution.release else src.path
    for name, param in solution.parameters.items():
        if param.has_default:
            yield (Origin("default", f"Solution/{solution.name}", sol_path,
                          src.line_of("spec", "parameters", name, "default"),
                          f"spec.parameters.{name}.default"),
                   {name: param.rules["default"]}, src)
    if instance.profile and instance.profile in solution.profiles:
        yield (Origin(f"profile:{instance.profile}", f"Solution/{solution.name}", sol_path, 0,
                      f"spec.profiles.{instance.profile}"),
               solution.profiles[instance.profile], src)
    yield (Origin("instance", f"Instance/{instance.name}", instance.source.path, 0,
                  "spec.params"), instance.params, instance.source)
    for site in fleet.site_chains.get(site_name, ()):
        level = fleet.site_level(site.name)
        yield (Origin(level, f"Site/{site.name}", site.source.path, 0, "spec.params"),
               site.params, site.source)
        scoped = site.solution_params.get(solution.name)
        if scoped:
            yield (Origin(level, f"Site/{site.name}", site.source.path, 0,
                          f"spec.solutionParams.{solution.name}"), scoped, site.source)


def _target_layer(target: Target) -> Layer:
    return (Origin("target", f"Target/{target.name}", target.source.path, 0, "spec.params"),
            target.params, target.source)


class _Same:
    """No sharing: every value is its own object (a pair resolved on its own)."""

    def __call__(self, value: T) -> T:
        return value

    def param(self, param: ResolvedParam) -> ResolvedParam:
        return param


_SAME = _Same()


class _Shared(_Same):
    """Equal origins (and chains of them) and equal parameters made one object."""

    def __init__(self) -> None:
        self._found: dict[Any, Any] = {}
        self._params: dict[tuple[Any, ...], ResolvedParam] = {}

    def __call__(self, value: T) -> T:
        found: T = self._found.setdefault(value, value)
        return found

    def param(self, param: ResolvedParam) -> ResolvedParam:
        # by the value's identity: a value need not be hashable, and the parameter kept
        # here keeps its value alive, so the id is its own
        key = (param.name, id(param.value), param.origin, param.overridden, param.secret)
        return self._params.setdefault(key, param)


def _lay(resolved: dict[str, ResolvedParam], layers: Iterable[Layer], solution: Solution,
         secrets: SecretResolver | None, shared: _Same, chains: _Same) -> None:
    """Lay ``layers`` over ``resolved``, lowest precedence first; ``shared`` makes equal
    origins and parameters one object, ``chains`` equal chains of overridden origins and
    equal field names."""
    for template, values, source in layers:
        for name, value in values.items():
            param = solution.parameters.get(name)
            if param is None:
                continue  # general params for other solutions; unknown names: validation
            if template.line:
                origin = shared(template)
            else:
                field_parts = [*template.field.split("."), name]
                origin = shared(Origin(template.level, template.obj, template.path,
                                       source.line_of(*field_parts),
                                       chains(".".join(field_parts))))
            previous = resolved.get(name)
            overridden = chains((*previous.overridden, previous.origin)) if previous else ()
            if is_secret_ref(value):
                ref, error, secret_value = "", "", None
                try:
                    ref = secret_file(value)
                    if secrets is not None:
                        secret_value = secrets(value)
                except ReconcilerError as exc:
                    error = exc.message
                resolved[name] = ResolvedParam(name, secret_value, origin, overridden, True,
                                               ref or "?", error)
                continue
            resolved[name] = shared.param(
                ResolvedParam(name, value, origin, overridden, param.secret))


def resolve_params(fleet: Fleet, instance: Instance, target: Target,
                   solution: Solution, *, secrets: SecretResolver | None = None
                   ) -> dict[str, ResolvedParam]:
    """Every declared parameter that has a value, with where the value came from.

    ``{secretFrom: {file: NAME}}`` values are read with ``secrets`` (the site's secrets
    directory); without one they stay unresolved (value None), which validation skips.
    """
    resolved: dict[str, ResolvedParam] = {}
    _lay(resolved, _layers_below(fleet, instance, target.site, solution), solution, secrets,
         _SAME, _SAME)
    _lay(resolved, (_target_layer(target),), solution, secrets, _SAME, _SAME)
    return resolved


class SharedParams:
    """:func:`resolve_params` for the pairs of one fleet, sharing what they have in common
    (see the module docstring; the solutions must stay alive as long as it does)."""

    def __init__(self) -> None:
        self._below: dict[tuple[str, int, str], dict[str, ResolvedParam]] = {}
        self._shared = _Shared()

    def resolve(self, fleet: Fleet, instance: Instance, target: Target, solution: Solution,
                secrets: SecretResolver | None) -> dict[str, ResolvedParam]:
        """What :func:`resolve_params` returns; a target that sets no parameters of its own
        resolves to what every such target of its site resolves to (the same dict)."""
        key = (instance.name, id(solution), target.site)
        below = self._below.get(key)
        if below is None:
            below = self._below[key] = {}
            _lay(below, _layers_below(fleet, instance, target.site, solution), solution,
                 secrets, self._shared, self._shared)
        if not target.params:
            return below
        resolved = dict(below)
        # a target's own origins are its own: only what they override is shared
        _lay(resolved, (_target_layer(target),), solution, secrets, _SAME, self._shared)
        return resolved
