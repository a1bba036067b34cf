"""Benchmark of the reconcile loop: one daemon serving a 1,000-target fleet of file components.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_reconcile.py [--runs 5] [--json] [--keep DIR]

Builds, in a temporary directory, the fleet of bench/fleetgen.py with one Instance of a
5-component solution selected for every target (so each target has exactly 5 ``file``
components, bound with the relative root ``files/<target>``), under a top-level root site
``fleet`` added above fleetgen's regions so that one daemon serves the whole fleet; commits it
to a bare git remote and writes a daemon config (``site: fleet``, ``policy.fileRoots:
[files]``, listener off, status pushed to the same remote). Then measures, each in a fresh
subprocess so that peak RSS is the process's own, median of ``--runs``:

1. first run: clone, load + validate + render, apply 5,000 files, status commit and push;
2. a no-op run in the same process right after: every file observed (hashed), nothing
   written, no status commit (checked: remote status branch unchanged, every managed file's
   and inventory file's mtime unchanged, 5,000 observe calls, 0 applies);
3. a no-op run in a new process on the applied state (start-up, loading, the run);

next to baselines measured in the same run, since the machine is shared and noisy: a plain
Python loop reading and hashing the same 5,000 files in a fresh interpreter, and the start-up
of ``python -c "import reconciler.engine.pipeline"``. Finally profiles a no-op run (in-process and
new-process) with cProfile: the top 15 functions by cumulative time and the share of each
stage (fetch, load + validate + render, observe, health, status, state files).

Goals: no-op run <= 1 s, peak RSS <= 150 MB. Exit status 1 when a goal is missed or a check
fails. Results and how to read them: bench/RECONCILE.md.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from benchkit import cpu_model, ram_gb, spread, work_dir  # noqa: E402
from fleetgen import FleetShape, file_binding, generate  # noqa: E402

GOAL_NOOP_SECONDS = 1.0
GOAL_RSS_MB = 150.0
COMPONENTS_PER_TARGET = 5
ROOT_SITE = "fleet"
STATUS_BRANCH = f"refs/heads/reconciler-status/{ROOT_SITE}"
API = "reconciler/v1"


# ---------------------------------------------------------------- the fleet and the site

def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "bench",
                               "GIT_AUTHOR_EMAIL": "bench@localhost",
                               "GIT_COMMITTER_NAME": "bench",
                               "GIT_COMMITTER_EMAIL": "bench@localhost"})
    return done.stdout.strip()


def build_fleet(work: Path, targets_per_line: int = 10) -> tuple[Path, FleetShape]:
    """The generated fleet, reshaped for one daemon and 5 components a target; its remote.
    (``targets_per_line``: 10 gives fleetgen's 1,000 targets, 1 gives 100, 50 gives 5,000.)"""
    repo = work / "repo"
    # no generated instances: they overlap (a target gets 0 to ~15 components); one is added
    shape = generate(repo, FleetShape(instances=0, targets_per_line=targets_per_line),
                     provider="file", binding_config=file_binding("files"))
    settings_file = repo / "reconciler.yaml"
    settings = list(yaml.safe_load_all(settings_file.read_text()))
    settings[0]["spec"]["hierarchy"] = [ROOT_SITE, *settings[0]["spec"]["hierarchy"]]
    settings_file.write_text(yaml.safe_dump_all(settings, sort_keys=False))
    for region_file in sorted((repo / "sites").glob("*.yaml")):
        docs = list(yaml.safe_load_all(region_file.read_text()))
        for doc in docs:
            if doc["kind"] == "Site" and "parent" not in doc["spec"]:
                doc["spec"]["parent"] = ROOT_SITE
        region_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    (repo / "sites" / f"{ROOT_SITE}.yaml").write_text(yaml.safe_dump(
        {"apiVersion": API, "kind": "Site", "metadata": {"name": ROOT_SITE}, "spec": {}},
        sort_keys=False))
    for stale in (repo / "instances").glob("*.yaml"):
        stale.unlink()
    (repo / "instances" / "agents.yaml").write_text(yaml.safe_dump(
        {"apiVersion": API, "kind": "Instance", "metadata": {"name": "agents"},
         "spec": {"solution": "sol-00", "profile": "small",
                  "targets": {"selector": {"sites": [ROOT_SITE]}}}}, sort_keys=False))
    _git("init", "--quiet", "--initial-branch=main", cwd=repo)
    _git("add", "--all", cwd=repo)
    _git("commit", "--quiet", "--message", "generated fleet", cwd=repo)
    remote = work / "remote.git"
    _git("init", "--quiet", "--bare", str(remote), cwd=work)
    _git("push", "--quiet", str(remote), "main", cwd=repo)
    return remote, shape


def write_config(path: Path, remote: Path, state: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "repo": {"url": str(remote), "ref": "main"},
        "site": ROOT_SITE,
        "stateDir": str(state),
        "policy": {"fileRoots": ["files"]},
        "listen": {"enabled": False},
        "status": {"push": True},
        "watch": False,
        "log": {"format": "json", "level": "info"},
    }, sort_keys=False))
    return path


