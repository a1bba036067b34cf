"""The kubernetes provider against a Kubernetes API server.

By default every test gets its own test API server on 127.0.0.1 (``tests.kubeapi``). With
``RECONCILER_TEST_KUBECONFIG`` set, the same tests run against that real cluster instead (each
in its own namespace, removed afterwards), and the tests that need the test server's controls
(hand edits, injected failures, status writes, request counts) are skipped: the file doubles as
a conformance suite for real clusters.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from reconciler_providers.kube_client import ClientSettings, KubeClient
from reconciler_providers.kube_objects import ObjectRef
from reconciler_providers.kubernetes import KubernetesProvider

from reconciler.core.errors import PermanentError, PolicyError, TemplateError, TransientError
from reconciler.core.provider_api import (
    Component,
    Health,
    LocalPolicy,
    Problem,
    ProviderContext,
    Record,
)
from tests.kubeapi import CONNECTION_RESET, KubeAPIServer

REAL_KUBECONFIG = os.environ.get("RECONCILER_TEST_KUBECONFIG")

pytestmark = pytest.mark.timeout(60)


@dataclass
class Cluster:
    kubeconfig: Path
    namespace: str
    server: KubeAPIServer | None  # None on a real cluster

    @property
    def api(self) -> KubeAPIServer:
        """The test server's controls; skips the test on a real cluster."""
        if self.server is None:
            pytest.skip("needs the test API server's controls")
        return self.server


def _delete_namespace(kubeconfig: Path, namespace: str) -> None:
    client = KubeClient(ClientSettings(kubeconfig=str(kubeconfig)))
    ref = ObjectRef("v1", "Namespace", "", namespace)
    client.delete(client.require(ref), ref)
    client.close()


def _cluster(tmp_path: Path, controller: bool) -> Iterator[Cluster]:
    namespace = f"rt-{uuid.uuid4().hex[:8]}"
    if REAL_KUBECONFIG:
        yield Cluster(Path(REAL_KUBECONFIG), namespace, None)
        _delete_namespace(Path(REAL_KUBECONFIG), namespace)
        return
    with KubeAPIServer(controller=controller) as server:
        yield Cluster(server.write_kubeconfig(tmp_path / "kubeconfig"), namespace, server)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from _cluster(tmp_path, controller=False)


