"""The site daemon with a Kubernetes target, end to end.

``reconciler run`` as a child process serves one line whose target is a Kubernetes cluster:
the test API server (``tests.kubeapi``) on 127.0.0.1, controller off, so a Deployment becomes
healthy only when the test writes its status. The fleet repository is a temporary working
repository pushed to a bare remote; new commits reach the daemon through a signed webhook
(generic ``X-Reconciler-Signature``), and extra runs through SIGHUP. The test walks one line
through its life: first rollout waiting for health, a newer commit abandoning that wait and
being applied at once, health reached, an object removed from the manifests and pruned, a hand
edit repaired, and an idle run that writes nothing. ``explain`` on the example repository
shows the Kubernetes and Helm components of the line's cluster target.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.daemon.webhooks import sign
from tests.integration.fleetkit import (
    EXAMPLE_REPO,
    DaemonProcess,
    FleetRepo,
    branch_head,
    component,
    instance,
    make_site,
    reconciler,
    settings,
    site,
    solution,
    status_of,
    target,
    wait_for,
)
from tests.kubeapi import KubeAPIServer

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "line-apps"
TARGET = "berlin-l1-cluster"
SITE_PATH = "berlin/berlin-l1"
STATUS_BRANCH = "reconciler-status/berlin_berlin-l1"
SECRET = b"webhook-secret-for-tests"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# far longer than the test: reaching the next step quickly proves the wait was abandoned
HEALTH_TIMEOUT = 300

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: collector-config
data:
  LINE_ID: "${{ params.lineId }}"
  LOG_LEVEL: "${{ params.logLevel }}"
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: collector
  labels:
    app: collector
    tier: edge
spec:
  replicas: ${{ params.replicas }}
  selector:
    matchLabels:
      app: collector
  template:
    metadata:
      labels:
        app: collector
    spec:
      containers:
        - name: collector
          image: "${{ params.image }}"
          env:
            - name: LINE_ID
              value: "${{ params.lineId }}"
"""


def _fleet(root: Path, kubeconfig: Path) -> FleetRepo:
    parameters = {
        "lineId": {"type": "string", "required": True},
        "logLevel": {"type": "string", "allowed": ["debug", "info"], "default": "info"},
        "replicas": {"type": "integer", "min": 1, "max": 5, "default": 2},
        "image": {"type": "string", "default": "registry.example/collector:1.0.0"},
    }
    collector = component("collector", "kubernetes",
                          {"manifests": "manifests", "healthTimeout": HEALTH_TIMEOUT})
    binding = {"role": "kubernetes", "provider": "kubernetes",
               "config": {"kubeconfig": str(kubeconfig), "namespace": NAMESPACE}}
    return FleetRepo.from_docs(root, {
        "reconciler.yaml": settings(),
        "sites.yaml": [site("berlin"), site("berlin-l1", "berlin", params={"lineId": "BER-L1"})],
        "targets.yaml": target(TARGET, "berlin-l1", bindings=[binding]),
        "solutions/collector/solution.yaml": solution("collector", [collector], parameters),
        "solutions/collector/manifests/10-configmap.yaml": CONFIGMAP,
        "solutions/collector/manifests/20-deployment.yaml": DEPLOYMENT,
        "instances.yaml": instance("collector", "collector", names=[TARGET]),
    })


def _post_webhook(url: str) -> int:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    request = urllib.request.Request(
        url + "/hooks/git", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "X-Reconciler-Signature": "sha256=" + sign(SECRET, body)})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def _healthy(api: KubeAPIServer) -> None:
    """Write the status a deployment controller writes once the rollout is done."""
    live = api.get_object("apps/v1", "Deployment", "collector", NAMESPACE)
    assert live is not None
    replicas = live["spec"]["replicas"]
    api.set_status("apps/v1", "Deployment", "collector", NAMESPACE, {
        "observedGeneration": live["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True",
                        "reason": "MinimumReplicasAvailable"},
                       {"type": "Progressing", "status": "True",
                        "reason": "NewReplicaSetAvailable"}]})


def _image(api: KubeAPIServer) -> str | None:
    live = api.get_object("apps/v1", "Deployment", "collector", NAMESPACE)
    if live is None:
        return None
    return str(live["spec"]["template"]["spec"]["containers"][0]["image"])


def _wait_health_polls(api: KubeAPIServer, count: int) -> None:
    """Wait until the Deployment has been read ``count`` more times (a health wait polls)."""
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/collector"
    before = api.count(method="GET", path_prefix=path)
    wait_for(lambda: api.count(method="GET", path_prefix=path) >= before + count, 10,
             "health polls of the Deployment")


def _writes(api: KubeAPIServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in api.requests
            if r.method in WRITES and not r.dry_run]


def _status(fleet: FleetRepo) -> dict[str, Any]:
    return status_of(fleet.remote, SITE_PATH, TARGET)


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(controller=False) as server:
        server.add_objects(*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                             for n in ("default", NAMESPACE)))
        yield server


