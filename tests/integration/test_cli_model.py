"""`reconciler validate`, `explain` and `providers` run as the installed command.

Each command runs once per module (fixtures cache the result) in a real subprocess with the
project's virtualenv first on PATH, the way an operator runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example-repo"
BASE = ROOT / "tests" / "badinput" / "base"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "COLUMNS": "200"}
# path:line: Kind/name: field: message [optional scope]
ERROR_LINE = re.compile(r"^(?P<path>[^:\s]+):(?P<line>[1-9]\d*): (?P<obj>[A-Z][a-z]+/[a-z0-9-]+): "
                        r"(?P<field>[A-Za-z][\w.\[\]-]*): (?P<message>\S.*)$")


def reconciler() -> str:
    found = shutil.which("reconciler", path=ENV["PATH"])
    if found is None:  # pragma: no cover - the venv always has it when the project is installed
        found = str(BIN / "reconciler")
    return found


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run(*args: str | Path, cwd: Path = ROOT) -> Run:
    proc = subprocess.run([reconciler(), *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=60, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad-input base fleet with three independent mistakes."""
    repo = tmp_path_factory.mktemp("cli") / "repo"
    shutil.copytree(BASE, repo)
    sites = repo / "sites" / "sites.yaml"
    sites.write_text(sites.read_text().replace("parent: factory", "parent: factroy"))
    inst = repo / "instances.yaml"
    inst.write_text(inst.read_text().replace("replicas: 2", "replicas: 50"))
    (repo / "extra.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: extra}\nspec:\n"
        "  site: region\n  colour: blue\n")
    return repo


@pytest.fixture(scope="module")
def broken_text(broken_repo: Path) -> Run:
    return run("validate", broken_repo)


@pytest.fixture(scope="module")
def broken_json(broken_repo: Path) -> Run:
    return run("validate", "--format", "json", broken_repo)


@pytest.fixture(scope="module")
def explain_text() -> Run:
    return run("explain", "--repo", "example-repo", "--target", "demo-gateway")


@pytest.fixture(scope="module")
def explain_json() -> Run:
    return run("explain", "--repo", EXAMPLE, "--target", "demo-gateway", "--format", "json")


def test_the_command_is_the_installed_entry_point() -> None:
    assert Path(reconciler()).parent == BIN


def test_validate_example_repo_is_valid() -> None:
    result = run("validate", "example-repo")
    assert result.code == 0, result.out + result.err
    assert not [line for line in result.out.splitlines() if "warning:" not in line]
    assert re.search(r"example-repo: \d+ sites, \d+ targets, \d+ solutions, \d+ instances; "
                     r"0 error\(s\)", result.err)


def test_validate_json_from_inside_the_repository_defaults_to_dot() -> None:
    result = run("validate", "--format", "json", cwd=EXAMPLE)
    assert result.code == 0, result.out + result.err
    data = json.loads(result.out)
    assert data["valid"] is True and data["errors"] == []
    assert data["objects"]["targets"] >= 7


def test_validate_invalid_repo_exits_1_with_one_line_per_error(broken_text: Run) -> None:
    assert broken_text.code == 1
    lines = broken_text.out.splitlines()
    assert len(lines) == 3, lines
    for line in lines:
        assert ERROR_LINE.match(line), line
    assert lines == sorted(lines)
    expected = [
        "extra.yaml:6: Target/extra: spec.colour: unknown field",
        "instances.yaml:8: Instance/app-line: spec.params.replicas: max value is 10 "
        "(value 50 for solution 'app') [instance app-line; target box]",
        "sites/sites.yaml:23: Site/line: spec.parent: unknown parent site 'factroy' "
        "(did you mean 'factory'?)",
    ]
    assert lines == expected
    assert "3 error(s), 0 warning(s)" in broken_text.err


def test_validate_json_is_parseable_with_the_documented_fields(broken_json: Run) -> None:
    assert broken_json.code == 1
    data = json.loads(broken_json.out)
    assert data["valid"] is False and data["warnings"] == []
    assert set(data["objects"]) == {"sites", "targets", "solutions", "instances"}
    assert len(data["errors"]) == 3
    for error in data["errors"]:
        assert {"path", "line", "object", "field", "message", "severity"} <= set(error)
        assert error["severity"] == "error" and isinstance(error["line"], int)
    scoped = next(e for e in data["errors"] if e["object"] == "Instance/app-line")
    assert (scoped["target"], scoped["instance"]) == ("box", "app-line")
    assert scoped["field"] == "spec.params.replicas" and scoped["line"] == 8


