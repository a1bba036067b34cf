"""Benchmark of ``reconciler status`` (and ``report``) at fleet scale.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_status.py [--sites 10000] [--targets 5] [--runs 3] [--json]

Writes, with one ``git fast-import``, a bare fleet repository of ``--sites`` lines (10 regions
of 10 plants) with ``--targets`` targets each (50,000 by default), one solution and one
instance per region, on ``main``; and one status branch per line as its daemon would have
pushed it (status files rendered by ``reconciler.engine.status``, a heartbeat file): most
targets Ready, one in a hundred sites with a Failed target, one in five hundred silent for
two days (Stale), one in a thousand that never reported (Unknown).

Measured, each a fresh ``reconciler status`` process, wall time and peak RSS of the command's
own process (``VmHWM`` at its exit) and of the largest process it waited for (a git, or the
child that validates the fleet model), median of ``--runs`` where repeated:

* **raw fetch**: ``git fetch`` of every status branch into an empty repository: the floor;
* **cold**: an empty cache: fetch, validate the fleet model at ``main`` (a child process, once
  per commit), read every status file;
* **fresh status, model known**: everything fetched and read anew except the model's index
  (the status tables and the fetched objects of the cache emptied): the goal's case, text and
  ``--format json``;
* **repeated**: nothing changed since the last call; and after one site in a hundred pushed;
* **report**: ``reconciler report`` on a warm cache, and the size of the page;
* the ref advertisement every push receives (``git receive-pack --advertise-refs``).

Goals: the fresh status (text and JSON) <= 2 x the raw fetch measured in the same run, and
<= 200 MB. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchkit import cpu_model  # noqa: E402

from reconciler.engine.executing import ComponentPhase, ComponentResult, TargetResult  # noqa: E402
from reconciler.engine.status import build_status, render_status  # noqa: E402

GOAL_FACTOR = 2.0
GOAL_MB = 200.0
REGIONS, PLANTS = 10, 10
NOW = int(time.time())
PLACEHOLDER_TIME = "2000-01-01T00:00:00+00:00"
# runs the command as the installed script does, and writes at exit its own peak RSS and the
# largest of the processes it waited for (kB)
WRAPPER = """
import atexit, os, resource, sys
from pathlib import Path
def peak():
    status = Path("/proc/self/status").read_text().splitlines()
    own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    waited = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    Path(os.environ["BENCH_RSS"]).write_text(f"{own} {waited}")
