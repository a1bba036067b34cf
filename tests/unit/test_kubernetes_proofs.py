"""Tests of when the kubernetes provider calls an object in sync without asking the server
(providers/kubernetes_proofs.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from reconciler_providers.kube_objects import ObjectRef
from reconciler_providers.kubernetes_proofs import (
    Proof,
    desired_digest,
    kept_proofs,
    proof_of,
    record_entry,
    shows_in_sync,
)

OURS = {"f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}}}}}}
DIGEST = desired_digest({"kind": "Deployment", "spec": {"replicas": 2}}, True, ())


def live(fields: dict[str, Any] | None = OURS, *, rv: str = "100", uid: str = "u-1",
         time: str = "2024-05-01T10:00:00Z", **more: dict[str, Any]) -> dict[str, Any]:
    entries = [{"manager": "kube-controller-manager", "operation": "Update",
                "subresource": "status", "time": "2024-05-01T10:00:09Z",
                "fieldsV1": {"f:status": {"f:replicas": {}}}}]
    if fields is not None:
        entries.append({"manager": "reconciler", "operation": "Apply", "time": time,
                        "fieldsV1": fields})
    for manager, owned in more.items():
        entries.append({"manager": manager, "operation": "Update", "time": time,
                        "fieldsV1": owned})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": uid, "resourceVersion": rv,
                         "managedFields": entries}}


APPLIED = proof_of(live(), DIGEST, ())


def without_replicas() -> dict[str, Any]:
    fields = copy.deepcopy(OURS)
    del fields["f:spec"]["f:replicas"]
    return fields


def test_the_same_object_at_the_same_version_is_in_sync() -> None:
    assert shows_in_sync(live(), DIGEST, (), APPLIED, None) == APPLIED


@pytest.mark.parametrize(("why", "obj", "expected"), [
    ("a status write", live(rv="105"), True),
    ("another manager's field", live(rv="105", editor={"f:metadata": {"f:labels": {
        "f:team": {}}}}), True),
    ("one of our fields taken", live(without_replicas(), rv="105"), False),
    ("our entry gone (reset)", live(None, rv="105"), False),
    ("applied under our name since", live(rv="105", time="2024-05-01T11:00:00Z"), False),
    ("the object was recreated", live(rv="105", uid="u-2"), False),
])
def test_a_newer_version_is_in_sync_only_when_our_field_set_is_intact(
        why: str, obj: dict[str, Any], expected: bool) -> None:
    proof = shows_in_sync(obj, DIGEST, (), APPLIED, None)
    assert (proof is not None) is expected, why
    if proof is not None:  # kept with the version it held for: the next run needs no more
        assert proof.resource_version == "105"
        assert shows_in_sync(obj, DIGEST, (), proof, None) == proof


def test_another_desired_object_is_never_proved() -> None:
    other = desired_digest({"kind": "Deployment", "spec": {"replicas": 3}}, True, ())
    assert shows_in_sync(live(), other, (), APPLIED, None) is None
    assert desired_digest({"a": 1}, True, ()) != desired_digest({"a": 1}, False, ())
    assert desired_digest({"a": 1}, True, ()) != desired_digest({"a": 1}, True, ("/a",))


def test_the_record_proves_after_a_restart_by_field_set_alone() -> None:
    kept = kept_proofs([record_entry(ObjectRef("apps/v1", "Deployment", "ns", "web"),
                                     APPLIED)])
    proof = kept[("apps", "Deployment", "ns", "web")]
    assert (proof.uid, proof.resource_version, proof.time) == ("", "", "")
    found = shows_in_sync(live(rv="200", uid="u-9"), DIGEST, (), None, proof)
    assert found is not None and (found.uid, found.resource_version) == ("u-9", "200")
    assert shows_in_sync(live(without_replicas()), DIGEST, (), None, proof) is None
    assert shows_in_sync(live(None), DIGEST, (), None, proof) is None


def test_what_memory_knows_beats_the_record() -> None:
    # the record says the set is intact, but the entry's time moved since our apply: doubt
    kept = Proof(DIGEST, APPLIED.fields)
    moved = live(rv="105", time="2024-05-01T11:00:00Z")
    assert shows_in_sync(moved, DIGEST, (), APPLIED, kept) is None
    assert shows_in_sync(moved, DIGEST, (), None, kept) is not None


def test_ignored_fields_are_left_out_of_the_field_set() -> None:
    ignore = ("/spec/replicas",)
    applied = proof_of(live(), DIGEST, ignore)
    assert shows_in_sync(live(without_replicas(), rv="105"), DIGEST, ignore, applied,
                         None) is not None
    # a pointer through a list item cannot be matched to the field set: it stays in
    listed = ("/spec/template/spec/containers/0/image",)
    assert proof_of(live(), DIGEST, listed).fields == APPLIED.fields


def test_two_entries_of_ours_or_odd_shapes_are_doubt() -> None:
    twice = live(rv="105")
    twice["metadata"]["managedFields"].append(dict(twice["metadata"]["managedFields"][-1]))
    assert shows_in_sync(twice, DIGEST, (), APPLIED, None) is None
    assert proof_of({"metadata": {}}, DIGEST, ()) == Proof(DIGEST, "", "", "", "")
    assert shows_in_sync({"metadata": {}}, DIGEST, (), Proof(DIGEST, ""), None) is None


def test_kept_proofs_skip_pending_prunes_and_old_records() -> None:
    ref = ObjectRef("v1", "ConfigMap", "ns", "cm")
    entries = [record_entry(ref, APPLIED),
               {**ref.to_dict(), "name": "old"},
               {**ref.to_dict(), "name": "pending", "prunePending": True, "digest": "d",
                "fields": "f"},
               "junk"]
    assert list(kept_proofs(entries)) == [("", "ConfigMap", "ns", "cm")]
