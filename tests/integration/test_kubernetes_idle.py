"""The kubernetes provider's idle run: lists, not per-object requests, and no drift missed.

An idle run lists each kind per namespace once and shows an object in sync without a request
of its own when its desired state is unchanged since our last apply and the server's
``managedFields`` entry of our field manager still owns exactly the fields that apply left it
(another writer that changes one of our fields takes it from us). These tests drift each kind
of field (a spec field we set, a label, an annotation, a ConfigMap entry, fields we do not set)
by each kind of writer (an update, another manager's apply with and without ``force``, the
``scale`` subresource, the ``status`` subresource) and check that the next run finds drift
exactly when one of our fields changed, repairs it, and otherwise asks nothing per object.

The writers speak HTTP (``tests.kubeapi.writers``), so with ``RECONCILER_TEST_KUBECONFIG``
the same tests run against that real cluster; what the provider did is read from its log line
there, and the test server's request log is checked besides when it is the test server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kubekit import (
    Cluster,
    Repo,
    component,
    idle_run,
    make_cluster,
    make_repo,
    provider,
)
from tests.kubeapi.writers import Answer

pytestmark = pytest.mark.timeout(60)

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ${{ params.namespace }}
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: ${{ params.namespace }}
data:
  LINE: "${{ params.line }}"
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ${{ params.namespace }}
  labels:
    app: web
    tier: edge
  annotations:
    shop/owner: line-team
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

# its replica count is not ours: whoever scales it owns it
WORKER = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: ${{ params.namespace }}
spec:
  selector:
    matchLabels:
      app: worker
  template:
    metadata:
      labels:
        app: worker
    spec:
      containers:
        - name: worker
          image: "${{ params.image }}"
"""

FILES = {"00-namespace.yaml": NAMESPACE, "10-configmap.yaml": CONFIGMAP,
         "20-web.yaml": DEPLOYMENT, "21-worker.yaml": WORKER}
OBJECTS = 4
KINDS = 3  # Namespaces (cluster-wide), ConfigMaps and Deployments in the namespace


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path, FILES)


# -- the writers ------------------------------------------------------------------------------

Write = Callable[[Cluster], Answer]


def update(kind: str, name: str, edit: Callable[[dict[str, Any]], None]) -> Write:
    return lambda c: c.http.update(c.path(kind, name), edit, "editor")


def apply(kind: str, name: str, fields: dict[str, Any], *, force: bool = False) -> Write:
    def write(c: Cluster) -> Answer:
        api_version = "v1" if kind == "ConfigMap" else "apps/v1"
        body = {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "namespace": c.namespace}}
        for key, value in fields.items():
            body[key] = {**body.get(key, {}), **value}
        return c.http.apply(c.path(kind, name), body, "other", force=force)
    return write


def scale(name: str, replicas: int) -> Write:
    return lambda c: c.http.scale(c.path("Deployment", name), replicas, "scaler")


def status(name: str) -> Write:
    return lambda c: c.http.status(c.path("Deployment", name), {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "Testing"}]},
        "watcher")


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        node = obj
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


@dataclass(frozen=True)
class Case:
    writer: str
    field: str
    write: Write
    drift: bool  # one of our fields changed
    refused: bool = False  # the server refuses the write (an apply conflict)
    diff: str = ""  # what the plan shows when it is drift


