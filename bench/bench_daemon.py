"""Benchmarks of the site daemon: commit-to-applied latency through the webhook, idle cost,
and memory over 1,000 runs.

Run from the repository root with the project's virtualenv (figures and method: bench/DAEMON.md)::

    .venv/bin/python bench/bench_daemon.py latency [--commits 50] [--spacing 10.5] [--rapid 8]
    .venv/bin/python bench/bench_daemon.py idle [--seconds 60]
    .venv/bin/python bench/bench_daemon.py memory [--runs 1000] [--sample-every 100]
    .venv/bin/python bench/bench_daemon.py all            # the three, one after the other

Every part builds its own site in a temporary directory: a bare "remote" holding
example-repo/, a clone to commit to, and a daemon config for the demo site
``lab/lab-hq/demo`` (file and script targets, ``watch: false`` so only the webhook or the
schedule triggers a run).

* ``latency`` starts ``reconciler run`` (interval 3600 s, a webhook secret, a free loopback
  port); for each of ``--commits`` commits it changes the demo line's ``lineId`` in the clone,
  pushes, sends the signed generic webhook and waits for the gateway's ``signals.yaml`` (the
  first file the change rewrites) and the script target's ``telemetry.env`` (the last
  component applied) to carry the new value, polled every 10 ms. Commits are spaced by
  ``--spacing`` seconds because the receiver earns one trigger token every 10 s (burst 2) and
  the rate limit is not configurable; ``--rapid`` more commits are then pushed one second
  apart to show what the limit does to latency.
* ``idle`` starts the daemon with interval 180 s, waits for its first run, and samples for
  ``--seconds`` its RSS and CPU next to three baselines started at the same time: a bare
  interpreter sleeping, one that imported ``reconciler.daemon.daemon``, and one that also discovered
  (imported) every provider, as the daemon does.
* ``memory`` builds one :class:`~reconciler.engine.pipeline.Reconciler` in this process and calls
  ``run()`` ``--runs`` times (no new commits: every run fetches and drift-checks); a few runs
  fail (the remote is moved away, so fetch and status push fail) and now and then a managed
  file is deleted so the repair path runs too. RSS every ``--sample-every`` runs, tracemalloc
  started after the warm-up, and the allocation sites that grew.

``--json FILE`` writes every figure; the exit status is 1 when a goal is missed (p50 <= 1 s,
idle RSS <= 80 MB, idle CPU < 1 %, RSS growth between run 100 and the last run < 2 MB with no
steadily growing allocation site).
"""

from __future__ import annotations

import argparse
import array
import gc
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from reconciler.daemon.webhooks import sign

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example-repo"
RECONCILER = str(Path(sys.executable).parent / "reconciler")
SITE = "lab/lab-hq/demo"
LINE_ID = re.compile(rb"LAB-DEMO(?:-(\d+))?")  # example-repo has no number: 0
SIGNALS = Path("files/demo-gateway/telemetry/signals.yaml")  # relative to the state dir
SERVICE = Path("work/demo-gateway/service/telemetry.env")
MIB = 1 << 20
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "GIT_CONFIG_NOSYSTEM": "1"}

GOAL_P50 = 1.0
GOAL_IDLE_RSS_MB = 80.0
GOAL_IDLE_CPU_PCT = 1.0
GOAL_GROWTH_MB = 2.0


# -- the site under test -----------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, text=True,
                          capture_output=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BenchSite:
    """A bare remote with example-repo/, a clone to commit to, a daemon config and state dir."""

    root: Path
    remote: Path
    clone: Path
    state: Path
    config: Path
    secret: bytes
    port: int

    @property
    def signals(self) -> Path:
        return self.state / SIGNALS

    @property
    def service(self) -> Path:
        return self.state / SERVICE

    def commit_line_id(self, number: int) -> str:
        """Set the demo line's ``lineId`` to ``LAB-DEMO-<number>``, commit, push; the commit."""
        sites = self.clone / "sites" / "lab.yaml"
        text = re.sub(r"lineId: LAB-DEMO\S*", f"lineId: LAB-DEMO-{number:04d}",
                      sites.read_text())
        sites.write_text(text)
        git("commit", "--quiet", "-am", f"demo line id {number}", cwd=self.clone)
        git("push", "--quiet", "origin", "main", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone)


