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
    verified,
)

OURS = {"f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}}}}}}
DIGEST = desired_digest({"kind": "Deployment", "spec": {"replicas": 2}}, True, ())


def live(fields: dict[str, Any] | None = OURS, *, rv: str = "100", uid: str = "u-1",
         replicas: int = 2, image: str = "nginx:1.25", **more: dict[str, Any]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}}}}]
    if fields is not None:
        entries.append({"manager": "reconciler", "operation": "Apply", "fieldsV1": fields})
    for manager, owned in more.items():
        entries.append({"manager": manager, "operation": "Update", "fieldsV1": owned})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": uid, "resourceVersion": rv,
                         "labels": {"app": "web", "team": "ops"}, "managedFields": entries},
            "spec": {"replicas": replicas, "minReadySeconds": 0, "template": {"spec": {
                "containers": [{"name": "web", "image": image, "imagePullPolicy": "Always"}]}}},
            "status": {"replicas": 1}}


APPLIED = proof_of(live(), DIGEST, ())


def without_replicas() -> dict[str, Any]:
    fields = copy.deepcopy(OURS)
    del fields["f:spec"]["f:replicas"]
    return fields


def test_the_same_object_at_the_same_version_is_in_sync() -> None:
    assert shows_in_sync(live(), DIGEST, (), APPLIED, None) == APPLIED


def changed_status() -> dict[str, Any]:
    obj = live(rv="105")
    obj["status"]["replicas"] = 2
    obj["spec"]["minReadySeconds"] = 5  # not ours
    return obj


@pytest.mark.parametrize(("why", "obj", "expected"), [
    ("status and a field we do not own changed", changed_status(), True),
    ("another manager's field", live(rv="105", editor={"f:metadata": {"f:labels": {
        "f:team": {}}}}), True),
    ("one of our fields taken", live(without_replicas(), rv="105", replicas=5), False),
    ("one of our fields taken, value ours", live(without_replicas(), rv="105"), False),
    ("our entry gone (reset)", live(None, rv="105"), False),
    ("one of our values changed, same owner", live(rv="105", image="nginx:1.26"), False),
    ("the object was recreated as it was", live(rv="105", uid="u-2"), True),
])
def test_a_newer_version_is_in_sync_only_when_our_fields_hold_our_values(
        why: str, obj: dict[str, Any], expected: bool) -> None:
    kept = kept_proofs([record_entry(ObjectRef("apps/v1", "Deployment", "ns", "web"),
                                     APPLIED)])[("apps", "Deployment", "ns", "web")]
    for memo, record in ((APPLIED, None), (None, kept)):  # in memory, or after a restart
        proof = shows_in_sync(obj, DIGEST, (), memo, record)
        assert (proof is not None) is expected, why
        if proof is not None:  # kept with the version it held for: the next run needs less
            assert (proof.uid, proof.resource_version) == (obj["metadata"]["uid"], "105")
            assert shows_in_sync(obj, DIGEST, (), proof, None) == proof


def test_another_desired_object_is_never_proved() -> None:
    other = desired_digest({"kind": "Deployment", "spec": {"replicas": 3}}, True, ())
    assert shows_in_sync(live(), other, (), APPLIED, None) is None
    assert desired_digest({"a": 1}, True, ()) != desired_digest({"a": 1}, False, ())
    assert desired_digest({"a": 1}, True, ()) != desired_digest({"a": 1}, True, ("/a",))


def test_the_record_holds_what_the_desired_state_determines() -> None:
    entry = record_entry(ObjectRef("apps/v1", "Deployment", "ns", "web"), APPLIED)
    assert set(entry) == {"apiVersion", "kind", "namespace", "name", "digest", "fields",
                          "values"}
    # another apply of the same desired object leaves the same record
    again = proof_of(live(rv="300", uid="u-7"), DIGEST, ())
    assert record_entry(ObjectRef("apps/v1", "Deployment", "ns", "web"), again) == entry


def test_ignored_fields_are_left_out() -> None:
    ignore = ("/spec/replicas",)
    applied = proof_of(live(), DIGEST, ignore)
    autoscaled = live(without_replicas(), rv="105", replicas=7, hpa={"f:spec": {
        "f:replicas": {}}})
    assert shows_in_sync(autoscaled, DIGEST, ignore, applied, None) is not None
    assert shows_in_sync(autoscaled, DIGEST, (), APPLIED, None) is None
    # a pointer through a list item cannot be matched to the field set: it stays in
    listed = ("/spec/template/spec/containers/0/image",)
    assert proof_of(live(), DIGEST, listed).fields == APPLIED.fields


def test_a_dry_run_proves_more_than_its_version_only_when_we_own_all_we_set() -> None:
    full = verified(live(rv="105"), live(rv="105"), DIGEST, ())
    assert (full.fields, full.values) == (APPLIED.fields, APPLIED.values)
    held = verified(live(without_replicas(), rv="105"), live(rv="105"), DIGEST, ())
    assert (held.fields, held.values, held.resource_version) == ("", "", "105")
    assert shows_in_sync(live(without_replicas(), rv="105"), DIGEST, (), held, None) == held
    assert shows_in_sync(live(without_replicas(), rv="106", replicas=7), DIGEST, (), held,
                         None) is None


def test_two_entries_of_ours_or_odd_shapes_are_doubt() -> None:
    twice = live(rv="105")
    twice["metadata"]["managedFields"].append(dict(twice["metadata"]["managedFields"][-1]))
    assert shows_in_sync(twice, DIGEST, (), APPLIED, None) is None
    assert proof_of({"metadata": {}}, DIGEST, ()) == Proof(DIGEST, "", "", "", "")
    assert shows_in_sync({"metadata": {}}, DIGEST, (), Proof(DIGEST, "", ""), None) is None
    assert shows_in_sync(live({}, rv="105"), DIGEST, (), proof_of(live({}), DIGEST, ()),
                         None) is None


def test_kept_proofs_skip_pending_prunes_and_older_records() -> None:
    ref = ObjectRef("v1", "ConfigMap", "ns", "cm")
    entries = [record_entry(ref, APPLIED),
               {**ref.to_dict(), "name": "old"},
               {**ref.to_dict(), "name": "older", "digest": "d", "fields": "f"},
               {**record_entry(ref, APPLIED), "name": "pending", "prunePending": True},
               "junk"]
    assert list(kept_proofs(entries)) == [("", "ConfigMap", "ns", "cm")]
