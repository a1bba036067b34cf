"""Provider instances for one target: one per binding, built on first use.

The executor and the planner ask for the provider of a binding role (or, when pruning a
component whose binding has since been removed, for the provider recorded in the inventory
with the binding config it was applied with). Construction errors — an unknown provider, a
config the local policy forbids — surface as PermanentError for the component that needed it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.core.errors import PermanentError, ReconcilerError
from reconciler.core.model import Binding
from reconciler.core.provider_api import SHUTDOWN_GRACE, LocalPolicy, Provider, ProviderContext
from reconciler.core.registry import ProviderRegistry

__all__ = ["ProviderSet"]


class ProviderSet:
    # the engine keeps one per served target between runs
    __slots__ = ("_bound", "_cache", "_lock", "cancelled", "policy", "registry", "shutdown_grace",
                 "state_dir", "stopping", "target")

    def __init__(self, target: str, registry: ProviderRegistry, policy: LocalPolicy,
                 state_dir: Path, cancelled: Callable[[], bool],
                 stopping: Callable[[], bool] = lambda: False,
                 shutdown_grace: float = SHUTDOWN_GRACE) -> None:
        self.target = target
        self.registry = registry
        self.policy = policy
        self.state_dir = state_dir
        self.cancelled = cancelled
        self.stopping = stopping
        self.shutdown_grace = shutdown_grace
        self._cache: dict[str, Provider] = {}
        self._bound: dict[int, tuple[Binding, Provider]] = {}
        # components of one dependency level ask from several threads: one provider each
        self._lock = threading.RLock()

    def get(self, provider: str, role: str, config: Mapping[str, Any]) -> Provider:
        with self._lock:
            return self._get(provider, role, config)

    def _get(self, provider: str, role: str, config: Mapping[str, Any]) -> Provider:
        digest = hashlib.sha256(json.dumps([provider, role, config], sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
        found = self._cache.get(digest)
        if found is not None:
            return found
        cls = self.registry.get(provider)
        if cls is None:
            raise PermanentError(self.registry.describe_missing(provider),
                                 reason="ProviderMissing")
        allowed = self.policy.allowed_providers
        if allowed is not None and provider not in allowed:
            raise PermanentError(f"the local policy does not allow provider '{provider}'",
                                 reason="PolicyViolation")
        context = ProviderContext(
            target=self.target, binding=role, policy=self.policy,
            state_dir=self.state_dir / "providers" / provider / self.target,
            cancelled=self.cancelled, stopping=self.stopping,
            shutdown_grace=self.shutdown_grace)
        try:
            instance = cls(config, context)
        except ReconcilerError:
            raise
        except Exception as exc:  # a provider bug must not take the daemon down
            raise PermanentError(f"provider '{provider}' failed to start: "
                                 f"{type(exc).__name__}: {exc}", reason="ProviderCrashed") from exc
        self._cache[digest] = instance
        return instance

    def begin_run(self) -> None:
        """A run of the target starts: providers that keep what they read for one run
        (the Kubernetes provider's lists) start afresh (``begin_run``, optional)."""
        with self._lock:
            providers = list(self._cache.values())
        for provider in providers:
            begin = getattr(provider, "begin_run", None)
            if callable(begin):
                begin()

    def for_binding(self, binding: Binding) -> Provider:
        # Every component of a role asks with the same Binding object of the fleet: answer
        # it without serialising and hashing its config again (5,000 times in a no-op run
        # of a 1,000-target site). The binding is kept with its provider, so its id is not
        # reused by another object while this set lives.
        known = self._bound.get(id(binding))
        if known is not None and known[0] is binding:
            return known[1]
        with self._lock:
            provider = self._get(binding.provider, binding.role, binding.config)
            self._bound[id(binding)] = (binding, provider)
        return provider
