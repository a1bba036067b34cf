"""The inventory: what was applied to a target, so that removed components can be pruned.

One JSON file per target under ``<state dir>/inventory/``. Each entry is keyed by
``<instance>/<component>`` and keeps the provider's :class:`~reconciler.core.provider_api.Record`,
the binding config it was applied with (so a component can be deleted even after its binding
is gone), the revision and the apply order (prunes run in reverse). The file is rewritten
atomically after every change, so a crash mid-run never forgets an applied component; when the
OS refuses the write (disk full, a directory in the way), the change raises
:class:`~reconciler.core.errors.ReconcilerError` naming the file, which fails that component's step
like any other error, and marks the inventory :attr:`~Inventory.dirty`. The engine keeps a
target's inventory in memory between runs (every change goes through it), and reads the file
again only after a failed write or when the file changed under it. Used by the executor and
the planner.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.core.errors import ReconcilerError
from reconciler.core.provider_api import Record
from reconciler.core.statefiles import file_signature, read_json, write_json

__all__ = ["Entry", "Inventory"]


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # "<instance>/<component>"
    record: Record
    binding_config: Mapping[str, Any]
    revision: str
    order: int  # position in the last apply sequence
    applied_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_dict(), "bindingConfig": dict(self.binding_config),
                "revision": self.revision, "order": self.order, "appliedAt": self.applied_at}

    @classmethod
    def from_dict(cls, key: str, raw: Mapping[str, Any],
                  configs: dict[str, dict[str, Any]] | None = None) -> Entry:
        """An entry read from the file. The engine keeps inventories in memory, so what
        entries have in common is shared: the strings of revisions, times and provider
        names, the names of the record's fields, a string equal to the entry's key (a
        record naming its component), small numbers, and (through ``configs``) equal
        binding configs."""
        record = raw["record"]
        found = raw.get("bindingConfig") or {}
        text = json.dumps(found, sort_keys=True, default=str) if configs is not None else ""
        config = configs.get(text) if configs is not None else None
        if config is None:
            config = {_name(k): _shared(v, key) for k, v in found.items()}
            if configs is not None:
                configs[text] = config
        return cls(key, Record(sys.intern(str(record["provider"])),
                               sys.intern(str(record.get("binding", ""))),
                               _shared(_mapping(record.get("data")), key)), config,
                   sys.intern(str(raw.get("revision", ""))), int(raw.get("order", 0)),
                   sys.intern(str(raw.get("appliedAt", ""))))


# what equal values of entries share: the names of fields, small numbers (a file mode, a
# count, a port); bounded, since the names are a provider's choice
_SHARED_MAX = 65536
_NAMES: dict[str, str] = {}
_NUMBERS: dict[int, int] = {}


def _mapping(value: Any) -> dict[str, Any]:
    """A record's data as read: a dict (made of anything else dict() takes)."""
    return value if type(value) is dict else dict(value or {})


def _name(text: str) -> str:
    found = _NAMES.get(text)
    if found is None:
        if len(_NAMES) >= _SHARED_MAX:
            return text
        found = _NAMES.setdefault(text, text)
    return found


def _shared(value: Any, key: str) -> Any:
    """JSON data read from a file, what entries have in common made one object (see
    :meth:`Entry.from_dict`); the same types and values."""
    kind = type(value)
    if kind is str:
        return key if value == key else value
    if kind is dict:
        return {_name(k): _shared(v, key) for k, v in value.items()}
    if kind is list:
        return [_shared(v, key) for v in value]
    if kind is int and 0 <= value < _SHARED_MAX:
        return _NUMBERS.setdefault(value, value)
    return value


@dataclass(slots=True)
class Inventory:
    path: Path
    target: str
    entries: dict[str, Entry] = field(default_factory=dict)
    # True when the entries differ from the file: its last write failed (the engine keeps an
    # inventory between runs only while it is not dirty, else reads the file again)
    dirty: bool = False
    # the file as last read or written: (inode, size, mtime); see changed_on_disk
    signature: tuple[int, int, int] | None = None
    # components of one dependency level are applied from several threads
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def load(cls, state_dir: Path, target: str) -> Inventory:
        path = state_dir / "inventory" / f"{target}.json"
        raw = read_json(path, {})
        configs: dict[str, dict[str, Any]] = {}
        entries = {k: Entry.from_dict(k, v, configs)
                   for k, v in (raw.get("entries") or {}).items()}
        return cls(path, target, entries, signature=file_signature(path))

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: str, record: Record, binding_config: Mapping[str, Any], revision: str,
            order: int) -> None:
        with self._lock:
            # the components of a binding share one copy of its config
            config = next((e.binding_config for e in self.entries.values()
                           if e.binding_config == binding_config), None) \
                or dict(binding_config)
            self.entries[key] = Entry(key, record, config, sys.intern(revision), order,
                                      datetime.now(UTC).isoformat(timespec="seconds"))
            self.save(f"cannot record {key} in")

    def remove(self, key: str) -> None:
        with self._lock:
            if self.entries.pop(key, None) is not None:
                self.save(f"cannot remove {key} from")

    def reorder(self, order: Mapping[str, int]) -> None:
        with self._lock:
            self._reorder(order)

    def _reorder(self, order: Mapping[str, int]) -> None:
        changed = False
        for key, position in order.items():
            entry = self.entries.get(key)
            if entry is not None and entry.order != position:
                self.entries[key] = Entry(entry.key, entry.record, entry.binding_config,
                                          entry.revision, position, entry.applied_at)
                changed = True
        if changed:
            self.save()

    def save(self, doing: str = "cannot write") -> None:
        """Write the file; raises ReconcilerError ("<doing> the inventory <path>: <why>")."""
        with self._lock:
            self._save(doing)

    def _save(self, doing: str) -> None:
        try:
            self.dirty = True
            write_json(self.path, {"target": self.target,
                                   "entries": {k: e.to_dict() for k, e in self.entries.items()}})
            self.dirty = False
            self.signature = file_signature(self.path)
        except OSError as exc:
            raise ReconcilerError(f"{doing} the inventory {self.path}: {exc.strerror or exc}",
                                  reason="StateWriteFailed") from exc

    def changed_on_disk(self) -> bool:
        """True when the file is not the one last read or written (someone restored,
        edited or removed it): one stat."""
        return file_signature(self.path) != self.signature

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.order))

    def __len__(self) -> int:
        return len(self.entries)
