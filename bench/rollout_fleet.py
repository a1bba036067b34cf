"""The parts of the rollout benchmark (``bench/bench_rollout.py``): a git server, a fleet of
site daemons and what the remote says about them.

* :class:`GitServer`: ``git daemon --verbose`` on 127.0.0.1 serving one directory. Its log is
  read line by line as it is written and each ``Request <service> for '<path>'`` line is
  stamped with the wall clock: the requests of a time window, per service and per path. Every
  site reaches the same bare remote through a path of its own (a symbolic link,
  ``site-03.git -> remote.git``), so the path names the site. :meth:`GitServer.cpu` is the CPU
  time of the server and of every child it reaped (``git daemon --serve``, ``upload-pack``,
  ``pack-objects``, ``receive-pack``...), read from ``/proc``.
* :class:`SiteDaemon`: ``reconciler run`` for one site as a child process, its JSON log in a
  file (runs are read back from its ``run_finished`` lines).
* :class:`StatusWatcher`: notes when each status branch of the remote moves (its ref file read
  every 50 ms), and what the status files at each new tip say, so the moment a target is Ready
  on a release is the moment the remote first held that status.
* :func:`write_large_remote`: a bare remote as a large fleet's server holds it (status branches
  of every site, release and approval tags), through one ``git fast-import``.

Nothing here imports the project: the daemons are driven through the installed command, the
repository through git, as an operator would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import yaml

RECONCILER = str(Path(sys.executable).with_name("reconciler"))
API = "reconciler/v1"
STATUS_PREFIX = "reconciler-status/"
_IDENTITY = {"GIT_AUTHOR_NAME": "fleet admin", "GIT_AUTHOR_EMAIL": "admin@example.net",
             "GIT_COMMITTER_NAME": "fleet admin", "GIT_COMMITTER_EMAIL": "admin@example.net"}
_REQUEST = re.compile(r"^\[\d+\] Request ([a-z-]+) for '/?([^']*)'")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without anything that steers git or the daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "GIT_"))}
    env.update(_IDENTITY, GIT_CONFIG_NOSYSTEM="1")
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=clean_env(), input=input,
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed: "
                           f"{done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_id(site_path: str) -> str:
    """The status branch name part of a site (``fab/line-01`` -> ``fab_line-01``)."""
    return site_path.strip("/").replace("/", "_")


# ---------------------------------------------------------------- the git server

@dataclass(frozen=True)
class Request:
    at: float  # wall clock (time.time()) when the server logged it
    service: str  # "upload-pack" (fetch, ls-remote) or "receive-pack" (push)
    path: str  # the repository path asked for, without the leading "/"


class GitServer:
    """``git daemon`` serving every repository under ``base`` read-write (module docstring)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "git-daemon.log"
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> GitServer:
        # git-daemon itself, not the "git" that would start it as a child: the CPU of the
        # requests is counted in the process that reaps them
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                   check=True).stdout.strip()
        self.proc = subprocess.Popen(
            [str(Path(exec_path) / "git-daemon"), "--reuseaddr", f"--base-path={self.base}",
             "--export-all", "--enable=receive-pack", f"--port={self.port}", "--listen=127.0.0.1",
             "--verbose", "--informative-errors", str(self.base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=clean_env(), start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="git-daemon-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("git daemon did not start")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log.open("wb") as copy:
            for raw in self.proc.stderr:
                now = time.time()
                copy.write(f"{now:.3f} ".encode() + raw)
                found = _REQUEST.match(raw.decode(errors="replace"))
                if found is not None:
                    with self._lock:
                        self._requests.append(Request(now, found.group(1), found.group(2)))

    def requests(self, start: float = 0.0, end: float = float("inf")) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if start <= r.at < end]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds of the server and of every child it has reaped so far."""
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no connection is being served (every child reaped), so that :meth:`cpu`
        counts every request made so far."""
        deadline = time.monotonic() + timeout
        # the server is one thread: its task's children are all of them (cheaper to read
        # than a scan of every process)
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        while children.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None:
            # its own session: the daemon and the children serving connections go together
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            if self._reader is not None:
                self._reader.join(timeout=5)
            self.proc = None


# ---------------------------------------------------------------- manifests

def doc(kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": dict(spec)}


def write_yaml(path: Path, docs: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False))


# ---------------------------------------------------------------- a site daemon

@dataclass(frozen=True)
class Run:
    """One run of a daemon, from its ``run_finished`` line (wall clock)."""

    start: float
    end: float
    applied: int


class SiteDaemon:
    """``reconciler run`` for one site (module docstring)."""

    def __init__(self, root: Path, site_path: str, url: str, interval: int,
                 extra: Mapping[str, Any] | None = None) -> None:
        self.site_path = site_path
        self.root = root
        self.state = root / "state"
        self.config = root / "config.yaml"
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        self.config.write_text(yaml.safe_dump({
            "repo": {"url": url, "ref": "main"}, "site": site_path,
            "stateDir": str(self.state), "interval": interval, "jitter": 0,
            "retries": {"count": 1, "delay": 0.1, "maxDelay": 1}, "healthTimeout": 10,
            "status": {"layout": "per-site", "push": True},
            "policy": {"fileRoots": ["files"]}, "listen": {"enabled": False},
            "watch": False, "log": {"level": "info", "format": "json"}, **(extra or {})},
            sort_keys=False))

    def start(self) -> SiteDaemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [RECONCILER, "run", "--config", str(self.config)],
                env=clean_env({"TMPDIR": str(self.root / "tmp")}), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        """CPU seconds of the daemon and of the children it reaped (its git processes)."""
        if not self.alive():
            return 0.0
        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def runs(self) -> list[Run]:
        out = []
        for line in self.log.read_bytes().splitlines():
            if b'"run_finished"' not in line:
                continue
            try:
                event = json.loads(line)
                end = dt.datetime.fromisoformat(str(event["timestamp"])).timestamp()
                out.append(Run(end - float(event["duration"]), end,
                               int(event.get("applied") or 0)))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ---------------------------------------------------------------- what the remote says

@dataclass(frozen=True)
class Reported:
    """What one status file at one tip of its site's branch says of the instance."""

    target: str
    phase: str  # the target's phase
    instance_phase: str
    release: str
    last_change: str  # the daemon's own stamp (1 s resolution)


class StatusWatcher:
    """Notes each move of the status branches of ``sites`` in the bare ``remote``, and when
    each target was first reported Ready on each release (module docstring)."""

    def __init__(self, remote: Path, sites: Mapping[str, Sequence[str]], instance: str,
                 period: float = 0.05) -> None:
        self.remote = remote
        self.sites = sites  # site path -> its targets
        self.instance = instance
        self.period = period
        self.moves: list[tuple[float, str, str]] = []  # (wall clock, site path, commit)
        self.ready: dict[tuple[str, str], float] = {}  # (target, release) -> first seen
        self.latest: dict[str, Reported] = {}  # target -> its newest report
        self._done = 0  # moves read so far
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="status-refs", daemon=True)

    def __enter__(self) -> StatusWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tip(self, site_path: str) -> str | None:
        ref = f"refs/heads/{STATUS_PREFIX}{site_id(site_path)}"
        try:
            return (self.remote / ref).read_text().strip() or None
        except OSError:  # not pushed yet, or packed (receive-pack never packs refs itself)
            packed = self.remote / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None

    def _poll(self) -> None:
        seen: dict[str, str | None] = {}
        while not self._stop.is_set():
            for site_path in self.sites:
                tip = self._tip(site_path)
                if tip is not None and tip != seen.get(site_path):
                    seen[site_path] = tip
                    with self._lock:
                        self.moves.append((time.time(), site_path, tip))
            self._stop.wait(self.period)

    def update(self) -> None:
        """Read the status files of the tips noted since the last call."""
        with self._lock:
            new, self._done = self.moves[self._done:], len(self.moves)
        for at, site_path, tip in new:
            names = [f"{tip}:status/{site_path}/{t}.yaml" for t in self.sites[site_path]]
            for target, raw in zip(self.sites[site_path], _cat_files(self.remote, names),
                                   strict=True):
                if raw is None:
                    continue
                status = yaml.safe_load(raw) or {}
                inst = (status.get("instances") or {}).get(self.instance) or {}
                seen = Reported(target, str(status.get("phase", "")),
                                str(inst.get("phase", "")), str(inst.get("release", "")),
                                str(status.get("lastChange", "")))
                self.latest[target] = seen
                if seen.phase == "Ready" and seen.instance_phase == "Ready":
                    self.ready.setdefault((target, seen.release), at)

    def all_ready(self, release: str) -> bool:
        self.update()
        return all((t, release) in self.ready for ts in self.sites.values() for t in ts)


def _cat_files(repo: Path, names: Sequence[str]) -> Iterator[bytes | None]:
    """The content of each ``<commit>:<path>`` (None when missing), by one cat-file."""
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, env=clean_env(),
                         input=("\n".join(names) + "\n").encode(), capture_output=True,
                         check=True).stdout
    pos = 0
    for _ in names:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        if len(header) != 3:  # "<name> missing"
            pos = eol + 1
            yield None
            continue
        size = int(header[2])
        yield out[eol + 1:eol + 1 + size]
        pos = eol + 1 + size + 1


