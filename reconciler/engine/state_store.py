"""What the engine remembers of each target between runs: ``<state dir>/state.json``.

Per target a :class:`TargetRecord`: the revision its live state corresponds to (``applied``),
the newest revision that reconciled cleanly (``lastGood``, enforced while newer revisions are
invalid or untrusted), its site path (for the status of a target the newest revision no longer
describes), and the digest and time of the last change of its status (``lastChange`` moves
only when the status content does). Plus the revision of the last run.

The file keeps the format the pipeline has always written, so a site upgraded in place keeps
its last good revisions::

    {"revision": "<sha>", "targets": {"<name>": {"applied": "<sha>", "lastGood": "<sha>",
     "site": "eu/berlin", "digest": "<sha256>", "lastChange": "2026-01-02T03:04:05+00:00"}}}

Empty values are left out (a target that never had a good revision has no ``lastGood``).
A file that cannot be read, or a value of the wrong type in it, counts as absent: the next run
rebuilds what it can from observation. :meth:`StateStore.save` writes the file atomically
(``statefiles.write_atomic``). Used by the pipeline, one store per daemon; not thread-safe
(runs are serialised by the pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.core.statefiles import read_json, write_atomic

__all__ = ["StateStore", "TargetRecord"]

# field name in the file -> attribute
_KEYS = {"applied": "applied", "lastGood": "last_good", "site": "site", "digest": "digest",
         "lastChange": "last_change"}


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target's state between runs (see the module docstring)."""

    applied: str = ""  # the revision the target's live state corresponds to
    last_good: str = ""  # the newest revision that reconciled cleanly
    site: str = ""  # site path, as of the newest revision that described the target
    digest: str = ""  # digest of the status content (everything but lastChange)
    last_change: str = ""  # ISO time the status content last changed

    @classmethod
    def from_json(cls, raw: object) -> TargetRecord:
        if not isinstance(raw, Mapping):
            return cls()
        return cls(**{attr: value for key, attr in _KEYS.items()
                      if isinstance(value := raw.get(key), str)})

    def to_json(self) -> dict[str, str]:
        out = {key: getattr(self, attr) for key, attr in _KEYS.items()}
        # the site is written even when empty, as it always was; the rest only when known
        return {k: v for k, v in out.items() if v or k == "site"}


class StateStore:
    """The per-target records of one state directory, in the order they were first seen."""

    def __init__(self, path: Path, records: Mapping[str, TargetRecord] | None = None,
                 revision: str = "") -> None:
        self.path = path
        self.revision = revision  # the revision of the last run that saved
        self._records: dict[str, TargetRecord] = dict(records or {})

    @classmethod
    def load(cls, path: Path) -> StateStore:
        raw = read_json(path, {})
        if not isinstance(raw, dict):
            raw = {}
        targets = raw.get("targets")
        records = {name: TargetRecord.from_json(value)
                   for name, value in (targets.items() if isinstance(targets, dict) else ())
                   if isinstance(name, str)}
        revision = raw.get("revision")
        return cls(path, records, revision if isinstance(revision, str) else "")

    # -- reading ---------------------------------------------------------------------
    def get(self, name: str) -> TargetRecord:
        """The target's record (an empty one for a target never seen)."""
        return self._records.get(name) or TargetRecord()

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def last_good_revisions(self) -> list[str]:
        """Every target's last good revision, in target order, without repeats."""
        return list(dict.fromkeys(r.last_good for r in self._records.values() if r.last_good))

    def revisions_in_use(self) -> set[str]:
        """The revisions some target is at or falls back to, and the last run's."""
        used = {self.revision}
        for record in self._records.values():
            used.add(record.applied)
            used.add(record.last_good)
        used.discard("")
        return used

    # -- changing ----------------------------------------------------------------------
    def reconciled(self, name: str, revision: str, *, newest: bool) -> TargetRecord:
        """The target reconciled cleanly at ``revision``; when that is the ``newest``
        revision of the run, it becomes the target's last good one."""
        record = self.get(name)
        last_good = revision if newest else record.last_good
        if (record.applied, record.last_good) != (revision, last_good):
            record = replace(record, applied=revision, last_good=last_good)
        self._records[name] = record
        return record

    def status_seen(self, name: str, *, site: str, digest: str, now: str) -> TargetRecord:
        """The target's status of this run: its site path, and when the status content
        (``digest``) differs from the last run's, ``now`` as the time of the change."""
        record = self.get(name)
        if record.digest != digest:
            record = replace(record, site=site, digest=digest, last_change=now)
        elif record.site != site:
            record = replace(record, site=site)
        self._records[name] = record
        return record

    def touch(self, name: str) -> TargetRecord:
        """Make sure the target has a record (a served target is remembered even before it
        reconciled, so that it is retired when it leaves)."""
        return self._records.setdefault(name, TargetRecord())

    def forget(self, name: str) -> None:
        self._records.pop(name, None)

    # -- the file ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision,
                "targets": {name: record.to_json() for name, record in self._records.items()}}

    def save(self, revision: str) -> None:
        """Write the file atomically with ``revision`` as the last run's; raises OSError
        (or any error of the write) when the OS refuses: the caller reports it."""
        self.revision = revision
        data = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        write_atomic(self.path, data.encode())
