"""Tests of the drift comparison (providers/kube_diff.py) and object helpers (kube_objects.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from reconciler_providers.kube_diff import (
    compare,
    fieldset_of,
    managed_fieldset,
    mask_values,
    merge_fieldsets,
    project,
    strip_noise,
)
from reconciler_providers.kube_objects import (
    ObjectRef,
    apply_order,
    decode_pointer,
    get_pointer,
    remove_pointer,
    set_pointer,
    stamp_ownership,
)

# the field set the API server records for our apply of the deployment below
OURS = {
    "f:metadata": {"f:labels": {"f:app": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:template": {"f:spec": {"f:containers": {
            'k:{"name":"web"}': {".": {}, "f:name": {}, "f:image": {}}}}},
    },
}
# a hand edit (kubectl edit) that added an annotation
THEIRS = {"f:metadata": {"f:annotations": {".": {}, "f:note": {}}}}


def live_deployment(*, image: str = "nginx:1.25", replicas: int = 2,
                    managed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "17",
            "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"app": "web"}, "annotations": {"note": "by hand"},
            "managedFields": managed if managed is not None else [
                {"manager": "reconciler", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": OURS},
                {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": THEIRS},
            ],
        },
        "spec": {
            "replicas": replicas, "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate"},
            "template": {"spec": {"containers": [
                {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent",
                 "terminationMessagePath": "/dev/termination-log"},
                {"name": "sidecar", "image": "envoy:1", "imagePullPolicy": "IfNotPresent"},
            ]}},
        },
        "status": {"replicas": replicas, "availableReplicas": replicas},
    }


def test_project_follows_fields_and_keyed_list_items() -> None:
    projected = project(live_deployment(), OURS)
    assert projected == {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25"}]}}},
    }


def test_project_by_value_and_index() -> None:
    value = {"finalizers": ["a", "b"], "args": ["x", "y", "z"]}
    fields = {"f:finalizers": {'v:"b"': {}}, "f:args": {"i:2": {}}}
    assert project(value, fields) == {"finalizers": ["b"], "args": ["z"]}


def test_project_dot_only_keeps_an_empty_container() -> None:
    assert project({"data": {"a": "1"}}, {"f:data": {".": {}}}) == {"data": {}}


def test_managed_fieldset_takes_only_our_apply_entries() -> None:
    obj = live_deployment(managed=[
        {"manager": "reconciler", "operation": "Apply", "fieldsV1": {"f:spec": {"f:a": {}}}},
        {"manager": "reconciler", "operation": "Apply", "subresource": "status",
         "fieldsV1": {"f:status": {}}},
        {"manager": "reconciler", "operation": "Update", "fieldsV1": {"f:spec": {"f:b": {}}}},
        {"manager": "other", "operation": "Apply", "fieldsV1": {"f:spec": {"f:c": {}}}},
    ])
    assert managed_fieldset(obj) == {"f:spec": {"f:a": {}}}
    assert managed_fieldset({"metadata": {}}) is None


def test_merge_fieldsets_is_a_deep_union() -> None:
    merged = merge_fieldsets({"f:a": {"f:x": {}}}, {"f:a": {"f:y": {}}, "f:b": {}})
    assert merged == {"f:a": {"f:x": {}, "f:y": {}}, "f:b": {}}


def test_fieldset_of_treats_lists_as_one_field() -> None:
    assert fieldset_of({"a": {"b": 1}, "c": [1, 2]}) == {"f:a": {"f:b": {}}, "f:c": {}}


def test_strip_noise_drops_server_written_fields() -> None:
    stripped = strip_noise(live_deployment())
    assert "status" not in stripped
    assert set(stripped["metadata"]) == {"name", "namespace", "labels", "annotations"}


def test_identical_dry_run_is_in_sync_despite_server_noise() -> None:
    live = live_deployment()
    dry = copy.deepcopy(live)
    # a dry-run answer differs in server-written fields only
    dry["metadata"]["resourceVersion"] = "18"
    dry["metadata"]["managedFields"][0]["time"] = "2024-02-02T00:00:00Z"
    dry["status"] = {}
    assert not compare(live, dry).changed


def test_hand_edit_of_a_field_we_own_is_drift() -> None:
    # the hand edit took spec.replicas: the live entry of ours no longer lists it, the
    # dry-run (force) gives it back to us
    ours_without_replicas = copy.deepcopy(OURS)
    del ours_without_replicas["f:spec"]["f:replicas"]
    live = live_deployment(replicas=5, managed=[
        {"manager": "reconciler", "operation": "Apply", "fieldsV1": ours_without_replicas},
        {"manager": "kubectl-edit", "operation": "Update",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ])
    dry = live_deployment(replicas=2)
    diff = compare(live, dry)
    assert diff.changed
    assert "-  replicas: 5" in diff.text
    assert "+  replicas: 2" in diff.text
    assert diff.text.startswith("--- live/Deployment/shop/web\n+++ desired/Deployment/shop/web")


def test_change_of_our_image_is_reported() -> None:
    diff = compare(live_deployment(), live_deployment(image="nginx:1.26"))
    assert diff.changed
    assert "+      - image: nginx:1.26" in diff.text
    assert "sidecar" not in diff.text  # a container someone else added is not ours


def test_field_owned_by_someone_else_is_left_alone() -> None:
    live = live_deployment()
    dry = copy.deepcopy(live)
    live["metadata"]["annotations"]["note"] = "edited again"
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "envoy:2"
    assert not compare(live, dry).changed


def test_field_removed_from_the_manifest_shows_as_removal() -> None:
    live = live_deployment()
    live["metadata"]["labels"]["tier"] = "front"
    live["metadata"]["managedFields"][0]["fieldsV1"] = merge_fieldsets(
        OURS, {"f:metadata": {"f:labels": {"f:tier": {}}}})
    dry = live_deployment()  # the apply without the label removes it
    diff = compare(live, dry)
    assert diff.changed
    assert "-    tier: front" in diff.text


def test_ignore_pointers_are_dropped_from_both_sides() -> None:
    live = live_deployment(replicas=7)
    dry = live_deployment(replicas=2)
    assert compare(live, dry).changed
    assert not compare(live, dry, ignore=["/spec/replicas"]).changed


def test_without_managed_fields_the_desired_body_bounds_the_comparison() -> None:
    live = live_deployment(managed=[])
    dry = copy.deepcopy(live)
    live["metadata"]["annotations"]["note"] = "other"
    desired = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
               "spec": {"replicas": 2}}
    assert not compare(live, dry, desired=desired).changed
    dry["spec"]["replicas"] = 3
    assert compare(live, dry, desired=desired).changed


def test_secret_values_are_redacted() -> None:
    fields = {"f:data": {"f:password": {}, "f:user": {}}}
    managed = [{"manager": "reconciler", "operation": "Apply", "fieldsV1": fields}]
    live = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop", "managedFields": managed},
            "data": {"password": "b2xk", "user": "YWRtaW4="}}
    dry = copy.deepcopy(live)
    dry["data"]["password"] = "bmV3"
    diff = compare(live, dry)
    assert diff.changed
    assert "b2xk" not in diff.text and "bmV3" not in diff.text
    assert "password: <redacted, changed>" in diff.text
    assert "YWRtaW4=" not in diff.text


def test_mask_values_hides_secret_parameters() -> None:
    assert mask_values("token: hunter22 and hunter22", ["hunter22", "ab"]) == \
        "token: *** and ***"


@pytest.mark.parametrize(("pointer", "parts"), [
    ("", []),
    ("/spec/replicas", ["spec", "replicas"]),
    ("/metadata/annotations/a~1b", ["metadata", "annotations", "a/b"]),
    ("/x/m~0n", ["x", "m~n"]),
])
def test_decode_pointer(pointer: str, parts: list[str]) -> None:
    assert decode_pointer(pointer) == parts


def test_decode_pointer_rejects_relative() -> None:
    with pytest.raises(ValueError, match="must start with"):
        decode_pointer("spec/replicas")


def test_pointer_get_set_remove() -> None:
    obj: dict[str, Any] = {"spec": {"containers": [{"image": "a"}]},
                           "metadata": {"annotations": {"a/b": "1"}}}
    assert get_pointer(obj, "/spec/containers/0/image") == (True, "a")
    assert get_pointer(obj, "/spec/containers/3/image") == (False, None)
    assert get_pointer(obj, "/metadata/annotations/a~1b") == (True, "1")
    set_pointer(obj, "/spec/containers/0/image", "b")
    set_pointer(obj, "/spec/replicas", 4)
    assert obj["spec"]["containers"][0]["image"] == "b"
    assert obj["spec"]["replicas"] == 4
    remove_pointer(obj, "/metadata/annotations/a~1b")
    remove_pointer(obj, "/no/such/path")
    assert obj["metadata"]["annotations"] == {}


def test_apply_order_puts_namespaces_then_crds_first() -> None:
    objs = [{"kind": "Deployment", "n": 1}, {"kind": "CustomResourceDefinition", "n": 2},
            {"kind": "ConfigMap", "n": 3}, {"kind": "Namespace", "n": 4},
            {"kind": "Widget", "n": 5}, {"kind": "Namespace", "n": 6}]
    assert [o["n"] for o in apply_order(objs)] == [4, 6, 2, 1, 3, 5]


def test_stamp_ownership_labels_and_annotations() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "cfg", "labels": {"app": "web"}}}
    stamped = stamp_ownership(obj, instance="shop-floor", target="eu/berlin line 1",
                              component="web")
    meta = stamped["metadata"]
    assert meta["labels"] == {"app": "web", "app.kubernetes.io/managed-by": "reconciler",
                              "reconciler.io/instance": "shop-floor",
                              "reconciler.io/component": "web"}
    assert meta["annotations"]["reconciler.io/target"] == "eu/berlin line 1"
    assert obj["metadata"]["labels"] == {"app": "web"}  # the input is not modified


def test_object_ref_round_trip_and_names() -> None:
    ref = ObjectRef.of({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop"}})
    assert str(ref) == "Deployment/shop/web"
    assert ObjectRef.from_dict(ref.to_dict()) == ref
    assert str(ObjectRef("v1", "Namespace", "", "shop")) == "Namespace/shop"
    assert ref.identity == ObjectRef("apps/v1beta2", "Deployment", "shop", "web").identity