def test_line_cluster_lifecycle_with_abandoned_health_wait(api: KubeAPIServer,
                                                           tmp_path: Path) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    fleet = _fleet(tmp_path / "fleet", kubeconfig)
    first = fleet.head()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    line = make_site(tmp_path, "line", repo=fleet.url, site="berlin-l1",
                     healthTimeout=HEALTH_TIMEOUT, healthPollInterval=0.1,
                     listen={"enabled": True, "address": "127.0.0.1", "port": 0},
                     webhook={"secretFile": str(secret_file)})
    daemon = DaemonProcess(line, tmp_path / "daemon.log").start()
    try:
        # (a) the first revision is applied, and the run waits for the Deployment's health
        url = wait_for(lambda: [e["url"] for e in daemon.events("http_server_started")],
                       20, "the daemon's HTTP server")[0]
        wait_for(lambda: daemon.events("component_applied", component="collector"), 30,
                 "the first apply")
        assert _image(api) == "registry.example/collector:1.0.0"
        configmap = api.get_object("v1", "ConfigMap", "collector-config", NAMESPACE)
        assert configmap is not None and configmap["data"] == {"LINE_ID": "BER-L1",
                                                               "LOG_LEVEL": "info"}
        _wait_health_polls(api, 3)
        assert daemon.runs() == [], "the first run must still be waiting for health"

        # (b) a newer commit arrives by webhook: the wait is abandoned, it is applied at once
        fleet.replace("solutions/collector/solution.yaml", "collector:1.0.0", "collector:1.1.0")
        second = fleet.commit("collector 1.1.0")
        sent = time.monotonic()
        assert _post_webhook(url) == 202
        wait_for(lambda: _image(api) == "registry.example/collector:1.1.0", 20,
                 "the newer revision applied")
        took = time.monotonic() - sent
        assert took < 10, f"newer revision applied {took:.1f}s after the webhook"
        run = daemon.wait_runs(1, 10)[0]
        assert run["revision"] == first[:12] and run["phases"] == {"Progressing": 1}
        abandoned = _status(fleet)
        assert abandoned["phase"] == "Progressing"
        assert "health wait abandoned" in json.dumps(abandoned["instances"])

        # (c) the new revision waits for health too, until the controller reports the rollout
        # done: then the run ends Ready on the new revision
        _wait_health_polls(api, 3)
        assert len(daemon.runs()) == 1
        _healthy(api)
        run = daemon.wait_runs(2, 20)[1]
        assert run["revision"] == second[:12] and run["phases"] == {"Ready": 1}
        ready = _status(fleet)
        assert (ready["phase"], ready["observedRevision"], ready["appliedRevision"]) == \
            ("Ready", second, second)

        # (d) the ConfigMap leaves the manifests: it is pruned on the next run
        fleet.remove("solutions/collector/manifests/10-configmap.yaml")
        third = fleet.commit("collector without its ConfigMap")
        assert _post_webhook(url) == 202
        run = daemon.wait_runs(3, 30)[2]
        assert run["revision"] == third[:12] and run["phases"] == {"Ready": 1}
        assert api.get_object("v1", "ConfigMap", "collector-config", NAMESPACE) is None
        assert api.get_object("apps/v1", "Deployment", "collector", NAMESPACE) is not None
        assert _status(fleet)["appliedRevision"] == third

        # (e) a hand edit of a field we own is drift: the next run puts it back
        api.edit("apps/v1", "Deployment", "collector", NAMESPACE,
                 {"metadata": {"labels": {"tier": "by-hand"}}})
        daemon.signal(signal.SIGHUP)
        run = daemon.wait_runs(4, 30)[3]
        assert run["drifted"] == 1 and run["applied"] == 1 and run["phases"] == {"Ready": 1}
        live = api.get_object("apps/v1", "Deployment", "collector", NAMESPACE)
        assert live is not None and live["metadata"]["labels"]["tier"] == "edge"

        # an idle run: reads and one dry-run per object, no write, no status commit
        status_head = branch_head(fleet.remote, STATUS_BRANCH)
        api.reset_requests()
        daemon.signal(signal.SIGHUP)
        run = daemon.wait_runs(5, 30)[4]
        assert (run["applied"], run["pruned"], run["drifted"]) == (0, 0, 0)
        assert run["phases"] == {"Ready": 1}
        assert _writes(api) == []
        # one object left, the Deployment: one list of its kind, nothing per object
        assert api.count(verb="list") == 1
        assert api.count(method="PATCH", dry_run=True) == 0
        assert api.count(method="GET", path_prefix=f"/apis/apps/v1/namespaces/{NAMESPACE}/"
                         "deployments/collector") == 0
        assert branch_head(fleet.remote, STATUS_BRANCH) == status_head
        daemon.assert_alive()
    finally:
        daemon.kill()


def _line_env(api: KubeAPIServer) -> object:
    live = api.get_object("apps/v1", "Deployment", "collector", NAMESPACE) or {}
    containers = live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return containers[0].get("env") if containers else None