def make_site(root: Path, *, interval: int) -> BenchSite:
    root.mkdir(parents=True)
    remote, clone, state = root / "remote.git", root / "clone", root / "site"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git("clone", "--quiet", str(remote), str(clone))
    shutil.copytree(EXAMPLE, clone, dirs_exist_ok=True, symlinks=True)
    git("checkout", "--quiet", "-b", "main", cwd=clone)
    git("add", "-A", cwd=clone)
    git("commit", "--quiet", "-m", "The example fleet", cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    secret = os.urandom(24).hex().encode()
    secret_file = root / "webhook.secret"
    secret_file.write_bytes(secret + b"\n")
    secret_file.chmod(0o600)
    port = free_port()
    config = root / "config.yaml"
    # The demo's settings (scripts allowed, files under the state dir), a fixed interval with
    # no jitter so only the webhook triggers a run, and no file watcher on the remote.
    config.write_text(f"""\
repo: {{url: {remote}, ref: main}}
site: {SITE}
stateDir: {state}
interval: {interval}
jitter: 0
retries: {{count: 2, delay: 1}}
healthTimeout: 30
status: {{layout: per-site, push: true}}
policy:
  fileRoots: [files]
  allowScripts: true
listen: {{address: 127.0.0.1, port: {port}}}
webhook: {{secretFile: {secret_file}}}
watch: false
log: {{format: json, level: info}}
""")
    return BenchSite(root, remote, clone, state, config, secret, port)


@contextmanager
def running_daemon(site: BenchSite, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``reconciler run`` on the site until the block ends (SIGTERM, then SIGKILL)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen([RECONCILER, "run", "--config", str(site.config)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=site.root)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(site: BenchSite, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    """Wait for ``/readyz`` (the first run has finished); the seconds it took."""
    started = time.perf_counter()
    url = f"http://127.0.0.1:{site.port}/readyz"
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the daemon was not ready after {timeout:.0f}s")


def send_webhook(site: BenchSite, after: str, delivery: str) -> int:
    """POST the signed generic push notification; the HTTP status."""
    body = json.dumps({"ref": "refs/heads/main", "after": after}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{site.port}/hooks/git", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Reconciler-Delivery": delivery,
                 "X-Reconciler-Signature": "sha256=" + sign(site.secret, body)})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def daemon_runs(log_path: Path) -> list[dict[str, Any]]:
    """The ``run_finished`` events of a daemon's JSON log."""
    runs = []
    for line in log_path.read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "run_finished":
            runs.append(event)
    return runs


# -- latency -----------------------------------------------------------------------------------
class FilePoller:
    """Reads the line id in a file every ``period`` seconds and remembers when each id first
    showed (the file provider writes atomically, so a read never sees half a file)."""

    def __init__(self, path: Path, period: float = 0.01) -> None:
        self.path = path
        self.period = period
        self.seen: dict[int, float] = {}  # line id -> perf_counter when first read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"poll-{path.name}",
                                        daemon=True)

    def __enter__(self) -> FilePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                found = LINE_ID.search(self.path.read_bytes())
            except OSError:
                found = None
            if found is not None:
                self.seen.setdefault(int(found.group(1) or 0), time.perf_counter())
            self._stop.wait(self.period)

    def reached(self, number: int) -> float | None:
        """When the file first showed ``number`` or a later id (coalesced runs skip ids)."""
        times = [t for n, t in self.seen.items() if n >= number]
        return min(times) if times else None

    def wait(self, number: int, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            found = self.reached(number)
            if found is not None:
                return found
            time.sleep(self.period)
        return None


@dataclass(frozen=True)
class CommitSample:
    number: int
    phase: str  # "spaced" or "rapid"
    webhook_status: int
    push_seconds: float  # how long the commit and push in the clone took
    file_from_push: float | None  # push completed -> signals.yaml rewritten
    file_from_webhook: float | None  # webhook sent -> signals.yaml rewritten
    service_from_push: float | None  # push completed -> the script target's env rewritten


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        # nearest rank: the value below which q of the samples fall
        return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 3),
            "p95": round(pick(0.95), 3), "max": round(ordered[-1], 3),
            "min": round(ordered[0], 3)}


def measure_latency(work: Path, commits: int, spacing: float, rapid: int,
                    rapid_spacing: float) -> dict[str, Any]:
    site = make_site(work / "latency", interval=3600)
    log_path = site.root / "daemon.log"
    samples: list[CommitSample] = []
    with running_daemon(site, log_path) as proc, \
            FilePoller(site.signals) as files, FilePoller(site.service) as service:
        first_run = wait_ready(site, proc)
        if files.wait(0, 30) is None:
            raise RuntimeError(f"{site.signals} was not written by the first run")
        # let the first run's status push finish and the token bucket fill up again
        time.sleep(spacing)
        plan = [(n, "spaced", spacing) for n in range(1, commits + 1)]
        plan += [(n, "rapid", rapid_spacing) for n in range(commits + 1, commits + rapid + 1)]
        sent: list[tuple[int, str, int, float, float, float]] = []
        next_send = time.perf_counter()
        for number, phase, gap in plan:
            pause = next_send - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            before = time.perf_counter()
            after = site.commit_line_id(number)
            pushed = time.perf_counter()
            hooked = time.perf_counter()
            status = send_webhook(site, after, f"bench-{number}")
            sent.append((number, phase, status, pushed - before, pushed, hooked))
            next_send = pushed + gap
            if phase == "spaced" and files.wait(number, 60) is not None:
                service.wait(number, 60)  # the run is over before the next commit
        last = plan[-1][0] if plan else 0
        files.wait(last, 60)
        service.wait(last, 60)
        time.sleep(0.5)
    for number, phase, status, push_seconds, pushed, hooked in sent:
        at_file, at_service = files.reached(number), service.reached(number)
        samples.append(CommitSample(
            number, phase, status, round(push_seconds, 4),
            round(at_file - pushed, 4) if at_file is not None else None,
            round(at_file - hooked, 4) if at_file is not None else None,
            round(at_service - pushed, 4) if at_service is not None else None))
    runs = daemon_runs(log_path)
    result: dict[str, Any] = {"first_run_ready_s": round(first_run, 3), "runs": len(runs),
                              "run_duration": percentiles([float(r["duration"]) for r in runs
                                                           if "duration" in r])}
    for phase in ("spaced", "rapid"):
        chosen = [s for s in samples if s.phase == phase]
        if not chosen:
            continue
        result[phase] = {
            "commits": len(chosen),
            "webhook_status": {str(code): sum(1 for s in chosen if s.webhook_status == code)
                               for code in sorted({s.webhook_status for s in chosen})},
            "missed": sum(1 for s in chosen if s.file_from_push is None),
            "push": percentiles([s.push_seconds for s in chosen]),
            "file_from_push": percentiles([s.file_from_push for s in chosen
                                           if s.file_from_push is not None]),
            "file_from_webhook": percentiles([s.file_from_webhook for s in chosen
                                              if s.file_from_webhook is not None]),
            "service_from_push": percentiles([s.service_from_push for s in chosen
                                              if s.service_from_push is not None]),
        }
    result["samples"] = [asdict(s) for s in samples]
    return result


# -- idle cost ---------------------------------------------------------------------------------
BASELINES: dict[str, str] = {
    "python_sleep": "import sys, time; print('ready', flush=True); time.sleep(float(sys.argv[1]))",
    "import_daemon": ("import sys, time, reconciler.daemon.daemon; print('ready', flush=True); "
                      "time.sleep(float(sys.argv[1]))"),
    "import_daemon_and_providers": (
        "import sys, time, reconciler.daemon.daemon; "
        "from reconciler.core.registry import ProviderRegistry; ProviderRegistry.discover(); "
        "print('ready', flush=True); time.sleep(float(sys.argv[1]))"),
}


@dataclass
class ProcessSample:
    name: str
    pid: int
    rss_mb: list[float] = field(default_factory=list)
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    threads: int = 0

    def summary(self, wall: float) -> dict[str, Any]:
        return {"pid": self.pid, "rss_max_mb": round(max(self.rss_mb), 1),
                "rss_final_mb": round(self.rss_mb[-1], 1),
                "cpu_seconds": round(self.cpu_end - self.cpu_start, 3),
                "cpu_pct": round(100 * (self.cpu_end - self.cpu_start) / wall, 3),
                "threads": self.threads}


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def measure_idle(work: Path, seconds: float) -> dict[str, Any]:
    site = make_site(work / "idle", interval=180)
    log_path = site.root / "daemon.log"
    baselines: list[subprocess.Popen[str]] = []
    with running_daemon(site, log_path) as proc:
        first_run = wait_ready(site, proc)
        try:
            for code in BASELINES.values():
                baselines.append(subprocess.Popen(
                    [sys.executable, "-c", code, str(seconds + 30)], stdout=subprocess.PIPE,
                    text=True, cwd=ROOT))
            for child in baselines:
                assert child.stdout is not None
                if child.stdout.readline().strip() != "ready":
                    raise RuntimeError("a baseline process failed to start")
            time.sleep(1.0)  # the first run's log lines and the baselines' imports settle
            watched = [("daemon", psutil.Process(proc.pid))] + [
                (name, psutil.Process(child.pid)) for name, child in zip(BASELINES, baselines,
                                                                          strict=True)]
            samples = [ProcessSample(name, p.pid) for name, p in watched]
            for sample, (_, p) in zip(samples, watched, strict=True):
                sample.cpu_start = cpu_seconds(p)
            started = time.perf_counter()
            while True:
                for sample, (_, p) in zip(samples, watched, strict=True):
                    sample.rss_mb.append(p.memory_info().rss / MIB)
                if time.perf_counter() - started >= seconds:
                    break
                time.sleep(1.0)
            wall = time.perf_counter() - started
            for sample, (_, p) in zip(samples, watched, strict=True):
                sample.cpu_end = cpu_seconds(p)
                sample.threads = p.num_threads()
        finally:
            for child in baselines:
                child.kill()
                child.wait()
    runs = daemon_runs(log_path)
    return {"seconds": round(wall, 1), "first_run_ready_s": round(first_run, 3),
            "daemon_runs": len(runs),
            "processes": {s.name: s.summary(wall) for s in samples}}


# -- memory over many runs ---------------------------------------------------------------------
def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss / MIB)


