"""The reconcile loop end to end: a fleet repository pushed to a bare remote, the installed
``reconciler sync --once`` / ``plan`` commands, files and scripts on disk, status files read
back from the remote's status branch.

Tests are grouped by behaviour: a first run, changes (parameter, removed components, new
target), drift, invalid revisions, failing scripts, hostile parameter values, plans.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    DEMO_BRANCH,
    DEMO_SITE,
    FleetRepo,
    Site,
    applied,
    branch_head,
    component,
    file_binding,
    file_component,
    instance,
    make_site,
    pruned,
    reconciler,
    script_binding,
    settings,
    site,
    snapshot,
    solution,
    status_files,
    status_of,
    sync,
    target,
)

LAYOUT = "dashboard/layout.json"


@pytest.fixture
def demo(tmp_path: Path) -> tuple[FleetRepo, Site]:
    """example-repo on a bare remote, and the demo site's daemon config."""
    repo = FleetRepo.from_example(tmp_path / "fleet")
    return repo, make_site(tmp_path, "demo", repo=repo.url, site=DEMO_SITE)


def hmi_file(s: Site, rel: str = LAYOUT) -> Path:
    return s.file("demo-hmi", rel)


# ---------------------------------------------------------------- 1. a first run

def test_first_run_writes_files_runs_the_script_and_pushes_ready_status(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    main = repo.remote_head()

    result = sync(s)

    assert "demo-gateway" in result.stdout and "demo-hmi" in result.stdout
    assert "(pushed)" in result.stdout
    agent = s.file("demo-gateway", "telemetry/agent.conf").read_text()
    assert "line_id = LAB-DEMO" in agent and "sample_rate_seconds = 2" in agent
    assert "topic = plants/lab/lab-hq/demo/demo-gateway" in agent
    assert json.loads(hmi_file(s).read_text())["refreshSeconds"] == 10
    assert "product = gearbox" in hmi_file(s, "dashboard/kiosk.ini").read_text()
    # the install script ran in its workdir with the parameters in its environment
    installed = (s.work("demo-gateway") / "service" / "telemetry.env").read_text()
    assert installed.splitlines() == ["line=LAB-DEMO", "broker=mqtt://127.0.0.1:1883",
                                      "sample_rate=2", f"revision={main}"]
    # status: one file per target on the site's own branch, the tracked branch untouched
    files = status_files(repo.remote, DEMO_BRANCH)
    assert sorted(files) == [f"status/{DEMO_SITE}/demo-gateway.yaml",
                             f"status/{DEMO_SITE}/demo-hmi.yaml"]
    for doc in files.values():
        assert doc["phase"] == "Ready", doc
        assert doc["observedRevision"] == main
        assert doc["appliedRevision"] == main
        assert doc["lastGoodRevision"] == main
    gateway = files[f"status/{DEMO_SITE}/demo-gateway.yaml"]
    assert gateway["instances"]["telemetry-demo"]["components"]["service"]["phase"] == "Ready"
    assert repo.remote_head() == main


# ---------------------------------------------------------------- 2. a parameter changes

def test_changed_parameter_updates_only_the_component_that_uses_it(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    first = repo.remote_head()
    sync(s)
    before = {t: s.inventory(t) for t in ("demo-gateway", "demo-hmi")}

    repo.replace("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 30")
    second = repo.commit("dashboard: refresh every 30 s")
    result = sync(s)

    assert applied(result) == [("demo-hmi", "line-dashboard", "layout")]
    assert pruned(result) == []
    assert json.loads(hmi_file(s).read_text())["refreshSeconds"] == 30
    after = {t: s.inventory(t) for t in ("demo-gateway", "demo-hmi")}
    assert after["demo-hmi"]["line-dashboard/layout"]["revision"] == second
    assert after["demo-hmi"]["line-dashboard/kiosk"] == before["demo-hmi"]["line-dashboard/kiosk"]
    assert after["demo-hmi"]["line-dashboard/kiosk"]["revision"] == first
    assert after["demo-gateway"] == before["demo-gateway"]
    assert status_of(repo.remote, DEMO_SITE, "demo-hmi")["observedRevision"] == second


# ---------------------------------------------------------------- 4. drift and idle runs

def test_drift_is_repaired_and_an_idle_run_touches_nothing(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    sync(s)
    original = hmi_file(s).read_bytes()

    hmi_file(s).write_text('{"title": "edited by hand"}\n')
    repaired = sync(s)

    assert hmi_file(s).read_bytes() == original
    events = repaired.events("component_applied")
    assert [(e["target"], e["component"], e["drifted"]) for e in events] == [
        ("demo-hmi", "layout", True)]

    status_tip = branch_head(repo.remote, DEMO_BRANCH)
    files_before = snapshot(s.state / "files")
    work_before = snapshot(s.state / "work")
    idle = sync(s)

    assert applied(idle) == [] and pruned(idle) == []
    finished = idle.events("run_finished")
    assert len(finished) == 1
    assert (finished[0]["applied"], finished[0]["pruned"], finished[0]["drifted"]) == (0, 0, 0)
    assert snapshot(s.state / "files") == files_before
    assert snapshot(s.state / "work") == work_before
    assert branch_head(repo.remote, DEMO_BRANCH) == status_tip


# ---------------------------------------------------------------- 6. a new target

def test_new_target_matching_a_selector_is_deployed_on_the_next_run(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    sync(s)
    docs = (repo.read("targets/demo.yaml") + "---\n" + json.dumps(target(
        "demo-hmi-2", "demo", labels={"role": "hmi"}, bindings=[file_binding("demo-hmi-2")])))
    repo.write("targets/demo.yaml", docs)
    added = repo.commit("second operator panel on the demo line")

    result = sync(s)

    assert sorted(applied(result)) == [("demo-hmi-2", "line-dashboard", "kiosk"),
                                       ("demo-hmi-2", "line-dashboard", "layout")]
    layout = json.loads(s.file("demo-hmi-2", LAYOUT).read_text())
    assert layout["title"] == "Line LAB-DEMO" and layout["refreshSeconds"] == 10
    doc = status_of(repo.remote, DEMO_SITE, "demo-hmi-2")
    assert doc["phase"] == "Ready" and doc["appliedRevision"] == added


# ---------------------------------------------------------------- a small fleet built in Python

LINE = "hq/line-1"

APPLY_SH = """#!/bin/sh
set -eu
echo "apply $RECONCILER_COMPONENT" >> ../order.log
"""

# runs from the target's workdir (<state>/work/<target>); records which of the files its
# component depends on (directly or not) still exist when it is deleted
DELETE_SH = """#!/bin/sh
set -eu
files="../../files/$RECONCILER_TARGET"
seen=""
for name in base mid; do
  if [ -e "$files/$name.conf" ]; then seen="$seen $name=present"; else seen="$seen $name=absent"; fi
done
echo "delete $RECONCILER_COMPONENT$seen" >> ../order.log
"""


def line_fleet(root: Path, files: dict[str, object]) -> FleetRepo:
    """One plant ``hq`` with one line ``line-1``, plus ``files`` (manifests as dicts or lists
    of dicts, scripts as text; ``*.sh`` made executable)."""
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq", labels={"plant": "hq"}), site("line-1", "hq")])
    for rel, content in files.items():
        repo.write(rel, content, executable=rel.endswith(".sh"))  # type: ignore[arg-type]
    repo.commit("initial fleet")
    return repo


def chain(*names: str) -> list[dict[str, object]]:
    """The components of the ``chain`` solution: base <- prep <- mid <- top (files and
    scripts alternating along a dependsOn chain), plus the independent extra and keep."""
    every = {
        "base": file_component("base", "base.conf", "base\n"),
        "prep": component("prep", "service", {"apply": ["scripts/apply.sh"],
                                              "delete": ["scripts/delete.sh"]}, ["base"]),
        "mid": file_component("mid", "mid.conf", "mid\n", ["prep"]),
        "top": component("top", "service", {"apply": ["scripts/apply.sh"],
                                            "delete": ["scripts/delete.sh"]}, ["mid"]),
        "extra": file_component("extra", "extra.conf", "extra\n"),
        "keep": file_component("keep", "keep.conf", "keep\n"),
    }
    return [every[n] for n in names]


# ---------------------------------------------------------------- 3. removed components

def test_removed_components_are_pruned_in_reverse_dependency_order(tmp_path: Path) -> None:
    cell = target("cell", "line-1", bindings=[file_binding("cell"), script_binding("cell")])
    repo = line_fleet(tmp_path / "fleet", {
        "targets.yaml": [cell, instance("chain", "chain", names=["cell"])],
        "solutions/chain.yaml": solution(
            "chain", chain("base", "prep", "mid", "top", "extra", "keep")),
        "solutions/scripts/apply.sh": APPLY_SH,
        "solutions/scripts/delete.sh": DELETE_SH,
    })
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE)
    log = s.state / "work" / "order.log"

    first = sync(s)
    order = [c for _, _, c in applied(first)]
    assert order.index("base") < order.index("prep") < order.index("mid") < order.index("top")
    assert log.read_text().splitlines() == ["apply prep", "apply top"]
    assert sorted(p.name for p in s.file("cell", "").iterdir()) == [
        "base.conf", "extra.conf", "keep.conf", "mid.conf"]

    # one component removed: only its file goes
    repo.write("solutions/chain.yaml", solution("chain", chain("base", "prep", "mid", "top",
                                                               "keep")))
    repo.commit("drop extra")
    second = sync(s)
    assert applied(second) == []
    assert pruned(second) == [("cell", "chain", "extra")]
    assert not s.file("cell", "extra.conf").exists()
    assert s.file("cell", "mid.conf").exists()

    # the whole chain removed: deleted from the top of the chain down
    repo.write("solutions/chain.yaml", solution("chain", chain("keep")))
    removed = repo.commit("drop the chain")
    third = sync(s)
    assert pruned(third) == [("cell", "chain", "top"), ("cell", "chain", "mid"),
                             ("cell", "chain", "prep"), ("cell", "chain", "base")]
    assert log.read_text().splitlines()[2:] == ["delete top base=present mid=present",
                                                "delete prep base=present mid=absent"]
    assert [p.name for p in s.file("cell", "").iterdir()] == ["keep.conf"]
    assert set(s.inventory("cell")) == {"chain/keep"}
    doc = status_of(repo.remote, LINE, "cell")
    assert doc["phase"] == "Ready" and doc["appliedRevision"] == removed


# ---------------------------------------------------------------- 5. invalid revisions

def line_of(repo: FleetRepo, rel: str, text: str) -> int:
    return next(n for n, line in enumerate(repo.read(rel).splitlines(), 1) if text in line)


def test_invalid_parameter_keeps_the_last_good_revision_until_fixed(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    good = repo.remote_head()
    sync(s)
    layout = hmi_file(s).read_bytes()

    repo.replace("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 999")
    bad = repo.commit("dashboard: refresh every 999 s (above the maximum)")
    result = sync(s, expect=1)

    assert applied(result) == [] and pruned(result) == []
    assert hmi_file(s).read_bytes() == layout
    doc = status_of(repo.remote, DEMO_SITE, "demo-hmi")
    assert doc["phase"] == "Invalid"
    assert doc["observedRevision"] == bad
    assert doc["lastGoodRevision"] == good and doc["appliedRevision"] == good
    errors = doc["errors"]
    assert errors and errors[0]["file"] == "instances/dashboard.yaml"
    assert errors[0]["line"] == line_of(repo, "instances/dashboard.yaml", "refreshSeconds: 999")
    assert "refreshSeconds" in errors[0]["field"] + errors[0]["message"]
    assert "instances/dashboard.yaml" in doc["message"]
    # the other target does not use the broken instance: it moves on
    gateway = status_of(repo.remote, DEMO_SITE, "demo-gateway")
    assert gateway["phase"] == "Ready" and gateway["lastGoodRevision"] == bad

    # while the bad commit waits for a fix, drift is repaired from the last good revision
    hmi_file(s).write_text("{}\n")
    repaired = sync(s, expect=1)
    assert applied(repaired) == [("demo-hmi", "line-dashboard", "layout")]
    assert hmi_file(s).read_bytes() == layout
    assert status_of(repo.remote, DEMO_SITE, "demo-hmi")["phase"] == "Invalid"

    repo.replace("instances/dashboard.yaml", "refreshSeconds: 999", "refreshSeconds: 20")
    fixed = repo.commit("dashboard: refresh every 20 s")
    sync(s)
    assert json.loads(hmi_file(s).read_text())["refreshSeconds"] == 20
    doc = status_of(repo.remote, DEMO_SITE, "demo-hmi")
    assert doc["phase"] == "Ready" and "errors" not in doc
    assert doc["lastGoodRevision"] == fixed == doc["appliedRevision"]


def test_malformed_yaml_blocks_every_target_and_reports_file_and_line(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    good = repo.remote_head()
    sync(s)
    before = snapshot(s.state / "files")

    repo.replace("targets/demo.yaml", "    sampleRate: 2", "    sampleRate: [2")
    bad = repo.commit("gateway: half-edited sample rate")
    result = sync(s, expect=1)

    assert applied(result) == [] and pruned(result) == []
    assert snapshot(s.state / "files") == before
    for name in ("demo-gateway", "demo-hmi"):
        doc = status_of(repo.remote, DEMO_SITE, name)
        assert doc["phase"] == "Invalid", doc
        assert doc["observedRevision"] == bad and doc["lastGoodRevision"] == good
        assert doc["errors"][0]["file"] == "targets/demo.yaml"
        # the parser reports the line where it noticed the unclosed bracket: at or after it
        assert doc["errors"][0]["line"] >= line_of(repo, "targets/demo.yaml", "sampleRate: [2")

    repo.replace("targets/demo.yaml", "    sampleRate: [2", "    sampleRate: 3")
    fixed = repo.commit("gateway: sample every 3 s")
    recovered = sync(s)
    assert {t for t, _, _ in applied(recovered)} == {"demo-gateway"}
    assert "sample_rate_seconds = 3" in s.file("demo-gateway", "telemetry/agent.conf").read_text()
    for name in ("demo-gateway", "demo-hmi"):
        doc = status_of(repo.remote, DEMO_SITE, name)
        assert doc["phase"] == "Ready" and doc["lastGoodRevision"] == fixed


# ---------------------------------------------------------------- 8. a failing script

FAIL_SH = """#!/bin/sh
# counts its attempts, then fails with the exit code the target asks for
echo attempt >> "../attempts-$RECONCILER_TARGET"
echo "cannot reach the PLC of $RECONCILER_TARGET" >&2
exit "$RECONCILER_PARAM_EXITCODE"
"""


def test_failing_script_fails_its_target_after_retries_and_spares_the_others(
        tmp_path: Path) -> None:
    starter = solution("starter", [component("start", "service",
                                             {"apply": ["scripts/fail.sh"]})],
                       {"exitCode": {"type": "integer", "required": True}})
    panel = solution("panel", [file_component("screen", "screen.txt", "line 1\n")])
    repo = line_fleet(tmp_path / "fleet", {
        "targets.yaml": [
            target("hmi", "line-1"),
            # an ordinary failure (exit 1) is retried with backoff, then Failed
            target("flaky", "line-1", bindings=[script_binding("flaky")],
                   params={"exitCode": 1}),
            # sysexits' EX_CONFIG (78) says retrying cannot help: a human must act
            target("broken", "line-1", bindings=[script_binding("broken")],
                   params={"exitCode": 78}),
            instance("panel", "panel", names=["hmi"]),
            instance("starter", "starter", names=["flaky", "broken"], onFailure="stay"),
        ],
        "solutions/starter.yaml": starter,
        "solutions/panel.yaml": panel,
        "solutions/scripts/fail.sh": FAIL_SH,
    })
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE,
                  retries={"count": 2, "delay": 0.1})

    result = sync(s, expect=1)

    attempts = {name: len((s.state / "work" / f"attempts-{name}").read_text().splitlines())
                for name in ("flaky", "broken")}
    assert attempts == {"flaky": 3, "broken": 1}  # retries.count 2: 1 + 2 attempts
    assert [e["target"] for e in result.events("provider_call_retried")] == ["flaky", "flaky"]
    for name, code in (("flaky", 1), ("broken", 78)):
        doc = status_of(repo.remote, LINE, name)
        assert doc["phase"] == "Failed", doc
        assert f"cannot reach the PLC of {name}" in doc["message"]
        assert f"exit code {code}" in doc["message"]
        assert doc["lastGoodRevision"] == ""
        assert doc["instances"]["starter"]["components"]["start"]["phase"] == "Failed"
    hmi = status_of(repo.remote, LINE, "hmi")
    assert hmi["phase"] == "Ready"
    assert s.file("hmi", "screen.txt").read_text() == "line 1\n"
    table = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()[1:]
             if line.split() and line.split()[0] in ("hmi", "flaky", "broken")}
    assert table == {"hmi": "Ready", "flaky": "Failed", "broken": "Failed"}


# ---------------------------------------------------------------- 9. hostile parameters

PROBE_SH = """#!/bin/sh
set -eu
printf '%s' "$RECONCILER_PARAM_PAYLOAD" > payload.env
printf '%s' "$RECONCILER_PARAM_DASH" > dash.env
printf '%s' "$RECONCILER_PARAM_MULTI" > multi.env
cat > stdin.json
"""


def test_hostile_parameter_values_arrive_verbatim_and_nothing_runs(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    payload = (f"$(touch {canary}-1) `touch {canary}-2`; touch {canary}-3 && "
               f"echo \"double\" 'single' | tee {canary}-4 ${{{{ 7 * 7 }}}} {{{{ 7 * 7 }}}} "
               "Grüße ✓ 日本語 \\ %s $HOME")
    dash = "-rf --no-preserve-root"
    multi = "first line\nsecond; line\n\t`tabbed`\n"
    values = {"payload": payload, "dash": dash, "multi": multi}
    echo = solution("echo", [
        file_component("verbatim", "verbatim.txt", "${{ params.payload }}"),
        file_component("framed", "framed.txt", "[${{ params.dash }}]\n${{ params.multi }}"),
        component("probe", "service", {"apply": ["scripts/probe.sh"]}),
    ], {name: {"type": "string", "required": True} for name in values})
    repo = line_fleet(tmp_path / "fleet", {
        "targets.yaml": [
            target("cell", "line-1", bindings=[file_binding("cell"), script_binding("cell")]),
            instance("echo", "echo", names=["cell"], params=values),
        ],
        "solutions/echo.yaml": echo,
        "solutions/scripts/probe.sh": PROBE_SH,
    })
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE)

    sync(s)

    assert s.file("cell", "verbatim.txt").read_bytes() == payload.encode()
    assert s.file("cell", "framed.txt").read_bytes() == f"[{dash}]\n{multi}".encode()
    work = s.work("cell")
    for name, value in values.items():
        assert (work / f"{name}.env").read_bytes() == value.encode(), name
    stdin = json.loads((work / "stdin.json").read_text(encoding="utf-8"))
    assert stdin["params"] == values
    assert stdin["target"] == "cell" and stdin["component"] == "probe"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []


# ---------------------------------------------------------------- 11. plan

def test_plan_shows_every_kind_of_change_and_applies_nothing(
        demo: tuple[FleetRepo, Site]) -> None:
    repo, s = demo
    sync(s)
    status_tip = branch_head(repo.remote, DEMO_BRANCH)
    sol = "solutions/line-dashboard/solution.yaml"
    repo.replace("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 30")
    kiosk_at = repo.read(sol).index("    - name: kiosk")
    repo.write(sol, repo.read(sol)[:kiosk_at] + (
        "    - name: banner\n"
        "      type: config-file\n"
        "      properties:\n"
        "        path: dashboard/banner.txt\n"
        "        content: \"Line ${{ params.lineId }}\\n\"\n"))
    planned = repo.commit("dashboard: banner instead of kiosk, refresh every 30 s")
    files_before = snapshot(s.state / "files")
    work_before = snapshot(s.state / "work")
    inventory_before = {t: s.inventory(t) for t in ("demo-gateway", "demo-hmi")}

    result = reconciler("plan", "--config", str(s.config), env=s.env())

    assert result.returncode == 2, result.describe()  # 2: the plan has changes
    out = result.stdout
    assert f"Plan at {planned[:12]}" in out
    assert "demo-hmi: 3 change(s)" in out
    assert "~ line-dashboard/layout (file) update" in out
    assert '      - "refreshSeconds": 10, "timezone": "UTC",' in out
    assert '      + "refreshSeconds": 30, "timezone": "UTC",' in out
    assert "+ line-dashboard/banner (file) create" in out
    assert "- line-dashboard/kiosk (file) prune" in out
    assert "demo-gateway: no changes" in out
    for comp, provider in (("config", "file"), ("signals", "file"), ("service", "script")):
        assert f"= telemetry-demo/{comp} ({provider}) in-sync" in out
    assert applied(result) == [] and pruned(result) == []
    assert snapshot(s.state / "files") == files_before
    assert snapshot(s.state / "work") == work_before
    assert {t: s.inventory(t) for t in inventory_before} == inventory_before
    assert branch_head(repo.remote, DEMO_BRANCH) == status_tip

    as_json = reconciler("plan", "--config", str(s.config), "--format", "json", env=s.env())
    targets = {t["target"]: {c["key"]: c["action"] for c in t["changes"]}
               for t in json.loads(as_json.stdout)["targets"]}
    assert targets["demo-hmi"] == {"line-dashboard/layout": "update",
                                   "line-dashboard/banner": "create",
                                   "line-dashboard/kiosk": "prune"}
    assert set(targets["demo-gateway"].values()) == {"in-sync"}
