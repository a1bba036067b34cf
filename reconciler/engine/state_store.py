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

Per target and instance an :class:`InstanceRecord` under ``"instances"``: the revision the
instance's live state corresponds to and the digest of what it rendered there
(``applied``/``appliedDigest``), its last good revision and digest, and a failed change
(:class:`FailedChange`: the revision, the digest of its render, the failing component, the
error, and the error of a rollback that failed too). A failed change is written the moment
it is known, before its rollback starts, so a daemon restarted in the middle of a rollback
finds it and completes the rollback; a rollback, a wave or a hold keeps one instance of a
target on its previous state while another moves on.

Empty values are left out (a target that never had a good revision has no ``lastGood``).
A file that cannot be read, or a value of the wrong type in it, counts as absent: the next run
rebuilds what it can from observation. :meth:`StateStore.save` writes the file atomically
(``statefiles.write_atomic``). Used by the pipeline, one store per daemon; not thread-safe
(runs are serialised by the pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.core.statefiles import read_json, write_atomic

__all__ = ["FailedChange", "InstanceRecord", "StateStore", "TargetRecord"]

# field name in the file -> attribute
_KEYS = {"applied": "applied", "lastGood": "last_good", "site": "site", "digest": "digest",
         "lastChange": "last_change"}


_INSTANCE_KEYS = {"applied": "applied", "appliedDigest": "applied_digest",
                  "lastGood": "last_good", "goodDigest": "good_digest", "release": "release",
                  "goodRelease": "good_release"}
_FAILED_KEYS = {"revision": "revision", "digest": "digest", "component": "component",
                "error": "error", "rollbackError": "rollback_error", "at": "at",
                "release": "release"}


@dataclass(frozen=True, slots=True)
class FailedChange:
    """A change of one instance on one target that failed after its retries."""

    revision: str  # the revision whose render failed
    digest: str  # digest of that render (a revision rendering the same is the same change)
    component: str  # "<instance>/<component>" that failed
    error: str
    rollback_error: str = ""  # the rollback to the last good revision failed too
    at: str = ""  # ISO time of the failure
    release: str = ""  # the release that failed (docs/rollouts.md)

    @classmethod
    def from_json(cls, raw: object) -> FailedChange | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("revision"), str):
            return None
        return cls(**{attr: value for key, attr in _FAILED_KEYS.items()
                      if isinstance(value := raw.get(key), str)})

    def to_json(self) -> dict[str, str]:
        return {key: value for key, attr in _FAILED_KEYS.items()
                if (value := getattr(self, attr))}


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance on one target between runs (see the module docstring)."""

    applied: str = ""  # the revision its live state corresponds to
    applied_digest: str = ""  # digest of what it rendered there
    last_good: str = ""  # the last revision it reconciled cleanly at
    good_digest: str = ""
    failed: FailedChange | None = None  # a change that failed (and was rolled back)
    release: str = ""  # the release (docs/rollouts.md) of the applied revision
    good_release: str = ""  # the release of the last good revision

    @classmethod
    def from_json(cls, raw: object) -> InstanceRecord:
        if not isinstance(raw, Mapping):
            return cls()
        values: dict[str, Any] = {attr: value for key, attr in _INSTANCE_KEYS.items()
                                  if isinstance(value := raw.get(key), str)}
        return cls(**values, failed=FailedChange.from_json(raw.get("failed")))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: value for key, attr in _INSTANCE_KEYS.items()
                               if (value := getattr(self, attr))}
        if self.failed is not None:
            out["failed"] = self.failed.to_json()
        return out


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target's state between runs (see the module docstring)."""

    applied: str = ""  # the revision the target's live state corresponds to
    last_good: str = ""  # the newest revision that reconciled cleanly
    site: str = ""  # site path, as of the newest revision that described the target
    digest: str = ""  # digest of the status content (everything but lastChange)
    last_change: str = ""  # ISO time the status content last changed
    instances: Mapping[str, InstanceRecord] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: object) -> TargetRecord:
        if not isinstance(raw, Mapping):
            return cls()
        found = raw.get("instances")
        instances = {name: InstanceRecord.from_json(value) for name, value in
                     (found.items() if isinstance(found, Mapping) else ())
                     if isinstance(name, str)}
        return cls(**{attr: value for key, attr in _KEYS.items()
                      if isinstance(value := raw.get(key), str)}, instances=instances)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, attr) for key, attr in _KEYS.items()}
        # the site is written even when empty, as it always was; the rest only when known
        out = {k: v for k, v in out.items() if v or k == "site"}
        if self.instances:
            out["instances"] = {name: rec.to_json()
                                for name, rec in sorted(self.instances.items())}
        return out


