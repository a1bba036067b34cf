"""Solution releases through the installed command: release, version pinning, rollback,
history — and the daemon applying a pinned release."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECONCILER = str(Path(sys.executable).parent / "reconciler")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "fleet"
    shutil.copytree(ROOT / "example-repo", repo, symlinks=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fleet")
    return repo


def set_default_sample_rate(repo: Path, value: int) -> None:
    path = repo / "solutions/telemetry-agent/solution.yaml"
    doc = path.read_text().replace("      default: 10\n", f"      default: {value}\n", 1)
    path.write_text(doc)
    git(repo, "commit", "-qam", f"sample rate {value}")


def explain(repo: Path, target: str) -> dict:
    out = run("explain", "--repo", str(repo), "--target", target, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_release_pin_and_rollback(repo: Path) -> None:
    out = run("release", "--repo", str(repo), "telemetry-agent", "1.0.0")
    assert out.returncode == 0, out.stderr
    assert "tagged telemetry-agent/v1.0.0" in out.stdout
    set_default_sample_rate(repo, 20)
    assert run("release", "--repo", str(repo), "telemetry-agent", "1.1.0").returncode == 0
    # the same version twice is refused
    again = run("release", "--repo", str(repo), "telemetry-agent", "1.1.0")
    assert again.returncode != 0 and "already exists" in again.stderr
    # not a semantic version
    assert run("release", "--repo", str(repo), "telemetry-agent", "v1").returncode == 2

    history = run("history", "--repo", str(repo), "--format", "json")
    assert [r["version"] for r in json.loads(history.stdout)] == ["1.1.0", "1.0.0"]

    # head: the instance follows the tracked revision (default 20)
    data = explain(repo, "berlin-l1-gateway")
    (inst,) = [i for i in data["instances"] if i["instance"] == "telemetry-eu"]
    rate = next(p for p in inst["parameters"] if p["name"] == "sampleRate")
    assert rate["value"] == 20 and inst["release"] is None

    out = run("rollback", "--repo", str(repo), "telemetry-eu", "--to", "1.0.0")
    assert out.returncode == 0, out.stderr
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "rollback/telemetry-eu-v1.0.0"
    docs = list(yaml.safe_load_all((repo / "instances/telemetry.yaml").read_text()))
    assert docs[0]["spec"]["version"] == "1.0.0"
    assert "# Every gateway in Europe" in (repo / "instances/telemetry.yaml").read_text()
    assert git(repo, "status", "--porcelain") == ""

    data = explain(repo, "berlin-l1-gateway")
    (inst,) = [i for i in data["instances"] if i["instance"] == "telemetry-eu"]
    rate = next(p for p in inst["parameters"] if p["name"] == "sampleRate")
    assert rate["value"] == 10
    assert rate["file"].startswith("telemetry-agent/v1.0.0:")
    assert inst["release"] == "telemetry-agent/v1.0.0"

    # a version that was never released is an error naming the released ones
    path = repo / "instances/telemetry.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: 1.9.0"))
    bad = run("validate", str(repo))
    assert bad.returncode == 1
    assert ("instances/telemetry.yaml:9: Instance/telemetry-eu: spec.version: no release 1.9.0 "
            "of solution 'telemetry-agent' (tag telemetry-agent/v1.9.0); released: 1.1.0, "
            "1.0.0") in bad.stdout


def test_rollback_to_unknown_release_changes_nothing(repo: Path) -> None:
    out = run("rollback", "--repo", str(repo), "telemetry-eu", "--to", "3.0.0")
    assert out.returncode == 1
    assert "no release 3.0.0" in out.stderr
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_daemon_applies_the_pinned_release(repo: Path, tmp_path: Path) -> None:
    assert run("release", "--repo", str(repo), "telemetry-agent", "1.0.0").returncode == 0
    set_default_sample_rate(repo, 30)
    inst = repo / "instances/telemetry.yaml"
    text = inst.read_text()
    # pin the demo instance (the demo gateway sets no sampleRate of its own... but its target
    # does: drop it so the solution default shows through)
    text = text.replace("  profile: high-frequency\n", "  version: 1.0.0\n")
    inst.write_text(text)
    demo = repo / "targets/demo.yaml"
    demo.write_text(demo.read_text().replace("  params:\n    sampleRate: 2\n", ""))
    site = repo / "sites/lab.yaml"
    site.write_text(site.read_text().replace("  solutionParams:\n    telemetry-agent:\n"
                                             "      sampleRate: 5\n", ""))
    git(repo, "commit", "-qam", "pin telemetry-demo to 1.0.0")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(remote)], check=True)
    git(repo, "push", "-q", str(remote), "--tags")
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "repo": {"url": str(remote), "ref": "main"}, "site": "lab/lab-hq/demo",
        "stateDir": str(state), "retries": {"count": 0, "delay": 0.1},
        "policy": {"allowScripts": True, "fileRoots": ["files"]},
        "listen": {"enabled": False}, "watch": False}))
    out = run("sync", "--once", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    conf = (state / "files/demo-gateway/telemetry/agent.conf").read_text()
    assert "sample_rate_seconds = 10" in conf  # the release's default, not the head's 30


def test_offline_plan_between_two_revisions(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    # a parameter at a line, a template edit, a removed component, a new target
    site = repo / "sites/eu.yaml"
    site.write_text(site.read_text().replace("    logLevel: debug\n", "    logLevel: warning\n"))
    template = repo / "solutions/telemetry-agent/agent.conf.tmpl"
    template.write_text(template.read_text() + "# reviewed\n")
    dash = repo / "solutions/line-dashboard/solution.yaml"
    text = dash.read_text()
    dash.write_text(text[: text.index("    - name: kiosk")])
    targets = repo / "targets/berlin.yaml"
    targets.write_text(targets.read_text() + """---