atexit.register(peak)
from reconciler.cli.main import main
from reconciler.cli.fleet import report
main.commands.setdefault("report", report)
sys.argv[0] = "reconciler"
main()
"""


def names(sites: int) -> Iterator[tuple[int, str, str, str]]:
    """(index, region, plant, line) of every line."""
    per_plant = max(1, sites // (REGIONS * PLANTS))
    index = 0
    for r in range(REGIONS):
        for p in range(PLANTS):
            for li in range(per_plant):
                if index == sites:
                    return
                yield index, f"r{r:02d}", f"r{r:02d}-p{p:02d}", f"r{r:02d}-p{p:02d}-l{li:03d}"
                index += 1


def model_files(sites: int, targets: int) -> dict[str, str]:
    head = "apiVersion: reconciler/v1\n"
    files = {"reconciler.yaml": head + "kind: Settings\nmetadata: {name: fleet}\nspec:\n"
             "  hierarchy: [region, plant, line]\n"}
    by_region: dict[str, list[str]] = {}
    target_docs: dict[str, list[str]] = {}
    for _, region, plant, line in names(sites):
        docs = by_region.setdefault(region, [])
        if not docs:
            docs.append(f"{head}kind: Site\nmetadata: {{name: {region}}}\nspec: {{}}\n")
        if line.endswith("-l000"):
            docs.append(f"{head}kind: Site\nmetadata: {{name: {plant}}}\n"
                        f"spec: {{parent: {region}}}\n")
        docs.append(f"{head}kind: Site\nmetadata: {{name: {line}}}\nspec: {{parent: {plant}}}\n")
        for t in range(targets):
            target_docs.setdefault(region, []).append(
                f"{head}kind: Target\nmetadata: {{name: {line}-t{t}}}\nspec:\n  site: {line}\n"
                f"  bindings:\n  - role: config-file\n    provider: file\n"
                f"    config: {{root: files/{line}-t{t}}}\n")
    for region, docs in by_region.items():
        files[f"sites/{region}.yaml"] = "---\n".join(docs)
        files[f"targets/{region}.yaml"] = "---\n".join(target_docs[region])
    files["solutions/telemetry.yaml"] = (
        f"{head}kind: Solution\nmetadata: {{name: telemetry}}\nspec:\n  parameters:\n"
        "    sampleRate: {type: integer, default: 10}\n  components:\n"
        "  - name: agent\n    type: config-file\n    properties:\n      path: agent.conf\n"
        "      content: 'rate ${{ params.sampleRate }} on ${{ target.name }}'\n")
    files["instances.yaml"] = "---\n".join(
        f"{head}kind: Instance\nmetadata: {{name: telemetry-{region}}}\nspec:\n"
        f"  solution: telemetry\n  targets: {{selector: {{sites: [{region}]}}}}\n"
        for region in by_region)
    return files


def status_template(phase: ComponentPhase) -> str:
    """A status file as the daemon renders it, with placeholders for the names."""
    components = tuple(ComponentResult(
        key=f"telemetry-REGION/{c}", instance="telemetry-REGION", component=c, provider="file",
        phase=phase if c == "agent" else ComponentPhase.READY,
        message="write failed: no space left on device (/var/lib/reconciler/files)"
        if phase is ComponentPhase.FAILED and c == "agent" else "", revision="REVISION")
        for c in ("agent", "config", "certs"))
    status = build_status(
        target="TARGET", site="SITEPATH", observed="REVISION", applied="REVISION",
        last_good="REVISION", result=TargetResult("TARGET", "REVISION", components),
        solutions={"telemetry-REGION": "telemetry"})
    # a real time, as the daemon writes it (a quoted string), swapped for each file's own
    return render_status(status, PLACEHOLDER_TIME).decode()


def write_fleet(remote: Path, sites: int, targets: int) -> dict[str, int]:
    """The repository of the module docstring, through one git fast-import."""
    subprocess.run(["git", "init", "--bare", "--quiet", str(remote)], check=True)
    env = {**os.environ, "GIT_DIR": str(remote)}
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdin

    def data(text: str) -> None:
        raw = text.encode()
        out.write(f"data {len(raw)}\n".encode() + raw + b"\n")

    def commit(ref: str, when: int, message: str, files: dict[str, str],
               mark: str = "") -> None:
        out.write(f"commit {ref}\n{mark}committer reconciler <r@localhost> {when} +0000\n"
                  .encode())
        data(message)
        for path, content in files.items():
            out.write(f"M 100644 inline {path}\n".encode())
            data(content)

    commit("refs/heads/main", NOW - 86400 * 3, "fleet", model_files(sites, targets),
           mark="mark :1\n")
    out.write(b"get-mark :1\n")  # the daemons report the commit they applied
    out.flush()
    head = proc.stdout.readline().decode().strip()
    ready, failed = status_template(ComponentPhase.READY), status_template(ComponentPhase.FAILED)
    counts = {"sites": 0, "branches": 0, "unknown": 0, "stale": 0, "failed": 0}
    for index, region, plant, line in names(sites):
        counts["sites"] += 1
        if index % 1000 == 999:
            counts["unknown"] += 1
            continue
        stale = index % 500 == 1
        when = NOW - 2 * 86400 if stale else NOW - (index * 37) % 3000
        counts["stale"] += stale
        stamp = dt.datetime.fromtimestamp(when, dt.UTC).isoformat()
        path = f"{region}/{plant}/{line}"
        files = {}
        for t in range(targets):
            bad = index % 100 == 7 and t == 2
            counts["failed"] += bad
            files[f"status/{path}/{line}-t{t}.yaml"] = (failed if bad else ready).replace(
                "TARGET", f"{line}-t{t}").replace("SITEPATH", path).replace(
                "REGION", region).replace(PLACEHOLDER_TIME, stamp).replace("REVISION", head)
        files[f"status/{path}/.heartbeat"] = (
            f"apiVersion: reconciler/v1\nkind: SiteHeartbeat\nsite: {path}\n"
            f"heartbeat: '{dt.datetime.fromtimestamp(when, dt.UTC):%Y-%m-%dT%H:%M:%SZ}'\n")
        commit(f"refs/heads/reconciler-status/{path.replace('/', '_')}", when, "status", files)
        counts["branches"] += 1
    out.write(b"done\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return counts


def run(argv: list[str], stdout: Path | None = None) -> dict[str, float]:
    """Wall time and peak RSS (MB) of one command of the reconciler group."""
    with tempfile.NamedTemporaryFile(prefix="bench-rss-") as rss:
        env = {**os.environ, "BENCH_RSS": rss.name}
        with open(stdout or os.devnull, "wb") as out:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], env=env, stdout=out,
                                  stderr=subprocess.PIPE, timeout=1800)
            wall = time.perf_counter() - started
        if done.returncode not in (0, 2):
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode()[-2000:]}")
        own, waited = Path(rss.name).read_text().split()
    return {"seconds": round(wall, 2), "rss_mb": round(int(own) / 1024, 1),
            "child_mb": round(int(waited) / 1024, 1)}


def raw_fetch(remote: Path, work: Path) -> float:
    dest = work / "raw.git"
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["git", "init", "--bare", "--quiet", str(dest)], check=True)
    started = time.perf_counter()
    subprocess.run(["git", "--git-dir", str(dest), "fetch", "--quiet", "--no-tags",
                    f"file://{remote}", "+refs/heads/reconciler-status/*:refs/s/*"], check=True)
    return round(time.perf_counter() - started, 2)


def forget_status(cache: Path) -> None:
    """Empty the cache but for the model's index: as if nothing had been fetched."""
    shutil.rmtree(cache / "repo.git")
    db = sqlite3.connect(cache / "status.sqlite")
    with db:
        for table in ("branches", "documents"):
            db.execute(f"DELETE FROM {table}")
    db.execute("VACUUM")
    db.close()