@pytest.fixture
def controlled(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose controllers roll Deployments and Jobs out after a read or two."""
    yield from _cluster(tmp_path, controller=True)


# -- building components ----------------------------------------------------------------------

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
          ports:
            - containerPort: 8080
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ${{ params.namespace }}
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
"""

DEFAULT_FILES = {"00-namespace.yaml": NAMESPACE, "10-configmap.yaml": CONFIGMAP,
                 "20-deployment.yaml": DEPLOYMENT, "30-service.yaml": SERVICE}


@dataclass
class Repo:
    root: Path
    base: Path  # the solution's directory

    def write(self, files: Mapping[str, str], directory: str = "manifests") -> None:
        target = self.base / directory
        target.mkdir(parents=True, exist_ok=True)
        for existing in target.glob("*.yaml"):
            existing.unlink()
        for name, text in files.items():
            (target / name).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repo"
    base = root / "solutions" / "shop"
    base.mkdir(parents=True)
    made = Repo(root, base)
    made.write(DEFAULT_FILES)
    return made


def component(repo: Repo, cluster: Cluster, *, name: str = "web",
              params: Mapping[str, Any] | None = None, **properties: Any) -> Component:
    resolved = {"namespace": cluster.namespace, "line": "L1", "replicas": 2,
                "image": "nginx:1.25", **(params or {})}
    props: dict[str, Any] = {"manifests": "manifests", **properties}
    return Component(
        name=name, type="workload", properties=props, params=resolved, instance="shop",
        solution="shop-floor", target="berlin-l1", site="eu/berlin/line-1", revision="abc123",
        base_dir=repo.base, repo_root=repo.root,
        template_context={"params": resolved, "target": {"name": "berlin-l1"},
                          "site": {"name": "line-1", "path": "eu/berlin/line-1", "labels": {}},
                          "instance": {"name": "shop"}, "solution": {"name": "shop-floor"}})


def provider(cluster: Cluster, tmp_path: Path, *, policy: LocalPolicy | None = None,
             **config: Any) -> KubernetesProvider:
    return KubernetesProvider(
        {"kubeconfig": str(cluster.kubeconfig), **config},
        ProviderContext(target="berlin-l1", binding="cluster", policy=policy or LocalPolicy(),
                        state_dir=tmp_path / "state"))


def refs(record: Record) -> list[str]:
    return [str(ObjectRef.from_dict(o)) for o in record.data["objects"]]


def live(cluster: Cluster, api_version: str, kind: str, name: str,
         namespace: str | None = None) -> dict[str, Any] | None:
    """The stored object: through the test server, or a GET on a real cluster."""
    if cluster.server is not None:
        found: dict[str, Any] | None = cluster.server.get_object(api_version, kind, name,
                                                                 namespace)
        return found
    client = KubeClient(ClientSettings(kubeconfig=str(cluster.kubeconfig)))
    ref = ObjectRef(api_version, kind, namespace or "", name)
    try:
        return client.get(client.require(ref), ref)
    finally:
        client.close()


# -- create, update, no-op ---------------------------------------------------------------------


def test_create_then_in_sync(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    before = kube.observe(comp, None)
    assert (before.exists, before.in_sync) == (False, False)
    assert "4 to create" in before.message
    assert f"+++ desired/Deployment/{cluster.namespace}/web" in before.diff

    record = kube.apply(comp, None)
    ns = cluster.namespace
    assert refs(record) == [f"Namespace/{ns}", f"ConfigMap/{ns}/settings",
                            f"Deployment/{ns}/web", f"Service/{ns}/web"]
    assert record.provider == "kubernetes" and record.binding == "cluster"
    assert str(record.data["digest"]).startswith("sha256:")

    deployment = live(cluster, "apps/v1", "Deployment", "web", ns)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    meta = deployment["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    assert meta["annotations"]["reconciler.io/instance"] == "shop"
    assert meta["annotations"]["reconciler.io/target"] == "berlin-l1"
    assert meta["annotations"]["reconciler.io/component"] == "web"
    assert any(m["manager"] == "reconciler" and m["operation"] == "Apply"
               for m in meta["managedFields"])
    configmap = live(cluster, "v1", "ConfigMap", "settings", ns)
    assert configmap is not None and configmap["data"] == {"LINE": "L1"}

    after = kube.observe(comp, record)
    assert (after.exists, after.in_sync, after.diff) == (True, True, "")
    assert after.message == "4 objects in sync"


def test_noop_observe_is_noise_free_and_never_writes(cluster: Cluster, repo: Repo,
                                                     tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    # a fresh provider instance: discovery is paid once, then cached
    fresh = provider(cluster, tmp_path)
    assert fresh.observe(comp, record).in_sync
    api.reset_requests()
    for _ in range(3):
        observation = fresh.observe(comp, record)
        assert observation.in_sync, observation.diff
    objects = len(record.data["objects"])
    assert api.count(dry_run=True) <= 3 * objects
    assert api.count(method="GET") <= 3 * objects
    writes = sum(api.count(method=m, dry_run=False) for m in ("POST", "PUT", "PATCH", "DELETE"))
    assert writes == 0


def test_update_changes_only_what_changed(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    record = kube.apply(component(repo, cluster), None)
    changed = component(repo, cluster, params={"replicas": 3, "image": "nginx:1.26"})
    observation = kube.observe(changed, record)
    assert not observation.in_sync
    assert observation.message == "1 changed"
    assert "-  replicas: 2" in observation.diff and "+  replicas: 3" in observation.diff
    assert "+      - image: nginx:1.26" in observation.diff
    assert "ConfigMap" not in observation.diff

    record = kube.apply(changed, record)
    deployment = live(cluster, "apps/v1", "Deployment", "web", cluster.namespace)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert kube.observe(changed, record).in_sync


def test_field_removed_from_manifest_is_removed(cluster: Cluster, repo: Repo,
                                                tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    repo.write({**DEFAULT_FILES, "10-configmap.yaml": CONFIGMAP + '  EXTRA: "yes"\n'})
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    repo.write(DEFAULT_FILES)
    observation = kube.observe(comp, record)
    assert not observation.in_sync
    assert "-  EXTRA: 'yes'" in observation.diff
    kube.apply(comp, record)
    configmap = live(cluster, "v1", "ConfigMap", "settings", cluster.namespace)
    assert configmap is not None and "EXTRA" not in configmap["data"]


def test_inline_resources_and_default_namespace(cluster: Cluster, repo: Repo,
                                                tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path, namespace=cluster.namespace)
    ns = cluster.namespace
    comp = component(repo, cluster, manifests="manifests/00-namespace.yaml", resources=[
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inline"},
         "data": {"k": "v"}}])
    record = kube.apply(comp, None)
    assert refs(record) == [f"Namespace/{ns}", f"ConfigMap/{ns}/inline"]
    assert live(cluster, "v1", "ConfigMap", "inline", ns) is not None
    assert kube.observe(comp, record).in_sync


# -- drift -------------------------------------------------------------------------------------


def test_hand_edit_of_our_field_is_drift_and_repaired(cluster: Cluster, repo: Repo,
                                                      tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    api.edit("apps/v1", "Deployment", "web", cluster.namespace, {"spec": {"replicas": 5}})

    observation = kube.observe(comp, record)
    assert not observation.in_sync
    assert observation.message == "1 changed"
    assert "-  replicas: 5" in observation.diff and "+  replicas: 2" in observation.diff

    record = kube.apply(comp, record)
    deployment = api.get_object("apps/v1", "Deployment", "web", cluster.namespace)
    assert deployment["spec"]["replicas"] == 2
    assert kube.observe(comp, record).in_sync


def test_field_owned_by_someone_else_is_left_alone(cluster: Cluster, repo: Repo,
                                                   tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    api.edit("apps/v1", "Deployment", "web", cluster.namespace,
             {"metadata": {"annotations": {"ops/note": "scaled for inventory"},
                           "labels": {"team": "ops"}}})

    observation = kube.observe(comp, record)
    assert observation.in_sync, observation.diff
    kube.apply(comp, record)
    meta = api.get_object("apps/v1", "Deployment", "web", cluster.namespace)["metadata"]
    assert meta["annotations"]["ops/note"] == "scaled for inventory"
    assert meta["labels"]["team"] == "ops"


def test_ignore_pointers_are_neither_diffed_nor_fought_over(cluster: Cluster, repo: Repo,
                                                           tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster, ignore=["/spec/replicas"])
    record = kube.apply(comp, None)
    assert api.get_object("apps/v1", "Deployment", "web", cluster.namespace)[
        "spec"]["replicas"] == 2  # set on creation
    api.edit("apps/v1", "Deployment", "web", cluster.namespace, {"spec": {"replicas": 7}})

    assert kube.observe(comp, record).in_sync
    # a real change elsewhere is applied, the hand-set replica count survives it
    changed = component(repo, cluster, params={"image": "nginx:1.27"}, ignore=["/spec/replicas"])
    observation = kube.observe(changed, record)
    assert not observation.in_sync and "replicas" not in observation.diff
    record = kube.apply(changed, record)
    deployment = api.get_object("apps/v1", "Deployment", "web", cluster.namespace)
    assert deployment["spec"]["replicas"] == 7
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert kube.observe(changed, record).in_sync


def test_deleted_object_is_reported_missing(cluster: Cluster, repo: Repo,
                                            tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    client = KubeClient(ClientSettings(kubeconfig=str(cluster.kubeconfig)))
    ref = ObjectRef("v1", "Service", cluster.namespace, "web")
    assert client.delete(client.require(ref), ref)
    observation = kube.observe(comp, record)
    assert (observation.exists, observation.in_sync) == (True, False)
    assert observation.message == "1 to create"
    kube.apply(comp, record)
    assert live(cluster, "v1", "Service", "web", cluster.namespace) is not None


# -- prune and delete --------------------------------------------------------------------------


def test_prune_of_an_object_removed_from_the_manifests(cluster: Cluster, repo: Repo,
                                                       tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    repo.write({k: v for k, v in DEFAULT_FILES.items() if k != "10-configmap.yaml"})

    observation = kube.observe(comp, record)
    assert not observation.in_sync
    assert observation.message == "1 to prune"
    assert f"will delete: ConfigMap/{cluster.namespace}/settings" in observation.diff

    record = kube.apply(comp, record)
    assert f"ConfigMap/{cluster.namespace}/settings" not in refs(record)
    assert live(cluster, "v1", "ConfigMap", "settings", cluster.namespace) is None
    assert kube.observe(comp, record).in_sync


def test_prune_off_leaves_the_object_and_forgets_it(cluster: Cluster, repo: Repo,
                                                    tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    record = kube.apply(component(repo, cluster, prune=False), None)
    repo.write({k: v for k, v in DEFAULT_FILES.items() if k != "10-configmap.yaml"})
    comp = component(repo, cluster, prune=False)
    assert "will forget (prune is off)" in kube.observe(comp, record).diff
    record = kube.apply(comp, record)
    assert len(record.data["objects"]) == 3
    assert live(cluster, "v1", "ConfigMap", "settings", cluster.namespace) is not None
    assert kube.observe(comp, record).in_sync


def test_failed_prune_stays_in_the_record_and_is_retried(cluster: Cluster, repo: Repo,
                                                         tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    repo.write({k: v for k, v in DEFAULT_FILES.items() if k != "10-configmap.yaml"})
    api.fail_next("DELETE", f"/api/v1/namespaces/{cluster.namespace}/configmaps", 503)

    record = kube.apply(comp, record)
    pending = [o for o in record.data["objects"] if o.get("prunePending")]
    assert [o["name"] for o in pending] == ["settings"]
    assert "503" in pending[0]["error"]
    assert api.get_object("v1", "ConfigMap", "settings", cluster.namespace) is not None
    observation = kube.observe(comp, record)
    assert not observation.in_sync and observation.message == "1 to prune"

    record = kube.apply(comp, record)
    assert not any(o.get("prunePending") for o in record.data["objects"])
    assert api.get_object("v1", "ConfigMap", "settings", cluster.namespace) is None
    assert kube.observe(comp, record).in_sync


def test_prune_skips_an_object_another_component_took_over(cluster: Cluster, repo: Repo,
                                                           tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    record_a = kube.apply(component(repo, cluster, name="a"), None)
    # the ConfigMap moves from component a to component b
    other = Repo(repo.root, repo.root / "solutions" / "other")
    other.write({"cm.yaml": CONFIGMAP})
    kube.apply(component(other, cluster, name="b"), None)
    repo.write({k: v for k, v in DEFAULT_FILES.items() if k != "10-configmap.yaml"})
    kube.apply(component(repo, cluster, name="a"), record_a)
    configmap = live(cluster, "v1", "ConfigMap", "settings", cluster.namespace)
    assert configmap is not None
    assert configmap["metadata"]["annotations"]["reconciler.io/component"] == "b"


def test_delete_of_a_whole_component_in_reverse_order(cluster: Cluster, repo: Repo,
                                                      tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    record = kube.apply(component(repo, cluster), None)
    if cluster.server is not None:
        cluster.server.reset_requests()
    kube.delete(record)
    ns = cluster.namespace
    assert live(cluster, "v1", "ConfigMap", "settings", ns) is None
    assert live(cluster, "apps/v1", "Deployment", "web", ns) is None
    if cluster.server is not None:
        deletes = [r for r in cluster.server.requests if r.method == "DELETE"]
        assert [r.path.rsplit("/", 2)[-2] for r in deletes] == [
            "services", "deployments", "configmaps", "namespaces"]
    kube.delete(record)  # everything already gone: 404 counts as done


def test_failed_delete_raises(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    record = kube.apply(component(repo, cluster), None)
    api.fail_next("DELETE", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments", 500)
    with pytest.raises(TransientError, match=f"Deployment/{cluster.namespace}/web"):
        kube.delete(record)
    assert api.get_object("apps/v1", "Deployment", "web", cluster.namespace) is not None
    kube.delete(record)  # the retry finishes the job
    assert api.get_object("apps/v1", "Deployment", "web", cluster.namespace) is None


# -- ordering ----------------------------------------------------------------------------------

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: machines.factory.example.com
spec:
  group: factory.example.com
  scope: Namespaced
  names: {plural: machines, singular: machine, kind: Machine, listKind: MachineList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""

MACHINE = """\
apiVersion: factory.example.com/v1
kind: Machine
metadata:
  name: press-1
  namespace: ${{ params.namespace }}
spec:
  line: "${{ params.line }}"
"""


def test_namespaces_and_crds_go_first(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    # listed in the worst order: the custom object, the ConfigMap, then its CRD and namespace
    repo.write({"a.yaml": MACHINE + "---\n" + CONFIGMAP, "b.yaml": CRD, "c.yaml": NAMESPACE})
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    assert kube.observe(comp, None).message == "4 to create"
    record = kube.apply(comp, None)
    ns = cluster.namespace
    assert refs(record) == [f"Namespace/{ns}", "CustomResourceDefinition/"
                            "machines.factory.example.com", f"Machine/{ns}/press-1",
                            f"ConfigMap/{ns}/settings"]
    machine = live(cluster, "factory.example.com/v1", "Machine", "press-1", ns)
    assert machine is not None and machine["spec"] == {"line": "L1"}
    assert kube.observe(comp, record).in_sync
    if cluster.server is not None:
        cluster.server.reset_requests()
    kube.delete(record)
    if cluster.server is not None:
        kinds = [r.path.rsplit("/", 2)[-2] for r in cluster.server.requests
                 if r.method == "DELETE"]
        assert kinds == ["configmaps", "machines", "customresourcedefinitions", "namespaces"]


# -- health ------------------------------------------------------------------------------------


def test_health_progressing_then_healthy(controlled: Cluster, repo: Repo,
                                         tmp_path: Path) -> None:
    controlled.api  # noqa: B018 - skip on a real cluster: rollout timing is not ours
    kube = provider(controlled, tmp_path)
    comp = component(repo, controlled)
    record = kube.apply(comp, None)
    first = kube.health(comp, record)
    assert first.state is Health.PROGRESSING
    assert f"Deployment/{controlled.namespace}/web" in first.message
    second = kube.health(comp, record)
    assert second.state is Health.HEALTHY, second.message


def test_health_follows_status_written_by_a_controller(cluster: Cluster, repo: Repo,
                                                       tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    generation = api.get_object("apps/v1", "Deployment", "web", cluster.namespace)[
        "metadata"]["generation"]
    api.set_status("apps/v1", "Deployment", "web", cluster.namespace, {
        "observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
        "availableReplicas": 1})
    report = kube.health(comp, record)
    assert report.state is Health.PROGRESSING
    assert report.message == f"Deployment/{cluster.namespace}/web: 1/2 replicas available"
    api.set_status("apps/v1", "Deployment", "web", cluster.namespace, {
        "observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
        "availableReplicas": 2})
    assert kube.health(comp, record).state is Health.HEALTHY


JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  namespace: ${{ params.namespace }}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: busybox:1.36
          command: ["false"]
"""


def test_failed_job_is_degraded(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    api = cluster.api
    repo.write({"ns.yaml": NAMESPACE, "job.yaml": JOB})
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    assert kube.health(comp, record).state is Health.PROGRESSING
    api.set_status("batch/v1", "Job", "migrate", cluster.namespace, {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]})
    report = kube.health(comp, record)
    assert report.state is Health.DEGRADED
    assert report.message.startswith(f"Job/{cluster.namespace}/migrate: job failed: "
                                      "BackoffLimitExceeded")


# -- errors ------------------------------------------------------------------------------------


def test_conflict_without_force_is_permanent(cluster: Cluster, repo: Repo,
                                             tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster, force=False)
    record = kube.apply(comp, None)
    api.edit("apps/v1", "Deployment", "web", cluster.namespace, {"spec": {"replicas": 5}})
    observation = kube.observe(comp, record)
    assert not observation.in_sync and observation.message == "1 in conflict"
    assert "kubectl-edit" in observation.diff
    with pytest.raises(PermanentError) as caught:
        kube.apply(comp, record)
    assert caught.value.reason == "Conflict"
    assert f"Deployment/{cluster.namespace}/web: apply failed (409" in caught.value.message
    assert "kubectl-edit" in caught.value.message and "replicas" in caught.value.message


def test_invalid_object_is_permanent_and_names_the_field(cluster: Cluster, repo: Repo,
                                                         tmp_path: Path) -> None:
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster, params={"replicas": -1})
    with pytest.raises(PermanentError) as caught:
        kube.apply(comp, None)
    assert caught.value.reason == "Invalid"
    assert f"Deployment/{cluster.namespace}/web: apply failed (422" in caught.value.message
    assert "spec.replicas" in caught.value.message


FORBIDDEN = {"reason": "Forbidden", "message": 'deployments.apps "web" is forbidden: User '
             '"edge" cannot patch resource "deployments" in API group "apps"'}


@pytest.mark.parametrize(("code", "body", "error", "reason"), [
    (429, None, TransientError, "TooManyRequests"),
    (503, None, TransientError, "ServiceUnavailable"),
    (500, None, TransientError, "InternalError"),
    (400, {"reason": "BadRequest", "message": "bad body"}, PermanentError, "BadRequest"),
    (403, FORBIDDEN, PermanentError, "Forbidden"),
])
def test_http_errors_are_mapped(cluster: Cluster, repo: Repo, tmp_path: Path, code: int,
                                body: dict[str, str] | None, error: type[Exception],
                                reason: str) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    kube.apply(comp, None)
    api.fail_next("PATCH", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments", code,
                  body=body)
    with pytest.raises(error) as caught:
        kube.apply(comp, None)
    assert isinstance(caught.value, PermanentError | TransientError)
    assert caught.value.reason == reason
    assert caught.value.message.startswith(
        f"Deployment/{cluster.namespace}/web: apply failed ({code} {reason})")
    if body is not None:
        assert caught.value.message.endswith(body["message"])
    if code == 429:  # the server's Retry-After becomes the delay hint
        assert isinstance(caught.value, TransientError) and caught.value.delay == 1.0


def test_dropped_connection_is_transient(cluster: Cluster, repo: Repo,
                                        tmp_path: Path) -> None:
    api = cluster.api
    kube = provider(cluster, tmp_path)
    comp = component(repo, cluster)
    record = kube.apply(comp, None)
    api.fail_next("GET", f"/api/v1/namespaces/{cluster.namespace}/configmaps",
                  CONNECTION_RESET)
    with pytest.raises(TransientError, match=f"ConfigMap objects in namespace "
                                             f"{cluster.namespace}: list failed: cannot "
                                             "reach the API server"):
        kube.observe(comp, record)
    assert kube.observe(comp, record).in_sync  # the next call uses a fresh connection


def test_unreachable_server_is_transient(tmp_path: Path, repo: Repo) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "closed-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "closed",
        "clusters": [{"name": "closed", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "u"}}]}))
    closed = Cluster(kubeconfig, "shop", None)
    with pytest.raises(TransientError, match="cannot reach the API server") as caught:
        provider(closed, tmp_path).observe(component(repo, closed), None)
    assert caught.value.reason == "Unreachable"


def test_bad_kubeconfig_is_permanent(tmp_path: Path, repo: Repo) -> None:
    broken = Cluster(tmp_path / "missing-kubeconfig", "shop", None)
    with pytest.raises(PermanentError, match="missing-kubeconfig") as caught:
        provider(broken, tmp_path).observe(component(repo, broken), None)
    assert caught.value.reason == "KubeconfigInvalid"


def test_unknown_kind_is_permanent(cluster: Cluster, repo: Repo, tmp_path: Path) -> None:
    repo.write({"x.yaml": "apiVersion: nowhere.example.com/v1\nkind: Gadget\n"
                          "metadata: {name: g}\n"})
    with pytest.raises(PermanentError, match="does not know kind Gadget") as caught:
        provider(cluster, tmp_path).apply(component(repo, cluster), None)
    assert caught.value.reason == "UnknownKind"


def test_namespace_outside_the_local_policy_is_refused(cluster: Cluster, repo: Repo,
                                                       tmp_path: Path) -> None:
    policy = LocalPolicy(namespaces=frozenset({"allowed"}))
    kube = provider(cluster, tmp_path, policy=policy)
    with pytest.raises(PolicyError, match=f"Namespace/{cluster.namespace}: namespace"):
        kube.apply(component(repo, cluster), None)
    repo.write({"cm.yaml": CONFIGMAP})
    with pytest.raises(PolicyError, match=f"ConfigMap/{cluster.namespace}/settings"):
        kube.observe(component(repo, cluster), None)
    assert live(cluster, "v1", "ConfigMap", "settings", cluster.namespace) is None


# -- manifests -----------------------------------------------------------------------------------


def test_undefined_template_name_is_an_error(cluster: Cluster, repo: Repo,
                                             tmp_path: Path) -> None:
    repo.write({"cm.yaml": CONFIGMAP.replace("params.line", "params.nope")})
    with pytest.raises(TemplateError, match=r"manifests/cm\.yaml"):
        provider(cluster, tmp_path).observe(component(repo, cluster), None)


@pytest.mark.parametrize("path", ["../outside", "/etc", "manifests/../../.."])
def test_manifest_paths_must_stay_in_the_repository(cluster: Cluster, repo: Repo,
                                                    tmp_path: Path, path: str) -> None:
    with pytest.raises(PermanentError, match="manifests"):
        provider(cluster, tmp_path).observe(component(repo, cluster, manifests=path), None)


def test_symlink_leaving_the_repository_is_refused(cluster: Cluster, repo: Repo,
                                                   tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cm.yaml").write_text(CONFIGMAP)
    (repo.base / "manifests" / "link.yaml").symlink_to(outside / "cm.yaml")
    with pytest.raises(PermanentError, match="leads outside the repository"):
        provider(cluster, tmp_path).observe(component(repo, cluster), None)
    (repo.base / "linked").symlink_to(outside)
    with pytest.raises(PermanentError, match="leads outside the repository"):
        provider(cluster, tmp_path).observe(component(repo, cluster, manifests="linked"), None)


def test_invalid_yaml_and_objects_name_the_file(cluster: Cluster, repo: Repo,
                                                tmp_path: Path) -> None:
    repo.write({"bad.yaml": "kind: [unclosed\n"})
    with pytest.raises(PermanentError, match=r"manifests/bad\.yaml: invalid YAML"):
        provider(cluster, tmp_path).observe(component(repo, cluster), None)
    repo.write({"bad.yaml": "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"})
    with pytest.raises(PermanentError, match=r"bad\.yaml: document 2: ConfigMap: metadata\.name"):
        provider(cluster, tmp_path).observe(component(repo, cluster), None)


# -- validation --------------------------------------------------------------------------------


def test_check_config() -> None:
    policy = LocalPolicy(namespaces=frozenset({"shop"}))
    assert KubernetesProvider.check_config({"kubeconfig": "/k", "context": "c",
                                            "namespace": "shop"}, policy) == []
    problems = KubernetesProvider.check_config(
        {"kubeconfig": 3, "inCluster": "yes", "namespace": "other", "colour": "red"}, policy)
    assert {p.field for p in problems} == {"kubeconfig", "inCluster", "namespace", "colour"}
    assert Problem("namespace", "namespace 'other' is not allowed by the local policy "
                                "(allowed: shop)") in problems
    assert KubernetesProvider.check_config({"inCluster": True, "kubeconfig": "/k"},
                                           LocalPolicy()) == [
        Problem("inCluster", "cannot be combined with kubeconfig")]
    assert [p.field for p in KubernetesProvider.check_config(
        {"namespace": "Not_A_Name"}, LocalPolicy())] == ["namespace"]


def test_check_properties() -> None:
    check = KubernetesProvider.check_properties
    assert check({"manifests": "k8s", "force": False, "prune": True,
                  "ignore": ["/spec/replicas"], "healthTimeout": 120}) == []
    assert check({"resources": [{"apiVersion": "v1", "kind": "ConfigMap"}]}) == []
    assert check({"manifests": "${{ params.dir }}", "prune": "${{ params.prune }}"}) == []
    assert [p.field for p in check({})] == ["manifests"]
    problems = check({"manifests": ["ok", "../up", "/abs"], "resources": [3], "force": "yes",
                      "ignore": ["spec/replicas"], "healthTimeout": 0, "colour": 1})
    assert sorted(p.field for p in problems) == [
        "colour", "force", "healthTimeout", "ignore.0", "manifests.1", "manifests.2",
        "resources.0"]


# -- the example fleet's manifests -------------------------------------------------------------

EXAMPLE_REPO = Path(__file__).resolve().parents[2] / "example-repo"


def test_example_shop_floor_manifests_apply_and_settle(controlled: Cluster,
                                                       tmp_path: Path) -> None:
    api = controlled.api  # the example image does not exist: a real cluster never settles
    params = {"namespace": controlled.namespace, "lineId": "L1", "logLevel": "info",
              "pollSeconds": 5, "replicas": 2, "image": "ghcr.io/example/collector:1.4.0",
              "port": 8080}
    comp = Component(
        name="collector", type="workload", properties={"manifests": "manifests"},
        params=params, instance="shop-floor", solution="shop-floor-k8s", target="berlin-l1",
        site="eu/berlin/line-1", revision="abc123",
        base_dir=EXAMPLE_REPO / "solutions" / "shop-floor-k8s", repo_root=EXAMPLE_REPO,
        template_context={"params": params, "target": {"name": "berlin-l1"},
                          "site": {"name": "line-1", "labels": {}}})
    kube = provider(controlled, tmp_path)
    record = kube.apply(comp, None)
    ns = controlled.namespace
    assert refs(record) == [f"Namespace/{ns}", f"ConfigMap/{ns}/collector-config",
                            f"Deployment/{ns}/collector", f"Service/{ns}/collector"]
    configmap = live(controlled, "v1", "ConfigMap", "collector-config", ns)
    assert configmap is not None
    assert configmap["data"] == {"LINE_ID": "L1", "LOG_LEVEL": "info",
                                 "POLL_INTERVAL_SECONDS": "5", "SITE": "line-1",
                                 "TARGET": "berlin-l1"}
    for _ in range(10):
        if kube.health(comp, record).state is Health.HEALTHY:
            break
    assert kube.health(comp, record).state is Health.HEALTHY
    # a no-op sync: one list per kind and namespace, no read or dry-run per object, no write
    api.reset_requests()
    assert kube.observe(comp, record).in_sync
    assert api.count(verb="list") == 4
    assert api.count(dry_run=True) == 0
    assert len(api.requests) == 4
