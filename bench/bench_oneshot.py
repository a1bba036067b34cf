"""Benchmark of an idle one-shot run: ``reconciler sync --once``, the whole process.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_oneshot.py [--runs 5] [--targets-per-line 10]
        [--baseline REV] [--rev REV] [--tree NAME=DIR] [--profile] [--json] [--keep DIR]

The site is bench/bench_reconcile.py's (fleetgen's hierarchy, one 5-file instance on every
target, one daemon serving all of them: 1,000 targets x 5 files with the default 10 targets
per line), committed to a local bare remote, status pushed to the same remote. A first
``sync --once`` applies every file; then each idle run is a new ``reconciler sync --once``
process, as a systemd timer or cron starts one. Measured per run (median of ``--runs``):
wall time, CPU time (user + sys, from ``wait4``: the process and every child it waited for,
git included) and peak RSS.

The limit, measured in the same run: a fresh interpreter of the same Python that reads and
hashes (sha256) every managed file, the whole process's CPU time (interpreter start
included); next to it ``python -c pass``. Every measured process has its byte code cached,
as an installed program has (``PYTHONPYCACHEPREFIX`` in the work directory, so the source
tree is left alone; ``PYTHONDONTWRITEBYTECODE`` is dropped): without it each process
compiles the program again, about 0.25 s.

Checks: every idle run exits 0, writes no managed file (mtimes unchanged) and makes no
status commit; afterwards one file is changed and one removed, and the next ``sync --once``
repairs both (and then an idle run is idle again).

``--baseline REV`` runs the same on the tree of commit REV (``git archive`` of
``reconciler/`` and ``providers/`` into the work directory, put first on ``PYTHONPATH``), on
its own copy of the remote and its own state directory, interleaved run by run with the
current tree, so both see the same load; ``--rev REV`` runs commit REV as the current tree
(default: the work tree as it is); ``--tree NAME=DIR`` adds the program in DIR (a directory
holding ``reconciler/`` and ``reconciler_providers/``: a change being tried). ``--profile``
adds a cProfile of one idle run (top functions by cumulative and by own time) and
``python -X importtime`` of it (the slowest imports). Goal (issue 13): <= 1 s of CPU at
1,000 x 5. Exit status 1 when the goal is missed or a check fails.

The program runs in the environment a site installs (``--env runtime``, the default): a
virtual environment under ``--cache`` (default ``~/.cache/reconciler-bench``, made on first
use and again when ``requirements.lock`` or ``pyproject.toml`` change) holding the project
(editable, so the work tree is what runs) and its runtime dependencies only, pinned by
``requirements.lock`` as the Dockerfile installs them. The project's own ``.venv`` also holds
the development tools, and one of them (import-linter) brings ``rich``, which ``structlog``
imports when it is there: about 0.04 s more per process. ``--env dev`` runs in that one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from benchkit import spread, work_dir  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) \
    / "reconciler-bench"

from bench_reconcile import STATUS_BRANCH, _git, build_fleet, machine, mtimes  # noqa: E402

GOAL_CPU = 1.0
_CLI = "import sys; from reconciler.cli.main import main; main()"
_HASH = """
import hashlib, os, sys
for dirpath, _, names in os.walk(sys.argv[1]):
    for name in names:
        with open(os.path.join(dirpath, name), "rb") as handle:
            hashlib.sha256(handle.read()).hexdigest()
"""
_PROFILE = """
import cProfile, pstats, sys
out = sys.argv.pop(1)
from reconciler.cli.main import main
profile = cProfile.Profile()
profile.enable()
try:
    main()
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


@dataclass
class Measured:
    wall: float
    cpu: float  # user + sys of the process and the children it waited for
    rss_mb: float
    code: int


def run_measured(argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> Measured:
    """Run ``argv``; its wall time, CPU time (``wait4``) and peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env, cwd=cwd)
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode not in (0,):
        sys.stderr.write(err.decode(errors="replace")[-3000:])
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                    child.returncode)


def runtime_python(cache: Path) -> str:
    """The interpreter of the runtime environment (see the module docstring), made when
    missing or when the lock or the project's metadata changed."""
    import hashlib

    lock, meta = (ROOT / "requirements.lock").read_bytes(), (ROOT / "pyproject.toml").read_bytes()
    venv = cache / f"runtime-{hashlib.sha256(lock + meta).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet",
               "-c", str(ROOT / "requirements.lock")]
        subprocess.run([*pip, "pip", "setuptools", "wheel"], check=True)
        subprocess.run([*pip, "--no-build-isolation", "-e", str(ROOT)], check=True)
        (venv / "ready").write_text("")
    return str(python)


@dataclass
class Tree:
    """A program tree to run: the current one, or a baseline commit's."""

    name: str
    env: dict[str, str]
    remote: Path
    state: Path
    config: Path
    python: str = sys.executable

    def sync(self, work: Path) -> Measured:
        return run_measured([self.python, "-c", _CLI, "--log-level", "error", "sync",
                             "--once", "--config", str(self.config)], env=self.env, cwd=work)


