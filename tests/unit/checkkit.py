"""A small valid fleet written to a temporary directory, for the direct tests of the check
modules (tests/unit/test_checks_*.py): each test edits it, loads it with the real loader and
runs one check module on the result."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.core.checks.findings import Findings
from reconciler.core.loading import load_fleet
from reconciler.core.model import Fleet
from reconciler.core.rendering import Rendering, render_fleet

SETTINGS = """\
apiVersion: reconciler/v1
kind: Settings
metadata: {name: fleet}
spec:
  hierarchy: [region, line]
"""

SITES = """\
apiVersion: reconciler/v1
kind: Site
metadata: {name: eu}
spec:
  params: {tz: Europe/Berlin}
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: l1}
spec:
  parent: eu
"""

TARGETS = """\
apiVersion: reconciler/v1
kind: Target
metadata: {name: t1}
spec:
  site: l1
  bindings:
    - {role: config-file, provider: file, config: {root: /srv/t1}}
"""

SOLUTION = """\
apiVersion: reconciler/v1
kind: Solution
metadata: {name: app}
spec:
  parameters:
    tz: {type: string, default: UTC}
    port: {type: integer, min: 1, max: 65535, default: 8080, editableAt: [line, instance]}
  profiles:
    big: {port: 9000}
  components:
    - name: conf
      type: config-file
      properties:
        path: app/conf.txt
        template: conf.tmpl
    - name: extra
      type: config-file
      dependsOn: [conf]
      properties:
        path: app/extra.txt
        content: "${{ params.tz }}:${{ params.port }}"
"""

INSTANCES = """\
apiVersion: reconciler/v1
kind: Instance
metadata: {name: app}
spec:
  solution: app
  targets:
    names: [t1]
"""

BASE = {
    "reconciler.yaml": SETTINGS,
    "sites.yaml": SITES,
    "targets.yaml": TARGETS,
    "solutions/app/solution.yaml": SOLUTION,
    "solutions/app/conf.tmpl": "tz=${{ params.tz }}\n",
    "instances.yaml": INSTANCES,
}

Edit = tuple[str, str, str]  # file, old text, new text


def write(root: Path, edits: Sequence[Edit] = (),
          files: Mapping[str, str] | None = None) -> Path:
    """The base fleet with ``edits`` applied and ``files`` added, written under ``root``."""
    content = dict(BASE)
    for rel, old, new in edits:
        assert old in content[rel], (rel, old)
        content[rel] = content[rel].replace(old, new, 1)
    content.update(files or {})
    for rel, text in content.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load(root: Path, edits: Sequence[Edit] = (),
         files: Mapping[str, str] | None = None) -> Fleet:
    """Write and load the fleet; the loader must have found nothing wrong with it."""
    loaded = load_fleet(write(root, edits, files).resolve())
    assert [d.format() for d in loaded.diagnostics if d.is_error] == []
    return loaded.fleet


def render(fleet: Fleet) -> Rendering:
    """Every instance rendered from its head solution."""
    solutions = {name: fleet.solutions[inst.solution] for name, inst in fleet.instances.items()
                 if inst.solution in fleet.solutions}
    return render_fleet(fleet, solutions)


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and no user configuration."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything under ``repo`` (a repository is made on first use); the commit."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def lines(findings: Findings) -> list[str]:
    """The findings as ``reconciler validate`` prints them, with the pair they concern."""
    return [d.format() + (f" [{d.target}/{d.instance}]" if d.target or d.instance else "")
            for d in findings.sorted()]
