"""The offline plan of a pull request: held targets, provenance, the site summary, suspension,
the comment size limit, and the same plan whichever way the revisions are validated.

Every test commits to a real git repository (a copy of ``example-repo/``) and runs the
installed ``reconciler plan --repo --base --head``, or ``review_revisions`` on the same
repository where the Python value is what is checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine.review import review_revisions
from reconciler.engine.review_format import review_markdown
from tests.integration.fleetkit import EXAMPLE_REPO, CliResult, git, reconciler


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_REPO, repo, symlinks=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fleet")
    return repo


def edit(repo: Path, rel: str, old: str, new: str, message: str) -> str:
    path = repo / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-qam", message)
    return git(repo, "rev-parse", "HEAD")


def plan(repo: Path, base: str, fmt: str = "json") -> CliResult:
    return reconciler("plan", "--repo", str(repo), "--base", base, "--format", fmt,
                      log_level="error")


def by_target(result: CliResult) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in json.loads(result.stdout)["targets"]}


def test_an_instance_whose_release_cannot_be_had_holds_its_targets(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "instances/dashboard.yaml", "  solution: line-dashboard\n",
         "  solution: line-dashboard\n  version: 9.9.9\n", "pin a release that does not exist")
    result = plan(repo, base)
    assert result.returncode == 1, result.describe()  # a new error
    targets = by_target(result)
    assert set(targets) == {"berlin-l1-hmi", "demo-hmi"}  # the dashboard's targets
    for t in targets.values():
        assert t["held"] is True and t["changes"] == []  # not "remove kiosk and layout"
        assert [e["message"] for e in t["errors"]] == [
            "no release 9.9.9 of solution 'line-dashboard' (tag line-dashboard/v9.9.9); "
            "released: none"]
    md = plan(repo, base, "markdown")
    assert "2 target(s) stay on their current state (1 error(s))" in md.stdout
    assert "Targets: `berlin-l1-hmi`, `demo-hmi`" in md.stdout
    assert "**remove**" not in md.stdout


def test_a_solution_that_does_not_load_holds_every_target(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "solutions/line-dashboard/solution.yaml", "\n  components:\n",
         "\n  componentz:\n", "a typo")
    result = plan(repo, base)
    assert result.returncode == 1, result.describe()
    data = json.loads(result.stdout)
    assert data["summary"]["held"] == data["summary"]["targets"] == 7
    assert data["summary"]["components"]["remove"] == 0
    assert all(t["held"] and not t["changes"] for t in data["targets"])
    text = plan(repo, base, "text")
    assert "held on their current state by 2 error(s): berlin-l1-cluster, " in text.stdout


def test_each_changed_value_names_the_file_and_level_that_set_it(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "sites/eu.yaml", "    logLevel: debug\n", "    logLevel: warning\n", "quieter")
    edit(repo, "targets/berlin.yaml", "  site: berlin-line-1\n  bindings:",
         "  site: berlin-line-1\n  params:\n    logLevel: debug\n  bindings:",
         "one gateway says more")
    targets = by_target(plan(repo, base))
    (l2,) = [c for c in targets["berlin-l2-gateway"]["changes"]
             if c["key"] == "telemetry-eu/config"]
    assert l2["values"] == [{
        "name": "logLevel", "before": "debug", "after": "warning", "secret": False,
        "setBy": {"path": "sites/eu.yaml", "line": 52, "level": "line",
                  "object": "Site/berlin-line-2", "field": "spec.params.logLevel"},
        "wasSetBy": {"path": "sites/eu.yaml", "line": 52, "level": "line",
                     "object": "Site/berlin-line-2", "field": "spec.params.logLevel"}}]
    assert l2["definedAt"].startswith("solutions/telemetry-agent/solution.yaml:")
    assert "-  logLevel: debug\n+  logLevel: warning\n" in l2["diff"]
    # a value now set at another level: where it is set now, and where it was
    (l1,) = [c for c in targets["berlin-l1-gateway"]["changes"]
             if c["key"] == "telemetry-eu/config"]
    (value,) = l1["values"]
    assert (value["before"], value["after"]) == ("info", "debug")
    assert (value["setBy"]["path"], value["setBy"]["level"]) == ("targets/berlin.yaml", "target")
    assert (value["wasSetBy"]["object"], value["wasSetBy"]["level"]) == ("Site/eu", "region")

    md = plan(repo, base, "markdown").stdout
    assert ("| `logLevel` | `debug` | `warning` | `sites/eu.yaml:52` "
            "(line, Site/berlin-line-2) |") in md


def test_the_comment_sums_up_by_site_and_folds_each_target(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "solutions/telemetry-agent/agent.conf.tmpl", "[time]\n", "[time]\n# utc\n",
         "a template line")
    result = plan(repo, base, "markdown")
    assert result.returncode == 2, result.describe()
    md = result.stdout
    assert md.startswith(f"## Fleet plan `{base[:12]}` → ")
    assert "4 of 7 target(s) change, 4 component(s) changed" in md
    assert "| eu/berlin/berlin-line-1 | 1 | 0 | 0 | 0 | 0 | 1 | 0 |" in md
    assert md.count("<details>") == md.count("</details>") == 4
    assert "Files changed: `solutions/telemetry-agent/agent.conf.tmpl`" in md
    assert "+# utc" in md


def test_suspending_an_instance_is_not_a_removal(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "instances/dashboard.yaml", "  solution: line-dashboard\n",
         "  solution: line-dashboard\n  suspend: true\n", "hold the dashboards")
    result = plan(repo, base)
    assert result.returncode == 2, result.describe()
    actions = {c["action"] for t in json.loads(result.stdout)["targets"]
               for c in t["changes"]}
    assert actions == {"suspend"}


def test_a_long_plan_is_cut_to_the_size_of_a_comment(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = edit(repo, "solutions/telemetry-agent/agent.conf.tmpl", "[time]\n",
                "[time]\n" + "# a long comment line\n" * 40, "long")
    review = review_revisions(repo / ".git", base, head)
    full = review_markdown(review)
    short = review_markdown(review, limit=3_000)
    assert len(short) <= 3_000 < len(full)
    assert "more block(s) of targets not shown" in short
    assert "| eu/berlin/berlin-line-1 |" in short  # the summary is always there


def test_one_process_or_two_give_the_same_plan(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "sites/eu.yaml", "    logLevel: debug\n", "    logLevel: warning\n", "quieter")
    head = edit(repo, "instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 1000",
                "too slow")
    two = review_revisions(repo / ".git", base, head, parallel=True)
    one = review_revisions(repo / ".git", base, head, parallel=False)
    assert two.to_dict() == one.to_dict()
    assert two.held and two.changed and two.new_errors


PROJECTS = """\
apiVersion: reconciler/v1
kind: Project
metadata:
  name: platform
