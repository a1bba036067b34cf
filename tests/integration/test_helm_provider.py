"""The helm provider driving real helm binaries (helm 4 and, when installed, helm 3).

Without a cluster: `helm template` of the example chart with values that came through the
core's templating, version detection, errors when the API server is unreachable or failing,
chart path escapes, and observe/health/delete against a small fake Kubernetes API server on
127.0.0.1 that stores releases the way helm does (Secrets holding gzipped release JSON).

With a cluster (RECONCILER_TEST_KUBECONFIG): install, no-op, upgrade, health and uninstall of a
real release; the same tests serve as a conformance suite for a new helm version.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from reconciler_providers.helm import HelmProvider

from reconciler.core.errors import PermanentError, PolicyError, TransientError
from reconciler.core.provider_api import (
    Component,
    Health,
    LocalPolicy,
    ProviderContext,
    Record,
)
from reconciler.core.templating import render_value

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
EXAMPLE_REPO = ROOT / "example-repo"
SOLUTION_DIR = EXAMPLE_REPO / "solutions" / "line-dashboard-helm"

BINARIES = [pytest.param(TOOLS / "helm", id="helm4"), pytest.param(TOOLS / "helm3", id="helm3")]


@pytest.fixture(params=BINARIES)
def helm_bin(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} missing: run scripts/install-tools.sh")
    return path


# ---------------------------------------------------------------- components


def _component(values: dict[str, Any], *, release: str = "dash-l7", repo: Path = EXAMPLE_REPO,
               base_dir: Path = SOLUTION_DIR, chart: str = "chart", **props: Any) -> Component:
    return Component(
        name="dashboard", type="chart",
        properties={"chart": chart, "release": release, "values": values, **props},
        params={"lineId": "L7", "apiToken": "tok-9f8e7d6c"}, instance="dash-eu",
        solution="line-dashboard-helm", target="berlin-l7-k3s", site="eu/berlin/line-7",
        revision="0123456789abcdef0123456789abcdef01234567", base_dir=base_dir,
        repo_root=repo, secret_params=frozenset({"apiToken"}))


def _templated_values() -> dict[str, Any]:
    """Values as the core renders them from the solution's properties."""
    context = {"params": {"lineId": "L7", "refresh": 10, "theme": "dark"},
               "site": {"name": "line-7", "labels": {"tz": "Europe/Berlin"}},
               "target": {"name": "berlin-l7-k3s"}}
    raw = {"lineId": "${{ params.lineId }}", "refreshSeconds": "${{ params.refresh }}",
           "theme": "${{ params.theme }}", "timezone": "${{ site.labels.tz }}"}
    return {k: render_value(v, context, source=f"properties.values.{k}")
            for k, v in raw.items()}


def _provider(helm_bin: Path, state: Path, kubeconfig: Path | None = None,
              policy: LocalPolicy | None = None, **config: Any) -> HelmProvider:
    if kubeconfig is not None:
        config["kubeconfig"] = str(kubeconfig)
    context = ProviderContext(target="berlin-l7-k3s", binding="charts",
                              policy=policy or LocalPolicy(), state_dir=state)
    return HelmProvider({"helm": str(helm_bin), "namespace": "lines", **config}, context)


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "edge",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "test-token"}}]}))
    path.chmod(0o600)
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- a fake Kubernetes API


