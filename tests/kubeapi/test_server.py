"""Self-tests of the test Kubernetes API server, through the real ``kubernetes`` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from tests.kubeapi import CONNECTION_RESET, KubeAPIServer
from tests.kubeapi.fieldsets import decode_fields_v1, encode_fields_v1, field_set

MANAGER = "reconciler"


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                }]},
            },
        },
    }
    body["spec"].update(spec)
    return body


def managed(obj: Any, manager: str, operation: str = "Apply") -> dict[str, Any]:
    raw = obj.to_dict() if hasattr(obj, "to_dict") else obj
    for entry in raw["metadata"].get("managedFields") or []:
        if entry["manager"] == manager and entry["operation"] == operation:
            fields: dict[str, Any] = entry["fieldsV1"]
            return fields
    return {}


def status_body(exc: ApiException | DynamicApiError) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        server.add_objects({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "default"}})
        yield server


@pytest.fixture
def dyn(api: KubeAPIServer) -> Any:
    return api.dynamic_client()


@pytest.fixture
def core(api: KubeAPIServer) -> client.CoreV1Api:
    return client.CoreV1Api(client.ApiClient(api.client_configuration()))


def test_start_stop_is_fast_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    started = time.monotonic()
    server = KubeAPIServer().start()
    dyn = server.dynamic_client()  # opens keep-alive connections held by handler threads
    dyn.resources.get(api_version="v1", kind="ConfigMap")
    server.stop()
    assert time.monotonic() - started < 1.0
    stop_started = time.monotonic()
    with KubeAPIServer():
        pass
    assert time.monotonic() - stop_started < 0.1
    time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize(("api_version", "kind", "namespaced"), [
    ("v1", "Namespace", False), ("v1", "ConfigMap", True), ("v1", "Secret", True),
    ("v1", "Service", True), ("v1", "Pod", True), ("v1", "PersistentVolumeClaim", True),
    ("v1", "ServiceAccount", True), ("apps/v1", "Deployment", True),
    ("apps/v1", "StatefulSet", True), ("apps/v1", "DaemonSet", True), ("batch/v1", "Job", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", False),
])
def test_discovery_serves_every_builtin_kind(dyn: Any, api_version: str, kind: str,
                                             namespaced: bool) -> None:
    resource = dyn.resources.get(api_version=api_version, kind=kind)
    assert resource.namespaced is namespaced
    assert "patch" in resource.verbs
    assert dyn.version["kubernetes"]["major"] == "1"


def test_create_get_list_delete(api: KubeAPIServer, core: client.CoreV1Api) -> None:
    for name, tier in (("a", "front"), ("b", "back")):
        core.create_namespaced_config_map("default", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": name}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert exc.value.status == 409
    assert status_body(exc.value)["reason"] == "AlreadyExists"
    assert status_body(exc.value)["message"] == 'configmaps "a" already exists'

    got = core.read_namespaced_config_map("a", "default")
    assert got.data == {"k": "a"} and got.metadata.uid and got.metadata.resource_version
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        "default", label_selector="tier in (back,middle)").items] == ["b"]
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        "default", field_selector="metadata.name=a").items] == ["a"]
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        "default", label_selector="tier!=front").items] == ["b"]

    deleted = core.delete_namespaced_config_map("a", "default")
    deleted = deleted if isinstance(deleted, dict) else deleted.to_dict()
    assert deleted["status"] == "Success" and deleted["details"]["name"] == "a"
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("a", "default")
    assert exc.value.status == 404
    assert status_body(exc.value)["message"] == 'configmaps "a" not found'
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_config_map("a", "default")
    assert exc.value.status == 404
    assert api.get_object("v1", "ConfigMap", "b", "default") is not None


def test_put_uses_optimistic_concurrency(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", {
        "metadata": {"name": "cm"}, "data": {"k": "1"}})
    stale = created.metadata.resource_version
    created.data = {"k": "2"}
    updated = core.replace_namespaced_config_map("cm", "default", created)
    assert updated.metadata.resource_version != stale
    created.data = {"k": "3"}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cm", "default", created)
    assert exc.value.status == 409
    assert status_body(exc.value)["message"].startswith(
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified')


def test_apply_creates_and_noop_reapply_keeps_resource_version(dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    first = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    again = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    assert first.metadata.resourceVersion == again.metadata.resourceVersion
    assert again.metadata.generation == 1
    changed = dyn.server_side_apply(res, body=deployment(replicas=3), field_manager=MANAGER)
    assert changed.metadata.resourceVersion != first.metadata.resourceVersion
    assert changed.metadata.generation == 2


def test_defaulted_fields_are_present_but_not_owned_by_the_applier(dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    obj = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER).to_dict()
    spec = obj["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"

    fields = managed(obj, MANAGER)
    assert "f:strategy" not in fields["f:spec"]
    web = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert web["."] == {} and "f:imagePullPolicy" not in web
    assert web["f:ports"] == {'k:{"containerPort":80,"protocol":"TCP"}': {
        ".": {}, "f:containerPort": {}}}
    assert set(web["f:env"]) == {'k:{"name":"A"}', 'k:{"name":"B"}'}
    assert fields["f:metadata"] == {"f:labels": {"f:app": {}}}


def test_service_defaults(dyn: Any) -> None:
    res = dyn.resources.get(api_version="v1", kind="Service")
    obj = dyn.server_side_apply(res, field_manager=MANAGER, body={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}).to_dict()
    spec = obj["spec"]
    assert spec["type"] == "ClusterIP" and spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["sessionAffinity"] == "None" and spec["internalTrafficPolicy"] == "Cluster"
    assert managed(obj, MANAGER)["f:spec"] == {
        "f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}}},
        "f:selector": {"f:app": {}}}


def test_fields_the_applier_omits_are_pruned(dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["metadata"]["labels"]["extra"] = "yes"
    dyn.server_side_apply(res, body=body, field_manager=MANAGER)
    slim = deployment()
    del slim["spec"]["replicas"]
    slim["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    obj = dyn.server_side_apply(res, body=slim, field_manager=MANAGER).to_dict()
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A",
                                                                        "value": "1"}]
    assert obj["spec"]["replicas"] == 1  # pruned, then defaulted again like a real server
    assert "f:replicas" not in managed(obj, MANAGER)["f:spec"]


def test_field_owned_by_another_manager_is_kept_when_applier_omits_it(
        api: KubeAPIServer, dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    api.edit("apps/v1", "Deployment", "web", "default",
             {"metadata": {"annotations": {"note": "by hand"}}})
    slim = deployment()
    del slim["spec"]["replicas"]
    obj = dyn.server_side_apply(res, body=slim, field_manager=MANAGER).to_dict()
    assert obj["metadata"]["annotations"] == {"note": "by hand"}
    assert managed(obj, "kubectl-edit", "Update") == {
        "f:metadata": {"f:annotations": {".": {}, "f:note": {}}}}


def test_conflict_with_a_hand_edit_then_force_takes_ownership(
        api: KubeAPIServer, dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    edited = api.edit("apps/v1", "Deployment", "web", "default", {"spec": {"replicas": 5}})
    assert managed(edited, "kubectl-edit", "Update") == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in managed(edited, MANAGER)["f:spec"]

    # Re-applying the value that is live now is shared ownership, not a conflict.
    dyn.server_side_apply(res, body=deployment(replicas=5), field_manager=MANAGER)
    api.edit("apps/v1", "Deployment", "web", "default", {"spec": {"replicas": 7}})
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    assert exc.value.status == 409
    body = status_body(exc.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == ('Apply failed with 1 conflict: conflict with "kubectl-edit" '
                               "using apps/v1: .spec.replicas")
    assert body["details"]["causes"] == [{
        "reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using apps/v1',
        "field": ".spec.replicas"}]
    assert api.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 7

    forced = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER,
                                   force_conflicts=True).to_dict()
    assert forced["spec"]["replicas"] == 2
    assert "f:replicas" in managed(forced, MANAGER)["f:spec"]
    assert managed(forced, "kubectl-edit", "Update") == {}


def test_two_conflicts_are_listed_per_manager(api: KubeAPIServer, dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    api.edit("apps/v1", "Deployment", "web", "default", {
        "spec": {"replicas": 4, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.26"}]}}}})
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    message = status_body(exc.value)["message"]
    assert message.startswith('Apply failed with 2 conflicts: conflicts with "kubectl-edit" '
                              "using apps/v1:\n- ")
    assert '- .spec.template.spec.containers[name="web"].image' in message


def test_dry_run_persists_nothing(api: KubeAPIServer, dyn: Any,
                                  core: client.CoreV1Api) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    preview = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER,
                                    dry_run="All").to_dict()
    assert preview["spec"]["revisionHistoryLimit"] == 10 and managed(preview, MANAGER)
    assert api.get_object("apps/v1", "Deployment", "web", "default") is None

    live = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    rv = live.metadata.resourceVersion
    preview = dyn.server_side_apply(res, body=deployment(replicas=9), field_manager=MANAGER,
                                    dry_run="All")
    assert preview.spec.replicas == 9 and preview.metadata.resourceVersion == rv
    api.edit("apps/v1", "Deployment", "web", "default", {"spec": {"replicas": 4}})
    with pytest.raises(DynamicApiError) as exc:  # conflicts are found in dry-run too
        dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER, dry_run="All")
    assert exc.value.status == 409

    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}}, dry_run="All")
    assert api.get_object("v1", "ConfigMap", "cm", "default") is None
    dyn.delete(res, name="web", namespace="default", dry_run="All")
    assert api.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 4
    assert api.count(method="PATCH", dry_run=True) == 3
    assert api.count(method="PATCH", dry_run=False) == 1
    assert api.count(method="DELETE", path_prefix="/apis/apps/v1/namespaces/default") == 1
    assert {r.field_manager for r in api.requests if r.method == "PATCH"} == {MANAGER}


def test_missing_namespace_is_404(dyn: Any, core: client.CoreV1Api) -> None:
    res = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, field_manager=MANAGER, body={
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "nowhere"}})
    assert exc.value.status == 404
    assert status_body(exc.value)["message"] == 'namespaces "nowhere" not found'
    with pytest.raises(ApiException) as exc2:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "cm"}})
    assert exc2.value.status == 404


def test_invalid_objects_are_422_naming_the_field(dyn: Any, core: client.CoreV1Api) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    del body["spec"]["template"]["spec"]["containers"][0]["image"]
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=body, field_manager=MANAGER)
    assert exc.value.status == 422
    status = status_body(exc.value)
    assert status["reason"] == "Invalid"
    assert status["message"] == ('Deployment.apps "web" is invalid: '
                                 "spec.template.spec.containers[0].image: Required value")
    assert status["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].image"

    with pytest.raises(ApiException) as exc2:
        core.create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    assert exc2.value.status == 422
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value' in \
        status_body(exc2.value)["message"]

    mismatched = deployment()
    mismatched["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=mismatched, field_manager=MANAGER)
    assert "`selector` does not match template `labels`" in status_body(exc.value)["message"]

    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(DynamicApiError) as exc:  # not decodable into the Go type: 400
        dyn.create(cms, namespace="default", body={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"},
            "data": {"count": 3}})
    assert exc.value.status == 400
    assert "cannot unmarshal number into Go struct field ConfigMap.data of type string" in \
        status_body(exc.value)["message"]


def test_status_subresource(api: KubeAPIServer, dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["status"] = {"replicas": 99}
    obj = dyn.server_side_apply(res, body=body, field_manager=MANAGER)
    assert obj.status.to_dict() == {}
    api.set_status("apps/v1", "Deployment", "web", "default", {"replicas": 2})
    status_res = dyn.resources.get(api_version="apps/v1", kind="Deployment").subresources[
        "status"]
    assert dyn.get(status_res, name="web", namespace="default").status.replicas == 2
    dyn.patch(status_res, name="web", namespace="default", body={"status": {"readyReplicas": 1}},
              content_type="application/merge-patch+json")
    obj = dyn.server_side_apply(res, body=deployment(replicas=3), field_manager=MANAGER)
    assert obj.status.to_dict() == {"replicas": 2, "readyReplicas": 1}
    entries = {(e["manager"], e.get("subresource", "")) for e in
               obj.to_dict()["metadata"]["managedFields"]}
    assert ("kube-controller-manager", "status") in entries


def test_crd_registration_then_custom_resource_apply(api: KubeAPIServer, dyn: Any,
                                                     tmp_path: Path) -> None:
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1",
                             kind="CustomResourceDefinition")
    dyn.create(crds, body={
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    crd = api.get_object("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                         "widgets.example.com")
    assert {c["type"] for c in crd["status"]["conditions"]} == {"Established", "NamesAccepted"}

    widgets = dyn.resources.get(api_version="example.com/v1", kind="Widget")
    assert widgets.namespaced and "status" in widgets.subresources
    body = {"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "default"}, "spec": {"size": 3}}
    first = dyn.server_side_apply(widgets, body=body, field_manager=MANAGER)
    again = dyn.server_side_apply(widgets, body=body, field_manager=MANAGER)
    assert first.metadata.resourceVersion == again.metadata.resourceVersion
    assert first.metadata.generation == 1
    listed = dyn.get(widgets, namespace="default")
    assert [i.kind for i in listed.items] == ["Widget"]

    dyn.delete(crds, name="widgets.example.com")
    assert api.get_object("example.com/v1", "Widget", "w", "default") is None
    fresh = dynamic.DynamicClient(client.ApiClient(api.client_configuration()),
                                  cache_file=str(tmp_path / "discovery.json"))
    with pytest.raises(ResourceNotFoundError):
        fresh.resources.get(api_version="example.com/v1", kind="Widget")


def test_namespace_delete_removes_its_objects(api: KubeAPIServer,
                                              core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    ns = core.read_namespace("team")
    assert ns.status.phase == "Active" and ns.spec.finalizers == ["kubernetes"]
    core.create_namespaced_config_map("team", {"metadata": {"name": "cm"}})
    core.delete_namespace("team")
    assert api.get_object("v1", "ConfigMap", "cm", "team") is None
    with pytest.raises(ApiException):
        core.read_namespace("team")


def test_patch_types(core: client.CoreV1Api, dyn: Any) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"},
                                                  "data": {"a": "1", "b": "2"}})
    out = core.patch_namespaced_config_map("cm", "default", {"data": {"a": None, "c": "3"}})
    assert out.data == {"b": "2", "c": "3"}
    out = core.patch_namespaced_config_map(
        "cm", "default", [{"op": "replace", "path": "/data/b", "value": "9"}])
    assert out.data == {"b": "9", "c": "3"}
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.create(res, body=deployment(), namespace="default")
    patched = dyn.patch(res, name="web", namespace="default", body={"spec": {"template": {
        "spec": {"containers": [{"name": "web", "env": [{"name": "C", "value": "3"}]}]}}}})
    env = patched.to_dict()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["A", "B", "C"]  # strategic merge by key
    assert patched.to_dict()["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "nginx:1.25"


def test_fault_injection(api: KubeAPIServer, core: client.CoreV1Api) -> None:
    api.fail_next("GET", "/api/v1/namespaces/default/configmaps", 503)
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_config_map("default")
    assert exc.value.status == 503
    assert status_body(exc.value)["reason"] == "ServiceUnavailable"
    assert core.list_namespaced_config_map("default").items == []

    api.fail_next("POST", "/api/v1", 429, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
        assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "1"
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})

    api.fail_next(None, "/api/v1/namespaces/default/configmaps/cm", CONNECTION_RESET, times=10)
    no_retry = client.CoreV1Api(client.ApiClient(api.client_configuration()))
    no_retry.api_client.configuration.retries = False
    with pytest.raises(urllib3.exceptions.HTTPError):
        no_retry.read_namespaced_config_map("cm", "default")
    assert api.requests[-1].status == CONNECTION_RESET


def test_controller_reports_progress_then_rollout() -> None:
    with KubeAPIServer(controller=True, controller_delays={"Deployment": 2}) as api:
        api.add_objects({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "default"}})
        apps = client.AppsV1Api(client.ApiClient(api.client_configuration()))
        batch = client.BatchV1Api(apps.api_client)
        apps.create_namespaced_deployment("default", deployment())
        seen = [apps.read_namespaced_deployment("web", "default").status for _ in range(3)]
        assert [s.updated_replicas for s in seen] == [None, None, 2]
        assert seen[0].conditions[1].reason == "ReplicaSetUpdated"
        assert seen[2].available_replicas == 2 and seen[2].observed_generation == 1
        apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 4}})
        after = apps.read_namespaced_deployment("web", "default").status
        assert after.observed_generation == 2 and after.updated_replicas is None

        batch.create_namespaced_job("default", {"metadata": {"name": "once"}, "spec": {
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "c", "image": "busybox"}]}}}})
        assert batch.read_namespaced_job("once", "default").status.active == 1
        done = batch.read_namespaced_job("once", "default").status
        assert done.succeeded == 1 and "Complete" in {c.type for c in done.conditions}


def test_kubeconfig_is_loadable(api: KubeAPIServer, tmp_path: Path) -> None:
    path = api.write_kubeconfig(tmp_path / "kubeconfig", context="edge")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), context="edge", client_configuration=cfg)
    assert cfg.host == api.url
    core = client.CoreV1Api(client.ApiClient(cfg))
    assert [n.metadata.name for n in core.list_namespace().items] == ["default"]


def test_fields_v1_round_trip() -> None:
    obj = {"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
           "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}],
                    "args": ["--x"]}}
    paths = field_set(obj)
    encoded = encode_fields_v1(paths)
    assert decode_fields_v1(encoded) == paths
    assert encoded["f:metadata"]["f:finalizers"] == {'v:"x"': {}}
    assert encoded["f:spec"]["f:args"] == {}


def test_conflict_between_two_appliers_names_the_manager_without_version(dyn: Any) -> None:
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(replicas=3), field_manager="other-tool")
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER)
    message = status_body(exc.value)["message"]
    assert message == 'Apply failed with 1 conflict: conflict with "other-tool": .spec.replicas'


def test_objects_created_by_update_conflict_on_defaulted_fields(api: KubeAPIServer,
                                                                dyn: Any) -> None:
    # Like `kubectl create`: the creator owns every field, defaults included.
    api.add_objects(deployment())
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = deployment()
    body["spec"]["revisionHistoryLimit"] = 3
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(res, body=body, field_manager=MANAGER)
    assert 'conflict with "kubectl-create" using apps/v1: .spec.revisionHistoryLimit' in \
        status_body(exc.value)["message"]
    # The same values as live are shared ownership.
    obj = dyn.server_side_apply(res, body=deployment(), field_manager=MANAGER).to_dict()
    assert "f:replicas" in managed(obj, MANAGER)["f:spec"]
    assert "f:replicas" in managed(obj, "kubectl-create", "Update")["f:spec"]


def test_immutable_fields_and_job_restart_policy(api: KubeAPIServer, dyn: Any) -> None:
    jobs = dyn.resources.get(api_version="batch/v1", kind="Job")
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "once", "namespace": "default"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(jobs, body=job, field_manager=MANAGER)
    assert "spec.template.spec.restartPolicy: Required value" in status_body(exc.value)[
        "message"]
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    dyn.server_side_apply(jobs, body=job, field_manager=MANAGER)
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    with pytest.raises(DynamicApiError) as exc:
        dyn.server_side_apply(jobs, body=job, field_manager=MANAGER)
    assert exc.value.status == 422
    assert "spec.template: Invalid value" in status_body(exc.value)["message"]
    assert "field is immutable" in status_body(exc.value)["message"]


def test_concurrent_writers_are_serialised(api: KubeAPIServer) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            core = client.CoreV1Api(client.ApiClient(api.client_configuration()))
            for i in range(8):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"c{n}-{i}"}})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    core = client.CoreV1Api(client.ApiClient(api.client_configuration()))
    items = core.list_namespaced_config_map("default").items
    assert len(items) == 32
    assert len({i.metadata.resource_version for i in items}) == 32
