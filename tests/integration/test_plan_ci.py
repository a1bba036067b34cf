"""The CI jobs of docs/ci/ run as written, and the plan's JSON is what docs/plan.md documents.

The GitHub Actions workflow's ``run:`` steps and the GitLab job's ``script:`` run with bash,
as the runners run them, in a real clone of a real repository: a remote holding the fleet on
``main`` and a pull-request branch checked out, as ``actions/checkout`` (full history) and
GitLab's clone leave it. The installed ``reconciler`` stands in for the container image's.
A pull request with changes passes and writes the plan; one that introduces validation errors
fails and still writes the plan with the errors. Posting: GitHub's step is a JavaScript
action (not run here); GitLab's ``after_script`` is run against an HTTP server on 127.0.0.1
that answers as GitLab's notes API does, and must create the note once and then update it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.fleetkit import EXAMPLE_REPO, RECONCILER, REPO_ROOT, clean_env, git

GITHUB = REPO_ROOT / "docs/ci/github-actions.yml"
GITLAB = REPO_ROOT / "docs/ci/gitlab-ci.yml"
PLAN_DOC = REPO_ROOT / "docs/plan.md"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of the fleet's remote with a pull-request branch checked out."""
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE_REPO, source, symlinks=True)
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, "commit", "-qm", "fleet")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True,
                   env=clean_env())
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, env=clean_env())
    git(work, "checkout", "-q", "-b", "pull-request")
    return work


def change(work: Path, rel: str, old: str, new: str) -> None:
    path = work / rel
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    git(work, "commit", "-qam", f"edit {rel}")


