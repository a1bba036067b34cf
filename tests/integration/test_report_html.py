"""``reconciler report --html``: one self-contained page of a generated fleet, looked at in a
real headless Chromium over the DevTools protocol.

The fleet: three regions of four lines with three targets each, an instance pinned to a
released solution, one with a validation error on one target; status branches for every line
but one (Unknown), one line silent for two days (Stale), one target Failed with a message
full of markup. The page must load without an exception, a console error or a request to
anything (a proxy leading nowhere would fail it), hold every target, flag the Failed and
Stale ones visibly, escape what the status files say, fold healthy sites and unfold sick
ones, filter, and say that no rollout is in progress. A screenshot of it is written as a test
artefact: into ``$RECONCILER_TEST_ARTEFACTS`` when set, else next to the test's files.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.chromium import CHROMIUM, Chromium
from tests.integration.fleetkit import (
    CliResult,
    FleetRepo,
    clean_env,
    file_component,
    git,
    instance,
    settings,
    site,
    solution,
    target,
)
from tests.integration.test_fleet_status_complete import push_branch, status_file

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (bash .ci/run installs it)")

REGIONS = ["north", "south", "west"]
LINES = [1, 2, 3, 4]
TARGETS = [1, 2, 3]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MARKUP = "<script>alert(1)</script> & <b>bold</b>"
# the report command of the reconciler group, started as the installed command starts it
_RUN = ("import sys\nfrom reconciler.cli.main import main\nfrom reconciler.cli.fleet import "
        "report\nmain.commands.setdefault('report', report)\nsys.argv[0] = 'reconciler'\nmain()")


def report(*args: str) -> CliResult:
    done = subprocess.run([sys.executable, "-c", _RUN, "--log-format", "json", "report", *args],
                          env=clean_env(), capture_output=True, timeout=180)
    return CliResult(("report", *args), done.returncode, done.stdout.decode(errors="replace"),
                     done.stderr.decode(errors="replace"))


def line(region: str, n: int) -> str:
    return f"{region}-line-{n}"


def name(region: str, n: int, t: int) -> str:
    return f"{region}-l{n}-t{t}"


def expected_state(region: str, n: int, t: int) -> str:
    if (region, n) == ("north", 3):
        return "Unknown"
    if (region, n) == ("west", 4):
        return "Stale"
    if (region, n, t) == ("south", 2, 2):
        return "Failed"
    return "Ready"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetRepo:
    root = tmp_path_factory.mktemp("report")
    sites = [site(r) for r in REGIONS] + [site(line(r, n), r) for r in REGIONS for n in LINES]
    targets = [target(name(r, n, t), line(r, n), labels={"role": "panel"})
               for r in REGIONS for n in LINES for t in TARGETS]
    repo = FleetRepo.from_docs(root / "fleet", {
        "reconciler.yaml": settings(("region", "line")),
        "sites.yaml": sites, "targets.yaml": targets,
        "solutions/telemetry/solution.yaml": solution("telemetry", [
            file_component("agent", "agent.conf", "site ${{ site.name }}\n")]),
        "solutions/hmi.yaml": solution("hmi", [
            file_component("screen", "screen.txt", "${{ params.title }}\n")],
            {"title": {"type": "string", "required": True}}),
        "instances.yaml": [
            instance("telemetry-all", "telemetry", selector={"matchLabels": {"role": "panel"}}),
            # no title anywhere: a validation error of this instance on its one target
            instance("hmi-north", "hmi", names=[name("north", 1, 1)])],
    })
    git(repo.work, "tag", "-a", "telemetry/v1.0.0", "-m", "telemetry 1.0.0")
    git(repo.work, "push", "--quiet", str(repo.remote), "--tags")
    repo.replace("instances.yaml", "  solution: telemetry\n",
                 "  solution: telemetry\n  version: 1.0.0\n")
    head = repo.commit("telemetry pinned to its first release")
    for r in REGIONS:
        for n in LINES:
            if expected_state(r, n, 1) == "Unknown":
                continue
            when = NOW - dt.timedelta(days=2) if expected_state(r, n, 1) == "Stale" else NOW
            files = {}
            for t in TARGETS:
                state = expected_state(r, n, t)
                phase = "Failed" if state == "Failed" else "Ready"
                message = f"telemetry-all/agent: {MARKUP}" if state == "Failed" else \
                    "1 component ready"
                files[f"{name(r, n, t)}.yaml"] = status_file(
                    f"{r}/{line(r, n)}", name(r, n, t), phase, head, when, message)
            push_branch(repo.remote, f"{r}/{line(r, n)}", files, when)
    return repo


def artefact(page: Path) -> Path:
    where = os.environ.get("RECONCILER_TEST_ARTEFACTS")
    if not where:
        return page
    Path(where).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(page, Path(where) / page.name))


def test_the_page_shows_the_whole_fleet_in_a_real_browser(fleet: FleetRepo,
                                                          tmp_path: Path) -> None:
    html = tmp_path / "out" / "fleet.html"

    result = report("--repo", fleet.url, "--html", str(html), "--cache-dir",
                    str(tmp_path / "cache"))

    assert result.returncode == 0, result.describe()
    assert f"wrote {html}: 36 targets" in result.stdout
    page_bytes = html.read_bytes()
    assert len(page_bytes) < 120_000  # small enough to mail
    with Chromium() as browser, browser.open(html.as_uri()) as page:
        assert page.problems == [] and page.requests == []
        rows = page.evaluate("""[...document.querySelectorAll('tr.target')].map(r => ({
            site: r.closest('details').dataset.site, target: r.dataset.target,
            state: r.dataset.state,
            flagged: r.classList.contains('flagged'),
            badge: r.querySelector('.badge').textContent,
            edge: getComputedStyle(r.cells[0]).borderLeftColor,
            shown: r.checkVisibility()}))""")
        assert {(r["site"], r["target"], r["state"]) for r in rows} == {
            (f"{g}/{line(g, n)}", name(g, n, t), expected_state(g, n, t))
            for g in REGIONS for n in LINES for t in TARGETS}
        by_target = {r["target"]: r for r in rows}
        failed, stale = by_target[name("south", 2, 2)], by_target[name("west", 4, 1)]
        assert failed["flagged"] and failed["badge"] == "\u26a0 Failed"
        assert failed["edge"] == "rgb(210, 59, 59)" and failed["shown"]  # its site unfolded
        assert stale["flagged"] and stale["badge"] == "\u26a0 Stale"
        assert stale["edge"] == "rgb(138, 79, 196)" and stale["shown"]
        ready = by_target[name("north", 2, 1)]
        assert not ready["flagged"] and ready["badge"] == "Ready"
        assert not ready["shown"]  # a healthy site is folded
        # what the status file said is text, not markup
        assert page.evaluate("document.scripts.length") == 1
        message = page.evaluate(f"document.querySelector('tr[data-target=\"{name('south', 2, 2)}"
                                "\"] td.msg').textContent")
        assert MARKUP in message
        assert page.evaluate("document.querySelectorAll('[src], link[href]').length") == 0
        errors = page.evaluate(f"[...document.querySelectorAll('tr[data-target=\""
                               f"{name('north', 1, 1)}\"] ul.errors li')].map(e => e.textContent)")
        assert errors and "title" in errors[0]
        invalid = by_target[name("north", 1, 1)]  # Ready, but invalid at the tracked revision
        assert invalid["shown"] and invalid["edge"] == "rgb(210, 59, 59)"
        sites = page.evaluate("""Object.fromEntries([...document.querySelectorAll(
            'details.site')].map(d => [d.dataset.site, d.className]))""")
        assert sites["south"] == "site health-failed" and sites["west/west-line-4"] == \
            "site health-stale"
        assert sites["north/north-line-3"] == "site health-stale"  # never reported
        assert sites["west/west-line-1"] == "site health-ready"
        text = page.evaluate("document.body.innerText")
        assert "No rollout in progress." in text
        assert "telemetry-all" in text and "on 1.0.0" in text
        assert "Recent changes" in text and "new \u2192 Failed" in text
        shot = artefact(page.screenshot(tmp_path / "report.png"))
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # every target can be seen, and the filter works
        page.evaluate("document.getElementById('expand').click()")
        assert page.evaluate("[...document.querySelectorAll('tr.target')]"
                             ".every(r => r.checkVisibility())")
        page.evaluate("""(() => {const f = document.getElementById('filter');
            f.value = 'south-line-2'; f.dispatchEvent(new Event('input'));})()""")
        assert page.evaluate("[...document.querySelectorAll('tr.target')].filter(r => "
                             "r.checkVisibility()).map(r => r.dataset.target)") == [
            name("south", 2, t) for t in TARGETS]
        page.evaluate("""(() => {const f = document.getElementById('filter');
            f.value = ''; f.dispatchEvent(new Event('input'));
            document.getElementById('problems').click();})()""")
        assert sorted(page.evaluate("[...document.querySelectorAll('tr.target')].filter(r => "
                                    "r.checkVisibility()).map(r => r.dataset.state)")) \
            == ["Failed"] + ["Stale"] * 3 + ["Unknown"] * 3
        assert page.problems == []


def test_the_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><img src='http://example.invalid/a.png'>"
                      "<script>console.error('boom'); missing();</script></body></html>")

    with Chromium() as browser, browser.open(broken.as_uri()) as page:
        assert any("missing is not defined" in p for p in page.problems)
        assert any("console.error: boom" in p for p in page.problems)
        assert page.requests == ["http://example.invalid/a.png"]


def test_a_fleet_that_cannot_be_read_writes_nothing_and_exits_1(tmp_path: Path) -> None:
    html = tmp_path / "fleet.html"

    result = report("--repo", str(tmp_path / "nowhere"), "--html", str(html), "--cache-dir",
                    str(tmp_path / "cache"))

    assert result.returncode == 1, result.describe()
    assert "error:" in result.stderr and not html.exists()
    assert list(tmp_path.glob(".fleet.html-*")) == []


def test_a_plants_own_page(fleet: FleetRepo, tmp_path: Path) -> None:
    html = tmp_path / "south.html"

    result = report("--repo", fleet.url, "--html", str(html), "--site", "south",
                    "--cache-dir", str(tmp_path / "cache"))

    assert result.returncode == 0, result.describe()
    page = html.read_text()
    shown = set(re.findall(r'data-target="([^"]+)"', page))
    assert shown == {name("south", n, t) for n in LINES for t in TARGETS}
    assert "north-line" not in page and "west-line" not in page  # tree and history alike
    assert f"wrote {html}: 12 targets" in result.stdout
    nowhere = report("--repo", fleet.url, "--html", str(html), "--site", "east",
                     "--cache-dir", str(tmp_path / "cache"))
    assert nowhere.returncode == 1 and "no site 'east'" in nowhere.stderr
