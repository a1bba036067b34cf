"""How writes move field ownership (``managedFields``): the test API server's model of it.

Every writer that may touch an applied object — an update, a server-side apply by another
manager (with and without ``force``), the ``scale`` subresource, the ``status`` subresource,
a managedFields reset — and what it does to the applier's entry. The kubernetes provider's
idle-run shortcut rests on exactly these rules, so the tests speak HTTP only
(``tests.kubeapi.writers``): with ``RECONCILER_TEST_KUBECONFIG`` set they run against that
real cluster (in a namespace of their own, removed afterwards) and check the model against
the real thing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kubeapi import KubeAPIServer
from tests.kubeapi.writers import Answer, Writers, entry, object_path

REAL_KUBECONFIG = os.environ.get("RECONCILER_TEST_KUBECONFIG")
APPLIER = "applier"

pytestmark = pytest.mark.timeout(60)


@dataclass
class Cluster:
    http: Writers
    namespace: str
    server: KubeAPIServer | None  # None on a real cluster

    def path(self, name: str = "web", plural: str = "deployments", api_version: str = "apps/v1",
             subresource: str = "") -> str:
        return object_path(api_version, plural, self.namespace, name, subresource)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    namespace = f"own-{uuid.uuid4().hex[:8]}"
    with KubeAPIServer() as server:
        real = REAL_KUBECONFIG is not None
        kubeconfig = Path(REAL_KUBECONFIG) if REAL_KUBECONFIG else \
            server.write_kubeconfig(tmp_path / "kubeconfig")
        http = Writers(kubeconfig)
        made = http.call("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        assert made.ok, made
        try:
            yield Cluster(http, namespace, None if real else server)
        finally:
            http.call("DELETE", f"/api/v1/namespaces/{namespace}")
            http.close()


def deployment(namespace: str, replicas: int | None = 2, **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1.25"}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace,
                         "labels": {"app": "web", "tier": "edge", **labels}},
            "spec": spec}


def applied(cluster: Cluster, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = cluster.http.apply(cluster.path(), body or deployment(cluster.namespace), APPLIER)
    assert answer.ok, answer
    return answer.body


def fields(obj: dict[str, Any], manager: str = APPLIER, operation: str = "Apply",
           subresource: str = "") -> dict[str, Any]:
    found = entry(obj, manager, operation, subresource)
    assert found is not None, (manager, obj["metadata"].get("managedFields"))
    result: dict[str, Any] = found["fieldsV1"]
    return result


def ok(answer: Answer) -> dict[str, Any]:
    assert answer.ok, answer
    return answer.body


# -- update -----------------------------------------------------------------------------------


def test_an_update_takes_the_fields_it_changes_and_only_those(cluster: Cluster) -> None:
    before = applied(cluster)

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["replicas"] = 5
        obj["metadata"]["labels"]["tier"] = "by-hand"
        obj["metadata"]["labels"]["team"] = "ops"

    after = ok(cluster.http.update(cluster.path(), edit, "editor"))
    ours = fields(after)
    assert "f:replicas" not in ours["f:spec"]
    assert set(ours["f:metadata"]["f:labels"]) == {"f:app"}
    assert "f:template" in ours["f:spec"]  # what the update left alone stays ours
    theirs = fields(after, "editor", "Update")
    assert theirs["f:spec"] == {"f:replicas": {}}
    assert set(theirs["f:metadata"]["f:labels"]) == {"f:team", "f:tier"}
    # taking a field does not touch the loser's time: it says when the applier last changed
    # something
    assert entry(after, APPLIER)["time"] == entry(before, APPLIER)["time"]  # type: ignore[index]


def test_an_update_that_changes_nothing_moves_nothing(cluster: Cluster) -> None:
    before = applied(cluster, deployment(cluster.namespace, kind="config"))
    after = ok(cluster.http.update(cluster.path(), lambda obj: None, "editor"))
    assert after["metadata"]["managedFields"] == before["metadata"]["managedFields"]
    assert entry(after, "editor", "Update") is None


def test_an_update_that_removes_our_field_takes_it_from_us(cluster: Cluster) -> None:
    applied(cluster)

    def drop(obj: dict[str, Any]) -> None:
        del obj["metadata"]["labels"]["tier"]

    after = ok(cluster.http.update(cluster.path(), drop, "editor"))
    assert set(fields(after)["f:metadata"]["f:labels"]) == {"f:app"}
    assert entry(after, "editor", "Update") is None  # removing a field owns nothing


def test_an_update_carrying_an_empty_managed_fields_list_keeps_them(cluster: Cluster) -> None:
    applied(cluster)

    def edit(obj: dict[str, Any]) -> None:
        obj["metadata"]["managedFields"] = []
        obj["metadata"]["labels"]["tier"] = "by-hand"

    after = ok(cluster.http.update(cluster.path(), edit, "editor"))
    assert set(fields(after)["f:metadata"]["f:labels"]) == {"f:app"}
    assert "f:replicas" in fields(after)["f:spec"]


def test_a_managed_fields_reset_clears_every_entry(cluster: Cluster) -> None:
    applied(cluster)
    after = ok(cluster.http.reset_managed_fields(cluster.path(), "janitor"))
    assert not after["metadata"].get("managedFields")


# -- apply by another manager -----------------------------------------------------------------


def test_another_applier_conflicts_shares_or_forces(cluster: Cluster) -> None:
    before = applied(cluster)
    http, path = cluster.http, cluster.path()
    other = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": cluster.namespace}, "spec": {}}

    other["spec"] = {"replicas": 5}
    refused = http.apply(path, other, "other")
    assert refused.status == 409
    assert 'conflict with "applier"' in refused.body["message"]
    assert ".spec.replicas" in refused.body["message"]
    assert http.get(path)["spec"]["replicas"] == 2

    other["spec"] = {"replicas": 2}  # the same value: both own it, nothing moves
    shared = ok(http.apply(path, other, "other"))
    assert fields(shared) == fields(before)
    assert "f:replicas" in fields(shared, "other")["f:spec"]

    other["spec"] = {"replicas": 5}  # shared now, so a change by either is still a conflict
    assert http.apply(path, other, "other").status == 409
    forced = ok(http.apply(path, other, "other", force=True))
    assert forced["spec"]["replicas"] == 5
    assert "f:replicas" not in fields(forced)["f:spec"]
    assert fields(forced, "other")["f:spec"] == {"f:replicas": {}}


def test_another_applier_of_fields_we_do_not_set_takes_nothing_from_us(
        cluster: Cluster) -> None:
    before = applied(cluster)
    after = ok(cluster.http.apply(cluster.path(), {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": cluster.namespace,
                     "annotations": {"ops/note": "watched"}},
        "spec": {"minReadySeconds": 5}}, "other"))
    assert fields(after) == fields(before)
    assert after["spec"]["minReadySeconds"] == 5


# -- subresources -----------------------------------------------------------------------------


def test_the_scale_subresource_takes_the_replica_count(cluster: Cluster) -> None:
    before = applied(cluster)
    http, path = cluster.http, cluster.path()
    same = ok(http.scale(path, 2, "scaler"))  # no change: nobody owns anything new
    assert same["kind"] == "Scale" and same["spec"]["replicas"] == 2
    assert entry(http.get(path), "scaler", "Update", "scale") is None
    assert fields(http.get(path)) == fields(before)

    scaled = ok(http.scale(path, 4, "scaler"))
    assert (scaled["apiVersion"], scaled["spec"]["replicas"]) == ("autoscaling/v1", 4)
    live = http.get(path)
    assert live["spec"]["replicas"] == 4
    assert live["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert "f:replicas" not in fields(live)["f:spec"]
    assert fields(live, "scaler", "Update", "scale") == {"f:spec": {"f:replicas": {}}}
    assert entry(live, "scaler", "Update", "scale")["apiVersion"] == "apps/v1"  # type: ignore[index]
    assert ok(http.call("GET", f"{path}/scale"))["spec"]["replicas"] == 4

    body = deployment(cluster.namespace)
    refused = http.apply(path, body, APPLIER)
    assert refused.status == 409
    assert 'conflict with "scaler" with subresource "scale"' in refused.body["message"]
    back = ok(http.apply(path, body, APPLIER, force=True))
    assert back["spec"]["replicas"] == 2 and "f:replicas" in fields(back)["f:spec"]
    assert entry(back, "scaler", "Update", "scale") is None


def test_a_status_write_takes_nothing_from_the_spec(cluster: Cluster) -> None:
    before = applied(cluster)
    http, path = cluster.http, cluster.path()
    written = ok(http.status(path, {"observedGeneration": 1, "replicas": 2,
                                    "conditions": [{"type": "Available", "status": "False",
                                                    "reason": "Testing"}]}, "watcher"))
    assert fields(written) == fields(before)
    assert written["metadata"]["generation"] == before["metadata"]["generation"]
    assert written["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert "f:status" in fields(written, "watcher", "Update", "status")


# -- lists --------------------------------------------------------------------------------------


def test_lists_page_with_limit_and_continue(cluster: Cluster) -> None:
    http = cluster.http
    for index in range(5):
        ok(http.apply(cluster.path(f"cm-{index}", "configmaps", "v1"), {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"cm-{index}", "namespace": cluster.namespace,
                         "labels": {"set": "paged" if index != 2 else "other"}},
            "data": {"n": str(index)}}, APPLIER))
    collection = cluster.path("", "configmaps", "v1")
    names: list[str] = []
    token, pages = "", 0
    while True:
        query = [("labelSelector", "set=paged"), ("limit", "2")]
        page = ok(http.call("GET", collection, query=query + ([("continue", token)]
                                                               if token else [])))
        pages += 1
        names += [item["metadata"]["name"] for item in page["items"]]
        assert all("managedFields" in item["metadata"] for item in page["items"])
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert (names, pages) == (["cm-0", "cm-1", "cm-3", "cm-4"], 2)


def test_requests_are_recorded_with_their_verb(cluster: Cluster) -> None:
    server = cluster.server
    if server is None:
        pytest.skip("the request log is the test server's")
    applied(cluster)
    server.reset_requests()
    cluster.http.get(cluster.path())
    cluster.http.call("GET", cluster.path(""))
    cluster.http.scale(cluster.path(), 3, "scaler")
    cluster.http.call("GET", "/apis/apps/v1")
    assert [(r.verb, r.subresource) for r in server.requests] == [
        ("get", ""), ("list", ""), ("patch", "scale"), ("", "")]
    assert server.count(verb="list") == 1