def status_head(remote: Path) -> tuple[str, int]:
    """The remote status branch's tip and its number of commits."""
    tip = _git("rev-parse", "--verify", "--quiet", STATUS_BRANCH, cwd=remote)
    return tip, int(_git("rev-list", "--count", tip, cwd=remote))


def mtimes(state: Path) -> dict[str, int]:
    """mtime of every managed file and every inventory file under a state directory."""
    out: dict[str, int] = {}
    for sub in ("files", "inventory"):
        for dirpath, _, names in os.walk(state / sub):
            for name in names:
                full = os.path.join(dirpath, name)
                out[full] = os.stat(full, follow_symlinks=False).st_mtime_ns
    return out


# ---------------------------------------------------------------- the child processes

def _daemon(config_path: Path) -> Any:
    """A Reconciler as the daemon builds it, logging JSON lines (to /dev/null)."""
    from reconciler.core.registry import default_registry
    from reconciler.daemon.config import load_config
    from reconciler.daemon.logs import configure_logging
    from reconciler.engine.pipeline import Reconciler

    configure_logging("info", "json", open(os.devnull, "w"))  # noqa: SIM115 - process-long
    return Reconciler(load_config(config_path).engine_settings(), default_registry())


def _summarise(summary: Any) -> dict[str, Any]:
    per_target = [len(r.components) for r in summary.results]
    calls: dict[str, int] = {}
    for result in summary.results:
        for name, count in result.provider_calls.items():
            calls[name] = calls.get(name, 0) + count
    return {"seconds": summary.duration, "phases": summary.counts(),
            "targets": len(summary.statuses), "components": sum(per_target),
            "per_target": [min(per_target, default=0), max(per_target, default=0)],
            "applied": sum(r.applied for r in summary.results),
            "drifted": sum(r.drifted for r in summary.results),
            "calls": calls, "status_commit": summary.status_commit,
            "pushed": summary.status_pushed}


def _timed_run(daemon: Any, reason: str) -> dict[str, Any]:
    """One run; with the CPU time this process spent in it (git children not included)."""
    cpu = time.process_time()
    out = _summarise(daemon.run(reason))
    out["cpu"] = time.process_time() - cpu
    return out


