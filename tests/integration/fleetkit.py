"""Helpers for the end-to-end tests of the reconcile loop.

The tests drive the installed ``reconciler`` command the way an operator would: a fleet
repository in a temporary directory (built from Python dicts, or a copy of ``example-repo/``),
pushed to a bare remote; a daemon config per site; ``reconciler sync --once``, ``plan``,
``status`` and ``run`` as child processes; status files read back from the remote's branches.
Nothing of the project is imported here except through the command line, so the tests see
exactly what a user sees. Used by ``test_reconcile.py``, ``test_daemon.py`` and
``test_status_layouts.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_REPO = REPO_ROOT / "example-repo"
# the console script installed next to the interpreter running the tests (the project venv)
RECONCILER = Path(sys.executable).with_name("reconciler")
API = "reconciler/v1"
DEMO_SITE = "lab/lab-hq/demo"
DEMO_BRANCH = "reconciler-status/lab_lab-hq_demo"

_GIT_IDENTITY = {"GIT_AUTHOR_NAME": "fleet admin", "GIT_AUTHOR_EMAIL": "admin@example.net",
                 "GIT_COMMITTER_NAME": "fleet admin",
                 "GIT_COMMITTER_EMAIL": "admin@example.net"}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without anything that would steer git or the daemon
    (a developer's RECONCILER_* or GIT_DIR must not leak into the commands under test)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECONCILER_", "GIT_"))}
    env.update(_GIT_IDENTITY)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=clean_env(), capture_output=True,
                          timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd} failed: "
                             f"{done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


# ---------------------------------------------------------------- manifests as dicts

def doc(kind: str, name: str, spec: Mapping[str, Any] | None = None, *,
        labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    out: dict[str, Any] = {"apiVersion": API, "kind": kind, "metadata": meta}
    if spec is not None:
        out["spec"] = dict(spec)
    return out


def settings(hierarchy: Sequence[str] = ("plant", "line"), **status: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"hierarchy": list(hierarchy),
                            "defaults": {"interval": 60, "jitter": 0, "retries": 1,
                                         "retryDelay": 0.1, "healthTimeout": 10}}
    if status:
        spec["status"] = dict(status)
    return doc("Settings", "fleet", spec)


def site(name: str, parent: str | None = None, *, labels: Mapping[str, str] | None = None,
         params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if parent:
        spec["parent"] = parent
    if params:
        spec["params"] = dict(params)
    return doc("Site", name, spec, labels=labels)


def file_binding(target: str, role: str = "config-file") -> dict[str, Any]:
    return {"role": role, "provider": "file", "config": {"root": f"files/{target}"}}


def script_binding(target: str, role: str = "service") -> dict[str, Any]:
    return {"role": role, "provider": "script",
            "config": {"workdir": f"work/{target}", "timeout": 20}}


def target(name: str, site_name: str, *, labels: Mapping[str, str] | None = None,
           bindings: Sequence[Mapping[str, Any]] | None = None,
           params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"site": site_name,
                            "bindings": list(bindings) if bindings is not None
                            else [file_binding(name)]}
    if params:
        spec["params"] = dict(params)
    return doc("Target", name, spec, labels=labels)


def component(name: str, type_: str, properties: Mapping[str, Any],
              depends_on: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_, "properties": dict(properties)}
    if depends_on:
        out["dependsOn"] = list(depends_on)
    return out


def file_component(name: str, path: str, content: str,
                   depends_on: Sequence[str] = ()) -> dict[str, Any]:
    return component(name, "config-file", {"path": path, "content": content}, depends_on)


def solution(name: str, components: Sequence[Mapping[str, Any]],
             parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return doc("Solution", name, {"parameters": dict(parameters or {}),
                                  "components": list(components)})


def instance(name: str, solution_name: str, *, names: Sequence[str] = (),
             selector: Mapping[str, Any] | None = None,
             params: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An Instance; ``extra`` are more spec keys (``onFailure="stay"``, ``windows=[...]``)."""
    targets: dict[str, Any] = {}
    if names:
        targets["names"] = list(names)
    if selector is not None:
        targets["selector"] = dict(selector)
    spec: dict[str, Any] = {"solution": solution_name, "targets": targets}
    if params:
        spec["params"] = dict(params)
    spec.update(extra)
    return doc("Instance", name, spec)


# ---------------------------------------------------------------- the fleet repository