@dataclass(frozen=True)
class Checkpoint:
    run: int
    rss_mb: float
    traced_mb: float  # allocated since tracemalloc started and still alive (the bench's own
    # allocations left out)
    tracemalloc_overhead_mb: float  # tracemalloc's own bookkeeping (part of the RSS)
    elapsed_s: float


def _without_bench(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """Leave out what this benchmark allocates itself (its samples, tracemalloc's results)."""
    return snapshot.filter_traces([tracemalloc.Filter(False, __file__),
                                   tracemalloc.Filter(False, tracemalloc.__file__)])


def _site_stats(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes of live blocks per allocation line.

    Only strings and ints are kept: a tuple or float the benchmark keeps may be a block
    recycled from CPython's free lists, which tracemalloc still charges to the line that first
    allocated it (a pipeline line), and it would then look like growth there.
    """
    return {f"{s.traceback[0].filename}:{s.traceback[0].lineno}": s.size
            for s in snapshot.statistics("lineno")}


def measure_memory(work: Path, runs: int, sample_every: int, warmup: int, fail_every: int,
                   fail_runs: int, drift_every: int, frames: int,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    # imported here so the other parts do not load the pipeline into the bench process
    from reconciler.core.registry import ProviderRegistry
    from reconciler.daemon.config import load_config
    from reconciler.daemon.logs import configure_logging
    from reconciler.daemon.metrics import Metrics
    from reconciler.engine.pipeline import Reconciler
    from reconciler.engine.status import Phase

    site = make_site(work / "memory", interval=180)
    log_file = (site.root / "runs.log").open("w")
    configure_logging("info", "json", stream=log_file)
    config = load_config(site.config, environ={})
    reconciler = Reconciler(config.engine_settings(), ProviderRegistry.discover(),
                            observer=Metrics(phases=[p.value for p in Phase]))
    away = site.remote.with_name("remote.git.away")
    checkpoints: list[Checkpoint] = []
    per_site: dict[int, dict[str, int]] = {}
    failed_runs = fetch_errors = repaired = not_ready = 0
    durations = array.array("d")  # no float objects kept (see _site_stats)
    base_snapshot: tracemalloc.Snapshot | None = None
    last_snapshot: tracemalloc.Snapshot | None = None
    started = time.perf_counter()
    try:
        for run in range(1, runs + 1):
            failing = fail_every > 0 and fail_every // 2 <= run % fail_every \
                < fail_every // 2 + fail_runs
            recovering = not failing and away.exists()
            if failing and site.remote.exists():
                site.remote.rename(away)  # fetch and status push now fail
            elif not failing and away.exists():
                away.rename(site.remote)
            if drift_every and run % drift_every == drift_every // 4:
                site.signals.unlink(missing_ok=True)  # drift: the next run must rewrite it
            t0 = time.perf_counter()
            # failing runs, and the first after the server is back, ask the server at once
            # (as a webhook or `reconciler sync` would) instead of waiting out the fetch
            # backoff; the others are scheduled runs
            summary = reconciler.run("sync" if failing or recovering else "schedule")
            durations.append(time.perf_counter() - t0)
            failed_runs += bool(summary.fetch_error)
            fetch_errors += failing
            repaired += sum(r.applied for r in summary.results)
            not_ready += not summary.ok
            if run == warmup and frames > 0:
                gc.collect()
                sys._clear_type_cache()
                tracemalloc.start(frames)
                base_snapshot = _without_bench(tracemalloc.take_snapshot())
                per_site[run] = _site_stats(base_snapshot)
            if run % sample_every == 0 or run == runs:
                gc.collect()
                # CPython's type attribute cache (4,096 entries) holds on to attribute-name
                # strings that C code created while a pipeline line ran (e.g. "utcoffset" for
                # a log timestamp); they would read as slow growth at that line until the
                # entry is reused. Bounded, so not measured.
                sys._clear_type_cache()
                rss = rss_mb()
                traced = overhead = 0
                if tracemalloc.is_tracing():
                    overhead = tracemalloc.get_tracemalloc_memory()
                    last_snapshot = _without_bench(tracemalloc.take_snapshot())
                    per_site[run] = _site_stats(last_snapshot)
                    traced = sum(per_site[run].values())
                checkpoints.append(Checkpoint(run, round(rss, 2), round(traced / MIB, 3),
                                              round(overhead / MIB, 2),
                                              round(time.perf_counter() - started, 1)))
                progress(f"run {run}: rss {checkpoints[-1].rss_mb:.1f} MB, traced "
                         f"{checkpoints[-1].traced_mb:.2f} MB, "
                         f"{checkpoints[-1].elapsed_s:.0f} s")
    finally:
        if away.exists():
            away.rename(site.remote)
        tracemalloc.stop()
        log_file.close()
    wall = time.perf_counter() - started
    return {"runs": runs, "wall_s": round(wall, 1), "warmup": warmup,
            "run_duration": percentiles(list(durations)),
            "runs_with_fetch_error": failed_runs, "runs_made_to_fail": fetch_errors,
            "components_repaired": repaired, "runs_not_all_ready": not_ready,
            "checkpoints": [asdict(c) for c in checkpoints],
            **_growth(checkpoints, warmup, per_site, base_snapshot, last_snapshot)}


def _growth(checkpoints: list[Checkpoint], warmup: int,
            per_site: dict[int, dict[str, int]],
            base: tracemalloc.Snapshot | None, last: tracemalloc.Snapshot | None
            ) -> dict[str, Any]:
    after = [c for c in checkpoints if c.run >= warmup]
    if len(after) < 2:
        return {}
    first, final = after[0], after[-1]
    xs = [float(c.run) for c in after]
    # raw RSS, tracemalloc's own bookkeeping included: the verdict can only be stricter
    ys = [c.rss_mb for c in after]
    slope = statistics.linear_regression(xs, ys).slope if len(after) > 2 else \
        (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    runs_order = sorted(per_site)
    # A site that grew at (nearly) every checkpoint by 10 KiB or more in all is "growing" when
    # the second half of the checkpoints added at least half as much as the first half (a
    # leak keeps its pace), and "levelling off" otherwise (a cache or pool filling up).
    growing: list[dict[str, Any]] = []
    levelling: list[dict[str, Any]] = []
    if len(runs_order) >= 3:
        middle = len(runs_order) // 2
        for key in per_site[runs_order[-1]]:
            sizes = [per_site[r].get(key, 0) for r in runs_order]
            steps = [b - a for a, b in itertools.pairwise(sizes)]
            rising = sum(1 for s in steps if s > 0)
            if rising < max(1, len(steps) - 1) or sizes[-1] - sizes[0] < 10 * 1024:
                continue
            entry = {"site": key, "kb": [round(s / 1024, 1) for s in sizes], "runs": runs_order}
            early, late = sizes[middle] - sizes[0], sizes[-1] - sizes[middle]
            (growing if late >= 0.5 * early else levelling).append(entry)
    top: list[dict[str, Any]] = []
    if base is not None and last is not None:
        for stat in last.compare_to(base, "traceback")[:10]:
            top.append({"size_diff_kb": round(stat.size_diff / 1024, 1),
                        "count_diff": stat.count_diff,
                        "traceback": [f"{f.filename}:{f.lineno}"
                                      for f in stat.traceback][-6:]})
    grown = ys[-1] - ys[0]
    return {"rss_growth_mb": round(grown, 2),
            "tracemalloc_overhead_growth_mb": round(
                final.tracemalloc_overhead_mb - first.tracemalloc_overhead_mb, 2),
            "rss_slope_mb_per_1000_runs": round(slope * 1000, 3),
            "traced_growth_mb": round(final.traced_mb - first.traced_mb, 3),
            "growing_sites": growing, "levelling_sites": levelling, "top_growth": top,
            "verdict": "no growth" if grown < GOAL_GROWTH_MB and not growing else "grows"}


# -- the machine and the report ----------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model,
            "ram_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0],
            "git": git("--version").removeprefix("git version "),
            "revision": git("describe", "--always", "--dirty", cwd=ROOT)}


def goals(results: dict[str, Any]) -> list[str]:
    """The goals missed, as sentences."""
    missed = []
    spaced = results.get("latency", {}).get("spaced", {})
    p50 = spaced.get("file_from_push", {}).get("p50")
    if p50 is not None and p50 > GOAL_P50:
        missed.append(f"latency p50 {p50} s > {GOAL_P50} s")
    daemon = results.get("idle", {}).get("processes", {}).get("daemon")
    if daemon is not None:
        if daemon["rss_max_mb"] > GOAL_IDLE_RSS_MB:
            missed.append(f"idle RSS {daemon['rss_max_mb']} MB > {GOAL_IDLE_RSS_MB} MB")
        if daemon["cpu_pct"] >= GOAL_IDLE_CPU_PCT:
            missed.append(f"idle CPU {daemon['cpu_pct']} % >= {GOAL_IDLE_CPU_PCT} %")
    memory = results.get("memory", {})
    if memory.get("verdict") == "grows":
        missed.append(f"memory grows: {memory.get('rss_growth_mb')} MB, "
                      f"{len(memory.get('growing_sites', []))} growing allocation sites")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["latency", "idle", "memory", "all"])
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--spacing", type=float, default=10.5,
                        help="seconds between webhooks (one trigger token per 10 s)")
    parser.add_argument("--rapid", type=int, default=8,
                        help="commits pushed --rapid-spacing apart after the spaced ones")
    parser.add_argument("--rapid-spacing", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="idle sampling time")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=100,
                        help="runs before tracemalloc starts and growth is counted")
    parser.add_argument("--fail-every", type=int, default=100,
                        help="in every block of this many runs, --fail-runs fail (0: none)")
    parser.add_argument("--fail-runs", type=int, default=3)
    parser.add_argument("--drift-every", type=int, default=100,
                        help="delete a managed file once per this many runs (0: never)")
    parser.add_argument("--frames", type=int, default=8,
                        help="tracemalloc traceback depth (0: no tracemalloc, RSS only)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    results: dict[str, Any] = {"machine": machine()}
    try:
        if args.part in ("latency", "all"):
            progress(f"latency: {args.commits} spaced + {args.rapid} rapid commits")
            results["latency"] = measure_latency(work, args.commits, args.spacing, args.rapid,
                                                 args.rapid_spacing)
        if args.part in ("idle", "all"):
            progress(f"idle: {args.seconds:.0f} s")
            results["idle"] = measure_idle(work, args.seconds)
        if args.part in ("memory", "all"):
            progress(f"memory: {args.runs} runs")
            results["memory"] = measure_memory(
                work, args.runs, args.sample_every, args.warmup, args.fail_every,
                args.fail_runs, args.drift_every, args.frames, progress)
    finally:
        if args.keep:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["goals_missed"] = goals(results)
    shown = {k: ({kk: vv for kk, vv in v.items() if kk != "samples"}
                 if isinstance(v, dict) else v) for k, v in results.items()}
    print(json.dumps(shown, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if results["goals_missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