def child_env(work: Path) -> dict[str, str]:
    """The environment of every measured process: byte code cached (as an installed program
    has it), in the work directory rather than the source tree."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def make_tree(name: str, work: Path, remote: Path, rev: str | None,
              directory: Path | None = None, python: str = sys.executable) -> Tree:
    env = child_env(work)
    if directory is not None:
        env["PYTHONPATH"] = str(directory)
    elif rev is not None:
        code = work / f"tree-{name}"
        code.mkdir()
        archive = subprocess.run(["git", "archive", rev, "reconciler", "providers"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        (code / "providers").rename(code / "reconciler_providers")
        env["PYTHONPATH"] = str(code)
    own_remote = work / f"remote-{name}.git"
    shutil.copytree(remote, own_remote)
    state = work / f"state-{name}"
    config = work / f"config-{name}.yaml"
    from bench_reconcile import write_config
    write_config(config, own_remote, state)
    return Tree(name, env, own_remote, state, config, python)


def status_tip(remote: Path) -> str:
    return _git("rev-parse", "--verify", "--quiet", STATUS_BRANCH, cwd=remote)


def limit(files: Path, work: Path) -> tuple[Measured, Measured]:
    """The hash loop and ``python -c pass``, each a whole fresh process."""
    env = child_env(work)
    return (run_measured([sys.executable, "-c", _HASH, str(files)], cwd=work, env=env),
            run_measured([sys.executable, "-c", "pass"], cwd=work, env=env))


def check_repair(tree: Tree, work: Path) -> list[str]:
    """Change one managed file and remove another: one sync --once repairs both."""
    problems = []
    files = sorted(p for p in (tree.state / "files").rglob("*") if p.is_file())
    changed, removed = files[len(files) // 3], files[2 * len(files) // 3]
    original = changed.read_bytes(), removed.read_bytes()
    changed.write_bytes(b"drifted\n")
    removed.unlink()
    done = tree.sync(work)
    if done.code != 0:
        problems.append(f"{tree.name}: the repairing run exited {done.code}")
    if not changed.is_file() or changed.read_bytes() != original[0]:
        problems.append(f"{tree.name}: {changed} not repaired in one run")
    if not removed.is_file() or removed.read_bytes() != original[1]:
        problems.append(f"{tree.name}: {removed} not restored in one run")
    before, tip = mtimes(tree.state), status_tip(tree.remote)
    again = tree.sync(work)
    if again.code != 0 or mtimes(tree.state) != before or status_tip(tree.remote) != tip:
        problems.append(f"{tree.name}: the run after the repair was not idle")
    return problems


def profile(tree: Tree, work: Path, top: int = 25) -> dict[str, Any]:
    """cProfile and ``-X importtime`` of one idle run of ``tree``."""
    import pstats

    out = work / f"profile-{tree.name}.pstats"
    args = ["--log-level", "error", "sync", "--once", "--config", str(tree.config)]
    subprocess.run([tree.python, "-c", _PROFILE, str(out), *args], env=tree.env,
                   cwd=work, check=False, capture_output=True)
    stats = pstats.Stats(str(out))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = \
        stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())

    def rows(index: int) -> list[tuple[str, int, float]]:
        ranked = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
        return [(_where(f, line, name), v[1], v[index]) for (f, line, name), v in ranked]

    imports = subprocess.run([tree.python, "-X", "importtime", "-c", _CLI, *args],
                             env=tree.env, cwd=work, check=False, capture_output=True,
                             text=True).stderr
    top_level: list[tuple[int, str]] = []  # (cumulative microseconds, module)
    for line in imports.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and parts[2][:2] != "  ":
            top_level.append((int(parts[1]), parts[2].strip()))
    return {"total": total, "cumulative": rows(3), "own": rows(2),
            "imports_us": sum(us for us, _ in top_level),
            "imports": sorted(top_level, reverse=True)[:top]}


def _where(file: str, line: int, name: str) -> str:
    for prefix in (str(ROOT) + os.sep, "site-packages" + os.sep, "tree-"):
        if prefix in file:
            file = file.split(prefix, 1)[1]
    return f"{file}:{line}({name})" if line else name


def measure(work: Path, runs: int, per_line: int, baseline: str | None,
            with_profile: bool, rev: str | None = None,
            others: dict[str, Path] | None = None,
            python: str = sys.executable) -> dict[str, Any]:
    remote, shape = build_fleet(work, per_line)
    trees = [make_tree("current", work, remote, rev, python=python)]
    if baseline is not None:
        trees.insert(0, make_tree("baseline", work, remote, baseline, python=python))
    for name, directory in (others or {}).items():
        trees.append(make_tree(name, work, remote, None, directory, python=python))
    problems: list[str] = []
    for tree in trees:
        first = tree.sync(work)
        if first.code != 0:
            problems.append(f"{tree.name}: the first run exited {first.code}")
        tree.sync(work)  # the first idle run writes what later ones read (caches)
    files = trees[-1].state / "files"
    idle: dict[str, list[Measured]] = {t.name: [] for t in trees}
    hashes: list[Measured] = []
    passes: list[Measured] = []
    marks = {t.name: (mtimes(t.state), status_tip(t.remote)) for t in trees}
    limit(files, work)  # byte code of what the limit imports, cached like the program's
    for _ in range(runs):
        for tree in trees:
            idle[tree.name].append(tree.sync(work))
        hashed, passed = limit(files, work)
        hashes.append(hashed)
        passes.append(passed)
    for tree in trees:
        if any(m.code != 0 for m in idle[tree.name]):
            problems.append(f"{tree.name}: an idle run exited non-zero")
        if mtimes(tree.state) != marks[tree.name][0]:
            problems.append(f"{tree.name}: an idle run wrote files")
        if status_tip(tree.remote) != marks[tree.name][1]:
            problems.append(f"{tree.name}: an idle run made a status commit")
        problems += check_repair(tree, work)
    limit_cpu = statistics.median(h.cpu for h in hashes)
    out: dict[str, Any] = {
        "machine": machine(), "runs": runs, "targets": shape.targets,
        "env": "dev" if python == sys.executable else "runtime",
        "files": sum(1 for p in files.rglob("*") if p.is_file()),
        "limit_cpu_s": spread([h.cpu for h in hashes]),
        "limit_wall_s": spread([h.wall for h in hashes]),
        "python_pass_cpu_s": spread([p.cpu for p in passes]),
        "trees": {}, "problems": problems,
    }
    for tree in trees:
        measured = idle[tree.name]
        cpu = spread([m.cpu for m in measured])
        out["trees"][tree.name] = {
            "cpu_s": cpu, "wall_s": spread([m.wall for m in measured]),
            "rss_mb": spread([m.rss_mb for m in measured]),
            "ratio_to_limit": cpu["median"] / limit_cpu,
        }
        if with_profile:
            out["trees"][tree.name]["profile"] = profile(tree, work)
    out["goal_met"] = out["trees"]["current"]["cpu_s"]["median"] <= GOAL_CPU
    return out


def report(r: dict[str, Any]) -> None:
    def s(v: dict[str, float], unit: str = "s") -> str:
        return f"{v['median']:.3f} {unit} (min {v['min']:.3f}, max {v['max']:.3f})"

    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM, Python "
          f"{m['python']}, load average {m['load'][0]:.2f}")
    print(f"site: {r['targets']} targets, {r['files']} managed files; medians of "
          f"{r['runs']} runs, each a whole process, in the {r['env']} environment")
    print(f"limit: fresh python, read + sha256 of the files: CPU {s(r['limit_cpu_s'])}, "
          f"wall {s(r['limit_wall_s'])}")
    print(f"       python -c pass: CPU {s(r['python_pass_cpu_s'])}")
    for name, t in r["trees"].items():
        print(f"{name}: sync --once idle: CPU {s(t['cpu_s'])} = {t['ratio_to_limit']:.1f} x "
              f"the limit; wall {s(t['wall_s'])}; peak RSS {s(t['rss_mb'], 'MB')}")
        prof = t.get("profile")
        if prof:
            print(f"  cProfile ({prof['total']:.3f} s under the profiler), by cumulative:")
            for where, calls, value in prof["cumulative"]:
                print(f"    {value:7.3f} s {calls:>8}  {where}")
            print("  by own time:")
            for where, calls, value in prof["own"]:
                print(f"    {value:7.3f} s {calls:>8}  {where}")
            print(f"  imports (-X importtime, top level): {prof['imports_us'] / 1e6:.3f} s")
            for us, name in prof["imports"]:
                print(f"    {us / 1e6:7.3f} s  {name}")
    for problem in r["problems"]:
        print(f"CHECK FAILED: {problem}")
    print(f"goal <= {GOAL_CPU:g} s CPU: " + ("met" if r["goal_met"] else "MISSED"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets-per-line", type=int, default=10)
    parser.add_argument("--baseline", metavar="REV", help="also run the tree of commit REV")
    parser.add_argument("--rev", metavar="REV",
                        help="run the tree of commit REV as the current one (default: the "
                             "work tree)")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="also run the program in DIR (reconciler/ and "
                             "reconciler_providers/ in it), e.g. a change being tried")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--env", choices=("runtime", "dev"), default="runtime",
                        help="run the program with its runtime dependencies only (as a site "
                             "installs it), or in the project's .venv")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the runtime environment is kept")
    args = parser.parse_args()
    python = runtime_python(args.cache) if args.env == "runtime" else sys.executable
    others = {name: Path(directory) for name, _, directory in
              (item.partition("=") for item in args.tree)}
    with work_dir(args.keep, "bench-oneshot-") as work:
        results = measure(work, args.runs, args.targets_per_line, args.baseline, args.profile,
                          args.rev, others, python)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0 if results["goal_met"] and not results["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
