"""The public provider contract: the one module a provider imports.

A provider (built-in under ``reconciler_providers``, or a plug-in of another package) imports
this module and nothing else of Reconciler; an import-linter contract in ``make test`` holds
the built-in ones to it. The definitions live in :mod:`reconciler.core.provider_api`, where
the core's own modules (validation, the registry, the engine's bindings) import them from;
this module re-exports them, with the error types, the process runner, atomic writes and the
template renderer that a provider needs besides. See ``docs/providers.md``.
"""

from reconciler.core.provider_api import (
    DEFAULT_OUTPUT_LIMIT,
    SHUTDOWN_GRACE,
    Component,
    Health,
    HealthReport,
    Interruption,
    LocalPolicy,
    Observation,
    PermanentError,
    PolicyError,
    Problem,
    ProcessResult,
    Provider,
    ProviderContext,
    ProviderError,
    Record,
    TemplateError,
    TransientError,
    remove_leftovers,
    render_text,
    run_process,
    write_atomic,
)

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
