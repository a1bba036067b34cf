"""Equal small values of the fleet model made one object.

A fleet keeps, for every target, the strings and small dicts its document was read into: a
label dict, its site's name, the role and provider of each binding. Most are equal to those
of many other targets (a few roles, a few providers, a site per line), yet each document
read makes its own. :func:`shared_text` and :func:`shared_map` return the object already
kept for an equal value, so a fleet of thousands of targets keeps each such value once
(and a stored revision writes it once). Used by the model's value classes when they are
made (``reconciler.core.model``); the values are never changed (the model is frozen and
its mappings are only read).

The tables are bounded: past :data:`MAX_KEPT` values they are emptied and filled again, so a
daemon that reads revision after revision keeps no more than that (a value no longer found
is kept again, which costs memory only while both copies are in use).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["MAX_KEPT", "shared_map", "shared_text"]

MAX_KEPT = 8192
M = TypeVar("M", bound=Mapping[str, Any])

_texts: dict[str, str] = {}
_maps: dict[tuple[Any, ...], Mapping[str, Any]] = {}
_lock = threading.Lock()


def shared_text(text: str) -> str:
    """The string kept for ``text`` (``text`` itself the first time, or when it is not a
    string)."""
    if type(text) is not str:
        return text
    found = _texts.get(text)
    if found is None:
        with _lock:
            if len(_texts) >= MAX_KEPT:
                _texts.clear()
            found = _texts.setdefault(text, text)
    return found


def shared_map(mapping: M) -> M:
    """The mapping kept for one equal to ``mapping`` (same keys in the same order, equal
    values of the same types), or ``mapping`` itself: the first time, or when a value
    cannot be a dict key. Empty mappings of a type are one object too."""
    try:
        key = (type(mapping), *((type(k), k, type(v), v) for k, v in mapping.items()))
        found = _maps.get(key)
    except TypeError:  # a list, a dict: not shared
        return mapping
    if found is None:
        with _lock:
            if len(_maps) >= MAX_KEPT:
                _maps.clear()
            found = _maps.setdefault(key, mapping)
    return found  # type: ignore[return-value]