apiVersion: reconciler/v1
kind: Target
metadata:
  name: berlin-l2-hmi
  labels: {role: hmi}
spec:
  site: berlin-line-2
  bindings:
    - {role: config-file, provider: file, config: {root: files/berlin-l2-hmi}}
""")
    git(repo, "commit", "-qam", "review me")

    out = run("plan", "--repo", str(repo), "--base", base, "--format", "json")
    assert out.returncode == 2, out.stderr  # 2: the plan has changes
    data = json.loads(out.stdout)
    by_target = {t["target"]: t for t in data["targets"]}
    l2 = {c["key"]: c for c in by_target["berlin-l2-gateway"]["changes"]}
    assert l2["telemetry-eu/config"]["action"] == "change"
    assert "-  logLevel: debug" in l2["telemetry-eu/config"]["diff"]
    assert "+  logLevel: warning" in l2["telemetry-eu/config"]["diff"]
    assert "+# reviewed" in l2["telemetry-eu/config"]["diff"]
    # a target whose values did not change still sees the template change
    l1 = {c["key"]: c for c in by_target["berlin-l1-gateway"]["changes"]}
    assert "logLevel" not in l1["telemetry-eu/config"]["diff"]
    assert "+# reviewed" in l1["telemetry-eu/config"]["diff"]
    hmi = {c["key"]: c["action"] for c in by_target["berlin-l1-hmi"]["changes"]}
    assert hmi == {"line-dashboard/kiosk": "remove"}
    new = by_target["berlin-l2-hmi"]
    assert new["added"] is True
    assert {c["key"]: c["action"] for c in new["changes"]} == {"line-dashboard/layout": "add"}
    assert "demo-hmi" in by_target  # the kiosk is removed everywhere
    assert data["newErrors"] == []

    md = run("plan", "--repo", str(repo), "--base", base, "--format", "markdown")
    assert md.returncode == 2
    assert md.stdout.startswith(f"## Fleet plan `{base[:12]}`")
    # by site: targets changed, new, removed, held; components added, changed, removed
    assert "| eu/berlin/berlin-line-2 | 1 | 1 | 0 | 0 | 1 | 3 | 0 |" in md.stdout
    assert "<code>berlin-l2-hmi</code> (new target) on eu/berlin/berlin-line-2" in md.stdout

    # a head that does not validate: exit 1, the new error named
    inst = repo / "instances/dashboard.yaml"
    inst.write_text(inst.read_text().replace("refreshSeconds: 10", "refreshSeconds: 1000"))
    git(repo, "commit", "-qam", "too slow")
    bad = run("plan", "--repo", str(repo), "--base", base)
    assert bad.returncode == 1
    assert ("new error: instances/dashboard.yaml:9: Instance/line-dashboard: "
            "spec.params.refreshSeconds: max value is 300") in bad.stdout