# ---------------------------------------------------------------- a large fleet's remote

@dataclass(frozen=True)
class LargeFleet:
    """The shape of :func:`write_large_remote`'s repository."""

    regions: int = 10
    plants: int = 10  # per region
    lines: int = 10  # per plant: regions x plants x lines sites
    targets: int = 3  # per site
    solutions: int = 50
    releases: int = 10  # per solution: annotated tags <solution>/v1.<n>.0
    instances: int = 100
    approved_releases: int = 5  # per instance, the last ones
    gated_waves: int = 2  # waves with approval: true, one approval tag each per release

    @property
    def sites(self) -> int:
        return self.regions * self.plants * self.lines

    def site_paths(self) -> list[str]:
        return [f"r{r:02d}/r{r:02d}-p{p:02d}/r{r:02d}-p{p:02d}-l{li:02d}"
                for r in range(self.regions) for p in range(self.plants)
                for li in range(self.lines)]


def status_text(target: str, site_path: str, revision: str, instance: str, release: str,
                when: str, phase: str = "Ready") -> str:
    """A status file as a daemon writes it (one instance of two file components)."""
    components = "".join(
        f"    - name: {c}\n      provider: file\n      phase: {phase}\n"
        f"      revision: {revision}\n      message: ''\n" for c in ("screen", "settings"))
    return (f"apiVersion: {API}\nkind: TargetStatus\nmetadata:\n  name: {target}\n"
            f"site: {site_path}\ntarget: {target}\nphase: {phase}\nmessage: ''\n"
            f"observedRevision: {revision}\nappliedRevision: {revision}\n"
            f"lastGoodRevision: {revision}\nlastChange: '{when}'\ninstances:\n"
            f"  {instance}:\n    solution: panel\n    phase: {phase}\n    release: {release}\n"
            f"    revision: {revision}\n    components:\n{components}")


