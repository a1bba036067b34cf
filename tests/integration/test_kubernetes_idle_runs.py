"""The kubernetes provider's runs: lists shared by the components of one run, never by two runs,
and every doubt checked by a dry-run.

With ``RECONCILER_TEST_KUBECONFIG`` set these run against that real cluster, except the ones
that need the test server's request log or fault injection.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from reconciler_providers.kube_client import ClientSettings
from reconciler_providers.kube_objects import ObjectRef
from reconciler_providers.kubernetes_lists import ListingClient, RunLists

from reconciler.core.provider_api import Record
from tests.integration.kubekit import (
    Cluster,
    Repo,
    component,
    idle_run,
    make_cluster,
    make_repo,
    provider,
)

pytestmark = pytest.mark.timeout(60)

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ${{ params.namespace }}
"""


def configmaps(*names: str) -> str:
    return "---\n".join(f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: ${{{{ params.namespace }}}}
data:
  LINE: "${{{{ params.line }}}}"
""" for name in names)


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ${{ params.namespace }}
spec:
  replicas: ${{ params.replicas }}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: "${{ params.image }}"
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path)


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, Repo]:
    """Three components: the namespace, two ConfigMaps, two more and a Deployment."""
    return {"base": make_repo(tmp_path, {"ns.yaml": NAMESPACE}, "base"),
            "a": make_repo(tmp_path, {"cm.yaml": configmaps("a1", "a2")}, "a"),
            "b": make_repo(tmp_path, {"cm.yaml": configmaps("b1", "b2"),
                                      "web.yaml": DEPLOYMENT}, "b")}


def applied(kube: Any, cluster: Cluster, repos: dict[str, Repo],
            **props: Any) -> dict[str, tuple[Any, Record]]:
    out = {}
    for name, repo in repos.items():
        comp = component(repo, cluster, name=name, **props)
        out[name] = (comp, kube.apply(comp, None))
    return out


def test_the_components_of_one_run_share_its_lists(cluster: Cluster, repos: dict[str, Repo],
                                                   tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    parts = applied(kube, cluster, repos)
    api.reset_requests()
    kube.begin_run()
    for comp, record in parts.values():
        run = idle_run(kube, comp, record, new_run=False)
        assert run.in_sync and run.stats["checked"] == 0, run.stats
    assert sorted(r.path.rsplit("/", 1)[-1] for r in api.requests if r.verb == "list") == [
        "configmaps", "deployments", "namespaces"]
    assert cluster.per_object() == 0


def test_a_component_observed_again_starts_a_new_run(cluster: Cluster,
                                                     repos: dict[str, Repo],
                                                     tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    parts = applied(kube, cluster, repos)
    for _ in range(2):  # without begin_run: the engine may not call it
        for comp, record in parts.values():
            assert idle_run(kube, comp, record, new_run=False).in_sync
    # drift of the last component between two runs: the next run starts with the first one
    # again, which starts it afresh, so the last one is read again
    cluster.http.update(cluster.path("ConfigMap", "b2"),
                        lambda obj: obj["data"].update(LINE="L9"), "editor")
    results = {name: idle_run(kube, comp, record, new_run=False, repair=False)
               for name, (comp, record) in parts.items()}
    assert [name for name, run in results.items() if not run.in_sync] == ["b"]
    assert "LINE: L9" in results["b"].observation.diff


def test_our_own_writes_update_the_runs_lists(cluster: Cluster, repos: dict[str, Repo],
                                              tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    parts = applied(kube, cluster, repos)
    api.reset_requests()
    kube.begin_run()
    record_a = parts["a"][1]
    changed = component(repos["a"], cluster, name="a", params={"line": "L2"})
    run = idle_run(kube, changed, record_a, new_run=False)  # lists, then applies a1 and a2
    assert run.applied and not run.in_sync
    comp_b, record_b = parts["b"]
    assert idle_run(kube, comp_b, record_b, new_run=False).in_sync
    # what our apply answered replaced what the list said: nothing is listed twice
    assert sorted(r.path.rsplit("/", 1)[-1] for r in api.requests if r.verb == "list") == [
        "configmaps", "deployments"]


def test_an_object_moving_between_components_in_one_run(cluster: Cluster,
                                                        repos: dict[str, Repo],
                                                        tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    parts = applied(kube, cluster, repos)
    # the next revision moves ConfigMap a2 from component a to component b
    repos["a"].write({"cm.yaml": configmaps("a1")})
    repos["b"].write({"cm.yaml": configmaps("b1", "b2", "a2"), "web.yaml": DEPLOYMENT})
    kube.begin_run()
    first = idle_run(kube, parts["a"][0], parts["a"][1], new_run=False)  # prunes a2
    assert first.observation.message == "1 to prune" and first.applied
    second = idle_run(kube, parts["b"][0], parts["b"][1], new_run=False)
    assert second.observation.message == "1 to create", second.observation.diff
    moved = cluster.get("ConfigMap", "a2")
    assert moved["metadata"]["annotations"]["reconciler.io/component"] == "b"
    for name in ("a", "b"):
        comp = component(repos[name], cluster, name=name)
        record = second.record if name == "b" else first.record
        assert idle_run(kube, comp, record).stats["checked"] == 0


def test_a_kind_the_server_refuses_to_list_is_read_object_by_object(
        cluster: Cluster, repos: dict[str, Repo], tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "a": repos["a"]})["a"]
    api.fail_next("GET", f"/api/v1/namespaces/{cluster.namespace}/configmaps", 403, body={
        "reason": "Forbidden", "message": 'configmaps is forbidden: User "edge" cannot list '
                                          'resource "configmaps"'})
    for _ in range(2):
        api.reset_requests()
        run = idle_run(kube, comp, record)
        # read one by one, and still proven without a dry-run
        assert run.in_sync and (run.stats["read"], run.stats["proven"]) == (2, 2), run.stats
        assert api.count(dry_run=True) == 0
    assert api.count(verb="list") == 0  # refused once: not asked again


def test_an_object_that_lost_our_label_is_read_and_repaired(cluster: Cluster,
                                                            repos: dict[str, Repo],
                                                            tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "a": repos["a"]})["a"]
    cluster.http.update(cluster.path("ConfigMap", "a1"), lambda obj: obj["metadata"][
        "labels"].pop("app.kubernetes.io/managed-by"), "editor")
    run = idle_run(kube, comp, record)
    assert not run.in_sync and run.stats["read"] == 1, run.stats
    assert "app.kubernetes.io/managed-by: reconciler" in run.observation.diff
    labels = cluster.get("ConfigMap", "a1")["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "reconciler"
    assert idle_run(kube, comp, run.record).stats["proven"] == 2


def test_a_deleted_object_is_to_create(cluster: Cluster, repos: dict[str, Repo],
                                       tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "a": repos["a"]})["a"]
    assert cluster.http.call("DELETE", cluster.path("ConfigMap", "a2")).ok
    run = idle_run(kube, comp, record)
    assert run.observation.message == "1 to create" and run.applied
    assert cluster.get("ConfigMap", "a2")["data"] == {"LINE": "L1"}


def test_a_changed_manifest_is_compared_by_dry_run(cluster: Cluster, repos: dict[str, Repo],
                                                   tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    record = applied(kube, cluster, {"base": repos["base"], "b": repos["b"]})["b"][1]
    changed = component(repos["b"], cluster, name="b", params={"replicas": 3})
    run = idle_run(kube, changed, record)
    assert run.observation.message == "1 changed"
    assert (run.stats["proven"], run.stats["checked"]) == (2, 1), run.stats
    assert idle_run(kube, changed, run.record).stats["proven"] == 3


def test_a_record_without_proofs_is_checked_by_dry_run_once(cluster: Cluster,
                                                            repos: dict[str, Repo],
                                                            tmp_path: Path) -> None:
    comp, record = applied(provider(cluster, tmp_path), cluster,
                           {"base": repos["base"], "b": repos["b"]})["b"]
    older = Record(record.provider, record.binding, {**record.data, "objects": [
        {k: v for k, v in o.items() if k not in ("digest", "fields")}
        for o in record.data["objects"]]})
    kube = provider(cluster, tmp_path)  # a restart: nothing kept in memory
    first = idle_run(kube, comp, older)
    assert first.in_sync and first.stats["checked"] == 3, first.stats
    second = idle_run(kube, comp, older)
    assert second.in_sync and (second.stats["proven"], second.stats["checked"]) == (3, 0)


def test_a_managed_fields_reset_is_checked_by_dry_run(cluster: Cluster, repos: dict[str, Repo],
                                                      tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "a": repos["a"]})["a"]
    assert cluster.http.reset_managed_fields(cluster.path("ConfigMap", "a1"), "janitor").ok
    run = idle_run(kube, comp, record)
    assert run.in_sync and (run.stats["proven"], run.stats["checked"]) == (1, 1), run.stats


def test_fields_we_ignore_may_be_taken_without_a_dry_run(cluster: Cluster,
                                                         repos: dict[str, Repo],
                                                         tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "b": repos["b"]},
                           ignore=["/spec/replicas"])["b"]
    assert cluster.http.scale(cluster.path("Deployment", "web"), 5, "autoscaler").ok
    for _ in range(2):
        run = idle_run(kube, comp, record)
        assert run.in_sync and (run.stats["proven"], run.stats["checked"]) == (3, 0)
    assert cluster.get("Deployment", "web")["spec"]["replicas"] == 5


def test_lists_page_and_are_taken_again_after_a_while(cluster: Cluster, repos: dict[str, Repo],
                                                     tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    parts = applied(kube, cluster, repos)
    client = ListingClient(ClientSettings(kubeconfig=str(cluster.kubeconfig)))
    info = client.resource("v1", "ConfigMap")
    assert info is not None
    listed = client.list(info, cluster.namespace, "app.kubernetes.io/managed-by=reconciler",
                         page=3)
    assert sorted(o["metadata"]["name"] for o in listed) == ["a1", "a2", "b1", "b2"]
    assert client.list_requests == 2
    assert {(o["apiVersion"], o["kind"]) for o in listed} == {("v1", "ConfigMap")}
    now = [0.0]
    lists = RunLists(client, "berlin-l1", clock=lambda: now[0])
    ref = next(r for r in map(ObjectRef.from_dict, parts["a"][1].data["objects"])
               if r.name == "a1")
    found = lists.find(info, ref)
    assert found is not None and client.list_requests == 3
    assert lists.find(info, ref) is found and client.list_requests == 3
    written = {**found, "data": {"LINE": "L7"}}
    lists.wrote(ref, written)  # our apply answered this: the list has it now
    assert lists.find(info, ref) == written
    lists.wrote(ref, None)  # a write that failed, or a delete: read it with a GET
    assert lists.find(info, ref) is None and client.list_requests == 3
    now[0] = 11.0
    assert lists.find(info, ref) is not None and client.list_requests == 4
    client.close()



def test_a_field_someone_else_holds_at_our_value_is_checked_each_time_it_changes(
        cluster: Cluster, repos: dict[str, Repo], tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "b": repos["b"]})["b"]
    path = cluster.path("Deployment", "web")

    def replicas(count: int) -> None:
        def edit(obj: dict[str, Any]) -> None:
            obj["spec"]["replicas"] = count
        assert cluster.http.update(path, edit, "editor").ok

    replicas(5)  # takes spec.replicas from us...
    replicas(2)  # ...and sets it back to our value: still theirs, but no drift
    run = idle_run(kube, comp, record, repair=False)
    assert run.in_sync and run.stats["checked"] == 1, run.stats
    # they still own the field: a change of it moves nothing, so only a dry-run can see it
    replicas(7)
    run = idle_run(kube, comp, record, repair=False)
    assert not run.in_sync and "replicas: 7" in run.observation.diff


@pytest.mark.parametrize("restart", [False, True], ids=["same provider", "after a restart"])
def test_an_apply_under_our_field_manager_name_is_drift(cluster: Cluster,
                                                        repos: dict[str, Repo],
                                                        tmp_path: Path, restart: bool) -> None:
    kube = provider(cluster, tmp_path)
    comp, record = applied(kube, cluster, {"base": repos["base"], "b": repos["b"]})["b"]
    path = cluster.path("Deployment", "web")
    body = cluster.get("Deployment", "web")
    ours = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": cluster.namespace,
                         "labels": body["metadata"]["labels"],
                         "annotations": body["metadata"]["annotations"]},
            "spec": {"replicas": 5, "selector": body["spec"]["selector"],
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{"name": "web", "image": "nginx:1.25"}]}}}}
    # the same fields under our name, one value changed: ownership moves nowhere
    assert cluster.http.apply(path, ours, "reconciler", force=True).ok
    if restart:
        kube = provider(cluster, tmp_path)
    run = idle_run(kube, comp, record, repair=False)
    assert not run.in_sync and "replicas: 5" in run.observation.diff


def test_components_observed_at_once_share_the_runs_lists(cluster: Cluster,
                                                          repos: dict[str, Repo],
                                                          tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    parts = list(applied(kube, cluster, repos).values())
    for _ in range(3):  # as the engine runs a dependency level: from several threads
        if cluster.server is not None:
            cluster.server.reset_requests()
        kube.begin_run()
        with ThreadPoolExecutor(max_workers=3) as pool:
            observed = list(pool.map(lambda part: kube.observe(*part), parts))
            healthy = list(pool.map(lambda part: kube.health(*part), parts))
        assert all(o.in_sync for o in observed), [o.message for o in observed]
        assert all(h.state.value for h in healthy)
        if cluster.server is not None:
            assert cluster.server.count(verb="list") == 3 and cluster.per_object() == 0