def run_bash(script: str, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's script as the runners run it: bash, stopping at the first failure."""
    home = cwd.parent / "home"
    home.mkdir(exist_ok=True)  # git config --global writes here, not in the tester's home
    full = clean_env({"HOME": str(home), "PATH": f"{RECONCILER.parent}:{os.environ['PATH']}",
                      **env})
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- GitHub Actions

def github_steps(expressions: Mapping[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """(script, env) of each ``run:`` step, ``${{ ... }}`` in its env replaced."""
    workflow = yaml.safe_load(GITHUB.read_text())
    (job,) = workflow["jobs"].values()
    assert job["defaults"]["run"]["shell"] == "bash"
    for step in job["steps"]:
        if "run" not in step:
            assert "uses" in step  # the checkout, and the posting step
            continue
        env = {}
        for key, value in (step.get("env") or {}).items():
            found = re.fullmatch(r"\$\{\{ *([\w.]+) *\}\}", str(value))
            env[key] = expressions[found[1]] if found else str(value)
        assert "${{" not in step["run"], "expressions belong in env:"
        yield step["run"], env


def run_github(work: Path) -> tuple[int, str, str]:
    summary = work.parent / "summary.md"
    summary.write_text("")
    code = 0
    for script, env in github_steps({"github.base_ref": "main"}):
        done = run_bash(script, work, {**env, "GITHUB_STEP_SUMMARY": str(summary),
                                       "GITHUB_OUTPUT": str(work.parent / "output")})
        code = done.returncode
        if code:
            break
    return code, (work / "plan.md").read_text(), summary.read_text()


def test_github_workflow_passes_a_pull_request_with_changes(clone: Path) -> None:
    change(clone, "sites/eu.yaml", "    logLevel: debug\n", "    logLevel: warning\n")
    code, plan, summary = run_github(clone)
    assert code == 0
    assert plan.startswith("## Fleet plan ") and "| eu/berlin/berlin-line-2 |" in plan
    assert summary == plan


def test_github_workflow_fails_a_pull_request_with_new_errors(clone: Path) -> None:
    change(clone, "instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 1000")
    code, plan, summary = run_github(clone)
    assert code == 1
    assert "new validation error(s)" in plan and "max value is 300" in plan
    assert summary == plan


# ---------------------------------------------------------------- GitLab CI

def gitlab_job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(GITLAB.read_text())["fleet-plan"]
    return job


def gitlab_env(work: Path, **extra: str) -> dict[str, str]:
    job = gitlab_job()
    return {"CI_PROJECT_DIR": str(work), "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            **{k: str(v) for k, v in job["variables"].items()}, **extra}


def run_gitlab(work: Path) -> subprocess.CompletedProcess[str]:
    # the runner runs the script's lines one after the other in one shell
    return run_bash("\n".join(gitlab_job()["script"]), work, gitlab_env(work))


def test_gitlab_job_passes_a_merge_request_with_changes(clone: Path) -> None:
    change(clone, "solutions/telemetry-agent/agent.conf.tmpl", "[time]\n", "[time]\n# utc\n")
    done = run_gitlab(clone)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = (clone / "plan.md").read_text()
    assert "4 of 7 target(s) change" in plan and "+# utc" in plan


def test_gitlab_job_fails_a_merge_request_with_new_errors(clone: Path) -> None:
    change(clone, "instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 1000")
    done = run_gitlab(clone)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "max value is 300" in (clone / "plan.md").read_text()


class Notes(BaseHTTPRequestHandler):
    """GitLab's merge-request notes API, as much as the job's after_script uses of it."""

    notes: list[dict[str, Any]] = []
    calls: list[tuple[str, str, str]] = []
    path_prefix = "/api/v4/projects/42/merge_requests/7/notes"

    def _answer(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        self.calls.append((self.command, self.path, self.headers.get("PRIVATE-TOKEN") or ""))
        return body

    def do_GET(self) -> None:
        self._record()
        self._answer(list(reversed(self.notes)))

    def do_POST(self) -> None:
        body = self._record()
        self.notes.append({"id": len(self.notes) + 1, "body": body["body"]})
        self._answer(self.notes[-1], 201)

    def do_PUT(self) -> None:
        body = self._record()
        note_id = int(self.path.rsplit("/", 1)[1])
        self.notes[note_id - 1]["body"] = body["body"]
        self._answer(self.notes[note_id - 1])

    def log_message(self, *args: Any) -> None:
        pass


def test_gitlab_after_script_posts_the_plan_once_then_updates_it(clone: Path) -> None:
    (clone / "plan.md").write_text("## Fleet plan `a` → `b`\n\nfirst\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Notes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = gitlab_env(clone, CI_API_V4_URL=f"http://127.0.0.1:{server.server_port}/api/v4",
                         CI_PROJECT_ID="42", CI_MERGE_REQUEST_IID="7",
                         RECONCILER_PLAN_TOKEN="glpat-test-token")
        script = "\n".join(gitlab_job()["after_script"])
        first = run_bash(script, clone, env)
        assert first.returncode == 0, first.stderr
        (clone / "plan.md").write_text("## Fleet plan `a` → `c`\n\nsecond\n")
        second = run_bash(script, clone, env)
        assert second.returncode == 0, second.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert [c[0] for c in Notes.calls] == ["GET", "POST", "GET", "PUT"]
    assert all(c[2] == "glpat-test-token" for c in Notes.calls)
    (note,) = Notes.notes
    assert note["body"].startswith("## Fleet plan `a` → `c`\n\nsecond\n")
    assert "<!-- reconciler-fleet-plan -->" in note["body"]


# ---------------------------------------------------------------- the JSON schema

def documented_fields() -> set[str]:
    text = PLAN_DOC.read_text()
    section = text[text.index("## JSON"):text.index("## At fleet scale")]
    fields = set(re.findall(r"^\| `([\w.\[\]]+)` \|", section, re.M))
    # a diagnostic is documented once, under newErrors[]
    for other in ("fixedErrors[]", "targets[].errors[]"):
        fields |= {f.replace("newErrors[]", other, 1) for f in fields
                   if f.startswith("newErrors[].")}
    return fields


def paths(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if key not in ("before", "after"):  # parameter values: any JSON
                out |= paths(item, path)
    elif isinstance(value, list):
        for item in value:
            out |= paths(item, f"{prefix}[]")
    return out


def test_every_field_of_the_json_plan_is_documented(clone: Path) -> None:
    base = git(clone, "rev-parse", "HEAD")
    change(clone, "sites/eu.yaml", "    logLevel: debug\n", "    logLevel: warning\n")
    change(clone, "targets/berlin.yaml", "  site: berlin-line-1\n  bindings:",
           "  site: berlin-line-1\n  params:\n    logLevel: debug\n  bindings:")
    change(clone, "instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 1000")
    done = subprocess.run([str(RECONCILER), "plan", "--repo", str(clone), "--base", base,
                           "--format", "json"], env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    seen = paths(json.loads(done.stdout))
    documented = documented_fields()
    assert seen - documented == set(), "fields the output has and docs/plan.md does not"
    # the scenario reaches held targets, provenance and errors: most of the table
    assert {"targets[].errors[].message", "targets[].changes[].values[].setBy.level",
            "targets[].changes[].values[].wasSetBy.object", "newErrors[].instance"} <= seen
