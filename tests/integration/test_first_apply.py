"""Components that do not depend on each other are applied and waited for at the same time.

Three script components with no ``dependsOn`` between them; each becomes healthy only once
all three have been applied. Applied one after the other, the first would wait for the
others for ever (until its health timeout); applied by dependency level, all three are up
and the target is Ready. A component that depends on them still waits for all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    FleetRepo,
    component,
    file_binding,
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

pytestmark = pytest.mark.timeout(120)

APPLY = "#!/bin/sh\ntouch \"applied-$1\"\necho \"$1\" >> order\nexit 0\n"
# healthy only once every one of the three siblings was applied (75: progressing)
HEALTH = "#!/bin/sh\nfor n in a b c; do [ -e \"applied-$n\" ] || exit 75; done\nexit 0\n"


def fleet(root: Path) -> FleetRepo:
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [
        target("cell", "line-1", bindings=[file_binding("cell"), script_binding("cell")]),
        instance("app", "app", names=["cell"])])
    siblings = [component(f"svc-{n}", "service", {"apply": ["scripts/apply.sh", n],
                                                  "health": ["scripts/health.sh"]})
                for n in "abc"]
    last = component("after", "service", {"apply": ["scripts/apply.sh", "after"]},
                     ["svc-a", "svc-b", "svc-c"])
    repo.write("solutions/app.yaml", solution("app", [*siblings, last]))
    repo.write("solutions/scripts/apply.sh", APPLY, executable=True)
    repo.write("solutions/scripts/health.sh", HEALTH, executable=True)
    repo.commit("three independent services and one after them")
    return repo


def test_independent_components_are_applied_together(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site="hq/line-1", healthTimeout=20)
    result = sync(s)
    assert status_of(repo.remote, "hq/line-1", "cell")["phase"] == "Ready", result.describe()
    order = (s.work("cell") / "order").read_text().split()
    assert sorted(order[:3]) == ["a", "b", "c"] and order[3] == "after"


def test_one_at_a_time_when_the_site_says_so(tmp_path: Path) -> None:
    repo = fleet(tmp_path / "fleet")
    s = make_site(tmp_path, "site", repo=repo.url, site="hq/line-1", healthTimeout=1,
                  applyConcurrency=1)
    sync(s, expect=1)
    # the first waited for the others, which never came: not healthy after 1 s
    status = status_of(repo.remote, "hq/line-1", "cell")
    assert status["phase"] == "RolledBack", status
    assert "not healthy after 1s" in status["instances"]["app"]["rolledBack"]["error"]
    assert (s.work("cell") / "order").read_text().split() == ["a"]