class FleetRepo:
    """A working repository of fleet manifests (``work``) and the bare remote the site daemons
    fetch from and push status to (``remote``). ``commit`` commits and pushes ``main``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "src"
        self.remote = root / "remote.git"
        self.work.mkdir(parents=True)
        git(self.work, "init", "--quiet", "-b", "main")

    @classmethod
    def from_example(cls, root: Path) -> FleetRepo:
        repo = cls(root)
        shutil.copytree(EXAMPLE_REPO, repo.work, dirs_exist_ok=True)
        repo.commit("fleet from example-repo")
        return repo

    @classmethod
    def from_docs(cls, root: Path, files: Mapping[str, Any]) -> FleetRepo:
        repo = cls(root)
        for rel, content in files.items():
            repo.write(rel, content)
        repo.commit("initial fleet")
        return repo

    @property
    def url(self) -> str:
        return str(self.remote)

    def path(self, rel: str) -> Path:
        return self.work / rel

    def write(self, rel: str, content: str | bytes | Mapping[str, Any]
              | Sequence[Mapping[str, Any]], *, executable: bool = False) -> Path:
        """Write a file of the repository: text as is, a dict as one YAML document, a list of
        dicts as a multi-document YAML file."""
        dest = self.work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            dest.write_bytes(content)
        elif isinstance(content, str):
            dest.write_text(content)
        elif isinstance(content, Mapping):
            dest.write_text(yaml.safe_dump(dict(content), sort_keys=False, allow_unicode=True))
        else:
            dest.write_text(yaml.safe_dump_all([dict(d) for d in content], sort_keys=False,
                                               allow_unicode=True))
        if executable:
            dest.chmod(0o755)
        return dest

    def read(self, rel: str) -> str:
        return (self.work / rel).read_text()

    def replace(self, rel: str, old: str, new: str) -> None:
        """Edit a file by text substitution (keeps comments and line numbers of the rest)."""
        text = self.read(rel)
        assert old in text, f"{old!r} not in {rel}"
        (self.work / rel).write_text(text.replace(old, new, 1))

    def remove(self, rel: str) -> None:
        path = self.work / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def commit(self, message: str) -> str:
        """Commit everything in the work tree and push main to the remote; returns the sha."""
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        if not self.remote.exists():
            git(self.root, "init", "--quiet", "--bare", str(self.remote))
        git(self.work, "push", "--quiet", str(self.remote), "main:main")
        return self.head()

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def remote_head(self, branch: str = "main") -> str | None:
        return branch_head(self.remote, branch)


def branch_head(repo: Path, branch: str) -> str | None:
    out = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return out or None


def branches(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return sorted(out.splitlines())


def status_files(repo: Path, branch: str) -> dict[str, dict[str, Any]]:
    """Every ``status/**.yaml`` on ``branch`` of ``repo``, parsed."""
    names = git(repo, "ls-tree", "-r", "--name-only", f"refs/heads/{branch}").splitlines()
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.startswith("status/") and name.endswith(".yaml"):
            out[name] = yaml.safe_load(git(repo, "show", f"refs/heads/{branch}:{name}"))
    return out


def status_of(repo: Path, site_path: str, target_name: str,
              branch: str | None = None) -> dict[str, Any]:
    """One target's status file, from its site's own branch unless ``branch`` is given."""
    branch = branch or "reconciler-status/" + site_path.replace("/", "_")
    files = status_files(repo, branch)
    key = f"status/{site_path}/{target_name}.yaml"
    assert key in files, f"{key} not on {branch}: {sorted(files)}"
    return files[key]


# ---------------------------------------------------------------- daemon config

DEFAULT_CONFIG: dict[str, Any] = {
    "interval": 60,
    "jitter": 0,
    "retries": {"count": 1, "delay": 0.1, "maxDelay": 1},
    "healthTimeout": 10,
    "healthPollInterval": 0.1,
    "policy": {"allowScripts": True, "fileRoots": ["files"]},
    "listen": {"enabled": False},
    "watch": False,
    "log": {"level": "info", "format": "json"},
}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(path: Path, *, repo: str, site: str, state_dir: Path,
                 **overrides: Any) -> Path:
    """A daemon config for one site with fast test timings; ``overrides`` are merged in
    (keys as in the config file, e.g. ``status={"layout": "shared"}``)."""
    data = _merge(DEFAULT_CONFIG, {"repo": {"url": repo, "ref": "main"}, "site": site,
                                   "stateDir": str(state_dir)})
    data = _merge(data, overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Site:
    """One site daemon's files: its config and state directory."""

    config: Path
    state: Path

    def env(self) -> dict[str, str]:
        """Temporary files of the commands go next to the site, not to the system's /tmp."""
        tmp = self.config.parent / "tmp"
        tmp.mkdir(exist_ok=True)
        return {"TMPDIR": str(tmp)}

    def file(self, target_name: str, rel: str) -> Path:
        return self.state / "files" / target_name / rel

    def work(self, target_name: str) -> Path:
        return self.state / "work" / target_name

    def inventory(self, target_name: str) -> dict[str, Any]:
        raw = json.loads((self.state / "inventory" / f"{target_name}.json").read_text())
        entries: dict[str, Any] = raw["entries"]
        return entries


def make_site(root: Path, name: str, *, repo: str, site: str, **overrides: Any) -> Site:
    state = root / name / "state"
    config = write_config(root / name / "config.yaml", repo=repo, site=site, state_dir=state,
                          **overrides)
    return Site(config, state)


# ---------------------------------------------------------------- the command

@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return parse_events(self.stderr, name, **match)

    def describe(self) -> str:
        return (f"reconciler {' '.join(self.args)} exited {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-6000:]}")


def parse_events(text: str, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (other lines ignored), optionally only event ``name``
    and those whose fields equal ``match``."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if name is not None and event.get("event") != name:
            continue
        if all(event.get(k) == v for k, v in match.items()):
            out.append(event)
    return out


def reconciler_args(*args: str, log_level: str = "info") -> list[str]:
    return [str(RECONCILER), "--log-level", log_level, "--log-format", "json", *args]


def reconciler(*args: str, log_level: str = "info", timeout: float = 90,
               env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """Run the installed ``reconciler`` command and wait for it."""
    done = subprocess.run(reconciler_args(*args, log_level=log_level), env=clean_env(env),
                          cwd=cwd, capture_output=True, timeout=timeout)
    return CliResult(tuple(args), done.returncode, done.stdout.decode(errors="replace"),
                     done.stderr.decode(errors="replace"))


def sync(site_: Site, *, expect: int | None = 0) -> CliResult:
    """``reconciler sync --once`` for a site; asserts the exit code unless ``expect`` is None."""
    result = reconciler("sync", "--once", "--config", str(site_.config), env=site_.env())
    if expect is not None:
        assert result.returncode == expect, result.describe()
    return result


def applied(result: CliResult) -> list[tuple[str, str, str]]:
    """(target, instance, component) of every ``component_applied`` event, in order."""
    return [(e["target"], e["instance"], e["component"])
            for e in result.events("component_applied")]


def pruned(result: CliResult) -> list[tuple[str, str, str]]:
    return [(e["target"], e["instance"], e["component"])
            for e in result.events("component_pruned")]


# ---------------------------------------------------------------- files on disk

@dataclass(frozen=True)
class Stat:
    inode: int
    mtime_ns: int
    data: bytes


def snapshot(root: Path) -> dict[str, Stat]:
    """Every regular file under ``root``: inode, mtime and content (to prove nothing was
    rewritten, not even with the same bytes)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            out[path.relative_to(root).as_posix()] = Stat(st.st_ino, st.st_mtime_ns,
                                                          path.read_bytes())
    return out


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the daemon as a process

class DaemonProcess:
    """``reconciler run --config F`` as a child process; its JSON log goes to a file."""

    def __init__(self, site_: Site, log: Path) -> None:
        self.site = site_
        self.config = site_.config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                reconciler_args("run", "--config", str(self.config)),
                env=clean_env(self.site.env()),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return parse_events(self.text(), name, **match)

    def runs(self) -> list[dict[str, Any]]:
        return self.events("run_finished")

    def wait_runs(self, count: int, timeout: float) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            self.assert_alive()
            found = self.runs()
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = wait_for(enough, timeout, f"{count} run(s)")
        return result

    def assert_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"daemon exited with {code}:\n{self.text()[-6000:]}"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Teardown: whatever state the test left the daemon in, end it (and its children)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_syncs(sites: Iterable[Site]) -> list[tuple[Site, subprocess.Popen[bytes]]]:
    """``reconciler sync --once`` for every site at the same moment (not waited for)."""
    procs = []
    for s in sites:
        proc = subprocess.Popen(reconciler_args("sync", "--once", "--config", str(s.config)),
                                env=clean_env(s.env()), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        procs.append((s, proc))
    return procs
