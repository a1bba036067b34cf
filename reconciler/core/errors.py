"""The one error tree of the project.

Every error carries a machine ``reason`` (CamelCase, stable, used in status files and
metrics) and a human message that names the file, the object and the field where one is known.
Lower-layer exceptions (YAML, git, HTTP, subprocess) are mapped into this tree at the boundary
that sees them, so callers never catch a library's exception type: a child process's at the
process runner (``reconciler.core.processes``: a timeout or cancellation is a TransientError, a
program that cannot start a PermanentError), a git command's at the git runner
(``reconciler.gitops.gitrun``: the caller's SourceError, VerificationError or StatusPushError, its
message naming the command and the repository, credentials removed).

::

    ReconcilerError
    ├── ConfigError            the local daemon config is invalid (a human must edit it)
    ├── ManifestError          the fleet repository is invalid (carries every Diagnostic)
    ├── SourceError            git clone / fetch / checkout failed (transient: retry later)
    ├── VerificationError      a commit or tag is not signed by a trusted key (Blocked)
    ├── LockError              another daemon holds the state directory
    ├── NoDaemonError          no daemon runs for a state directory (``reconciler sync``)
    ├── DaemonAccessError      a daemon runs, but this user may not reach it
    ├── StatusPushError        status commits could not be pushed (queued, retried)
    └── ProviderError          raised by providers, translated at their boundary
        ├── TransientError     retry later (timeouts, 429/5xx, connection refused)
        └── PermanentError     a human must act (invalid object, policy, conflicts)
            ├── PolicyError    the local policy forbids what the repository asks for
            └── TemplateError  a template names something undefined or breaks the sandbox
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.core.diagnostics import Diagnostic

__all__ = [
    "ConfigError",
    "DaemonAccessError",
    "LockError",
    "ManifestError",
    "NoDaemonError",
    "PermanentError",
    "PolicyError",
    "ProviderError",
    "ReconcilerError",
    "SourceError",
    "StatusPushError",
    "TemplateError",
    "TransientError",
    "VerificationError",
]


class ReconcilerError(Exception):
    """Base of every error the project raises on purpose."""

    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class ConfigError(ReconcilerError):
    reason = "InvalidConfig"

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class ManifestError(ReconcilerError):
    reason = "ValidationFailed"

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        errors = [d for d in diagnostics if d.is_error]
        first = errors[0].format() if errors else "invalid repository"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.diagnostics = tuple(diagnostics)


class SourceError(ReconcilerError):
    reason = "SourceUnavailable"


class VerificationError(ReconcilerError):
    reason = "Blocked"


class LockError(ReconcilerError):
    reason = "Locked"


class NoDaemonError(ReconcilerError):
    reason = "NoDaemon"


class DaemonAccessError(ReconcilerError):
    reason = "NotAllowed"


class StatusPushError(ReconcilerError):
    reason = "StatusPushFailed"


class ProviderError(ReconcilerError):
    reason = "ProviderFailed"


class TransientError(ProviderError):
    """Retry later; ``delay`` (seconds) is a hint, the executor's backoff decides."""

    reason = "Transient"

    def __init__(self, message: str, *, delay: float | None = None, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.delay = delay


class PermanentError(ProviderError):
    reason = "Permanent"


class PolicyError(PermanentError):
    reason = "PolicyViolation"


class TemplateError(PermanentError):
    reason = "TemplateFailed"
