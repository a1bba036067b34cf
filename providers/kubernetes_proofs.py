"""When the kubernetes provider may call an object in sync without asking the server.

Pure functions, no I/O; used by ``KubernetesProvider`` (``kubernetes.py``). A :class:`Proof` is
what our last apply (or a dry-run that found the object in sync) left us about one object:
the digest of the desired object it is about, the digest of the field set our field manager's
Apply entry in ``metadata.managedFields`` owned then, and the digest of the object's values
at those fields. :func:`shows_in_sync` holds it against the object as a list returned it:

1. the same object (``uid``) at the same ``resourceVersion``: it has not changed at all;
2. else our entry owns exactly the same fields and the object holds exactly the same values
   there: whatever was written since, none of our fields changed. (The API server gives a
   field to whoever changes its value, so any other writer that changed one of ours also
   shrank our set; the values are compared besides, which catches what ownership does not
   show: an apply under our field manager name, a restored backup, another cluster.)

The inventory record keeps the digests (not the ``resourceVersion`` or ``uid``, which say when,
not what: an apply that repairs drift records what the previous apply recorded), so (2) holds
across restarts; the provider keeps the proofs it used in memory for (1).

A dry-run that finds an object in sync leaves a proof by field set only when our entry owns
every field we set (:func:`verified`): a field someone else took and set back to our value
moves no ownership when they change it again, so until our next apply only that very version
is proven. The desired object must be the one proved: its digest covers the rendered object
and the ``force`` and ``ignore`` options. Fields under ``ignore`` pointers are left out (we do
not fight over them, so another writer may take them). Anything else — no entry of ours,
another set, other values, a kind without managed fields — is doubt, and the provider falls
back to the dry-run apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .kube_diff import project
from .kube_objects import FIELD_MANAGER, ObjectRef, decode_pointer

__all__ = ["Proof", "desired_digest", "kept_proofs", "proof_of", "record_entry",
           "shows_in_sync", "verified"]

Identity = tuple[str, str, str, str]


@dataclass(frozen=True)
class Proof:
    """What showed one object in sync, and the state it was in then."""

    digest: str  # the desired object (with force and ignore) this is about
    fields: str  # our Apply entry's field set, "" when it proves that one version only
    values: str  # the object's values at those fields
    uid: str = ""  # "" when the proof comes from the inventory record
    resource_version: str = ""


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
    """``(field set, values)`` digests of what our Apply entry owns, ignored fields left
    out; None when there is no such entry."""
    entry = _entry(live)
    if entry is None or not isinstance(entry.get("fieldsV1"), Mapping) \
            or not entry["fieldsV1"]:
        return None
    fields: Mapping[str, Any] = entry["fieldsV1"]
    for parts in _paths(ignore):
        fields = _strip(fields, parts)
    return _hash(fields), _hash(project(live, fields))


def _state(live: Mapping[str, Any]) -> tuple[str, str]:
    meta = live.get("metadata") or {}
    return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")


def proof_of(live: Mapping[str, Any], digest: str, ignore: Sequence[str]) -> Proof:
    """The proof that ``live`` (the answer of our apply of the desired object of ``digest``)
    is in sync with it."""
    uid, version = _state(live)
    fields, values = _owned(live, ignore) or ("", "")
    return Proof(digest, fields, values, uid, version)


def verified(live: Mapping[str, Any], dry_run: Mapping[str, Any], digest: str,
             ignore: Sequence[str]) -> Proof:
    """The proof that ``live``, which a dry-run apply (answer ``dry_run``) found in sync, is
    in sync: by field set only when that set is the one the apply would leave us (see the
    module docstring), else for this version of the object only."""
    proof = proof_of(live, digest, ignore)
    after = _owned(dry_run, ignore)
    if not proof.fields or after is None or after[0] != proof.fields:
        return replace(proof, fields="", values="")
    return proof


def shows_in_sync(live: Mapping[str, Any], digest: str, ignore: Sequence[str],
                  memo: Proof | None, kept: Proof | None) -> Proof | None:
    """The proof that shows ``live`` in sync with the desired object of ``digest`` (to keep
    for the next run), None when there is doubt. ``memo`` is the proof kept in memory,
    ``kept`` the one of the inventory record (see the module docstring)."""
    uid, version = _state(live)
    if memo is not None and memo.digest == digest and uid and version \
            and (memo.uid, memo.resource_version) == (uid, version):
        return memo
    owned: tuple[str, str] | None = None
    for proof in (memo, kept):
        if proof is None or proof.digest != digest or not proof.fields:
            continue
        owned = owned or _owned(live, ignore)
        if owned == (proof.fields, proof.values):
            return Proof(digest, proof.fields, proof.values, uid, version)
    return None


def record_entry(ref: ObjectRef, proof: Proof) -> dict[str, Any]:
    """An object of the inventory record: its reference and the digests that prove it in
    sync (see the module docstring for why no resourceVersion or uid)."""
    return {**ref.to_dict(), "digest": proof.digest, "fields": proof.fields,
            "values": proof.values}


def kept_proofs(objects: Sequence[Any]) -> dict[Identity, Proof]:
    """The proofs an inventory record's ``objects`` hold, by object identity."""
    out: dict[Identity, Proof] = {}
    for raw in objects:
        if not isinstance(raw, Mapping) or raw.get("prunePending"):
            continue
        digests = [raw.get(key) for key in ("digest", "fields", "values")]
        if all(isinstance(d, str) and d for d in digests):
            out[ObjectRef.from_dict(raw).identity] = Proof(*(str(d) for d in digests))
    return out