CASES = [
    # an update (read, modify, PUT) takes the fields whose value it changes
    Case("update", "spec field we set", update("Deployment", "web",
                                               _set("spec", "replicas", value=5)),
         True, diff="replicas: 5"),
    Case("update", "label we set", update("Deployment", "web", _set(
        "metadata", "labels", "tier", value="by-hand")), True, diff="tier: by-hand"),
    Case("update", "annotation we set", update("Deployment", "web", _set(
        "metadata", "annotations", "shop/owner", value="someone")), True,
         diff="shop/owner: someone"),
    Case("update", "ConfigMap entry we set", update("ConfigMap", "settings", _set(
        "data", "LINE", value="L9")), True, diff="LINE: L9"),
    Case("update", "spec field we do not set", update("Deployment", "web", _set(
        "spec", "minReadySeconds", value=7)), False),
    Case("update", "label we do not set", update("Deployment", "web", _set(
        "metadata", "labels", "team", value="ops")), False),
    Case("update", "ConfigMap entry we do not set", update("ConfigMap", "settings", _set(
        "data", "EXTRA", value="x")), False),
    Case("update", "our field, same value", update("Deployment", "web", _set(
        "spec", "replicas", value=2)), False),
    # another manager's server-side apply: a conflict unless forced, which moves the field
    Case("apply --force", "spec field we set", apply(
        "Deployment", "web", {"spec": {"replicas": 5}}, force=True), True,
         diff="replicas: 5"),
    Case("apply --force", "label we set", apply("Deployment", "web", {"metadata": {
        "labels": {"tier": "by-hand"}}}, force=True), True, diff="tier: by-hand"),
    Case("apply --force", "ConfigMap entry we set", apply(
        "ConfigMap", "settings", {"data": {"LINE": "L9"}}, force=True), True, diff="LINE: L9"),
    Case("apply", "spec field we set", apply("Deployment", "web", {"spec": {"replicas": 5}}),
         False, refused=True),
    Case("apply", "our field, same value", apply("Deployment", "web",
                                                 {"spec": {"replicas": 2}}), False),
    Case("apply", "spec field we do not set", apply("Deployment", "web", {
        "spec": {"minReadySeconds": 7}}), False),
    Case("apply --force", "annotation we do not set", apply("Deployment", "web", {
        "metadata": {"annotations": {"ops/note": "watched"}}}, force=True), False),
    # the scale subresource writes the replica count
    Case("scale", "spec field we set", scale("web", 5), True, diff="replicas: 5"),
    Case("scale", "our field, same value", scale("web", 2), False),
    Case("scale", "spec field we do not set", scale("worker", 3), False),
    # the status subresource writes status only
    Case("status", "status", status("web"), False),
    Case("status", "status of an object whose replicas are not ours", status("worker"), False),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.writer}: {c.field}" for c in CASES])
def test_the_next_idle_run_finds_drift_exactly_when_one_of_our_fields_changed(
        cluster: Cluster, repo: Repo, tmp_path: Path, case: Case) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)

    answer = case.write(cluster)
    assert answer.status == (409 if case.refused else 200), answer
    server = cluster.server
    if server is not None:
        server.reset_requests()
    run = idle_run(kube, comp, record)

    assert run.in_sync is not case.drift, run.observation.diff
    if not case.drift:
        # nothing of ours changed: shown without a request per object
        assert (run.stats["proven"], run.stats["checked"], run.stats["read"]) == (
            OBJECTS, 0, 0), run.stats
        if server is not None:
            assert cluster.per_object() == 0, server.requests
            assert server.count(verb="list") == KINDS
        return
    # drift: found by one dry-run of the one object that changed, and repaired
    assert run.observation.message == "1 changed"
    assert f"-  {case.diff}" in run.observation.diff or f"-    {case.diff}" in \
        run.observation.diff, run.observation.diff
    assert (run.stats["proven"], run.stats["checked"]) == (OBJECTS - 1, 1), run.stats
    assert run.applied
    web, settings = cluster.get("Deployment", "web"), cluster.get("ConfigMap", "settings")
    assert web["spec"]["replicas"] == 2
    assert web["metadata"]["labels"]["tier"] == "edge"
    assert web["metadata"]["annotations"]["shop/owner"] == "line-team"
    assert settings["data"]["LINE"] == "L1"
    # and the run after the repair is idle again
    if server is not None:
        server.reset_requests()
    again = idle_run(kube, comp, run.record)
    assert again.in_sync and again.stats["proven"] == OBJECTS, again.stats
    if server is not None:
        assert cluster.per_object() == 0, server.requests


def test_an_idle_run_asks_one_list_per_kind_and_namespace(cluster: Cluster, repo: Repo,
                                                          tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    server = cluster.server
    for fresh in (False, True):  # the same provider, then a new one (a restart)
        if fresh:
            kube = provider(cluster, tmp_path)
        if server is not None:
            server.reset_requests()
        run = idle_run(kube, comp, record)
        assert run.in_sync and run.stats["proven"] == OBJECTS, run.stats
        assert (run.stats["checked"], run.stats["read"]) == (0, 0)
        if server is not None:
            lists = [r.path for r in server.requests if r.verb == "list"]
            assert sorted(lists) == sorted([
                "/api/v1/namespaces", f"/api/v1/namespaces/{cluster.namespace}/configmaps",
                f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments"])
            assert cluster.per_object() == 0 and cluster.writes() == 0