def test_local_commit_seen_by_the_watcher_abandons_the_health_wait(api: KubeAPIServer,
                                                                  tmp_path: Path) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    fleet = _fleet(tmp_path / "fleet", kubeconfig)
    first = fleet.head()
    # the daemon tracks the working repository itself and watches its refs
    line = make_site(tmp_path, "line", repo=str(fleet.work), site="berlin-l1",
                     healthTimeout=HEALTH_TIMEOUT, healthPollInterval=0.1, watch=True)
    daemon = DaemonProcess(line, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: daemon.events("watching_local_repository"), 20, "the watcher")
        wait_for(lambda: daemon.events("component_applied", component="collector"), 30,
                 "the first apply")
        _wait_health_polls(api, 3)
        assert daemon.runs() == []

        fleet.replace("sites.yaml", "BER-L1", "BER-L1A")
        second = fleet.commit("line id BER-L1A")
        sent = time.monotonic()
        # the ConfigMap is applied before the Deployment: wait for the last object
        wait_for(lambda: _line_env(api) == [{"name": "LINE_ID", "value": "BER-L1A"}], 20,
                 "the local commit applied")
        took = time.monotonic() - sent
        assert took < 10, f"local commit applied {took:.1f}s after it was made"
        cm = api.get_object("v1", "ConfigMap", "collector-config", NAMESPACE) or {}
        assert cm.get("data", {}).get("LINE_ID") == "BER-L1A"
        run = daemon.wait_runs(1, 10)[0]
        assert run["revision"] == first[:12] and run["phases"] == {"Progressing": 1}
        assert _image(api) == "registry.example/collector:1.0.0"
        live = api.get_object("apps/v1", "Deployment", "collector", NAMESPACE)
        assert live is not None
        assert live["spec"]["template"]["spec"]["containers"][0]["env"] == [
            {"name": "LINE_ID", "value": "BER-L1A"}]

        _wait_health_polls(api, 2)
        _healthy(api)
        run = daemon.wait_runs(2, 20)[1]
        assert run["revision"] == second[:12] and run["phases"] == {"Ready": 1}
        daemon.assert_alive()
    finally:
        daemon.kill()


def test_newer_revision_waits_for_an_unchanged_dependency_then_applies(
        api: KubeAPIServer, tmp_path: Path) -> None:
    """A newer revision that changes only a component depending on one still rolling out.

    The newer revision arrives while the run waits for the dependency; that wait is abandoned
    and the next run finds the dependency in sync but not healthy yet. That run must wait for
    it (it is the same rollout) and apply the dependent change as soon as it is healthy,
    rather than skip the change until the next scheduled run.
    """
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    fleet = _fleet(tmp_path / "fleet", kubeconfig)
    fleet.remove("solutions/collector/manifests/10-configmap.yaml")
    fleet.write("solutions/collector/settings/configmap.yaml", CONFIGMAP)
    fleet.replace("solutions/collector/solution.yaml", "healthTimeout: 300\n",
                  "healthTimeout: 300\n  - name: settings\n    type: kubernetes\n"
                  "    properties:\n      manifests: settings\n"
                  "    dependsOn:\n    - collector\n")
    fleet.commit("settings depend on the collector")
    line = make_site(tmp_path, "line", repo=str(fleet.work), site="berlin-l1",
                     healthTimeout=HEALTH_TIMEOUT, healthPollInterval=0.1, watch=True)
    daemon = DaemonProcess(line, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: daemon.events("watching_local_repository"), 20, "the watcher")
        wait_for(lambda: daemon.events("component_applied", component="collector"), 30,
                 "the first apply")
        _wait_health_polls(api, 3)
        assert api.get_object("v1", "ConfigMap", "collector-config", NAMESPACE) is None

        fleet.replace("solutions/collector/solution.yaml", "default: info", "default: debug")
        fleet.commit("debug logging")
        daemon.wait_runs(1, 10)
        # the next run must be waiting for the collector's health, not over already
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/collector"
        reads = api.count(method="GET", path_prefix=path)
        wait_for(lambda: len(daemon.runs()) > 1
                 or api.count(method="GET", path_prefix=path) >= reads + 3, 10,
                 "a second run or health polls")
        runs = daemon.runs()
        assert len(runs) == 1, (
            f"the run of the newer revision ended {runs[1]['phases']} without waiting for "
            "the collector's health, so the settings change waits for the next scheduled run")
        _healthy(api)
        configmap = wait_for(
            lambda: api.get_object("v1", "ConfigMap", "collector-config", NAMESPACE), 10,
            "the dependent component applied once its dependency is healthy")
        assert configmap["data"]["LOG_LEVEL"] == "debug"
    finally:
        daemon.kill()


def test_explain_shows_the_rendered_kubernetes_and_helm_components() -> None:
    result = reconciler("explain", "--repo", str(EXAMPLE_REPO), "--target", TARGET)
    assert result.returncode == 0, result.describe()
    text = result.stdout
    assert "Instance shop-floor-collector  (solution shop-floor-k8s" in text
    assert "collector  (kubernetes -> kubernetes)" in text
    assert "manifests: manifests" in text
    assert "Instance line-dashboard-helm  (solution line-dashboard-helm" in text
    assert "dashboard  (chart -> helm)" in text
    # rendered: the helm values carry the resolved parameters, the target's replicas win
    assert '"lineId": "BER-L1"' in text and '"replicaCount": 2' in text
