"""When the kubernetes provider may call an object in sync without asking the server.

Pure functions, no I/O; used by ``KubernetesProvider`` (``kubernetes.py``). A :class:`Proof` is
what our last apply (or a dry-run that found the object in sync) left us: the digest of the
desired object it is about, and the state of the live object then. :func:`shows_in_sync`
compares it with the object as a list returned it:

1. the same object (``uid``) at the same ``resourceVersion``: it has not changed at all;
2. else our field manager's Apply entry in ``metadata.managedFields`` owns exactly the fields
   it owned then (compared by digest), with the same ``time``: any other writer that changed
   one of our fields took it from us (an update takes what it changes, another applier what
   it forces, the scale subresource ``spec.replicas``; a removed field leaves every entry),
   and our entry's time moves whenever something applied under our name changed anything;
   writes of fields we do not own (status, others' labels) leave the entry alone;
3. else the inventory record of our last apply, kept across restarts, names the same field
   set for the same desired object (the one weaker case: an apply under our field manager
   name by someone else, with the same fields and other values, is not told apart; the
   proofs kept in memory, which hold the entry's time, do tell it).

The desired object must be the one proved: its digest covers the rendered object and the
``force`` and ``ignore`` options. Fields under ``ignore`` pointers are left out of the field
set digest (we do not fight over them, so another writer may take them). Anything else — no
entry of ours, another set, another object, a kind without managed fields — is doubt, and the
provider falls back to the dry-run apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .kube_objects import FIELD_MANAGER, ObjectRef, decode_pointer

__all__ = ["Proof", "desired_digest", "kept_proofs", "proof_of", "record_entry",
           "shows_in_sync"]

Identity = tuple[str, str, str, str]


@dataclass(frozen=True)
class Proof:
    """What showed one object in sync, and the state it was in then."""

    digest: str  # the desired object (with force and ignore) this is about
    fields: str  # digest of our Apply entry's field set, "" when there was no entry
    uid: str = ""  # "" when the proof comes from the inventory record
    resource_version: str = ""
    time: str = ""  # our entry's time


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def desired_digest(body: Mapping[str, Any], force: bool, ignore: Sequence[str]) -> str:
    """The digest of what we apply: the rendered object and the options that shape it."""
    return _hash([body, force, sorted(ignore)])


def _strip(fields: Mapping[str, Any], parts: Sequence[str]) -> dict[str, Any]:
    """``fields`` (a ``fieldsV1`` trie) without the field at the path ``parts``."""
    out = dict(fields)
    head = f"f:{parts[0]}"
    if head in out:
        child = out[head]
        if len(parts) == 1:
            del out[head]
        elif isinstance(child, Mapping):
            out[head] = _strip(child, parts[1:])
    return out


def _paths(ignore: Sequence[str]) -> list[list[str]]:
    """The ``ignore`` pointers that name a field through maps only (a list item is named by
    its key in a field set, by its index in a pointer: those stay in)."""
    out = []
    for pointer in ignore:
        try:
            parts = decode_pointer(pointer)
        except ValueError:
            continue
        if parts and not any(part.isdigit() for part in parts):
            out.append(parts)
    return out


def _entry(live: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Our field manager's one Apply entry on the main resource; None when not exactly one."""
    found = [e for e in (live.get("metadata") or {}).get("managedFields") or []
             if isinstance(e, Mapping) and e.get("manager") == FIELD_MANAGER
             and e.get("operation") == "Apply" and not e.get("subresource")]
    return found[0] if len(found) == 1 else None


def _owned(live: Mapping[str, Any], ignore: Sequence[str]) -> tuple[str, str] | None:
    """``(field set digest, time)`` of our Apply entry, ignored fields left out."""
    entry = _entry(live)
    if entry is None or not isinstance(entry.get("fieldsV1"), Mapping):
        return None
    fields: Mapping[str, Any] = entry["fieldsV1"]
    for parts in _paths(ignore):
        fields = _strip(fields, parts)
    return _hash(fields), str(entry.get("time") or "")


def _state(live: Mapping[str, Any]) -> tuple[str, str]:
    meta = live.get("metadata") or {}
    return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")


def proof_of(live: Mapping[str, Any], digest: str, ignore: Sequence[str]) -> Proof:
    """The proof that ``live`` (our apply's answer, or an object a dry-run found in sync) is
    in sync with the desired object of ``digest``."""
    uid, version = _state(live)
    fields, time = _owned(live, ignore) or ("", "")
    return Proof(digest, fields, uid, version, time)


def shows_in_sync(live: Mapping[str, Any], digest: str, ignore: Sequence[str],
                  memo: Proof | None, kept: Proof | None) -> Proof | None:
    """The proof that shows ``live`` in sync with the desired object of ``digest`` (to keep
    for the next run), None when there is doubt. ``memo`` is the proof kept in memory,
    ``kept`` the one of the inventory record (see the module docstring)."""
    uid, version = _state(live)
    if memo is not None and memo.digest == digest and memo.uid == uid and uid:
        if memo.resource_version == version and version:
            return memo
        # newer than the record: when it no longer holds, the record does not either
        if memo.fields and _owned(live, ignore) == (memo.fields, memo.time):
            return replace(memo, resource_version=version)
        return None
    if kept is None or kept.digest != digest or not kept.fields:
        return None
    owned = _owned(live, ignore)
    if owned is None or owned[0] != kept.fields:
        return None
    return Proof(digest, owned[0], uid, version, owned[1])


def record_entry(ref: ObjectRef, proof: Proof) -> dict[str, Any]:
    """An object of the inventory record: its reference and what proves it in sync. Only
    what the desired state determines is kept (no resourceVersion, uid or time), so an
    apply that repairs drift records what the previous apply recorded."""
    return {**ref.to_dict(), "digest": proof.digest, "fields": proof.fields}


def kept_proofs(objects: Sequence[Any]) -> dict[Identity, Proof]:
    """The proofs an inventory record's ``objects`` hold, by object identity."""
    out: dict[Identity, Proof] = {}
    for raw in objects:
        if not isinstance(raw, Mapping) or raw.get("prunePending"):
            continue
        digest, fields = raw.get("digest"), raw.get("fields")
        if isinstance(digest, str) and isinstance(fields, str) and digest and fields:
            out[ObjectRef.from_dict(raw).identity] = Proof(digest, fields)
    return out
