"""Shared parts of the kubernetes provider's idle-run tests.

A :class:`Cluster` is the test API server (``tests.kubeapi``) or, with
``RECONCILER_TEST_KUBECONFIG``, a real cluster (each test in a namespace of its own, removed
afterwards); :class:`Writers` (``tests.kubeapi.writers``) drift its objects over HTTP either
way. :func:`idle_run` does what the executor does for one component in one run and reports
what the provider did from its ``component_observed`` log line, which works on both; the
request log (``Cluster.api``) is the test server's only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reconciler_providers.kubernetes import KubernetesProvider
from structlog.testing import capture_logs

from reconciler.core.provider_api import (
    Component,
    LocalPolicy,
    Observation,
    ProviderContext,
    Record,
)
from tests.kubeapi import KubeAPIServer
from tests.kubeapi.writers import Writers, object_path

REAL_KUBECONFIG = os.environ.get("RECONCILER_TEST_KUBECONFIG")
PER_OBJECT = ("get", "create", "update", "patch", "delete")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Cluster:
    kubeconfig: Path
    namespace: str
    http: Writers
    server: KubeAPIServer | None  # None on a real cluster

    @property
    def api(self) -> KubeAPIServer:
        """The test server's controls; skips the test on a real cluster."""
        if self.server is None:
            pytest.skip("needs the test API server's request log")
        return self.server

    def path(self, kind: str, name: str) -> str:
        api_version, plural = {"ConfigMap": ("v1", "configmaps"),
                               "Deployment": ("apps/v1", "deployments")}[kind]
        return object_path(api_version, plural, self.namespace, name)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.http.get(self.path(kind, name))

    def per_object(self) -> int:
        """Requests the test server saw about single objects (anything but lists and
        discovery) since its log was last reset."""
        return sum(1 for r in self.api.requests if r.verb in PER_OBJECT)

    def writes(self) -> int:
        return sum(1 for r in self.api.requests if r.method in WRITES and not r.dry_run)


def make_cluster(tmp_path: Path) -> Iterator[Cluster]:
    namespace = f"idle-{uuid.uuid4().hex[:8]}"
    with KubeAPIServer() as server:
        kubeconfig = Path(REAL_KUBECONFIG) if REAL_KUBECONFIG else \
            server.write_kubeconfig(tmp_path / "kubeconfig")
        http = Writers(kubeconfig)
        try:
            yield Cluster(kubeconfig, namespace, http, None if REAL_KUBECONFIG else server)
        finally:
            http.call("DELETE", f"/api/v1/namespaces/{namespace}")
            http.close()


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


def make_repo(tmp_path: Path, files: Mapping[str, str], name: str = "shop") -> Repo:
    root = tmp_path / "repo"
    base = root / "solutions" / name
    base.mkdir(parents=True, exist_ok=True)
    made = Repo(root, base)
    made.write(files)
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


def provider(cluster: Cluster, tmp_path: Path, **config: Any) -> KubernetesProvider:
    return KubernetesProvider(
        {"kubeconfig": str(cluster.kubeconfig), **config},
        ProviderContext(target="berlin-l1", binding="cluster", policy=LocalPolicy(),
                        state_dir=tmp_path / "state"))


@dataclass
class Run:
    """One component's part of a run: what observe found and what the provider did."""

    observation: Observation
    record: Record
    applied: bool
    stats: dict[str, int] = field(default_factory=dict)  # from component_observed

    @property
    def in_sync(self) -> bool:
        return self.observation.in_sync


def idle_run(kube: KubernetesProvider, comp: Component, record: Record | None, *,
             repair: bool = True, new_run: bool = True) -> Run:
    """What the executor does with one component in one run: observe; in sync, one health
    check; else (with ``repair``) apply. ``new_run`` starts the run with ``begin_run``, as
    the engine does."""
    if new_run:
        kube.begin_run()
    with capture_logs() as logs:
        observation = kube.observe(comp, record)
    stats = next(({k: int(v) for k, v in line.items() if isinstance(v, int)}
                  for line in logs if line.get("event") == "component_observed"), {})
    if observation.in_sync and record is not None:
        kube.health(comp, record)
        return Run(observation, record, False, stats)
    if not repair:
        assert record is not None
        return Run(observation, record, False, stats)
    return Run(observation, kube.apply(comp, record), True, stats)