def median(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def push_some(remote: Path, sites: int, share: int) -> int:
    """A new status commit on one branch in ``share``: its heartbeat moved."""
    env = {**os.environ, "GIT_DIR": str(remote)}
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done", "--force"],
                            stdin=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    moved = 0
    for index, region, plant, line in names(sites):
        if index % share or index % 1000 == 999:
            continue
        ref = f"refs/heads/reconciler-status/{region}_{plant}_{line}"
        beat = f"heartbeat: '{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}'\n".encode()
        proc.stdin.write(f"commit {ref}\ncommitter r <r@l> {NOW} +0000\ndata 6\nstatus\n"
                         f"from {ref}^0\nM 100644 inline status/{region}/{plant}/{line}/"
                         f".heartbeat\ndata {len(beat)}\n".encode() + beat + b"\n")
        moved += 1
    proc.stdin.write(b"done\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return moved


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=5, help="targets per site")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        work = Path(tmp)
        remote, cache = work / "fleet.git", work / "cache"
        started = time.perf_counter()
        out["fleet"] = write_fleet(remote, args.sites, args.targets)
        out["fleet"]["targets"] = out["fleet"]["sites"] * args.targets
        out["generate_seconds"] = round(time.perf_counter() - started, 1)
        advert = subprocess.run(["git", "receive-pack", "--advertise-refs", str(remote)],
                                capture_output=True, check=True).stdout
        out["push_advertisement_bytes"] = len(advert)
        status = ["status", "--repo", str(remote), "--cache-dir", str(cache)]
        out["raw_fetch"] = statistics.median(raw_fetch(remote, work) for _ in range(args.runs))
        out["cold"] = run(status)
        fresh, fresh_json = [], []
        for _ in range(args.runs):
            forget_status(cache)
            fresh.append(run(status))
            forget_status(cache)
            fresh_json.append(run([*status, "--format", "json"], stdout=work / "status.json"))
        out["fresh"], out["fresh_json"] = median(fresh), median(fresh_json)
        out["json_bytes"] = (work / "status.json").stat().st_size
        json.loads((work / "status.json").read_text())  # the streamed document is whole
        out["repeated"] = median([run(status) for _ in range(args.runs)])
        out["repeated_json"] = median([run([*status, "--format", "json"])
                                       for _ in range(args.runs)])
        out["moved_branches"] = push_some(remote, args.sites, 100)
        out["one_in_a_hundred_moved"] = run(status)
        page = work / "fleet.html"
        out["report"] = run(["report", "--repo", str(remote), "--cache-dir", str(cache),
                             "--html", str(page)])
        out["report_bytes"] = page.stat().st_size
    limit = GOAL_FACTOR * out["raw_fetch"]
    missed = [name for name in ("fresh", "fresh_json")
              if out[name]["seconds"] > limit or out[name]["rss_mb"] > GOAL_MB]
    out["goal"] = {"seconds": round(limit, 2), "mb": GOAL_MB, "missed": missed}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report_text(out)
    return 1 if missed else 0


def report_text(out: dict[str, Any]) -> None:
    fleet, m = out["fleet"], out["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['cpu']}, Python {m['python']}, load {m['load']}")
    print(f"fleet: {fleet['sites']:,} sites, {fleet['targets']:,} targets, "
          f"{fleet['branches']:,} status branches ({fleet['failed']} Failed targets, "
          f"{fleet['stale']} Stale sites, {fleet['unknown']} Unknown); written in "
          f"{out['generate_seconds']} s")
    print(f"ref advertisement received by every push: {out['push_advertisement_bytes']:,} bytes")
    print(f"raw fetch of the status refs: {out['raw_fetch']} s")
    for key, label in (("cold", "status, cold cache (model validated)"),
                       ("fresh", "status, fresh, model known (text)"),
                       ("fresh_json", "status, fresh, model known (JSON)"),
                       ("repeated", "status, repeated (text)"),
                       ("repeated_json", "status, repeated (JSON)"),
                       ("one_in_a_hundred_moved",
                        f"status, {out['moved_branches']} branches moved"),
                       ("report", "report, warm cache")):
        r = out[key]
        print(f"{label:44} {r['seconds']:7.2f} s  {r['rss_mb']:6.1f} MB  "
              f"(largest child {r['child_mb']:.0f} MB)")
    print(f"JSON: {out['json_bytes']:,} bytes; report page: {out['report_bytes']:,} bytes")
    goal = out["goal"]
    print(f"goal: fresh status <= {goal['seconds']} s (2 x raw fetch) and <= {goal['mb']:.0f} "
          f"MB: {'missed by ' + ', '.join(goal['missed']) if goal['missed'] else 'met'}")


if __name__ == "__main__":
    sys.exit(main())
