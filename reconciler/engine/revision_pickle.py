"""A validation report as bytes and back, through an allow-list of classes.

:func:`dump_report` pickles a :class:`~reconciler.core.validation.Report`; :func:`load_report`
unpickles one. Pickle is used because it is what keeps a fleet's report cheap to read back (a
1,000-target report loads in a few hundredths of a second); what makes that safe is the
allow-list: the only classes a payload may name are the dataclasses and enums of
``reconciler.core`` (built from their fields, or from their value for an enum, never by a
function the payload names), paths, the ``datetime`` types and regular expressions (compiled
again from their text). Any other global - a function, a class of another package,
``getattr`` - fails both when writing (the report is not written) and when reading (the
payload is not used). A maintenance window keeps an APScheduler trigger
made from its schedule: it is written as its schedule, duration and time zone, and made again
when read. Used by :mod:`reconciler.engine.revision_cache`, which reads a payload only after
its MAC verifies.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import gc
import importlib
import io
import pathlib
import pickle
import re
from typing import TYPE_CHECKING, Any

from reconciler.core.allocation import bulk_allocation
from reconciler.core.windows import Window

if TYPE_CHECKING:
    from reconciler.core.validation import Report

__all__ = ["dump_report", "load_report"]

_PROTOCOL = 5
_PACKAGE = "reconciler.core."
# what a payload may name besides the dataclasses and enums of reconciler.core
_GLOBALS: dict[tuple[str, str], Any] = {
    ("pathlib", "PosixPath"): pathlib.PosixPath,
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("datetime", "datetime"): datetime.datetime, ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time, ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("re", "compile"): re.compile,  # a pattern is written as its text and flags
}
_GLOBAL_IDS = frozenset(id(v) for v in _GLOBALS.values())


@functools.cache
def _allowed(module: str, name: str) -> Any:
    """What ``module.name`` is when a payload may name it, else None (asked once per
    class: a report names a few dozen classes hundreds of thousands of times)."""
    found = _GLOBALS.get((module, name))
    if found is not None or not module.startswith(_PACKAGE) or "." in name:
        return found
    found = getattr(importlib.import_module(module), name, None)
    if isinstance(found, type) and found.__module__ == module and (
            dataclasses.is_dataclass(found) or issubclass(found, enum.Enum)):
        return found
    return None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if id(obj) in _GLOBAL_IDS:
            return NotImplemented  # named as itself
        cls = obj if isinstance(obj, type) else type(obj)
        if cls is Window and obj is not cls:  # its trigger is made again from the schedule
            return Window, (obj.schedule, obj.duration, obj.timezone)
        if cls is re.Pattern and obj is not cls:
            return re.compile, (obj.pattern, obj.flags)
        if _allowed(cls.__module__, cls.__qualname__) is not None:
            return NotImplemented  # pickled as usual
        raise pickle.PicklingError(f"{cls.__module__}.{cls.__qualname__} is not a class a "
                                   "stored revision may hold")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not a class a stored revision "
                                         "may hold")
        return found


def dump_report(report: Report) -> bytes:
    """``report`` as bytes; :class:`pickle.PicklingError` when it holds a class outside the
    allow-list."""
    out = io.BytesIO()
    _Pickler(out, protocol=_PROTOCOL).dump(report)
    return out.getvalue()


def load_report(data: bytes, *, offset: int = 0) -> Report:
    """The report of :func:`dump_report`'s bytes (those of ``data`` from ``offset`` on: a
    file's payload is read where it is, not copied); :class:`pickle.UnpicklingError` (or
    what a class raises when it is made again) when they name anything outside the
    allow-list."""
    from reconciler.core.validation import Report

    stream = io.BytesIO(data)  # shares the bytes: nothing is copied unless written
    stream.seek(offset)
    with bulk_allocation():  # every object stays alive: see bulk_allocation
        found = _Unpickler(stream).load()
    # The report stays while its revision is in use, and every later collection of the
    # oldest generation would scan its hundreds of thousands of objects again (a third of
    # the CPU time of an idle sync --once of 1,000 targets): what is alive now is moved out
    # of the collector's reach. A report holds no reference cycles, so reference counting
    # still frees it once it is dropped. In a daemon this happens only for a revision read
    # from disk (after a start), not for every new revision.
    gc.freeze()
    if not isinstance(found, Report):
        raise pickle.UnpicklingError(f"a {type(found).__name__}, not a report")
    return found