def _shared(value: Any, strings: dict[str, str]) -> Any:
    """JSON data with equal strings made one object: a daemon keeps a record per target,
    and their revisions, releases, sites and times are mostly the same few."""
    if isinstance(value, str):
        return strings.setdefault(value, value)
    if isinstance(value, dict):
        return {strings.setdefault(k, k) if isinstance(k, str) else k: _shared(v, strings)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v, strings) for v in value]
    return value


class StateStore:
    """The per-target records of one state directory, in the order they were first seen."""

    def __init__(self, path: Path, records: Mapping[str, TargetRecord] | None = None,
                 revision: str = "") -> None:
        self.path = path
        self.revision = revision  # the revision of the last run that saved
        self._dirty = not path.exists()  # records differ from the file: an idle run writes none
        self._records: dict[str, TargetRecord] = dict(records or {})

    @classmethod
    def load(cls, path: Path) -> StateStore:
        raw = _shared(read_json(path, {}), {})
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
        """The revisions some target or instance is at or falls back to, and the last
        run's."""
        used = {self.revision}
        for record in self._records.values():
            used.add(record.applied)
            used.add(record.last_good)
            for inst in record.instances.values():
                used.add(inst.applied)
                used.add(inst.last_good)
        used.discard("")
        return used

    def instance(self, name: str, instance: str) -> InstanceRecord:
        """The record of ``instance`` on target ``name`` (an empty one when never seen)."""
        return self.get(name).instances.get(instance) or InstanceRecord()

    def set_instance(self, name: str, instance: str, record: InstanceRecord | None) -> bool:
        """Replace (None: forget) the record of ``instance`` on target ``name``; True when
        that changed anything."""
        target = self.get(name)
        if target.instances.get(instance) == record:
            return False
        instances = dict(target.instances)
        if record is None:
            instances.pop(instance, None)
        else:
            instances[instance] = record
        self._put(name, replace(target, instances=instances))
        return True

    def _put(self, name: str, record: TargetRecord) -> None:
        if self._records.get(name) != record:
            self._dirty = True
        self._records[name] = record

    # -- changing ----------------------------------------------------------------------
    def reconciled(self, name: str, revision: str, *, newest: bool) -> TargetRecord:
        """The target reconciled cleanly at ``revision``; when that is the ``newest``
        revision of the run, it becomes the target's last good one."""
        record = self.get(name)
        last_good = revision if newest else record.last_good
        if (record.applied, record.last_good) != (revision, last_good):
            record = replace(record, applied=revision, last_good=last_good)
        self._put(name, record)
        return record

    def status_seen(self, name: str, *, site: str, digest: str, now: str) -> TargetRecord:
        """The target's status of this run: its site path, and when the status content
        (``digest``) differs from the last run's, ``now`` as the time of the change."""
        record = self.get(name)
        if record.digest != digest:
            record = replace(record, site=site, digest=digest, last_change=now)
        elif record.site != site:
            record = replace(record, site=site)
        self._put(name, record)
        return record

    def touch(self, name: str) -> TargetRecord:
        """Make sure the target has a record (a served target is remembered even before it
        reconciled, so that it is retired when it leaves)."""
        if name not in self._records:
            self._dirty = True
        return self._records.setdefault(name, TargetRecord())

    def forget(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            self._dirty = True

    # -- the file ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision,
                "targets": {name: record.to_json() for name, record in self._records.items()}}

    def flush(self) -> None:
        """Write the file now, mid-run (a failed change before its rollback starts)."""
        self.save(self.revision)

    def save(self, revision: str) -> None:
        """Write the file atomically with ``revision`` as the last run's, unless nothing
        changed since it was last read or written (an idle run); raises OSError (or any
        error of the write) when the OS refuses: the caller reports it (and the next save
        writes it again)."""
        if not self._dirty and revision == self.revision:
            return
        self.revision = revision
        self._dirty = True
        data = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        write_atomic(self.path, data.encode())
        self._dirty = False
