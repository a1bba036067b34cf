"""Benchmark of the fleet model: load + validate + render a generated 1,000-target fleet.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_model.py [--runs 5] [--cli-runs 10] [--json]

Measures, on a fleet written by bench/fleetgen.py into a temporary directory:

* in-process time of load, validate (which renders every (instance, target) pair) and the
  total, median of ``--runs`` runs, after provider discovery (a daemon has done that once);
* peak RSS of a fresh interpreter doing the same, median of ``--runs`` subprocesses, next to
  the peak RSS of an interpreter that only imports the model (the baseline);
* wall time of ``reconciler validate example-repo`` as a subprocess, median of
  ``--cli-runs``, next to the start-up of ``python -c pass`` and of
  ``python -c "import reconciler.cli.main"`` measured in the same run, since the machine is shared
  and noisy.

Goals: <= 2 s and <= 150 MB for the generated fleet, <= 0.5 s for validate on example-repo.
Exit status 1 when a goal is missed.
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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from benchkit import cpu_model, ram_gb  # noqa: E402

GOAL_FLEET_SECONDS = 2.0
GOAL_FLEET_MB = 150.0
GOAL_CLI_SECONDS = 0.5

CHILD = """
import sys, time
from pathlib import Path
started = time.perf_counter()
from reconciler.core.loading import load_fleet
from reconciler.core.validation import validate_fleet
from reconciler.core.registry import default_registry
default_registry()
if sys.argv[1] != "-":
    report = validate_fleet(load_fleet(Path(sys.argv[1])))
    assert report.ok, [d.format() for d in report.errors][:5]
elapsed = time.perf_counter() - started
# VmHWM: this process's own peak. ru_maxrss would also count the parent's peak, which
# Linux carries over fork + exec into the child's figure.
status = Path("/proc/self/status").read_text().splitlines()
hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(hwm, elapsed)
"""


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "model": cpu_model(), "ram_gb": ram_gb(),
            "python": platform.python_version(), "load_avg": os.getloadavg()[0]}


def in_process(repo: Path, runs: int) -> dict[str, Any]:
    from reconciler.core.loading import load_fleet
    from reconciler.core.registry import default_registry
    from reconciler.core.validation import validate_fleet

    default_registry()
    loads: list[float] = []
    checks: list[float] = []
    totals: list[float] = []
    cpu: list[float] = []
    counts: dict[str, int] = {}
    for _ in range(runs):
        cpu_started = time.process_time()
        started = time.perf_counter()
        loaded = load_fleet(repo)
        loaded_at = time.perf_counter()
        report = validate_fleet(loaded)
        done = time.perf_counter()
        cpu.append(time.process_time() - cpu_started)
        if not report.ok:
            raise SystemExit("generated fleet is invalid:\n" +
                             "\n".join(d.format() for d in report.errors[:20]))
        loads.append(loaded_at - started)
        checks.append(done - loaded_at)
        totals.append(done - started)
        placements = [p for ps in report.placements.values() for p in ps]
        counts = {"targets": len(report.fleet.targets), "placements": len(placements),
                  "components": sum(len(p.components) for p in placements)}
    return {"load_s": statistics.median(loads), "validate_render_s": statistics.median(checks),
            "total_s": statistics.median(totals), "cpu_s": statistics.median(cpu),
            "total_min_s": min(totals),
            "total_max_s": max(totals), **counts}


def child_rss(repo: Path | None, runs: int) -> tuple[float, float]:
    """Median peak RSS (MB) and wall time of fresh interpreters (``None``: imports only)."""
    rss: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD, str(repo) if repo else "-"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        kb, seconds = out.stdout.split()
        rss.append(int(kb) / 1024)  # VmHWM is in kB
        wall.append(float(seconds))
    return statistics.median(rss), statistics.median(wall)


def wall(argv: list[str], runs: int, cwd: Path = ROOT) -> float:
    times: list[float] = []
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, cwd=cwd, env=env, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout.decode()}"
                             f"{proc.stderr.decode()}")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description="fleet model benchmark")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli-runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    from fleetgen import generate

    command = str(Path(sys.executable).parent / "reconciler")
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        repo = Path(tmp) / "fleet"
        shape = generate(repo)
        fleet = in_process(repo, args.runs)
        fleet["rss_mb"], fleet["child_s"] = child_rss(repo, args.runs)
        fleet["baseline_rss_mb"], fleet["baseline_child_s"] = child_rss(None, args.runs)
        fleet_cli = wall([command, "validate", str(repo)], max(1, args.runs // 2))
    cli = {
        "python_pass_s": wall([sys.executable, "-c", "pass"], args.cli_runs),
        "import_cli_s": wall([sys.executable, "-c", "import reconciler.cli.main"], args.cli_runs),
        "validate_example_s": wall([command, "validate", "example-repo"], args.cli_runs),
        "validate_fleet_s": fleet_cli,
    }
    results = {"machine": machine(), "shape": shape.__dict__, "fleet": fleet, "cli": cli}
    goals = {
        "fleet_time": fleet["total_s"] <= GOAL_FLEET_SECONDS,
        "fleet_rss": fleet["rss_mb"] <= GOAL_FLEET_MB,
        "validate_example": cli["validate_example_s"] <= GOAL_CLI_SECONDS,
    }
    results["goals_met"] = goals
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        m = results["machine"]
        print(f"machine: {m['cpus']} CPUs, {m['model']}, {m['ram_gb']} GB RAM, Python "
              f"{m['python']}, load average {m['load_avg']:.2f}")
        print(f"fleet: {fleet['targets']} targets, {shape.solutions} solutions x "
              f"{shape.components} components, {shape.instances} instances -> "
              f"{fleet['placements']} placements, {fleet['components']} rendered components")
        print(f"  load                  {fleet['load_s']:.3f} s (median of {args.runs})")
        print(f"  validate + render     {fleet['validate_render_s']:.3f} s")
        print(f"  total                 {fleet['total_s']:.3f} s (min {fleet['total_min_s']:.3f},"
              f" max {fleet['total_max_s']:.3f})   goal <= {GOAL_FLEET_SECONDS} s")
        print(f"  CPU time              {fleet['cpu_s']:.3f} s (less sensitive to other load)")
        print(f"  peak RSS              {fleet['rss_mb']:.1f} MB (imports alone "
              f"{fleet['baseline_rss_mb']:.1f} MB)   goal <= {GOAL_FLEET_MB:.0f} MB")
        print(f"  reconciler validate   {cli['validate_fleet_s']:.3f} s wall (CLI, whole fleet)")
        print(f"cli (median of {args.cli_runs}):")
        print(f"  python -c pass                    {cli['python_pass_s']:.3f} s")
        print(f"  python -c 'import reconciler.cli.main' {cli['import_cli_s']:.3f} s")
        print(f"  reconciler validate example-repo  {cli['validate_example_s']:.3f} s   "
              f"goal <= {GOAL_CLI_SECONDS} s")
        for name, met in goals.items():
            print(f"goal {name}: {'met' if met else 'MISSED'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
