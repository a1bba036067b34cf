"""Provider discovery through the ``reconciler.providers`` entry-point group.

Built-in providers register the same way as third-party ones (see pyproject.toml). A provider
that fails to import is logged and reported, never fatal; ``disabled`` names are left out.
Called by validation (to check bindings) and by the executor (to build provider instances).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import structlog

from reconciler.core.provider_api import Provider

__all__ = ["GROUP", "ProviderRegistry", "default_registry"]

GROUP = "reconciler.providers"
_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProviderRegistry:
    providers: Mapping[str, type[Provider]]
    failures: Mapping[str, str] = field(default_factory=dict)  # name -> why it did not load
    origins: Mapping[str, str] = field(default_factory=dict)  # name -> "module:Class"

    @classmethod
    def discover(cls, disabled: Collection[str] = ()) -> ProviderRegistry:
        providers: dict[str, type[Provider]] = {}
        failures: dict[str, str] = {}
        origins: dict[str, str] = {}
        for ep in entry_points(group=GROUP):
            if ep.name in disabled:
                continue
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plugin must not take the daemon down
                failures[ep.name] = f"{type(exc).__name__}: {exc}"
                _log.warning("provider_load_failed", provider=ep.name, error=failures[ep.name])
                continue
            missing = [m for m in ("check_config", "check_properties", "observe", "apply",
                                   "delete", "health") if not hasattr(loaded, m)]
            if missing:
                failures[ep.name] = f"{ep.value} lacks {', '.join(missing)}"
                _log.warning("provider_load_failed", provider=ep.name, error=failures[ep.name])
                continue
            providers[ep.name] = loaded
            origins[ep.name] = ep.value
        return cls(providers, failures, origins)

    def get(self, name: str) -> type[Provider] | None:
        return self.providers.get(name)

    def describe_missing(self, name: str) -> str:
        if name in self.failures:
            return f"provider '{name}' failed to load: {self.failures[name]}"
        installed = ", ".join(sorted(self.providers)) or "none"
        return f"provider '{name}' is not installed (installed: {installed})"


_DEFAULT: ProviderRegistry | None = None


def default_registry() -> ProviderRegistry:
    """The process-wide registry, discovered once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ProviderRegistry.discover()
    return _DEFAULT