def test_validate_strict_fails_on_warnings(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(BASE, repo)
    (repo / "notes.yaml").write_text("just: some yaml\n")
    plain, strict = run("validate", repo), run("validate", "--strict", repo)
    assert plain.code == 0 and strict.code == 1
    assert plain.out.strip() == ("notes.yaml: warning: not a reconciler manifest and not "
                                 "referenced by any component: ignored (list it in Settings "
                                 "spec.ignore to silence this)")


def test_explain_shows_values_from_every_level(explain_text: Run) -> None:
    assert explain_text.code == 0, explain_text.err
    out = explain_text.out
    assert out.startswith("Target demo-gateway  (site lab/lab-hq/demo)")
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in {"lineId", "mqttBroker", "ntpServer", "sampleRate",
                                            "signals", "logLevel"}:
            rows.setdefault(parts[0], line)  # parameter rows come before components
    assert re.search(r'ntpServer\s+"ntp.lab.example.net"\s+region\s+sites/lab.yaml:\d+',
                     rows["ntpServer"])
    assert re.search(r"mqttBroker\s+\S+\s+factory\s+sites/lab.yaml:\d+", rows["mqttBroker"])
    assert re.search(r'lineId\s+"LAB-DEMO"\s+line\s+sites/lab.yaml:\d+', rows["lineId"])
    assert re.search(r"sampleRate\s+2\s+target\s+targets/demo.yaml:\d+", rows["sampleRate"])
    assert re.search(r"signals\s+.*\s+default\s+solutions/telemetry-agent/solution.yaml:\d+",
                     rows["signals"])
    assert "overrides profile:high-frequency at solutions/telemetry-agent/solution.yaml" in out
    assert "Components (apply order):" in out
    assert "service  (service -> script, after config, signals)" in out


def test_explain_json_matches_the_files(explain_json: Run) -> None:
    assert explain_json.code == 0, explain_json.err
    data = json.loads(explain_json.out)
    assert (data["target"], data["site"]) == ("demo-gateway", "lab/lab-hq/demo")
    assert data["errors"] == []
    [inst] = data["instances"]
    assert inst["instance"] == "telemetry-demo" and inst["solution"] == "telemetry-agent"
    params = {p["name"]: p for p in inst["parameters"]}
    levels = {p["level"] for p in params.values()}
    assert {"region", "factory", "line", "target", "default"} <= levels
    for p in params.values():
        assert {"name", "value", "level", "object", "field", "file", "line", "overrides"} <= set(p)
        # the line named is the line where the value is written
        text = (EXAMPLE / p["file"]).read_text().splitlines()[p["line"] - 1]
        key = p["field"].rsplit(".", 1)[-1]
        assert key in text, (p, text)
    assert params["sampleRate"]["value"] == 2
    assert [o["level"] for o in params["sampleRate"]["overrides"]] == [
        "factory", "profile:high-frequency", "default"]
    assert [c["name"] for c in inst["components"]] == ["config", "signals", "service"]


def test_explain_unknown_target_exits_2_with_a_hint() -> None:
    result = run("explain", "--repo", EXAMPLE, "--target", "demo-gatway")
    assert result.code == 2
    assert "no target 'demo-gatway'" in result.err
    assert "did you mean demo-gateway" in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("--help",), ["validate", "explain", "providers"], id="top-level"),
        pytest.param(("validate", "--help"), ["path:line: Kind/name: field: message",
                                              "--format", "--strict"], id="validate"),
        pytest.param(("explain", "--help"), ["--repo", "--target", "--instance", "--format"],
                     id="explain"),
        pytest.param(("providers", "--help"), ["reconciler.providers", "--format"],
                     id="providers"),
    ],
)
def test_help(args: tuple[str, ...], expected: list[str]) -> None:
    result = run(*args)
    assert result.code == 0
    for text in expected:
        assert text in result.out, (text, result.out)


def test_providers_lists_the_builtin_ones() -> None:
    result = run("providers", "--format", "json")
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert {"file", "script", "helm", "kubernetes"} <= set(rows)
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["file"]["origin"] == "reconciler_providers.file:FileProvider"