@dataclass
class FakeKube:
    """Just enough of the Kubernetes API for helm list/get and kubectl get."""

    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # by API path
    fail_with: int | None = None  # status for every namespaced request, with a proxy's body
    requests: list[str] = field(default_factory=list)

    RESOURCES: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {
        "/api/v1": [("configmaps", "ConfigMap"), ("services", "Service"),
                    ("secrets", "Secret")],
        "/apis/apps/v1": [("deployments", "Deployment")],
    })

    def add_release(self, name: str, namespace: str, *, status: str, chart: str,
                    version: str, config: dict[str, Any], manifest: str,
                    revision: int = 1) -> None:
        release = {
            "name": name, "namespace": namespace, "version": revision, "config": config,
            "manifest": manifest,
            "info": {"first_deployed": "2026-01-01T00:00:00Z",
                     "last_deployed": "2026-01-01T00:00:00Z", "deleted": "",
                     "description": "Install complete", "status": status},
            "chart": {"metadata": {"apiVersion": "v2", "name": chart, "version": version,
                                   "appVersion": "1.27.0"},
                      "templates": [], "values": {}},
        }
        payload = base64.b64encode(gzip.compress(json.dumps(release).encode()))
        self.secrets.setdefault(namespace, []).append({
            "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": f"sh.helm.release.v1.{name}.v{revision}",
                         "namespace": namespace,
                         "labels": {"name": name, "owner": "helm", "status": status,
                                    "version": str(revision)}},
            "data": {"release": base64.b64encode(payload).decode()}})

    def add_object(self, obj: dict[str, Any], namespace: str) -> None:
        prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
        plural = next(p for p, k in self.RESOURCES[prefix] if k == obj["kind"])
        obj["metadata"]["namespace"] = namespace
        self.objects[f"{prefix}/namespaces/{namespace}/{plural}/{obj['metadata']['name']}"] = obj

    def respond(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                         "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}
        if path == "/apis":
            gv = {"groupVersion": "apps/v1", "version": "v1"}
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apps", "versions": [gv], "preferredVersion": gv}]}
        if path in self.RESOURCES:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": path.removeprefix("/apis/").removeprefix("/api/"),
                         "resources": [{"name": p, "singularName": "", "namespaced": True,
                                        "kind": k, "verbs": ["get", "list"]}
                                       for p, k in self.RESOURCES[path]]}
        if self.fail_with is not None:
            return self.fail_with, "upstream connect error or disconnect/reset before headers"
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[4] == "secrets":
            wanted = dict(kv.split("=", 1) for kv in
                          query.get("labelSelector", [""])[0].split(",") if kv)
            items = [s for s in self.secrets.get(parts[3], [])
                     if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
            return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {},
                         "items": items}
        if path in self.objects:
            return 200, self.objects[path]
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": f"{path} not found"}


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[tuple[FakeKube, Path]]:
    kube = FakeKube()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            kube.requests.append(url.path)
            status, body = kube.respond(url.path, urllib.parse.parse_qs(url.query))
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type",
                             "text/plain" if isinstance(body, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield kube, _kubeconfig(tmp_path / "kubeconfig", url)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- no cluster needed


def test_detects_the_real_binary_version(helm_bin: Path, tmp_path: Path) -> None:
    short = subprocess.run([str(helm_bin), "version", "--short"], capture_output=True,
                           text=True, check=True, env={"HOME": str(tmp_path)}).stdout
    version = _provider(helm_bin, tmp_path / "state").helm_version()
    assert short.startswith(f"v{version.major}.{version.minor}.{version.patch}")
    assert version.major == (3 if helm_bin.name == "helm3" else 4)


def test_renders_chart_directory_with_templated_values(helm_bin: Path, tmp_path: Path) -> None:
    values = _templated_values()
    assert values["refreshSeconds"] == 10  # a whole expression keeps its type
    manifest = _provider(helm_bin, tmp_path / "state").render(_component(values))
    docs = {d["kind"]: d for d in yaml.safe_load_all(manifest) if d}
    assert set(docs) == {"ConfigMap", "Service", "Deployment"}
    layout = json.loads(docs["ConfigMap"]["data"]["layout.json"])
    assert layout == {"title": "Line L7", "theme": "dark", "refreshSeconds": 10,
                      "timezone": "Europe/Berlin"}
    assert docs["Deployment"]["metadata"]["name"] == "dash-l7"
    env = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TZ", "value": "Europe/Berlin"} in env
    assert not (tmp_path / "state" / "tmp").exists() or not any(
        (tmp_path / "state" / "tmp").iterdir()), "values files must not be left behind"


def test_values_with_shell_metacharacters_travel_intact(helm_bin: Path, tmp_path: Path) -> None:
    tricky = "L7'; rm -rf / #$(whoami) `id` \"q\""
    manifest = _provider(helm_bin, tmp_path / "state").render(_component({"lineId": tricky}))
    cm = next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "ConfigMap")
    assert json.loads(cm["data"]["layout.json"])["title"] == f"Line {tricky}"


def test_values_rejected_by_the_chart_schema_are_permanent(helm_bin: Path,
                                                           tmp_path: Path) -> None:
    provider = _provider(helm_bin, tmp_path / "state")
    with pytest.raises(PermanentError) as caught:
        provider.render(_component({"lineId": "L7", "theme": "tok-9f8e7d6c"}))
    assert caught.value.reason == "HelmInvalidValues"
    assert "'dash-l7'" in str(caught.value) and "theme" in str(caught.value)
    assert "tok-9f8e7d6c" not in str(caught.value)  # a secret param's value is never shown


