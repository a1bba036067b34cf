"""Benchmark of the offline plan of a pull request on a generated fleet of 10,000 targets.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_plan.py [--targets 10000] [--runs 3] [--json]

The fleet is bench/fleetgen.py's shape with 100 targets per line (5 regions x 4 factories x
5 lines): 10,000 targets, 50 solutions, 100 instances. It is committed to a git repository,
then one solution's parameter default is changed in a second commit (``retention.days`` of
``sol-07``, which no level overrides: every target of that solution's instances changes).
Measured, each as ``reconciler plan --repo R --base B --head H --format markdown`` in a
fresh process, median of ``--runs``:

* **one solution changed**: the base validated in full, its pairs rendered by two processes
  at once (the default on a machine with two CPUs) and by one (``--jobs 1``); the head for
  the cost of what differs (documents and placements whose inputs are unchanged are taken
  from the base);
* **nothing changed** (a commit that touches only a file the fleet ignores): the base
  validated, the head taken from it, nothing to describe; the difference between the two is
  what the change itself costs;
* ``reconciler validate`` of the fleet, as the cost of one validation.

Per run: wall time; CPU time of the process and its children (``wait4``); peak memory,
sampled every 20 ms over the process tree: the largest process's RSS and the tree's total
PSS (proportional set size: pages the processes share are counted once, so the total is what
the machine needs). The machine is shared: compare wall times only within one run of this
script, and read CPU time next to them.

Goals: <= 10 s and <= 500 MB for the plan with one solution changed. Exit status 1 when a
goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from benchkit import cpu_model, ram_gb  # noqa: E402

GOAL_SECONDS = 10.0
GOAL_MB = 500.0
COMMAND = str(Path(sys.executable).parent / "reconciler")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "model": cpu_model(), "ram_gb": ram_gb(),
            "python": platform.python_version(), "load_avg": round(os.getloadavg()[0], 2)}


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.net",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.net"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repository(root: Path, targets: int) -> tuple[Path, str, str, str, Any]:
    """The generated fleet committed as ``base``; ``same``, a commit that changes nothing
    deployed (a file the fleet ignores); ``head`` with one solution changed."""
    from fleetgen import FleetShape, generate

    repo = root / "fleet"
    shape = generate(repo, FleetShape(targets_per_line=max(1, targets // 100)))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fleet")
    base = _git(repo, "rev-parse", "HEAD")
    notes = repo / "docs/notes.yaml"
    notes.write_text(notes.read_text() + "reviewed: yes\n")
    _git(repo, "commit", "-qam", "docs only")
    same = _git(repo, "rev-parse", "HEAD")
    solution = repo / "solutions/sol-07/solution.yaml"
    text = solution.read_text()
    assert "days: 7" in text
    solution.write_text(text.replace("days: 7", "days: 14", 1))
    _git(repo, "commit", "-qam", "sol-07: keep two weeks")
    return repo, base, same, _git(repo, "rev-parse", "HEAD"), shape


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            for child in children:
                out += _tree(int(child))
    except OSError:
        pass
    return out


def _field(path: str, name: str) -> float:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) / 1024  # kB -> MB
    except (OSError, ValueError):
        pass
    return 0.0


def measure(argv: list[str]) -> dict[str, Any]:
    """One run of ``argv``: wall, CPU (with its children), peak RSS and peak tree PSS."""
    peaks = {"rss": 0.0, "pss": 0.0}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = _tree(proc.pid)
            peaks["rss"] = max([peaks["rss"], *(_field(f"/proc/{p}/status", "VmRSS:")
                                                for p in pids)])
            peaks["pss"] = max(peaks["pss"], sum(_field(f"/proc/{p}/smaps_rollup", "Pss:")
                                                 for p in pids))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        raise SystemExit(f"{' '.join(argv)} exited {code}:\n{stderr}")
    return {"wall_s": elapsed, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": peaks["rss"], "pss_total_mb": peaks["pss"], "exit": code}


def median_of(argv: list[str], runs: int) -> dict[str, Any]:
    samples = [measure(argv) for _ in range(runs)]
    out = {key: statistics.median(s[key] for s in samples)
           for key in ("wall_s", "cpu_s", "rss_mb", "pss_total_mb")}
    out["wall_min_s"] = min(s["wall_s"] for s in samples)
    out["wall_max_s"] = max(s["wall_s"] for s in samples)
    out["exit"] = samples[0]["exit"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="offline plan benchmark")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-plan-") as tmp:
        repo, base, same, head, shape = make_repository(Path(tmp), args.targets)
        results["shape"] = {**shape.__dict__, "targets": shape.targets}
        plan = [COMMAND, "plan", "--repo", str(repo), "--format", "markdown"]
        out = subprocess.run([*plan, "--base", base, "--head", head, "--format", "json"],
                             capture_output=True, text=True, check=False)
        summary = json.loads(out.stdout)["summary"]
        results["changed"] = {"targets": summary["changed"],
                              "components": summary["components"]["change"]}
        results["validate"] = median_of([COMMAND, "validate", str(repo)], args.runs)
        results["plan_unchanged"] = median_of([*plan, "--base", base, "--head", same],
                                              args.runs)
        results["plan_one_solution"] = median_of([*plan, "--base", base, "--head", head],
                                                 args.runs)
        results["plan_one_solution_jobs1"] = median_of(
            [*plan, "--base", base, "--head", head, "--jobs", "1"], args.runs)
    one = results["plan_one_solution"]
    results["change_cost"] = {
        "wall_s": one["wall_s"] - results["plan_unchanged"]["wall_s"],
        "cpu_s": one["cpu_s"] - results["plan_unchanged"]["cpu_s"]}
    goals = {"time": one["wall_s"] <= GOAL_SECONDS, "memory": one["pss_total_mb"] <= GOAL_MB}
    results["goals_met"] = goals
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        m = results["machine"]
        print(f"machine: {m['cpus']} CPUs, {m['model']}, {m['ram_gb']} GB RAM, Python "
              f"{m['python']}, load average {m['load_avg']:.2f}")
        print(f"fleet: {shape.targets} targets, {shape.solutions} solutions, "
              f"{shape.instances} instances; the change: {results['changed']['targets']} "
              f"targets, {results['changed']['components']} components")
        print(f"median of {args.runs}            wall        CPU   largest RSS  total PSS")
        for name, key in (("validate (one revision)", "validate"),
                          ("plan, nothing changed", "plan_unchanged"),
                          ("plan, one solution", "plan_one_solution"),
                          ("plan, one solution, --jobs 1", "plan_one_solution_jobs1")):
            r = results[key]
            print(f"  {name:<29} {r['wall_s']:6.1f} s {r['cpu_s']:7.1f} s {r['rss_mb']:8.0f} MB"
                  f" {r['pss_total_mb']:7.0f} MB")
        cost = results["change_cost"]
        print(f"  the change itself             {cost['wall_s']:6.1f} s {cost['cpu_s']:7.1f} s")
        print(f"goal time (plan, one solution, <= {GOAL_SECONDS:.0f} s wall): "
              f"{'met' if goals['time'] else 'MISSED'}")
        print(f"goal memory (plan, one solution, <= {GOAL_MB:.0f} MB total PSS): "
              f"{'met' if goals['memory'] else 'MISSED'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
