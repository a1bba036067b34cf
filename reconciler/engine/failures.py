"""How an error nobody planned for reads in a status file and in the log.

The engine never lets one target's unexpected error (the OS refusing a write, a bug) cost
another target its reconcile or its status; the error becomes that target's ``Failed``
message. :func:`describe` words it: our own errors by their message, an OS error by what the
OS said and the file, anything else by its type. Used by the pipeline's modules.
"""

from __future__ import annotations

from reconciler.core.errors import ReconcilerError

__all__ = ["describe"]


def describe(exc: BaseException) -> str:
    """An unexpected error as a status message: what the OS said, or the exception."""
    if isinstance(exc, ReconcilerError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"unexpected error: {type(exc).__name__}: {exc}"
