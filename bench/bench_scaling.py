"""Benchmark of idle runs against the fleet size: 100, 1,000 and 5,000 targets x 5 files.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_scaling.py [--sizes 100,1000,5000] [--runs 3] [--json]

For each size, the fleet of bench/bench_reconcile.py (fleetgen's hierarchy with 1, 10 or 50
targets per line, one 5-file instance on every target, one daemon serving all of them) is
built and pushed to a local bare remote, then, each in a new process:

1. **a daemon's life**: the first run (validate, apply every file, push status), then
   ``--runs`` idle runs in the same process: their CPU time per target, and the process's
   peak RSS (``VmHWM``);
2. **a daemon restarted** on the applied state: its first run (the revision validated
   again, nothing applied), then ``--runs`` idle runs: CPU per target and peak RSS, which is
   what a site daemon serving that many targets holds;
3. **the limit**: read + sha256 of the same files in a plain Python loop (CPU time).

Every idle run is checked: every target Ready, 5 observes per target, nothing applied.
Goals (the issue's): CPU per target flat across sizes (5,000 within 1.25 x of 100), the
idle run within 3 x the limit at every size, peak RSS of the restarted daemon <= 150 MB at
5,000 targets. Exit status 1 when a goal is missed or a check fails. Timings are CPU time
(``time.process_time``): the machine is shared; wall time is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_reconcile import (  # noqa: E402
    COMPONENTS_PER_TARGET,
    _daemon,
    _timed_run,
    build_fleet,
    child_hash,
    machine,
    write_config,
)

GOAL_FLAT = 1.25  # CPU per target at the largest size over that at the smallest
GOAL_RATIO = 3.0  # idle run CPU over the limit's
GOAL_RSS_MB = 150.0
TARGETS_PER_LINE = {100: 1, 1000: 10, 5000: 50}  # fleetgen has 100 lines


def vm_hwm_mb() -> float:
    """Peak RSS of this process (``VmHWM``: unlike ``ru_maxrss`` it is not carried over
    from the parent across fork + exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_life(config_path: Path, idle_runs: int) -> dict[str, Any]:
    daemon = _daemon(config_path)
    first = _timed_run(daemon, "sync")
    first_mb = vm_hwm_mb()
    idles = [_walled(daemon) for _ in range(idle_runs)]
    return {"first": first, "idle": idles, "first_hwm_mb": first_mb, "hwm_mb": vm_hwm_mb()}


def child_restart(config_path: Path, idle_runs: int) -> dict[str, Any]:
    daemon = _daemon(config_path)
    cold = _timed_run(daemon, "schedule")
    idles = [_walled(daemon) for _ in range(idle_runs)]
    return {"cold": cold, "idle": idles, "hwm_mb": vm_hwm_mb()}


def _walled(daemon: Any) -> dict[str, Any]:
    started = time.perf_counter()
    out = _timed_run(daemon, "schedule")
    out["wall"] = time.perf_counter() - started
    return out


def spawn(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def check_idle(runs: list[dict[str, Any]], targets: int, where: str) -> list[str]:
    problems = []
    for run in runs:
        if (run["phases"] != {"Ready": targets} or run["applied"]
                or run["calls"].get("observe") != targets * COMPONENTS_PER_TARGET):
            problems.append(f"{where}: an idle run was not idle: phases {run['phases']}, "
                            f"{run['applied']} applied, calls {run['calls']}")
    return problems


def measure(work: Path, sizes: list[int], runs: int) -> dict[str, Any]:
    rows = []
    problems: list[str] = []
    for size in sizes:
        sub = work / f"fleet-{size}"
        remote, shape = build_fleet(sub, TARGETS_PER_LINE[size])
        config = write_config(sub / "config.yaml", remote, sub / "state")
        life = spawn("life", str(config), str(runs))
        restart = spawn("restart", str(config), str(runs))
        limit = [spawn("hash", str(sub / "state" / "files")) for _ in range(runs)]
        problems += check_idle(life["idle"], shape.targets, f"{size} targets, same process")
        problems += check_idle(restart["idle"], shape.targets, f"{size} targets, restarted")
        idle_cpu = statistics.median(r["cpu"] for r in life["idle"] + restart["idle"])
        limit_cpu = statistics.median(h["cpu"] for h in limit)
        rows.append({
            "targets": shape.targets, "files": shape.targets * COMPONENTS_PER_TARGET,
            "first_run_cpu_s": life["first"]["cpu"],
            "idle_cpu_s": idle_cpu,
            "idle_wall_s": statistics.median(r["wall"] for r in life["idle"] + restart["idle"]),
            "idle_cpu_ms_per_target": 1000 * idle_cpu / shape.targets,
            "limit_cpu_s": limit_cpu, "ratio_to_limit": idle_cpu / limit_cpu,
            "restart_first_run_cpu_s": restart["cold"]["cpu"],
            "peak_rss_life_mb": life["hwm_mb"], "peak_rss_after_first_run_mb":
                life["first_hwm_mb"], "peak_rss_restarted_mb": restart["hwm_mb"],
        })
        shutil.rmtree(sub, ignore_errors=True)
    per_target = [r["idle_cpu_ms_per_target"] for r in rows]
    flat = per_target[-1] / per_target[0] if len(rows) > 1 else 1.0
    largest = rows[-1]
    goals = {
        "flat": flat <= GOAL_FLAT,
        "ratio": all(r["ratio_to_limit"] <= GOAL_RATIO for r in rows),
        "rss": largest["targets"] < 5000 or largest["peak_rss_restarted_mb"] <= GOAL_RSS_MB,
    }
    return {"machine": machine(), "runs": runs, "rows": rows, "flatness": flat,
            "goals": goals, "goals_met": all(goals.values()), "problems": problems}


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM, Python "
          f"{m['python']}, load average {m['load'][0]:.2f}; medians of {r['runs']} idle runs "
          "in each of two processes")
    print(f"{'targets':>8} {'files':>6} {'idle CPU':>9} {'per target':>11} {'limit':>7} "
          f"{'ratio':>6} {'idle wall':>9} {'RSS life':>9} {'RSS restart':>11} "
          f"{'1st run CPU':>11}")
    for row in r["rows"]:
        print(f"{row['targets']:>8} {row['files']:>6} {row['idle_cpu_s']:>8.3f}s "
              f"{row['idle_cpu_ms_per_target']:>8.3f} ms {row['limit_cpu_s']:>6.3f}s "
              f"{row['ratio_to_limit']:>5.2f}x {row['idle_wall_s']:>8.3f}s "
              f"{row['peak_rss_life_mb']:>6.0f} MB {row['peak_rss_restarted_mb']:>8.0f} MB "
              f"{row['first_run_cpu_s']:>10.2f}s")
    goals = r["goals"]
    print(f"\nCPU per target, largest over smallest size: {r['flatness']:.2f} "
          f"(goal <= {GOAL_FLAT}): {'met' if goals['flat'] else 'MISSED'}")
    print(f"idle run within {GOAL_RATIO:g} x the limit at every size: "
          f"{'met' if goals['ratio'] else 'MISSED'}")
    print(f"peak RSS of a restarted daemon at 5,000 targets <= {GOAL_RSS_MB:g} MB: "
          f"{'met' if goals['rss'] else 'MISSED'}")
    for problem in r["problems"]:
        print(f"CHECK FAILED: {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000",
                        help="fleet sizes, from " + ", ".join(map(str, TARGETS_PER_LINE)))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "life":
            out = child_life(Path(rest[0]), int(rest[1]))
        elif mode == "restart":
            out = child_restart(Path(rest[0]), int(rest[1]))
        else:
            out = child_hash(Path(rest[0]))
        print(json.dumps(out))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    unknown = [s for s in sizes if s not in TARGETS_PER_LINE]
    if unknown:
        parser.error(f"sizes must be among {sorted(TARGETS_PER_LINE)}: {unknown}")
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        results = measure(work, sizes, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0 if results["goals_met"] and not results["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
