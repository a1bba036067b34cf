"""A failed change never leaves a line half-applied: automatic rollback per instance.

One target ``cell`` with a file and a script binding; solution ``app`` of a file ``conf``, a
script ``svc`` and a second file ``data`` (revision A). Revision B changes ``conf``, adds a
file ``added`` and makes ``svc`` fail: the run rolls the instance back to A byte for byte,
deletes ``added``, and says ``RolledBack``; later runs do not try B again; a fixed revision
applies. The same with a health timeout instead of an apply error, and with the daemon
killed (SIGKILL) in the middle of the rollback and started again. Runs are ``reconciler sync
--once`` or a daemon process; the repository is a real bare remote.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.fleetkit import (
    DaemonProcess,
    FleetRepo,
    Site,
    component,
    file_binding,
    file_component,
    instance,
    make_site,
    script_binding,
    settings,
    site,
    solution,
    status_of,
    sync,
    target,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

LINE = "hq/line-1"
TARGET = "cell"

# counts its runs in the target's workdir; fails (65: permanent, not retried) when asked to
SVC = """#!/bin/sh
echo run >> svc-runs
[ "$1" = fail ] && { echo "svc cannot start" >&2; exit 65; }
echo "$1" > svc-version
exit 0
"""
# never healthy: 75 is Progressing, so the health wait times out
NEVER_HEALTHY = "#!/bin/sh\nexit 75\n"
# applies its argument; the first time it applies "A" after "B" it takes 30 s (a rollback
# step long enough to kill the daemon in)
PREP = """#!/bin/sh
echo "$1" > prep-version
if [ "$1" = A ] && [ -e seen-b ] && [ ! -e slept ]; then touch slept; sleep 30; fi
[ "$1" = B ] && touch seen-b
exit 0
"""


def fleet(root: Path, components: Sequence[Mapping[str, Any]]) -> FleetRepo:
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [
        target(TARGET, "line-1", bindings=[file_binding(TARGET), script_binding(TARGET)]),
        instance("app", "app", names=[TARGET])])
    repo.write("solutions/app.yaml", solution("app", components))
    for name, text in (("svc.sh", SVC), ("never.sh", NEVER_HEALTHY), ("prep.sh", PREP)):
        repo.write(f"solutions/scripts/{name}", text, executable=True)
    repo.commit("revision A")
    return repo


def revision_a() -> list[dict[str, Any]]:
    return [file_component("conf", "app.conf", "conf A\n"),
            component("svc", "service", {"apply": ["scripts/svc.sh", "A"]}, ["conf"]),
            file_component("data", "data.txt", "data A\n", ["svc"])]


def revision_b(svc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [file_component("conf", "app.conf", "conf B\n"),
            file_component("added", "added.txt", "new in B\n", ["conf"]),
            component("svc", "service", dict(svc), ["added"]),
            file_component("data", "data.txt", "data B\n", ["svc"])]


def files(s: Site) -> dict[str, bytes]:
    root = s.state / "files" / TARGET
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def runs_of_svc(s: Site) -> int:
    path = s.work(TARGET) / "svc-runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def state_of(s: Site) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((s.state / "state.json").read_text())
    return record["targets"][TARGET]["instances"]["app"]  # type: ignore[no-any-return]


def docs_of(repo: FleetRepo, rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(repo.read(rel)) if d]


def commit(repo: FleetRepo, components: Sequence[Mapping[str, Any]], message: str) -> str:
    repo.write("solutions/app.yaml", solution("app", components))
    return repo.commit(message)


def test_a_failing_script_rolls_the_instance_back_byte_for_byte(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_a())
    good = repo.head()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    before = files(s)
    assert before == {"app.conf": b"conf A\n", "data.txt": b"data A\n"}

    bad = commit(repo, revision_b({"apply": ["scripts/svc.sh", "fail"]}), "B breaks svc")
    result = sync(s, expect=1)

    assert files(s) == before, result.describe()  # conf back to A, added gone, data untouched
    assert (s.work(TARGET) / "svc-version").read_text() == "A\n"
    status = status_of(repo.remote, LINE, TARGET)
    assert status["phase"] == "RolledBack", status
    app = status["instances"]["app"]
    assert app["phase"] == "RolledBack"
    assert app["rolledBack"]["failedRevision"] == bad
    assert app["rolledBack"]["component"] == "app/svc"
    assert "svc cannot start" in app["rolledBack"]["error"]
    assert app["rolledBack"]["to"] == good and app["revision"] == good
    assert bad[:12] in status["message"] and "app/svc" in status["message"]
    assert state_of(s)["failed"]["revision"] == bad
    assert [e["revision"] for e in s.inventory(TARGET).values()] == [good] * 3

    # the schedule does not try the failed change again: svc's script is not run
    runs = runs_of_svc(s)
    for _ in range(2):
        sync(s, expect=1)
    assert runs_of_svc(s) == runs
    assert files(s) == before
    assert status_of(repo.remote, LINE, TARGET)["phase"] == "RolledBack"

    # an unrelated commit renders the same for the instance: still not tried again
    repo.write("README.md", "notes\n")
    repo.commit("docs only")
    sync(s, expect=1)
    assert runs_of_svc(s) == runs

    # a fixed revision applies
    fixed = commit(repo, revision_b({"apply": ["scripts/svc.sh", "B"]}), "B, fixed")
    sync(s)
    assert files(s) == {"added.txt": b"new in B\n", "app.conf": b"conf B\n",
                        "data.txt": b"data B\n"}
    status = status_of(repo.remote, LINE, TARGET)
    assert (status["phase"], status["appliedRevision"]) == ("Ready", fixed), status
    assert "failed" not in state_of(s)


def test_sync_retry_applies_the_failed_change_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_a())
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    commit(repo, revision_b({"apply": ["scripts/svc.sh", "fail"]}), "B breaks svc")
    sync(s, expect=1)
    runs = runs_of_svc(s)

    from tests.integration.fleetkit import reconciler
    again = reconciler("sync", "--once", "--retry", "--config", str(s.config))
    assert again.returncode == 1, again.describe()
    assert runs_of_svc(s) == runs + 1  # tried once more, and rolled back again
    assert status_of(repo.remote, LINE, TARGET)["phase"] == "RolledBack"


def test_a_health_timeout_rolls_back_too(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_a())
    good = repo.head()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE, healthTimeout=1)
    sync(s)
    before = files(s)
    commit(repo, revision_b({"apply": ["scripts/svc.sh", "B"], "health": ["scripts/never.sh"]}),
           "B never gets healthy")
    result = sync(s, expect=1)
    assert files(s) == before, result.describe()
    assert (s.work(TARGET) / "svc-version").read_text() == "A\n"  # re-applied at A
    status = status_of(repo.remote, LINE, TARGET)
    assert status["phase"] == "RolledBack", status
    assert "not healthy after 1s" in status["instances"]["app"]["rolledBack"]["error"]
    assert status["instances"]["app"]["revision"] == good


def test_a_first_deployment_that_fails_is_removed(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_b({"apply": ["scripts/svc.sh", "fail"]}))
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    result = sync(s, expect=1)
    assert files(s) == {}, result.describe()
    status = status_of(repo.remote, LINE, TARGET)
    assert status["phase"] == "RolledBack", status
    assert status["instances"]["app"]["rolledBack"]["to"] == ""


def test_on_failure_stay_keeps_the_half_applied_state_and_retries(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_a())
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    docs = docs_of(repo, "targets.yaml")
    docs[1]["spec"]["onFailure"] = "stay"
    repo.write("targets.yaml", docs)
    commit(repo, revision_b({"apply": ["scripts/svc.sh", "fail"]}), "B breaks svc")
    sync(s, expect=1)
    assert files(s)["app.conf"] == b"conf B\n"  # as today: left where it failed
    assert status_of(repo.remote, LINE, TARGET)["phase"] == "Failed"
    runs = runs_of_svc(s)
    sync(s, expect=1)
    assert runs_of_svc(s) == runs + 1  # and tried again by the next run


def test_other_instances_on_the_target_are_untouched(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet", revision_a())
    repo.write("other.yaml", [solution("other", [file_component("o", "other.txt", "o1\n")])])
    docs = [*docs_of(repo, "targets.yaml"), instance("other", "other", names=[TARGET])]
    repo.write("targets.yaml", docs)
    repo.commit("second instance")
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    # one commit breaks app and changes other: other moves on, app rolls back
    repo.write("other.yaml", [solution("other", [file_component("o", "other.txt", "o2\n")])])
    commit(repo, revision_b({"apply": ["scripts/svc.sh", "fail"]}), "B breaks app")
    sync(s, expect=1)
    assert files(s) == {"app.conf": b"conf A\n", "data.txt": b"data A\n",
                        "other.txt": b"o2\n"}
    status = status_of(repo.remote, LINE, TARGET)
    assert status["instances"]["other"]["phase"] == "Ready"
    assert status["instances"]["app"]["phase"] == "RolledBack"


def test_a_daemon_killed_in_the_middle_of_a_rollback_completes_it(tmp_path: Path) -> None:
    prep_a = component("prep", "service", {"apply": ["scripts/prep.sh", "A"]})
    prep_b = component("prep", "service", {"apply": ["scripts/prep.sh", "B"]})
    repo = fleet(tmp_path / "fleet", [prep_a, *revision_a()])
    good = repo.head()
    s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
    sync(s)
    before = files(s)
    bad = commit(repo, [prep_b, *revision_b({"apply": ["scripts/svc.sh", "fail"]})],
                 "B breaks svc")

    daemon = DaemonProcess(s, tmp_path / "daemon.log").start()
    try:
        # the rollback re-applies prep at A, which takes 30 s this once: kill it there
        wait_for(lambda: (s.work(TARGET) / "slept").exists(), 60, "the rollback to start")
        assert daemon.events("instance_rolling_back")
        os.killpg(daemon.pid, signal.SIGKILL)
        assert daemon.proc is not None
        daemon.proc.wait(timeout=10)
        assert state_of(s)["failed"]["revision"] == bad  # written before the rollback began

        again = DaemonProcess(s, tmp_path / "daemon2.log").start()
        try:
            wait_for(lambda: again.runs(), 60, "the restarted daemon's first run")
        finally:
            again.stop()
    finally:
        daemon.kill()
    assert files(s) == before
    assert (s.work(TARGET) / "prep-version").read_text() == "A\n"
    status = status_of(repo.remote, LINE, TARGET)
    assert status["phase"] == "RolledBack", status
    assert status["instances"]["app"]["revision"] == good


def test_kubernetes_components_roll_back_through_the_same_path(tmp_path: Path) -> None:
    from tests.integration.test_engine_faults import NAMESPACE, configmap, deployment
    from tests.kubeapi import KubeAPIServer

    def cm(name: str, value: str) -> dict[str, Any]:
        doc = configmap(name)
        doc["data"] = {"VALUE": value}
        return doc

    def kube(name: str, *objects: dict[str, Any],
             depends_on: Sequence[str] = ()) -> dict[str, Any]:
        return component(name, "kubernetes", {"resources": list(objects)}, depends_on)

    with KubeAPIServer(controller=False) as api:
        api.add_objects({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": NAMESPACE}})
        binding = {"role": "kubernetes", "provider": "kubernetes",
                   "config": {"kubeconfig": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                              "namespace": NAMESPACE}}
        repo = FleetRepo(tmp_path / "fleet")
        repo.write("reconciler.yaml", settings(("plant", "line")))
        repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
        repo.write("targets.yaml", [target(TARGET, "line-1", bindings=[binding]),
                                    instance("app", "app", names=[TARGET])])
        repo.write("solutions/app.yaml", solution("app", [kube("settings", cm("settings", "A"))]))
        good = repo.commit("A")
        s = make_site(tmp_path, "site", repo=repo.url, site=LINE)
        sync(s)

        # B changes the ConfigMap, adds another, and its Deployment is refused (422)
        api.fail_next("PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", 422,
                      times=5, body={"reason": "Invalid", "message": "spec.replicas: bad"})
        repo.write("solutions/app.yaml", solution("app", [
            kube("settings", cm("settings", "B")),
            kube("extra", cm("extra", "B"), depends_on=["settings"]),
            kube("web", deployment("web"), depends_on=["extra"])]))
        repo.commit("B")
        result = sync(s, expect=1)

        live = api.get_object("v1", "ConfigMap", "settings", NAMESPACE)
        assert live is not None and live["data"] == {"VALUE": "A"}, result.describe()
        assert api.get_object("v1", "ConfigMap", "extra", NAMESPACE) is None
        assert api.get_object("apps/v1", "Deployment", "web", NAMESPACE) is None
        status = status_of(repo.remote, LINE, TARGET)
        assert status["phase"] == "RolledBack", status
        assert status["instances"]["app"]["rolledBack"]["component"] == "app/web"
        assert status["instances"]["app"]["revision"] == good
