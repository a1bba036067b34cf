"""The provider contract: what a provider implements and what it is handed.

Providers are classes registered under the entry-point group ``reconciler.providers``
(the built-in ones too, see ``reconciler.core.registry``). A provider depends on this module and on
nothing else of the core: what a provider needs besides the contract is re-exported here — the
error types it may raise, the process runner for its child processes (:func:`run_process`,
see ``reconciler.core.processes``), atomic file writes (:func:`write_atomic`,
:func:`remove_leftovers`) and the template renderer that properties were rendered with
(:func:`render_text`).

A provider class is constructed once per target binding with the binding's ``config`` and a
:class:`ProviderContext`. The core calls, for each desired component of that binding:

* ``check_config`` / ``check_properties`` (class methods, pure) while validating a revision;
* ``observe`` to compare the desired component with what runs now (plan, drift detection);
* ``apply`` when ``observe`` reports a difference; it returns the :class:`Record` kept in the
  inventory, and handles pruning of sub-objects that the previous record had and the new
  component no longer has;
* ``health`` after an apply (polled by the executor until healthy or timed out);
* ``delete`` with an inventory record when the component was removed from the repository.

Errors leave a provider only as :class:`TransientError` (retry later) or
:class:`PermanentError` (a human must act).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from reconciler.core.errors import (
    PermanentError,
    PolicyError,
    ProviderError,
    TemplateError,
    TransientError,
)
from reconciler.core.processes import (
    DEFAULT_OUTPUT_LIMIT,
    SHUTDOWN_GRACE,
    Interruption,
    ProcessResult,
)
from reconciler.core.processes import run as run_process
from reconciler.core.statefiles import remove_leftovers, write_atomic
from reconciler.core.templating import render_text

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "SHUTDOWN_GRACE",
    "Component",
    "Health",
    "HealthReport",
    "Interruption",
    "LocalPolicy",
    "Observation",
    "PermanentError",
    "PolicyError",
    "Problem",
    "ProcessResult",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "Record",
    "TemplateError",
    "TransientError",
    "remove_leftovers",
    "render_text",
    "run_process",
    "write_atomic",
]


class Health(enum.Enum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


@dataclass(frozen=True, slots=True)
class HealthReport:
    state: Health
    message: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem with a binding config or a component property (``field`` is dotted)."""

    field: str
    message: str


@dataclass(frozen=True)
class LocalPolicy:
    """What the site allows the repository to ask for (from the daemon's local config)."""

    allowed_providers: frozenset[str] | None = None  # None: every installed provider
    file_roots: tuple[Path, ...] = ()  # directories the file provider may write under
    allow_scripts: bool = False
    namespaces: frozenset[str] | None = None  # Kubernetes namespaces; None: any
    # where relative paths of binding configs (file root, script workdir) resolve: the
    # daemon's state directory; None when validating a repository without a site
    base_dir: Path | None = None

    def resolve(self, path: str) -> Path | None:
        """A binding path made absolute, or None when it is relative and no site is known."""
        candidate = Path(path)
        if candidate.is_absolute():
            return candidate
        return None if self.base_dir is None else self.base_dir / candidate

    @cached_property
    def _resolved_roots(self) -> tuple[Path, ...]:
        return tuple(r.resolve() for r in self.file_roots)

    def allows_path(self, path: Path) -> bool:
        return self.allows_resolved(path.resolve())

    def allows_resolved(self, resolved: Path) -> bool:
        """:meth:`allows_path` of a path resolved already (``os.path.realpath``)."""
        return any(resolved == r or resolved.is_relative_to(r) for r in self._resolved_roots)


@dataclass(frozen=True, slots=True)
class Component:
    """One rendered component of one instance on one target: the provider's input."""

    name: str
    type: str
    properties: Mapping[str, Any]  # rendered (templates expanded)
    params: Mapping[str, Any]  # the instance's resolved parameters for this target
    instance: str
    solution: str
    target: str
    site: str  # site path, e.g. "eu/berlin/line-1"
    revision: str  # commit the component was rendered from
    base_dir: Path  # directory of the Solution's file: relative paths resolve here
    repo_root: Path  # root of the checked-out revision; paths never leave it
    depends_on: tuple[str, ...] = ()
    secret_params: frozenset[str] = frozenset()  # names whose values must never be shown
    # the names templates may use: {"params", "target", "site", "instance", "solution"};
    # providers that render files from the repo (file templates, Kubernetes manifests) pass it
    # to render_text so files see exactly what properties saw
    template_context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Inventory key, unique on a target."""
        return f"{self.instance}/{self.name}"


@dataclass(frozen=True, slots=True)
class Record:
    """What the inventory keeps about an applied component (JSON-serialisable ``data``)."""

    provider: str
    binding: str  # binding role the component was applied through
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "binding": self.binding, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Record:
        return cls(provider=str(raw["provider"]), binding=str(raw.get("binding", "")),
                   data=dict(raw.get("data") or {}))


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of comparing a desired component with the live state."""

    exists: bool
    in_sync: bool
    diff: str = ""  # human-readable difference (unified diff or a summary), for plans
    message: str = ""


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """Everything a provider instance gets besides its binding config."""

    target: str
    binding: str  # the binding's role
    policy: LocalPolicy
    state_dir: Path  # a directory the provider may keep its own state in
    # true when the daemon is shutting down or a newer revision arrived: stop waiting
    cancelled: Callable[[], bool] = lambda: False
    # true once the daemon is shutting down (cancelled() is then true as well). An operation
    # that must not be killed half-way (a helm upgrade) ignores a newer revision, and after
    # stopping() turns true runs at most ``shutdown_grace`` seconds more before it is stopped
    stopping: Callable[[], bool] = lambda: False
    shutdown_grace: float = SHUTDOWN_GRACE


@runtime_checkable
class Provider(Protocol):
    """The interface of a provider class (see the module docstring for the call order)."""

    name: ClassVar[str]
    # properties that must be literal (no template expressions), e.g. script argv
    untemplated: ClassVar[frozenset[str]]
    # properties naming repository paths relative to the Solution's file (for a list, its
    # first element when it contains '/'); validation checks they exist and stay inside the
    # repository, and the loader treats the files they name as data, not manifests
    path_properties: ClassVar[frozenset[str]]
    # optional (read with getattr): keys of Record.data that change with every apply and say
    # nothing of the state applied (a release revision); the engine ignores them when it
    # tells a drift repair from a change. Optional method ``begin_run()``: called once at the
    # start of each reconcile of the target, for a provider that keeps what it read for one
    # run (the Kubernetes provider's lists)

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None: ...

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        ...

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]: ...

    def observe(self, component: Component, record: Record | None) -> Observation: ...

    def apply(self, component: Component, record: Record | None) -> Record: ...

    def delete(self, record: Record) -> None: ...

    def health(self, component: Component, record: Record) -> HealthReport: ...