def write_large_remote(remote: Path, shape: LargeFleet,
                       moves: Mapping[str, tuple[int, Sequence[str]]] | None = None
                       ) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """A bare remote of ``shape`` written by one ``git fast-import``:

    * ``main``: a fleet model (sites, targets, solutions, instances in files of their own),
      with one commit per solution release, each release tagged ``<solution>/v1.<n>.0``
      (annotated); then, per instance, ``approved_releases`` x ``gated_waves`` approval tags
      ``reconciler-approval/<instance>/<wave>/<release>/<who>`` (annotated, with a signature's
      worth of text, at the last commit);
    * one status branch per site, ``reconciler-status/<site id>``: a status file per target
      and the site's heartbeat file;
    * every ref loose (``pack_tags`` packs the tags, as a server's ``git gc`` does);
    * ``moves``: for each name, (rounds, sites): a status commit per round on the branch of
      each of the sites (a newer ``lastChange``), each on top of the one before (names in the
      order given), left unreferenced so that no request sees them until a benchmark moves a
      branch to one (``git update-ref``, without the server).

    Returns counts of what was written, and per move name and round ``{site path: commit}``.
    """
    subprocess.run(["git", "init", "--bare", "--quiet", str(remote)], check=True)
    marks_file = remote / "bench-marks"
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done",
                             f"--export-marks={marks_file}"], stdin=subprocess.PIPE,
                            env={**clean_env(), "GIT_DIR": str(remote)})
    assert proc.stdin is not None
    out = proc.stdin
    now = int(time.time())
    mark = 0

    def data(text: str) -> None:
        raw = text.encode()
        out.write(f"data {len(raw)}\n".encode() + raw + b"\n")

    def commit(ref: str, when: int, message: str, files: Mapping[str, str],
               parent: int | None = None) -> int:
        nonlocal mark
        mark += 1
        out.write(f"commit {ref}\nmark :{mark}\ncommitter reconciler <r@localhost> {when} "
                  "+0000\n".encode())
        data(message)
        if parent is not None:
            out.write(f"from :{parent}\n".encode())
        for path, content in files.items():
            out.write(f"M 100644 inline {path}\n".encode())
            data(content)
        return mark

    def tag(name: str, target: int, when: int, message: str) -> None:
        out.write(f"tag {name}\nfrom :{target}\ntagger fleet admin <admin@example.net> "
                  f"{when} +0000\n".encode())
        data(message)

    paths = shape.site_paths()
    revision = "0" * 40  # the status files name a commit of main; which one does not matter
    files = {"reconciler.yaml": yaml.safe_dump(doc("Settings", "fleet", {
        "hierarchy": ["region", "plant", "line"]}))}
    for r in range(shape.regions):
        region = [p for p in paths if p.startswith(f"r{r:02d}/")]
        sites = [doc("Site", f"r{r:02d}", {})]
        sites += [doc("Site", f"r{r:02d}-p{p:02d}", {"parent": f"r{r:02d}"})
                  for p in range(shape.plants)]
        sites += [doc("Site", p.rsplit("/", 1)[1], {"parent": p.split("/")[1]})
                  for p in region]
        files[f"sites/r{r:02d}.yaml"] = yaml.safe_dump_all(sites, sort_keys=False)
        files[f"targets/r{r:02d}.yaml"] = yaml.safe_dump_all(
            [doc("Target", f"{p.rsplit('/', 1)[1]}-t{t}", {
                "site": p.rsplit("/", 1)[1],
                "bindings": [{"role": "config-file", "provider": "file",
                              "config": {"root": f"files/t{t}"}}]})
             for p in region for t in range(shape.targets)], sort_keys=False)
    for s in range(shape.solutions):
        files[f"solutions/sol-{s:02d}/solution.yaml"] = _solution_text(s, 0)
    files["instances.yaml"] = yaml.safe_dump_all(
        [doc("Instance", f"inst-{i:03d}", {
            "solution": f"sol-{i % shape.solutions:02d}",
            "version": f"1.{shape.releases - 1}.0",
            "targets": {"selector": {"sites": [f"r{i % shape.regions:02d}"]}},
            "rollout": {"approvers": ["ops@example.net"], "waves": [
                {"name": "canary", "share": "1%", "approval": shape.gated_waves > 0},
                {"name": "tenth", "share": "10%", "approval": shape.gated_waves > 1}]}})
         for i in range(shape.instances)], sort_keys=False)
    when = now - 86400 * 365
    head = commit("refs/heads/main", when, "fleet", files)
    tags = 0
    for n in range(shape.releases):
        for s in range(shape.solutions):
            when += 600
            head = commit("refs/heads/main", when, f"sol-{s:02d} 1.{n}.0",
                          {f"solutions/sol-{s:02d}/solution.yaml": _solution_text(s, n)},
                          parent=head)
            tag(f"sol-{s:02d}/v1.{n}.0", head, when, f"sol-{s:02d} 1.{n}.0")
            tags += 1
    approvals = 0
    for i in range(shape.instances):
        for n in range(shape.releases - shape.approved_releases, shape.releases):
            for wave in ("canary", "tenth")[:shape.gated_waves]:
                tag(f"reconciler-approval/inst-{i:03d}/{wave}/1.{n}.0/ops@example.net", head,
                    when, f"approve inst-{i:03d} {wave} 1.{n}.0\n\n" + _FAKE_SIGNATURE)
                approvals += 1
    stamp = dt.datetime.fromtimestamp(now - 600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tips: dict[str, int] = {}
    for index, path in enumerate(paths):
        inst = f"inst-{index % shape.instances:03d}"
        status = {f"status/{path}/{path.rsplit('/', 1)[1]}-t{t}.yaml": status_text(
            f"{path.rsplit('/', 1)[1]}-t{t}", path, revision, inst,
            f"1.{shape.releases - 1}.0", stamp) for t in range(shape.targets)}
        status[f"status/{path}/.heartbeat"] = (
            f"apiVersion: {API}\nkind: SiteHeartbeat\nsite: {path}\nheartbeat: '{stamp}'\n")
        tips[path] = commit(f"refs/heads/{STATUS_PREFIX}{site_id(path)}", now - 600,
                            "status", status)
    made: dict[str, list[dict[str, int]]] = {}
    step = 0
    for name, (rounds, moving) in (moves or {}).items():
        for _ in range(rounds):
            step += 1
            moved = dt.datetime.fromtimestamp(now + step, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            this: dict[str, int] = {}
            for site_path in moving:
                first = f"{site_path.rsplit('/', 1)[1]}-t0"
                this[site_path] = tips[site_path] = commit(
                    "refs/bench/moves", now + step, "status",
                    {f"status/{site_path}/{first}.yaml": status_text(
                        first, site_path, revision, "inst-000", f"1.{shape.releases}.0", moved,
                        phase="Waiting")}, parent=tips[site_path])
            made.setdefault(name, []).append(this)
    out.write(b"done\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    shas = dict(line.split()[:2] for line in marks_file.read_text().splitlines())
    marks_file.unlink()
    if made:
        git(remote, "update-ref", "-d", "refs/bench/moves")
    commits = {name: [{p: shas[f":{m}"] for p, m in r.items()} for r in rounds_made]
               for name, rounds_made in made.items()}
    return ({"sites": len(paths), "status_branches": len(paths), "release_tags": tags,
             "approval_tags": approvals, "main_commits": 1 + shape.releases * shape.solutions},
            commits)


def _solution_text(index: int, release: int) -> str:
    return yaml.safe_dump(doc("Solution", f"sol-{index:02d}", {
        "parameters": {"rate": {"type": "integer", "default": 10 + release}},
        "components": [{"name": f"c{c}", "type": "config-file", "properties": {
            "path": f"c{c}.conf", "content": f"rate ${{{{ params.rate }}}} c{c} r{release}\n"}}
            for c in range(5)]}), sort_keys=False)


# the size of an SSH signature block of an approval tag (the content does not matter here)
_FAKE_SIGNATURE = ("-----BEGIN SSH SIGNATURE-----\n"
                   + "\n".join("U1NIU0lH" * 9 for _ in range(5))
                   + "\n-----END SSH SIGNATURE-----\n")


def pack_tags(remote: Path) -> None:
    """Pack the tags (with their peeled commits) and leave the branches loose, as on a
    server some time after its last ``git gc``: each site's push has rewritten its own
    branch since, and main moves with every commit."""
    git(remote, "pack-refs")
