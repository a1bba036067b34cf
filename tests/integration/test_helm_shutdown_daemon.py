"""SIGTERM to a real daemon process while a helm upgrade runs.

helm is a stand-in executable (a process boundary) that blocks in ``upgrade`` until the test
lets it finish, so this runs without a cluster. The daemon gets ``shutdownGrace: 3`` so the
grace-exceeded case takes seconds rather than the default 90.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    DaemonProcess,
    FleetRepo,
    Site,
    component,
    instance,
    make_site,
    settings,
    site,
    solution,
    target,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(200)
GRACE = 3.0

STAND_IN = """#!/bin/sh
marks={marks}
case "$1" in
  version) echo v3.17.2 ;;
  list) if [ -e "$marks/finished" ]; then
          echo '[{{"name":"dash","namespace":"lines","revision":"1","status":"deployed",'\
'"chart":"line-dashboard-0.1.0"}}]'
        else echo '[]'; fi ;;
  template) echo "" ;;
  get) case "$2" in values) echo '{{}}' ;; *) echo "" ;; esac ;;
  upgrade)
    trap 'echo "Release has been cancelled."; echo "$1" > "$marks/terminated"; exit 1' TERM
    echo "$1" > "$marks/started"
    n=0
    while [ ! -e "$marks/go" ]; do n=$((n + 1)); [ $n -gt 6000 ] && exit 3; sleep 0.05; done
    echo upgrade > "$marks/finished" ;;
  *) echo "unexpected $*" >&2; exit 2 ;;
esac
"""


def _fleet(tmp_path: Path, helm: Path) -> FleetRepo:
    repo = FleetRepo.from_docs(tmp_path / "fleet", {
        "reconciler.yaml": settings(),
        "sites.yaml": [site("plant"), site("line", "plant")],
        "targets.yaml": target("k3s", "line", bindings=[
            {"role": "chart", "provider": "helm",
             "config": {"helm": str(helm), "namespace": "lines"}}]),
        "solutions/dash/solution.yaml": solution("dash", [component(
            "dashboard", "chart", {"chart": "chart", "release": "dash"})]),
        "instances.yaml": instance("dash", "dash", names=["k3s"]),
    })
    shutil.copytree(ROOT / "example-repo/solutions/line-dashboard-helm/chart",
                    repo.work / "solutions/dash/chart")
    repo.commit("chart")
    return repo




def _start(tmp_path: Path) -> tuple[Path, Site, DaemonProcess]:
    marks = tmp_path / "marks"
    marks.mkdir()
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(STAND_IN.format(marks=marks))
    helm.chmod(0o755)
    repo = _fleet(tmp_path, helm)
    s = make_site(tmp_path, "s", repo=repo.url, site="line", shutdownGrace=GRACE)
    d = DaemonProcess(s, tmp_path / "daemon.log").start()
    wait_for(lambda: (marks / "started").exists() or d.assert_alive(), 60, "upgrade start")
    d.signal(signal.SIGTERM)
    wait_for(lambda: d.events("shutdown_requested"), 30, "shutdown_requested")
    return marks, s, d


def test_shutdown_lets_a_running_helm_upgrade_finish_and_records_it(tmp_path: Path) -> None:
    marks, s, d = _start(tmp_path)
    try:
        time.sleep(GRACE / 3)  # well inside the grace: helm must still be running, untouched
        d.assert_alive()
        assert not (marks / "terminated").exists()
        (marks / "go").touch()
        assert d.proc is not None
        assert d.proc.wait(timeout=120) == 0
        assert (marks / "finished").exists()
        assert not (marks / "terminated").exists()
        inventory = (s.state / "inventory" / "k3s.json").read_text()
        assert "dashboard" in inventory, inventory
    finally:
        d.kill()


def test_shutdown_stops_a_helm_upgrade_still_running_after_the_grace(tmp_path: Path) -> None:
    marks, _s, d = _start(tmp_path)
    t0 = time.monotonic()
    try:
        assert d.proc is not None
        assert d.proc.wait(timeout=120) == 0
        took = time.monotonic() - t0
        # the grace, then SIGTERM: the stand-in exits at once on it
        assert GRACE - 0.5 < took < GRACE + 30, took
        assert (marks / "terminated").exists() and not (marks / "finished").exists()
        assert "ShutdownGraceExceeded" in d.text(), d.text()[-3000:]
    finally:
        d.kill()