spec:
  platform: true
  paths: [sites/**, targets/**, instances/telemetry.yaml, solutions/telemetry-agent/**,
          solutions/line-dashboard-helm/**, solutions/shop-floor-k8s/**]
---
apiVersion: reconciler/v1
kind: Project
metadata:
  name: hmi-team
spec:
  paths: [instances/dashboard.yaml, solutions/line-dashboard/**]
"""


def test_each_change_names_its_project(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    # without projects, no project is shown
    edit(repo, "instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 20", "slower")
    data = json.loads(plan(repo, base).stdout)
    assert {c["project"] for t in data["targets"] for c in t["changes"]} == {""}
    assert "project" not in plan(repo, base, "markdown").stdout
    (repo / "projects").mkdir()
    (repo / "projects/projects.yaml").write_text(PROJECTS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "projects")
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "instances/dashboard.yaml", "refreshSeconds: 20", "refreshSeconds: 30", "slower")
    edit(repo, "sites/eu.yaml", "    logLevel: debug\n", "    logLevel: warning\n", "quieter")
    result = plan(repo, base)
    assert result.returncode == 2, result.describe()
    projects = {c["key"].partition("/")[0]: c["project"]
                for t in json.loads(result.stdout)["targets"] for c in t["changes"]}
    assert projects["line-dashboard"] == "hmi-team"
    assert projects["telemetry-eu"] == "platform"
    md = plan(repo, base, "markdown").stdout
    assert "`line-dashboard/kiosk` (config-file) — project `hmi-team`" in md
    assert "— project `platform`" in md
    text = plan(repo, base, "text").stdout
    assert "line-dashboard/kiosk (config-file) change [project hmi-team]" in text
