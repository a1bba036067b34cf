"""The reconcile engine when a step fails, against real files, scripts and an API server.

What an operator relies on, whatever goes wrong in one target:

* every served target's status is written and pushed on every run: an error nobody planned
  for (the OS refusing to write a state file) makes that target ``Failed`` with the error and
  never costs another target its reconcile or its status;
* with ``onFailure: stay`` (``cell_fleet``'s instance), a failed step (an apply, a health
  check) is never followed by a prune of that target, with the file, script and Kubernetes
  providers alike, as in Flux: what is still applied stays until a run of the target
  succeeds (the default, ``rollback``, is tested in ``test_rollback.py``);
* a hand edit of a component is drift (logged ``drifted: true`` and counted in
  ``reconciler_components_drifted``) whichever commit last touched that component.

Faults are real: a directory where a state file belongs (refused even to root), a regular
file where a directory belongs, scripts that fail, an API server that rejects a write. Runs
are ``reconciler sync --once`` or a daemon process, as an operator runs them.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fleetkit import (
    CliResult,
    FleetRepo,
    Site,
    component,
    file_binding,
    file_component,
    instance,
    make_site,
    pruned,
    settings,
    site,
    solution,
    status_of,
    sync,
    target,
)
from tests.integration.test_daemon_ops import metric, request
from tests.integration.test_faults import (
    LINE,
    TARGET,
    Daemon,
    cell_fleet,
    set_components,
    start_daemon,
)
from tests.integration.test_status_push import free_port
from tests.kubeapi import KubeAPIServer

pytestmark = pytest.mark.timeout(120)


def two_targets(root: Path) -> FleetRepo:
    """Targets ``alpha`` and ``beta`` on line ``hq/line-1``, one file component each."""
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1"), target("beta", "line-1"),
                                instance("app", "app", names=["alpha", "beta"])])
    repo.write("solutions/app.yaml", solution("app", [
        file_component("conf", "app.conf", "release A\n")]))
    repo.commit("two targets")
    return repo


def table(result: CliResult) -> dict[str, str]:
    """Target -> phase, from the table ``sync --once`` prints."""
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    return {row[0]: row[2] for row in rows if len(row) > 2 and row[0] in ("alpha", "beta")}


# ---------------------------------------------------------------- 1. status is always written

def test_an_inventory_the_os_refuses_fails_only_its_target_and_every_status_is_pushed(
        tmp_path: Path) -> None:
    repo = two_targets(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    # alpha sorts first: its failure must not cost beta its reconcile or its status
    blocked = s.state / "inventory" / "alpha.json"
    blocked.mkdir(parents=True)

    result = sync(s, expect=1)

    assert "Traceback" not in result.stderr, result.describe()
    assert table(result) == {"alpha": "Failed", "beta": "Ready"}, result.describe()
    assert s.file("beta", "app.conf").read_text() == "release A\n"
    assert list(s.inventory("beta")) == ["app/conf"]
    beta = status_of(repo.remote, LINE, "beta")
    assert (beta["phase"], beta["appliedRevision"]) == ("Ready", repo.head())
    alpha = status_of(repo.remote, LINE, "alpha")
    assert alpha["phase"] == "Failed", alpha
    assert str(blocked) in alpha["message"] and "Is a directory" in alpha["message"], alpha
    assert alpha["instances"]["app"]["components"]["conf"]["phase"] == "Failed"
    assert alpha["lastGoodRevision"] == ""
    state = json.loads((s.state / "state.json").read_text())
    assert state["targets"]["beta"]["lastGood"] == repo.head()
    assert "lastGood" not in state["targets"]["alpha"]

    # the operator removes the obstacle: the next run records what alpha has and is Ready
    blocked.rmdir()
    again = sync(s)
    assert table(again) == {"alpha": "Ready", "beta": "Ready"}
    assert list(s.inventory("alpha")) == ["app/conf"]
    assert status_of(repo.remote, LINE, "alpha")["phase"] == "Ready"


def test_a_state_file_the_os_refuses_still_leaves_every_target_reconciled_and_pushed(
        tmp_path: Path) -> None:
    repo = two_targets(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    (s.state / "state.json").mkdir(parents=True)

    result = sync(s, expect=None)

    assert "Traceback" not in result.stderr, result.describe()
    assert table(result) == {"alpha": "Ready", "beta": "Ready"}, result.describe()
    for name in ("alpha", "beta"):
        assert s.file(name, "app.conf").read_text() == "release A\n"
        assert status_of(repo.remote, LINE, name)["phase"] == "Ready"
    failed = result.events("state_write_failed")
    assert failed and "state.json" in failed[0]["error"], result.describe()
    assert result.events("run_finished")[0]["state_error"]


# ---------------------------------------------------------------- 2. no prune after a failure

def assert_kept_after_failure(result: CliResult, s: Site, repo: FleetRepo, failing: str,
                              kept: str) -> None:
    """The run failed at ``failing`` and pruned nothing: ``kept`` is still in the
    inventory (the caller checks it is still live)."""
    assert result.returncode == 1, result.describe()
    assert pruned(result) == [], result.describe()
    assert not result.events("component_pruned")
    assert f"app/{kept}" in s.inventory(TARGET)
    doc = status_of(repo.remote, LINE, TARGET)
    assert doc["phase"] == "Failed" and doc["message"].startswith(f"app/{failing}:"), doc
    assert doc["instances"]["app"]["components"][failing]["phase"] == "Failed"


def test_a_failed_file_step_is_never_followed_by_a_prune(tmp_path: Path) -> None:
    keep = file_component("keep", "keep.conf", "keep\n")
    repo = cell_fleet(tmp_path / "fleet", [keep, file_component("old", "old.conf", "old\n")])
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    old = s.file(TARGET, "old.conf")
    assert old.exists()

    # "old" leaves the repository, "new" wants a directory where a regular file stands
    s.file(TARGET, "blocker").write_text("a file, not a directory\n")
    set_components(repo, [keep, file_component("new", "blocker/new.conf", "new\n")],
                   "replace old by new")
    failed = sync(s, expect=None)

    assert_kept_after_failure(failed, s, repo, "new", "old")
    assert old.read_text() == "old\n"

    # once the step succeeds, the prune follows in the same run
    s.file(TARGET, "blocker").unlink()
    fixed = sync(s)
    assert pruned(fixed) == [(TARGET, "app", "old")]
    assert not old.exists() and s.file(TARGET, "blocker/new.conf").read_text() == "new\n"


SCRIPT_APPLY_SH = """#!/bin/sh
set -eu
echo "apply $RECONCILER_COMPONENT" >> "$HOME/calls.log"
"""

SCRIPT_DELETE_SH = """#!/bin/sh
set -eu
echo "delete $RECONCILER_COMPONENT" >> "$HOME/calls.log"
"""

SCRIPT_FAIL_SH = """#!/bin/sh
echo "the PLC refused the program" >&2
exit 1
"""

SCRIPT_UNHEALTHY_SH = """#!/bin/sh
echo "pump offline" >&2
exit 1
"""


@pytest.mark.parametrize("step", ["apply", "health"])
def test_a_failed_script_step_is_never_followed_by_a_prune(tmp_path: Path, step: str) -> None:
    keep = file_component("keep", "keep.conf", "keep\n")
    old = component("old", "service", {"apply": ["scripts/apply.sh"],
                                       "delete": ["scripts/delete.sh"]})
    repo = cell_fleet(tmp_path / "fleet", [keep, old], {
        "apply.sh": SCRIPT_APPLY_SH, "delete.sh": SCRIPT_DELETE_SH,
        "fail.sh": SCRIPT_FAIL_SH, "unhealthy.sh": SCRIPT_UNHEALTHY_SH})
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    calls = s.work(TARGET) / "calls.log"
    sync(s)
    assert calls.read_text().splitlines() == ["apply old"]

    new = component("new", "service", {"apply": ["scripts/fail.sh"]} if step == "apply" else
                    {"apply": ["scripts/apply.sh"], "health": ["scripts/unhealthy.sh"]})
    set_components(repo, [keep, new], "replace old by new")
    failed = sync(s, expect=None)

    assert_kept_after_failure(failed, s, repo, "new", "old")
    assert "delete old" not in calls.read_text()

    set_components(repo, [keep], "drop new")
    fixed = sync(s)
    # a "new" whose health failed was applied, so it goes too (it has no delete command)
    assert sorted(pruned(fixed)) == ([] if step == "apply" else [(TARGET, "app", "new")]) + [
        (TARGET, "app", "old")]
    assert calls.read_text().splitlines()[-1] == "delete old"


NAMESPACE = "line-apps"


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"LINE": "hq/line-1"}}


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name,
                                                           "image": "registry.example/x:1"}]}}}}


def kube_fleet(root: Path, kubeconfig: Path,
               components: Sequence[Mapping[str, Any]]) -> FleetRepo:
    binding = {"role": "kubernetes", "provider": "kubernetes",
               "config": {"kubeconfig": str(kubeconfig), "namespace": NAMESPACE}}
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [
        target(TARGET, "line-1", bindings=[file_binding(TARGET), binding]),
        instance("app", "app", names=[TARGET], onFailure="stay")])
    repo.write("solutions/app.yaml", solution("app", components))
    repo.commit("initial fleet")
    return repo


def kube(name: str, *objects: dict[str, Any]) -> dict[str, Any]:
    return component(name, "kubernetes", {"resources": list(objects)})


def test_a_failed_kubernetes_apply_is_never_followed_by_a_prune(tmp_path: Path) -> None:
    with KubeAPIServer(controller=False) as api:
        api.add_objects({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": NAMESPACE}})
        keep = kube("keep", configmap("keep"))
        repo = kube_fleet(tmp_path / "fleet", api.write_kubeconfig(tmp_path / "kubeconfig"),
                          [keep, kube("old", configmap("old"))])
        s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
        sync(s)
        assert api.get_object("v1", "ConfigMap", "old", NAMESPACE) is not None

        # the API server rejects the new Deployment (422, as for an invalid object)
        api.fail_next("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", 422,
                      times=5, body={"reason": "Invalid", "message": "spec.replicas: bad"})
        set_components(repo, [keep, kube("web", deployment("web"))], "replace old by web")
        api.reset_requests()
        failed = sync(s, expect=None)

        assert_kept_after_failure(failed, s, repo, "web", "old")
        assert api.get_object("v1", "ConfigMap", "old", NAMESPACE) is not None
        assert api.count(method="DELETE") == 0
        assert api.get_object("apps/v1", "Deployment", "web", NAMESPACE) is None

        set_components(repo, [keep], "drop web")
        fixed = sync(s)
        assert pruned(fixed) == [(TARGET, "app", "old")]
        assert api.get_object("v1", "ConfigMap", "old", NAMESPACE) is None
        assert api.get_object("v1", "ConfigMap", "keep", NAMESPACE) is not None


# ---------------------------------------------------------------- 3. drift is counted

def test_a_hand_edit_of_a_component_the_last_commit_did_not_touch_is_drift(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    repo = cell_fleet(tmp_path / "fleet", [file_component("a", "a.conf", "a1\n"),
                                           file_component("b", "b.conf", "b1\n")])
    port = free_port()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, interval=3600,
                  listen={"enabled": True, "address": "127.0.0.1", "port": port})
    d = start_daemon(daemons, s)
    d.wait_runs(1, 20)

    def drifted_metric() -> float | None:
        code, body = request(port, "GET", "/metrics")
        assert code == 200
        return metric(body.decode(), "reconciler_components_drifted", target=TARGET)

    def run(count: int) -> dict[str, Any]:
        mark = d.offset()
        d.signal(signal.SIGHUP)
        finished: dict[str, Any] = d.wait_runs(count, 20)[count - 1]
        applied = d.events_after(mark, "component_applied")
        finished["changes"] = [(e["component"], e["drifted"]) for e in applied]
        return finished

    # a commit changes "a" only: an update, not drift
    set_components(repo, [file_component("a", "a.conf", "a2\n"),
                          file_component("b", "b.conf", "b1\n")], "a2")
    changed = run(2)
    assert changed["changes"] == [("a", False)] and changed["drifted"] == 0
    assert drifted_metric() == 0

    # "b" was last applied at the first commit: a hand edit of it is drift all the same
    b = s.file(TARGET, "b.conf")
    b.write_text("edited by hand\n")
    edited = run(3)
    assert b.read_text() == "b1\n"
    assert edited["changes"] == [("b", True)] and edited["drifted"] == 1, edited
    assert drifted_metric() == 1

    # so is a managed file deleted by hand
    b.unlink()
    deleted = run(4)
    assert b.read_text() == "b1\n"
    assert deleted["changes"] == [("b", True)] and deleted["drifted"] == 1, deleted
    assert drifted_metric() == 1

    idle = run(5)
    assert idle["changes"] == [] and idle["drifted"] == 0
    assert drifted_metric() == 0
    assert d.stop() == 0
