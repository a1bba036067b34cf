"""Pausing the cyclic garbage collector while a whole fleet is loaded or validated.

Used by ``reconciler.core.loading`` and ``reconciler.core.validation`` (and re-exported by
the loader, where the engine imports it from).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["bulk_allocation"]


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading or validating a whole fleet.

    Both allocate hundreds of thousands of objects that stay alive, in one burst; each
    collection this triggers rescans everything alive, imported modules included (the
    kubernetes client alone is several hundred thousand objects): on a 1,000-target fleet
    that was a fifth of the run. Reference counting still frees everything that is not in a
    cycle, and the collector runs again as usual afterwards. Only re-enabled by whoever
    disabled it, so nesting and concurrent use leave it as it was.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