def child_first(config_path: Path, remote: Path, state: Path) -> dict[str, Any]:
    daemon = _daemon(config_path)
    first = _timed_run(daemon, "sync")
    head_after_first = status_head(remote)
    before = mtimes(state)
    noop = _timed_run(daemon, "schedule")
    after = mtimes(state)
    changed = sorted(p for p, m in after.items() if before.get(p) != m)
    return {"first": first, "noop": noop, "status_after_first": head_after_first,
            "status_after_noop": status_head(remote), "files": len(after),
            "changed": changed[:10], "changed_count": len(changed) + len(set(before) - set(after)),
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_noop(config_path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    daemon = _daemon(config_path)  # imports, config, provider discovery, state files
    startup = time.perf_counter() - started
    noop = _timed_run(daemon, "schedule")
    return {"startup": startup, "noop": noop,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_hash(files_root: Path) -> dict[str, Any]:
    """Baseline: read and hash every file under ``files_root``, nothing else."""
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    for dirpath, _, names in os.walk(files_root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as handle:
                hashlib.sha256(handle.read()).hexdigest()
            count += 1
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "files": count,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


STAGES: list[tuple[str, str, str]] = [  # label, file suffix, function
    ("fetch (git fetch + resolve)", "reconciler/engine/fetching.py", "fetch"),
    ("load + validate + render", "reconciler/engine/revisions.py", "get"),
    ("executor (all targets)", "reconciler/engine/executing.py", "reconcile_target"),
    ("  file observe (render + hash)", "providers/file.py", "observe"),
    ("  file health (hash again)", "providers/file.py", "health"),
    ("  provider construction", "providers/file.py", "__init__"),
    ("  inventory load", "reconciler/engine/inventory.py", "load"),
    ("status build + digest", "reconciler/engine/reconciling.py", "reconcile"),
    ("status render + publish", "reconciler/engine/publishing.py", "publish"),
    ("state file write", "reconciler/engine/state_store.py", "save"),
    ("checkout pruning", "reconciler/gitops/source.py", "prune_checkouts"),
]


def child_profile(config_path: Path, warm: bool) -> dict[str, Any]:
    """cProfile of one no-op run, after a warm-up run in the same process when ``warm``."""
    daemon = _daemon(config_path)
    if warm:
        daemon.run("schedule")
    profile = cProfile.Profile()
    profile.enable()
    summary = daemon.run("schedule")
    profile.disable()
    stats = pstats.Stats(profile)
    # (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = \
        stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _, ct, _) in raw.values())

    def cumulative(suffix: str, func: str) -> float:
        return sum(v[3] for (file, _, name), v in raw.items()
                   if name == func and file.replace(os.sep, "/").endswith(suffix))

    shares = [(label, cumulative(suffix, func)) for label, suffix, func in STAGES]
    # reconcile includes the executor: the status part is what is left of it
    executor = cumulative("reconciler/engine/executing.py", "reconcile_target")
    shares = [(label, value - executor if label.startswith("status build") else value)
              for label, value in shares]
    top = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)[:15]
    return {"applied": _summarise(summary)["applied"], "total": total,
            "stages": shares,
            "top": [(_where(file, line, name), v[1], v[3]) for (file, line, name), v in top]}


def _where(file: str, line: int, name: str) -> str:
    for prefix in (str(ROOT) + os.sep, "site-packages" + os.sep):
        if prefix in file:
            file = file.split(prefix, 1)[1]
    return f"{file}:{line}({name})" if line else name


# ---------------------------------------------------------------- the parent

def spawn(*args: str) -> tuple[dict[str, Any], float]:
    """Run this file as a child; returns its JSON answer and its wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1]), wall


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "ram_gb": ram_gb(),
            "python": platform.python_version(), "load": os.getloadavg()}


def checks(first: dict[str, Any], shape: FleetShape) -> list[str]:
    """What a first run plus an in-process no-op run must have done; the failures."""
    problems = []
    run, noop = first["first"], first["noop"]
    expected = shape.targets * COMPONENTS_PER_TARGET
    if run["phases"] != {"Ready": shape.targets} or run["applied"] != expected:
        problems.append(f"first run: phases {run['phases']}, {run['applied']} applied "
                        f"(expected {shape.targets} Ready, {expected} applied)")
    if run["per_target"] != [COMPONENTS_PER_TARGET, COMPONENTS_PER_TARGET]:
        problems.append(f"components per target {run['per_target']}, expected 5")
    if not run["pushed"] or first["status_after_first"][1] != 1:
        problems.append(f"first run: status not pushed as one commit "
                        f"({first['status_after_first']})")
    if noop["applied"] or noop["calls"].get("observe") != expected:
        problems.append(f"no-op run: {noop['applied']} applied, "
                        f"{noop['calls'].get('observe')} observed (expected 0, {expected})")
    if first["status_after_noop"] != first["status_after_first"]:
        problems.append("no-op run made a status commit")
    if first["changed_count"]:
        problems.append(f"no-op run changed {first['changed_count']} files: {first['changed']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child)

    with work_dir(args.keep, "bench-reconcile-") as work:
        results = measure(work, args.runs)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0 if results["goals_met"] and not results["problems"] else 1


def _child(argv: list[str]) -> int:
    mode, *rest = argv
    if mode == "first":
        out = child_first(Path(rest[0]), Path(rest[1]), Path(rest[2]))
    elif mode == "noop":
        out = child_noop(Path(rest[0]))
    elif mode == "hash":
        out = child_hash(Path(rest[0]))

    else:
        out = child_profile(Path(rest[0]), warm=mode == "profile-warm")
    print(json.dumps(out))
    return 0


def measure(work: Path, runs: int) -> dict[str, Any]:
    remote, shape = build_fleet(work)
    firsts: list[dict[str, Any]] = []
    problems: list[str] = []
    state = work / "state"
    config = work / "config.yaml"
    for i in range(runs):
        shutil.rmtree(state, ignore_errors=True)
        if i:  # each first run starts a status branch, as a new site does
            _git("update-ref", "-d", STATUS_BRANCH, cwd=remote)
        write_config(config, remote, state)
        out, _ = spawn("first", str(config), str(remote), str(state))
        problems += checks(out, shape)
        firsts.append(out)
    # the state of the last first run stays: new-process no-op runs start from it
    head, files = status_head(remote), mtimes(state)
    noops = [spawn("noop", str(config)) for _ in range(runs)]
    if status_head(remote) != head:
        problems.append("a new-process no-op run made a status commit")
    changed = [p for p, m in mtimes(state).items() if files.get(p) != m]
    if changed:
        problems.append(f"new-process no-op runs changed {len(changed)} files: {changed[:5]}")
    for out, _ in noops:
        if out["noop"]["applied"] or out["noop"]["phases"] != {"Ready": shape.targets}:
            problems.append(f"new-process no-op run: {out['noop']}")
    hashes = [spawn("hash", str(state / "files"))[0] for _ in range(runs)]
    import_wall = wall([sys.executable, "-c", "import reconciler.engine.pipeline"], runs)
    python_wall = wall([sys.executable, "-c", "pass"], runs)
    warm, _ = spawn("profile-warm", str(config))
    cold, _ = spawn("profile-cold", str(config))

    noop_in = [f["noop"]["seconds"] for f in firsts]
    rss = [f["maxrss_mb"] for f in firsts] + [n["maxrss_mb"] for n, _ in noops]
    goals_met = (statistics.median(noop_in) <= GOAL_NOOP_SECONDS
                 and max(rss) <= GOAL_RSS_MB)
    return {
        "machine": machine(), "runs": runs, "targets": shape.targets,
        "components": firsts[0]["first"]["components"],
        "per_target": firsts[0]["first"]["per_target"], "files": firsts[0]["files"],
        "first_run_s": spread([f["first"]["seconds"] for f in firsts]),
        "first_run_cpu_s": spread([f["first"]["cpu"] for f in firsts]),
        "noop_same_process_s": spread(noop_in),
        "noop_same_process_cpu_s": spread([f["noop"]["cpu"] for f in firsts]),
        "noop_new_process_wall_s": spread([w for _, w in noops]),
        "noop_new_process_run_s": spread([n["noop"]["seconds"] for n, _ in noops]),
        "noop_new_process_run_cpu_s": spread([n["noop"]["cpu"] for n, _ in noops]),
        "noop_new_process_startup_s": spread([n["startup"] for n, _ in noops]),
        "peak_rss_first_mb": spread([f["maxrss_mb"] for f in firsts]),
        "peak_rss_new_process_noop_mb": spread([n["maxrss_mb"] for n, _ in noops]),
        "baseline_hash_s": spread([h["seconds"] for h in hashes]),
        "baseline_hash_cpu_s": spread([h["cpu"] for h in hashes]),
        "baseline_hash_rss_mb": statistics.median(h["maxrss_mb"] for h in hashes),
        "baseline_import_pipeline_s": import_wall, "baseline_python_s": python_wall,
        "profile_noop_same_process": warm, "profile_noop_new_process": cold,
        "status_commits_after_all": status_head(remote)[1],
        "goals_met": goals_met, "problems": problems,
    }


def report(r: dict[str, Any]) -> None:
    def s(key: str, unit: str = "s") -> str:
        v = r[key]
        return f"{v['median']:.3f} {unit} (min {v['min']:.3f}, max {v['max']:.3f})"

    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM, Python "
          f"{m['python']}, load average {m['load'][0]:.2f}")
    print(f"fleet: {r['targets']} targets, {r['components']} file components "
          f"({r['per_target'][0]}-{r['per_target'][1]} per target); {r['files']} managed "
          f"and inventory files mtime-checked; medians of {r['runs']} runs")
    print(f"first run (clone, validate, apply, status push): {s('first_run_s')}")
    print(f"  CPU time of that run (the rest: I/O, git):     {s('first_run_cpu_s')}")
    print(f"no-op run, same process:                         {s('noop_same_process_s')}"
          f"   goal <= {GOAL_NOOP_SECONDS:g} s")
    print(f"  CPU time of that run:                          {s('noop_same_process_cpu_s')}")
    print(f"no-op run, new process (wall, all of it):        {s('noop_new_process_wall_s')}")
    print(f"  of which imports, config, registry, state:     {s('noop_new_process_startup_s')}")
    print(f"  of which the run (incl. load + validate):      {s('noop_new_process_run_s')}")
    print(f"  CPU time of that run:                          {s('noop_new_process_run_cpu_s')}")
    print(f"peak RSS, first + no-op process:                 {s('peak_rss_first_mb', 'MB')}"
          f"   goal <= {GOAL_RSS_MB:g} MB")
    print(f"peak RSS, new-process no-op:                     "
          f"{s('peak_rss_new_process_noop_mb', 'MB')}")
    print(f"baseline: read + sha256 of the same files:       {s('baseline_hash_s')}, "
          f"{r['baseline_hash_rss_mb']:.0f} MB, CPU {r['baseline_hash_cpu_s']['median']:.3f} s")
    print(f"baseline: python -c 'import reconciler.engine.pipeline': "
          f"{r['baseline_import_pipeline_s']:.3f} s (python -c pass: "
          f"{r['baseline_python_s']:.3f} s)")
    for key, title in (("profile_noop_same_process", "no-op run, same process"),
                       ("profile_noop_new_process", "no-op run, new process")):
        prof = r[key]
        print(f"\nprofile of a {title} (cProfile, {prof['total']:.3f} s under the profiler):")
        for label, value in prof["stages"]:
            print(f"  {label:<34} {value:7.3f} s {100 * value / prof['total']:5.1f} %")
        print("  top 15 by cumulative time:")
        for where, calls, cum in prof["top"]:
            print(f"    {cum:7.3f} s {calls:>7}  {where}")
    print()
    for problem in r["problems"]:
        print(f"CHECK FAILED: {problem}")
    print("goals met" if r["goals_met"] else "GOAL MISSED")


if __name__ == "__main__":
    sys.exit(main())