def test_observe_with_unreachable_cluster_is_transient(helm_bin: Path, tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{_closed_port()}")
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    with pytest.raises(TransientError) as caught:
        provider.observe(_component({"lineId": "L7"}), None)
    assert caught.value.reason == "HelmClusterUnreachable"
    assert "'dash-l7'" in str(caught.value) and "connection refused" in str(caught.value)


def test_chart_symlink_escape_is_rejected(helm_bin: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "solutions" / "s").mkdir(parents=True)
    outside = tmp_path / "outside-chart"
    shutil.copytree(SOLUTION_DIR / "chart", outside)
    (repo / "solutions" / "s" / "chart").symlink_to(outside)
    provider = _provider(helm_bin, tmp_path / "state")
    component = _component({"lineId": "L7"}, repo=repo, base_dir=repo / "solutions" / "s")
    with pytest.raises(PermanentError, match="outside the repository") as caught:
        provider.render(component)
    assert caught.value.reason == "InvalidProperties"
    for bad in ("../chart", str(SOLUTION_DIR / "chart")):
        with pytest.raises(PermanentError):
            provider.observe(replace(component, properties={**component.properties,
                                                            "chart": bad}), None)


def test_namespace_outside_local_policy_is_refused(helm_bin: Path, tmp_path: Path) -> None:
    provider = _provider(helm_bin, tmp_path / "state",
                         policy=LocalPolicy(namespaces=frozenset({"lines"})))
    with pytest.raises(PolicyError, match="kube-system"):
        provider.observe(_component({"lineId": "L7"}, namespace="kube-system"), None)


def test_config_problems_refuse_construction(helm_bin: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="helmet"):
        _provider(helm_bin, tmp_path / "state", helmet="x")


def test_missing_binary_is_a_permanent_error(tmp_path: Path) -> None:
    provider = _provider(tmp_path / "no-helm", tmp_path / "state")
    with pytest.raises(PermanentError, match="install-tools"):
        provider.render(_component({"lineId": "L7"}))


# ---------------------------------------------------------------- against the fake API


def _rendered(helm_bin: Path, tmp_path: Path, values: dict[str, Any]) -> str:
    return _provider(helm_bin, tmp_path / "render-state").render(_component(values))


def test_observe_missing_release_shows_the_whole_manifest(
        helm_bin: Path, tmp_path: Path, fake_kube: tuple[FakeKube, Path]) -> None:
    _, kubeconfig = fake_kube
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    obs = provider.observe(_component({"lineId": "L7"}), None)
    assert not obs.exists and not obs.in_sync
    assert "+kind: Deployment" in obs.diff and "not installed" in obs.message


def test_observe_in_sync_release(helm_bin: Path, tmp_path: Path,
                                 fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    values = {"lineId": "L7", "theme": "dark"}
    kube.add_release("dash-l7", "lines", status="deployed", chart="line-dashboard",
                     version="0.1.0", config=values,
                     manifest=_rendered(helm_bin, tmp_path, values))
    obs = _provider(helm_bin, tmp_path / "state", kubeconfig).observe(_component(values), None)
    assert obs.exists and obs.in_sync, obs.message
    assert obs.diff == ""


def test_observe_values_drift_names_paths_and_diffs_manifest(
        helm_bin: Path, tmp_path: Path, fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    live = {"lineId": "L7", "theme": "light", "apiToken": "tok-9f8e7d6c"}
    kube.add_release("dash-l7", "lines", status="deployed", chart="line-dashboard",
                     version="0.1.0", config=live, manifest=_rendered(helm_bin, tmp_path, live))
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    obs = provider.observe(_component({"lineId": "L7", "theme": "dark"}), None)
    assert obs.exists and not obs.in_sync
    assert "values differ at apiToken, theme" in obs.message
    assert '-    <body class="light">' in obs.diff and '+    <body class="dark">' in obs.diff
    assert "tok-9f8e7d6c" not in obs.diff + obs.message


def test_observe_chart_version_and_failed_status(
        helm_bin: Path, tmp_path: Path, fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    values = {"lineId": "L7"}
    kube.add_release("dash-l7", "lines", status="failed", chart="line-dashboard",
                     version="0.0.9", config=values, manifest="")
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    component = _component(values)
    obs = provider.observe(component, None)
    assert not obs.in_sync
    assert "release status is failed" in obs.message
    assert "chart is line-dashboard-0.0.9, desired line-dashboard-0.1.0" in obs.message
    record = Record("helm", "charts", {"release": "dash-l7", "namespace": "lines"})
    health = provider.health(component, record)
    assert health.state is Health.DEGRADED and "failed" in health.message


def test_pending_release_is_progressing_and_out_of_sync(
        helm_bin: Path, tmp_path: Path, fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    values = {"lineId": "L7"}
    kube.add_release("dash-l7", "lines", status="pending-upgrade", chart="line-dashboard",
                     version="0.1.0", config=values,
                     manifest=_rendered(helm_bin, tmp_path, values))
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    component = _component(values)
    assert not provider.observe(component, None).in_sync
    record = Record("helm", "charts", {"release": "dash-l7", "namespace": "lines"})
    assert provider.health(component, record).state is Health.PROGRESSING


def test_chart_files_changed_since_last_apply(helm_bin: Path, tmp_path: Path,
                                              fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    values = {"lineId": "L7"}
    kube.add_release("dash-l7", "lines", status="deployed", chart="line-dashboard",
                     version="0.1.0", config=values,
                     manifest=_rendered(helm_bin, tmp_path, values))
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    stale = Record("helm", "charts", {"release": "dash-l7", "namespace": "lines",
                                      "chart_digest": "sha256:before-the-edit"})
    obs = provider.observe(_component(values), stale)
    assert not obs.in_sync and "chart files changed" in obs.message


@pytest.mark.parametrize("status", [429, 500, 503])
def test_api_server_errors_are_transient(helm_bin: Path, tmp_path: Path, status: int,
                                         fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    kube.fail_with = status
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    with pytest.raises(TransientError) as caught:
        provider.observe(_component({"lineId": "L7"}), None)
    assert "'dash-l7'" in str(caught.value)


def test_delete_of_missing_release_is_done(helm_bin: Path, tmp_path: Path,
                                           fake_kube: tuple[FakeKube, Path]) -> None:
    kube, kubeconfig = fake_kube
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig)
    provider.delete(Record("helm", "charts", {"release": "gone", "namespace": "lines"}))
    assert any(p.endswith("/secrets") for p in kube.requests)


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Deployment":
        obj["metadata"]["generation"] = 1
        obj["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                         "readyReplicas": 1, "availableReplicas": 1}
    return obj


def test_health_of_deployed_release_checks_its_objects(
        helm_bin: Path, tmp_path: Path, fake_kube: tuple[FakeKube, Path]) -> None:
    if not os.access(TOOLS / "kubectl", os.X_OK):
        pytest.skip("kubectl missing: run scripts/install-tools.sh")
    kube, kubeconfig = fake_kube
    values = {"lineId": "L7"}
    manifest = _rendered(helm_bin, tmp_path, values)
    kube.add_release("dash-l7", "lines", status="deployed", chart="line-dashboard",
                     version="0.1.0", config=values, manifest=manifest)
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    for obj in objects:
        if obj["kind"] != "Deployment":
            kube.add_object(_ready(obj), "lines")
    provider = _provider(helm_bin, tmp_path / "state", kubeconfig,
                         kubectl=str(TOOLS / "kubectl"))
    component = _component(values)
    record = Record("helm", "charts", {"release": "dash-l7", "namespace": "lines"})
    missing = provider.health(component, record)
    assert missing.state is Health.DEGRADED and "Deployment/dash-l7" in missing.message
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    kube.add_object(_ready(deployment), "lines")
    assert provider.health(component, record).state is Health.HEALTHY
    deployment["status"]["updatedReplicas"] = 0
    assert provider.health(component, record).state is Health.PROGRESSING


# ---------------------------------------------------------------- against a real cluster

CLUSTER = os.environ.get("RECONCILER_TEST_KUBECONFIG")


@pytest.mark.cluster
@pytest.mark.skipif(not CLUSTER, reason="RECONCILER_TEST_KUBECONFIG is not set")
def test_release_lifecycle_on_a_real_cluster(helm_bin: Path, tmp_path: Path) -> None:
    assert CLUSTER is not None
    namespace = f"reconciler-test-{uuid.uuid4().hex[:8]}"
    provider = _provider(helm_bin, tmp_path / "state", Path(CLUSTER), namespace=namespace)
    values = {"lineId": "L7", "theme": "dark", "replicaCount": 1}
    component = _component(values, createNamespace=True, timeout=240)
    try:
        first = provider.observe(component, None)
        assert not first.exists and "+kind: Deployment" in first.diff
        record = provider.apply(component, None)
        assert record.data["release"] == "dash-l7" and record.data["namespace"] == namespace
        assert record.data["version"] == "0.1.0"
        assert str(record.data["values_digest"]).startswith("sha256:")
        assert provider.health(component, record).state is Health.HEALTHY
        again = provider.observe(component, record)
        assert again.exists and again.in_sync, again.message  # no-op
        changed = _component({**values, "theme": "light"}, createNamespace=True, timeout=240)
        drift = provider.observe(changed, record)
        assert not drift.in_sync and "theme" in drift.message
        record = provider.apply(changed, record)
        assert provider.observe(changed, record).in_sync
        deadline = time.monotonic() + 120
        while provider.health(changed, record).state is not Health.HEALTHY:
            assert time.monotonic() < deadline, "release did not become healthy"
            time.sleep(2)
    finally:
        provider.delete(Record("helm", "charts", {"release": "dash-l7",
                                                  "namespace": namespace}))
        provider.delete(Record("helm", "charts", {"release": "dash-l7",
                                                  "namespace": namespace}))  # idempotent
        subprocess.run([str(TOOLS / "kubectl"), "--kubeconfig", CLUSTER, "delete",
                        "namespace", namespace, "--wait=false"], check=False,
                       capture_output=True)
    assert not provider.observe(component, None).exists
