"""Helm components roll back with ``helm rollback``, to the release revision recorded when
their last good state was deployed: no chart download, no new chart render.

Real helm binaries (helm 4 and, when installed, helm 3) against the Kubernetes API test server
(``helmkit.HelmAPIServer``), with a small chart of one ConfigMap whose value is the release's
``values.value``:

* the provider: values A (revision 1), then B (revision 2), then A again is ``helm rollback
  rel 1`` (revision 3, "Rollback to 1" in ``helm history``), with the chart repository
  stopped: the rollback needs no chart; observe then finds the release in sync. A rollback
  that fails falls back to ``helm upgrade``.
* the engine: a solution of a Helm component and a script; a revision that changes the values
  and makes the script fail leaves the instance ``RolledBack`` and the release back at values
  A through ``helm rollback``; the next run finds everything in sync.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from reconciler_providers.helm import HelmProvider
from structlog.testing import capture_logs

from reconciler.core.errors import ReconcilerError
from reconciler.core.provider_api import Component, LocalPolicy, ProviderContext, Record
from tests.integration.fleetkit import (
    FleetRepo,
    component,
    instance,
    make_site,
    script_binding,
    settings,
    site,
    solution,
    status_of,
    sync,
    target,
)
from tests.integration.helmkit import TOOLS, ChartRepository, HelmAPIServer, write_chart

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "lines"
RELEASE = "rel"
BINARIES = [pytest.param(TOOLS / "helm", id="helm4"), pytest.param(TOOLS / "helm3", id="helm3")]


@pytest.fixture(params=BINARIES)
def helm_bin(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} missing: run scripts/install-tools.sh")
    return path


@dataclass
class Cluster:
    api: HelmAPIServer
    kubeconfig: Path

    def value(self) -> str | None:
        """The VALUE of the release's ConfigMap, as the cluster has it."""
        live = self.api.get_object("v1", "ConfigMap", f"{RELEASE}-settings", NAMESPACE)
        return None if live is None else str(live["data"]["VALUE"])

    def history(self, helm: Path = TOOLS / "helm") -> list[dict[str, Any]]:
        done = subprocess.run([str(helm), "history", RELEASE, "--namespace", NAMESPACE,
                               "--output", "json"], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(self.kubeconfig.parent),
                                   "KUBECONFIG": str(self.kubeconfig)}, check=True)
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with HelmAPIServer(controller=False) as api:
        api.add_objects({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": NAMESPACE}})
        home = tmp_path / "cluster"
        home.mkdir()
        yield Cluster(api, api.write_kubeconfig(home / "kubeconfig"))


@pytest.fixture
def charts(tmp_path: Path) -> Iterator[ChartRepository]:
    repo = ChartRepository(tmp_path / "chart-repo")
    repo.publish(write_chart(tmp_path / "chart-src" / "mini"))
    repo.start()
    try:
        yield repo
    finally:
        repo.stop()


def _provider(helm_bin: Path, state: Path, cluster: Cluster) -> HelmProvider:
    context = ProviderContext(target="cell", binding="chart", policy=LocalPolicy(),
                              state_dir=state)
    return HelmProvider({"helm": str(helm_bin), "namespace": NAMESPACE,
                         "kubeconfig": str(cluster.kubeconfig)}, context)


def _component(charts: ChartRepository, value: str, tmp_path: Path) -> Component:
    return Component(
        name="settings", type="chart",
        properties={"chart": charts.url, "name": "mini", "version": "0.1.0",
                    "release": RELEASE, "values": {"value": value}, "timeout": "30s"},
        params={}, instance="app", solution="app", target="cell", site="hq/line-1",
        revision="0123456789abcdef0123456789abcdef01234567", base_dir=tmp_path,
        repo_root=tmp_path)


def _revisions(record: Record) -> list[int]:
    return [int(e["revision"]) for e in record.data["history"]]


def test_an_earlier_state_is_restored_by_helm_rollback_without_the_chart(
        helm_bin: Path, tmp_path: Path, cluster: Cluster, charts: ChartRepository) -> None:
    state = tmp_path / "state"
    provider = _provider(helm_bin, state, cluster)
    a, b = _component(charts, "A", tmp_path), _component(charts, "B", tmp_path)
    first = provider.apply(a, None)
    assert (first.data["revision"], _revisions(first)) == (1, [1])
    second = provider.apply(b, first)
    assert (second.data["revision"], _revisions(second)) == (2, [2, 1])
    assert cluster.value() == "B"

    # the edge site loses its chart repository: rendering A needs the chart and fails now
    charts.stop()
    with pytest.raises(ReconcilerError):
        provider.render(a)
    with capture_logs() as logs:
        third = _provider(helm_bin, state, cluster).apply(a, second)

    assert cluster.value() == "A"
    history = cluster.history()
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert history[-1]["description"] == "Rollback to 1"
    rolled = [e for e in logs if e["event"] == "release_rolled_back"]
    assert [(e["from_revision"], e["to_revision"], e["revision"]) for e in rolled] == \
        [(2, 1, 3)]
    assert not [e for e in logs if e["event"] == "release_applied"]  # no upgrade
    # A now lives at revision 3, B still at 2: going to B again is a rollback too
    assert (third.data["revision"], _revisions(third)) == (3, [3, 2])
    assert third.data["values_digest"] == first.data["values_digest"]

    observed = provider.observe(a, third)
    assert observed.exists and observed.in_sync, observed.message

    fourth = provider.apply(b, third)
    assert cluster.value() == "B" and cluster.history()[-1]["description"] == "Rollback to 2"
    assert _revisions(fourth) == [4, 3]


def test_a_failing_rollback_falls_back_to_the_upgrade(
        helm_bin: Path, tmp_path: Path, cluster: Cluster, charts: ChartRepository) -> None:
    # helm itself, except that `helm rollback` fails (the way a rollback that cannot finish
    # in time does: the new revision is left failed)
    wrapper = tmp_path / "bin" / "helm"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = rollback ] && {{ echo "Error: timed out waiting '
                       f'for the condition (apiToken tok-9f8e7d6c)" >&2; exit 1; }}\n'
                       f'exec "{helm_bin}" "$@"\n')
    wrapper.chmod(0o755)
    provider = _provider(wrapper, tmp_path / "state", cluster)
    a = _component(charts, "A", tmp_path)
    a = replace(a, params={"apiToken": "tok-9f8e7d6c"}, secret_params=frozenset({"apiToken"}))
    record = provider.apply(a, None)
    record = provider.apply(_component(charts, "B", tmp_path), record)
    with capture_logs() as logs:
        record = _provider(wrapper, tmp_path / "state", cluster).apply(a, record)

    assert cluster.value() == "A"
    # an upgrade: the description the provider gives its upgrades, not "Rollback to 1"
    assert cluster.history()[-1]["description"].startswith("reconciler app/settings at ")
    failed = [e for e in logs if e["event"] == "release_rollback_failed"]
    assert len(failed) == 1 and failed[0]["to_revision"] == 1
    assert "timed out waiting" in failed[0]["error"]
    assert "tok-9f8e7d6c" not in failed[0]["error"]  # secrets are masked
    assert [e["event"] for e in logs if e["event"].startswith("release_")][-1] == \
        "release_applied"
    assert record.data["revision"] == 3 and _revisions(record) == [3, 2]


# ---------------------------------------------------------------- through the engine

LINE = "hq/line-1"
TARGET = "cell"
CHECK = """#!/bin/sh
[ "$1" = fail ] && { echo "values rejected by the line" >&2; exit 65; }
echo "$1" > check-version
exit 0
"""


def _app(value: str, check: str) -> dict[str, Any]:
    return solution("app", [
        component("settings", "chart", {"chart": "chart", "release": RELEASE,
                                        "values": {"value": value}, "timeout": "30s"}),
        component("check", "service", {"apply": ["scripts/check.sh", check]}, ["settings"])])


def test_a_failed_change_rolls_the_release_back_with_helm_rollback(
        tmp_path: Path, cluster: Cluster) -> None:
    helm_binding = {"role": "chart", "provider": "helm",
                    "config": {"kubeconfig": str(cluster.kubeconfig), "namespace": NAMESPACE,
                               "helm": str(TOOLS / "helm")}}
    repo = FleetRepo(tmp_path / "fleet")
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [
        target(TARGET, "line-1", bindings=[helm_binding, script_binding(TARGET)]),
        instance("app", "app", names=[TARGET])])
    write_chart(repo.path("solutions/chart"))
    repo.write("solutions/scripts/check.sh", CHECK, executable=True)
    repo.write("solutions/app.yaml", _app("A", "A"))
    good = repo.commit("A")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    assert cluster.value() == "A" and len(cluster.history()) == 1

    repo.write("solutions/app.yaml", _app("B", "fail"))
    bad = repo.commit("B: new values the line rejects")
    result = sync(s, expect=1)

    assert cluster.value() == "A", result.describe()
    history = cluster.history()
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
    assert history[-1]["description"] == "Rollback to 1"
    assert [(e["from_revision"], e["to_revision"])
            for e in result.events("release_rolled_back")] == [(2, 1)]
    status = status_of(repo.remote, LINE, TARGET)
    assert status["phase"] == "RolledBack", status
    app = status["instances"]["app"]
    assert app["rolledBack"]["failedRevision"] == bad
    assert app["rolledBack"]["component"] == "app/check"
    assert app["revision"] == good
    assert (s.work(TARGET) / "check-version").read_text() == "A\n"

    # the next run finds the release in sync at A: nothing applied, no new revision
    again = sync(s, expect=1)
    assert not again.events("component_applied"), again.describe()
    assert len(cluster.history()) == 3
