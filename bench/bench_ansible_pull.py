"""Benchmark: an idle ``reconciler sync --once`` of 500 files next to ``ansible-pull -o``.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_ansible_pull.py [--runs 5] [--full-runs 1] [--json]
        [--rev REV] [--baseline REV] [--cache DIR] [--keep DIR]

The site is bench/bench_reconcile.py's with one target per line: 100 targets x 5 ``file``
components, 500 files. A first ``sync --once`` writes them; each idle run is then a new
``reconciler sync --once`` process, which fetches, reads every managed file and compares its
digest (checked: a changed file and a removed one are repaired by the next run).

The baseline is ansible-core's ``ansible-pull``, installed from PyPI into a virtual
environment of its own under the cache directory (``--cache``, default
``~/.cache/reconciler-bench``; made on first use, never the project's environment). Its
repository is a local git repository holding the same 500 files as the reconciler wrote
them and a playbook ``local.yml`` of 500 ``copy`` tasks writing them under a directory of
its own (connection local, facts not gathered). After a first ``ansible-pull`` has written
them, each idle run is ``ansible-pull -o``: it fetches the repository and, since it did not
change, runs nothing at all - no file is looked at. For scale, ``--full-runs`` idle runs
without ``-o`` (the playbook runs and checks every file) are measured too.

Every process is measured whole: CPU time (user + sys, from ``wait4``: the process and every
child it waited for, git and Ansible's module processes included), wall time, and peak RSS;
medians of ``--runs``, interleaved run by run. The limit next to them: a fresh interpreter
reading and hashing the 500 files. Byte code is cached for both programs (in the work
directory). ``--rev REV`` runs the reconciler of commit REV (default: the work tree as it
is), ``--baseline REV`` that of commit REV as well (``bench_oneshot.py``'s trees). About
eight minutes, most of it Ansible writing the files once and checking them once
(``--full-runs 0`` leaves the latter out). Exit status 1 when the reconciler is not faster
than ``ansible-pull -o`` or a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_oneshot import (  # noqa: E402
    Measured,
    check_repair,
    child_env,
    limit,
    make_tree,
    run_measured,
    status_tip,
)
from bench_reconcile import _git, build_fleet, machine, mtimes  # noqa: E402
from benchkit import spread, work_dir  # noqa: E402

ANSIBLE_CORE = "ansible-core==2.17.7"  # supports Python 3.10 to 3.12 on the control node
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) \
    / "reconciler-bench"


def ansible_venv(cache: Path) -> Path:
    """The virtual environment with ansible-core, made on first use; its bin directory."""
    venv = cache / f"ansible-{ANSIBLE_CORE.split('==')[1]}"
    bin_dir = venv / "bin"
    if not (bin_dir / "ansible-pull").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                        ANSIBLE_CORE], check=True)
    return bin_dir


def ansible_repo(work: Path, files: Path) -> tuple[Path, int]:
    """A git repository of the files under ``files`` and a playbook copying each of them
    under ``<work>/ansible-files``; returns it and the number of files."""
    repo = work / "ansible-repo"
    dest = work / "ansible-files"
    tasks = []
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = path.relative_to(files).as_posix()
        target = repo / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        tasks.append({"name": f"file {rel}",
                      "ansible.builtin.copy": {"src": f"files/{rel}", "dest": f"{dest}/{rel}",
                                               "mode": f"{path.stat().st_mode & 0o777:04o}"}})
    playbook = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                 "tasks": [{"name": "directories", "ansible.builtin.file": {
                     "path": f"{dest}/{{{{ item }}}}", "state": "directory"},
                     "loop": sorted({t["ansible.builtin.copy"]["dest"].rsplit("/", 1)[0]
                                     .removeprefix(f"{dest}/") for t in tasks})},
                           *tasks]}]
    (repo / "local.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    _git("init", "--quiet", "--initial-branch=main", cwd=repo)
    _git("add", "--all", cwd=repo)
    _git("commit", "--quiet", "--message", "500 files", cwd=repo)
    return repo, len(tasks)


class Pull:
    """``ansible-pull`` of the repository into a checkout of its own."""

    def __init__(self, work: Path, bin_dir: Path, repo: Path) -> None:
        self.argv = [str(bin_dir / "ansible-pull"), "--url", f"file://{repo}",
                     "--directory", str(work / "ansible-checkout"), "--inventory",
                     "localhost,", "local.yml"]
        home = work / "ansible-home"
        self.env = {**child_env(work), "ANSIBLE_HOME": str(home),
                    "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
                    "ANSIBLE_REMOTE_TEMP": str(home / "tmp"), "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
                    "ANSIBLE_PYTHON_INTERPRETER": str(bin_dir / "python"),
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.work = work

    def run(self, *extra: str) -> Measured:
        return run_measured([*self.argv, *extra], env=self.env, cwd=self.work)


def measure(work: Path, runs: int, full_runs: int, cache: Path, rev: str | None = None,
            baseline: str | None = None) -> dict[str, Any]:
    remote, shape = build_fleet(work, targets_per_line=1)
    trees = [make_tree("current", work, remote, rev)]
    if baseline is not None:
        trees.insert(0, make_tree("baseline", work, remote, baseline))
    problems: list[str] = []
    for tree in trees:
        for _ in range(2):  # the first writes the files, the second what later runs read
            if tree.sync(work).code != 0:
                problems.append(f"{tree.name}: a first sync --once failed")
    files = trees[-1].state / "files"
    bin_dir = ansible_venv(cache)
    repo, count = ansible_repo(work, files)
    pull = Pull(work, bin_dir, repo)
    for argv in ((), ("--only-if-changed",)):  # writes every file; warms the byte code
        first = pull.run(*argv)
        if first.code != 0:
            problems.append(f"ansible-pull {' '.join(argv)} exited {first.code}")
    written = sum(1 for p in (work / "ansible-files").rglob("*") if p.is_file())
    if written != count:
        problems.append(f"ansible-pull wrote {written} files, expected {count}")
    limit(files, work)  # byte code of what the limit imports
    marks = {t.name: (mtimes(t.state), status_tip(t.remote)) for t in trees}
    ours: dict[str, list[Measured]] = {t.name: [] for t in trees}
    theirs: list[Measured] = []
    hashes: list[Measured] = []
    for _ in range(runs):
        for tree in trees:
            ours[tree.name].append(tree.sync(work))
        theirs.append(pull.run("--only-if-changed"))
        hashes.append(limit(files, work)[0])
    full = [pull.run() for _ in range(full_runs)]
    if any(m.code != 0 for m in [*theirs, *full, *(m for ms in ours.values() for m in ms)]):
        problems.append("an idle run exited non-zero")
    for tree in trees:
        if (mtimes(tree.state), status_tip(tree.remote)) != marks[tree.name]:
            problems.append(f"{tree.name}: an idle sync --once wrote files or made a status "
                            "commit")
        problems += check_repair(tree, work)
    theirs_cpu = statistics.median(m.cpu for m in theirs)
    return {
        "machine": machine(), "runs": runs, "targets": shape.targets, "files": count,
        "ansible_core": ANSIBLE_CORE,
        "limit_cpu_s": spread([h.cpu for h in hashes]),
        "reconciler": {name: {
            "cpu_s": spread([m.cpu for m in ms]), "wall_s": spread([m.wall for m in ms]),
            "rss_mb": spread([m.rss_mb for m in ms]),
            "ratio": statistics.median(m.cpu for m in ms) / theirs_cpu}
            for name, ms in ours.items()},
        "pull_o_cpu_s": spread([m.cpu for m in theirs]),
        "pull_o_wall_s": spread([m.wall for m in theirs]),
        "pull_o_rss_mb": spread([m.rss_mb for m in theirs]),
        "pull_full_cpu_s": spread([m.cpu for m in full]) if full else None,
        "pull_full_wall_s": spread([m.wall for m in full]) if full else None,
        "faster": statistics.median(m.cpu for m in ours["current"]) < theirs_cpu,
        "problems": problems,
    }


def report(r: dict[str, Any]) -> None:
    def s(v: dict[str, float], unit: str = "s") -> str:
        return f"{v['median']:.3f} {unit} (min {v['min']:.3f}, max {v['max']:.3f})"

    def g(key: str, unit: str = "s") -> str:
        return s(r[key], unit)

    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM, Python "
          f"{m['python']}, load average {m['load'][0]:.2f}")
    print(f"site: {r['targets']} targets, {r['files']} files; {r['ansible_core']}; medians of "
          f"{r['runs']} runs, each a whole process")
    print(f"limit: read + sha256 of the files, fresh python: CPU {g('limit_cpu_s')}")
    for name, t in r["reconciler"].items():
        print(f"reconciler sync --once, idle, {name} (every file hashed): CPU "
              f"{s(t['cpu_s'])}, wall {s(t['wall_s'])}, peak RSS {s(t['rss_mb'], 'MB')}; "
              f"{t['ratio']:.2f} x ansible-pull -o")
    print(f"ansible-pull -o, idle (nothing looked at): CPU {g('pull_o_cpu_s')}, "
          f"wall {g('pull_o_wall_s')}, peak RSS {g('pull_o_rss_mb', 'MB')}")
    if r["pull_full_cpu_s"]:
        print(f"ansible-pull without -o (every file checked): CPU {g('pull_full_cpu_s')}, "
              f"wall {g('pull_full_wall_s')}")
    for problem in r["problems"]:
        print(f"CHECK FAILED: {problem}")
    print("faster than ansible-pull -o: " + ("yes" if r["faster"] else "NO"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full-runs", type=int, default=1,
                        help="idle ansible-pull runs without -o (slow; 0 for none)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the ansible-core environment is kept")
    parser.add_argument("--rev", metavar="REV",
                        help="run the reconciler of commit REV (default: the work tree)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the reconciler of commit REV (before/after)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    with work_dir(args.keep, "bench-ansible-") as work:
        results = measure(work, args.runs, args.full_runs, args.cache, args.rev, args.baseline)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0 if results["faster"] and not results["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
