"""Benchmark of a progressive rollout through git alone: wave latency, git requests per site,
and the git server's cost at 1,000 sites.

Run from the repository root with the project's virtualenv (figures: bench/README.md,
"Rollouts")::

    .venv/bin/python bench/bench_rollout.py                # both parts, 3.5-4.5 min here
    .venv/bin/python bench/bench_rollout.py --quick        # 1 rollout, shorter, fewer requests
    .venv/bin/python bench/bench_rollout.py waves          # or: scale
    .venv/bin/python bench/bench_rollout.py --json out.json

**waves**: 10 sites (lines ``fab/line-01`` .. ``line-10`` of plant ``fab``), 3 targets each
(two ``file`` components), one ``reconciler run`` process per site (interval 5 s, jitter 0,
started at random moments of one interval, no webhooks, per-site status branches), one bare
remote behind a real ``git daemon --verbose`` on 127.0.0.1; each site reaches it through a path
of its own (a symbolic link), so the server's log names the site of every request. Instance
``panels`` (every target) is pinned to a release of solution ``panel`` made by ``reconciler
release`` (the annotated tag ``panel/v1.N.0``) and rolls out in three waves: ``canary``
(line-01), ``second`` (line-02..04) and the implicit ``rest`` (line-05..10). Once every target
runs 1.0.0 and the fleet is idle, the server's requests are counted for ``--idle`` seconds;
then ``--rollouts`` times: a new release is made and the Instance's ``version`` moved in a
commit, and both are pushed at once (t0: the push returned). Measured until every target is
Ready on it:

* per target, the moment the remote first held its status Ready on the release (its status
  branch's ref read every 50 ms); per wave the first and last target, and the wave's latency
  (its last target after the last of the wave before, the first wave after t0);
* per site, the server's ``upload-pack`` (fetch, ``ls-remote``) and ``receive-pack`` (push)
  requests over whole intervals from t0, per interval and per run of the daemon (a request
  belongs to the last run that started before it, from the daemon's ``run_finished`` lines);
* CPU time of the git server (its children included) and of the site daemons (theirs
  included), per interval.

Goals (issue 11): each wave's latency <= 1.5 x interval (+ the pause before it; none here),
and per site per interval <= 2 fetches and <= 1 push.

**scale**: 1,000 sites cannot run here (2 CPUs), so the git server's cost per request is
measured on a remote as a 1,000-site fleet's server holds it (``rollout_fleet.LargeFleet``:
10 regions x 10 plants x 10 lines, a status branch per site, 500 release tags and 1,000
approval tags) and the cost per interval extrapolated from it; requests are made by the
project's own classes, in this process, so they carry exactly the daemon's refspecs:
``GitSource.fetch`` (tracked ref + tags, plus the peer specs ``PeerStatuses`` leaves for a
waiting site), ``GitSource.remote_commit`` (the look for a newer revision) and
``StatusPublisher.publish`` (one status commit). A simulated interval checks the
extrapolation: ``--sim-sites`` idle fetches back to back by two clients. CPU is the server's
(``/proc``: its own and its reaped children's), per request the total of ``--requests``
requests divided by their number.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit import cpu_model, ram_gb  # noqa: E402
from rollout_fleet import (  # noqa: E402
    RECONCILER,
    GitServer,
    LargeFleet,
    Request,
    SiteDaemon,
    StatusWatcher,
    clean_env,
    doc,
    git,
    pack_tags,
    site_id,
    status_text,
    write_large_remote,
    write_yaml,
)

INSTANCE, SOLUTION = "panels", "panel"
GOAL_LATENCY_FACTOR = 1.5  # x interval per wave (+ pause)
GOAL_FETCHES, GOAL_PUSHES = 2, 1  # per site per interval
REMOTE_CHECK_INTERVAL = 30.0  # the daemon's default remoteCheckInterval (looks for newer)
HEARTBEAT = 3600.0  # the daemon's default status heartbeat


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


# ================================================================ part 1: ten site daemons

def solution_doc(version: str) -> dict[str, Any]:
    return doc("Solution", SOLUTION, {
        "parameters": {"greeting": {"type": "string", "default": "hello"}},
        "components": [
            {"name": "screen", "type": "config-file",
             "properties": {"path": "screen.txt", "content": f"{version}\n"}},
            {"name": "settings", "type": "config-file", "dependsOn": ["screen"],
             "properties": {"path": "settings.txt",
                            "content": "${{ params.greeting }} from ${{ target.name }} "
                                       f"({version})\n"}}]})


def instance_doc(version: str | None, waves: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"solution": SOLUTION, "targets": {"selector": {"sites": ["fab"]}},
                            "rollout": {"waves": waves}}
    if version is not None:
        spec["version"] = version
    return doc("Instance", INSTANCE, spec)


def reconciler_cmd(*args: str) -> str:
    done = subprocess.run([RECONCILER, *args], env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"reconciler {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


class WaveFleet:
    """The fleet repository of part 1: a working copy ``src`` and the bare remote."""

    def __init__(self, root: Path, sites: int, targets: int, interval: int,
                 second: int, pause: int) -> None:
        self.src = root / "src"
        self.base = root / "served"
        self.remote = self.base / "remote.git"
        self.lines = [f"line-{i:02d}" for i in range(1, sites + 1)]
        self.targets = {f"fab/{line}": [f"panel-{line}-{chr(97 + t)}" for t in range(targets)]
                        for line in self.lines}
        self.waves: list[dict[str, Any]] = [
            {"name": "canary", "sites": ["fab/line-01"]},
            {"name": "second", "sites": [f"fab/{x}" for x in self.lines[1:1 + second]]}]
        if pause:
            for wave in self.waves:
                wave["pause"] = f"{pause}s"
        self.wave_of = {p: ("canary" if i == 0 else "second" if i <= second else "rest")
                        for i, p in enumerate(self.targets)}
        self.src.mkdir(parents=True)
        self.base.mkdir(parents=True)
        git(self.src, "init", "--quiet", "-b", "main")
        write_yaml(self.src / "reconciler.yaml", [doc("Settings", "fleet", {
            "hierarchy": ["plant", "line"],
            # the daemons' own config sets the interval; the fleet's default has a floor
            "defaults": {"interval": max(10, interval), "jitter": 0, "retries": 1,
                         "retryDelay": 0.1, "healthTimeout": 10}})])
        write_yaml(self.src / "sites.yaml", [doc("Site", "fab", {}), *(
            doc("Site", line, {"parent": "fab"}) for line in self.lines)])
        write_yaml(self.src / "targets.yaml", [
            doc("Target", t, {"site": path.split("/")[1], "bindings": [
                {"role": "config-file", "provider": "file", "config": {"root": f"files/{t}"}}]})
            for path, names in self.targets.items() for t in names])
        write_yaml(self.src / "solutions/panel/solution.yaml", [solution_doc("1.0.0")])
        write_yaml(self.src / "instances.yaml", [instance_doc(None, self.waves)])
        self._commit("the fleet")
        reconciler_cmd("validate", str(self.src))
        git(self.base, "init", "--quiet", "--bare", str(self.remote))
        self.release("1.0.0", first=True)
        self.push("1.0.0")

    def _commit(self, message: str) -> None:
        git(self.src, "add", "-A")
        git(self.src, "commit", "--quiet", "-m", message)

    def release(self, version: str, *, first: bool = False) -> None:
        """Change the solution, ``reconciler release`` it, pin the instance to it (commits in
        the working copy, nothing pushed)."""
        if not first:
            write_yaml(self.src / "solutions/panel/solution.yaml", [solution_doc(version)])
            self._commit(f"panel {version}")
        reconciler_cmd("release", "--repo", str(self.src), SOLUTION, version)
        write_yaml(self.src / "instances.yaml", [instance_doc(version, self.waves)])
        self._commit(f"panels: release {version}")
        if first:
            reconciler_cmd("validate", str(self.src))

    def push(self, version: str) -> None:
        """Push main and the release tag at once (straight to the bare remote, not through
        the server: the server's log holds the sites' requests only)."""
        git(self.src, "push", "--quiet", str(self.remote), "main:main",
            f"refs/tags/{SOLUTION}/v{version}")


def per_site_requests(requests: Sequence[Request], paths: Mapping[str, str]
                      ) -> dict[str, dict[str, int]]:
    """site path -> {"upload-pack": n, "receive-pack": n} (``paths``: repo path -> site)."""
    out = {site: {"upload-pack": 0, "receive-pack": 0} for site in paths.values()}
    for r in requests:
        site = paths.get(r.path)
        if site is not None and r.service in out[site]:
            out[site][r.service] += 1
    return out


def request_rates(server: GitServer, daemons: Mapping[str, SiteDaemon],
                  paths: Mapping[str, str], start: float, end: float,
                  interval: float) -> dict[str, Any]:
    """The requests of every site in [start, end) (whole intervals): per interval, and per
    run of its daemon (a request belongs to the last run that started before it: a look
    for a newer revision runs in a thread of its own and may outlast its run)."""
    requests = server.requests(start, end)
    counts = per_site_requests(requests, paths)
    intervals = (end - start) / interval
    fetch = [c["upload-pack"] / intervals for c in counts.values()]
    push = [c["receive-pack"] / intervals for c in counts.values()]
    slots: list[tuple[str, float, int, int]] = []  # (site, run start, fetches, pushes)
    before_any_run = 0
    for site, daemon in daemons.items():
        starts = sorted(r.start - 0.05 for r in daemon.runs())
        mine: dict[float, list[int]] = {t: [0, 0] for t in starts if start - interval < t < end}
        for q in requests:
            if paths.get(q.path) != site:
                continue
            slot = max((t for t in starts if t <= q.at), default=None)
            if slot is None:
                before_any_run += 1
                continue
            mine.setdefault(slot, [0, 0])[q.service == "receive-pack"] += 1
        slots += [(site, t, f, p) for t, (f, p) in mine.items()]
    over = [f"{site}: {f} fetches, {p} pushes in the run at {t - start:+.1f} s"
            for site, t, f, p in sorted(slots) if f > GOAL_FETCHES or p > GOAL_PUSHES]
    return {
        "seconds": round(end - start, 2), "intervals": round(intervals, 2),
        "fetches_per_site_interval": {"mean": round(statistics.mean(fetch), 2),
                                      "max": round(max(fetch), 2)},
        "pushes_per_site_interval": {"mean": round(statistics.mean(push), 2),
                                     "max": round(max(push), 2)},
        "runs": len(slots),
        "fetches_per_run": {"max": max((s[2] for s in slots), default=0)},
        "pushes_per_run": {"max": max((s[3] for s in slots), default=0)},
        "requests_before_any_run": before_any_run,
        "runs_over_budget": over,
        "per_site": {s: c for s, c in sorted(counts.items())},
    }


def cpu_rates(server_cpu: float, daemon_cpu: float, seconds: float,
              interval: float) -> dict[str, float]:
    intervals = seconds / interval
    return {"git_server_cpu_s_per_interval": round(server_cpu / intervals, 4),
            "site_daemons_cpu_s_per_interval": round(daemon_cpu / intervals, 3)}


def wave_figures(watcher: StatusWatcher, fleet: WaveFleet, release: str,
                 t0: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = 0.0
    for wave in ("canary", "second", "rest"):
        times = [watcher.ready[(t, release)] - t0 for path, names in fleet.targets.items()
                 if fleet.wave_of[path] == wave for t in names]
        if not times:
            continue
        last = max(times)
        out.append({"wave": wave, "targets": len(times), "first_ready_s": round(min(times), 2),
                    "last_ready_s": round(last, 2), "latency_s": round(last - before, 2)})
        before = last
    return out


def measure_waves(work: Path, *, sites: int, targets: int, interval: int, second: int,
                  pause: int, rollouts: int, idle: float, seed: int,
                  remote_check: float | None) -> dict[str, Any]:
    fleet = WaveFleet(work / "waves", sites, targets, interval, second, pause)
    paths = {}
    for i, site_path in enumerate(fleet.targets, 1):
        name = f"site-{i:02d}.git"
        (fleet.base / name).symlink_to("remote.git")
        paths[name] = site_path
    rng = random.Random(seed)
    result: dict[str, Any] = {"sites": sites, "targets": sites * targets,
                              "interval_s": interval, "pause_s": pause,
                              "remote_check_interval_s": remote_check or REMOTE_CHECK_INTERVAL,
                              "waves": {w: sum(len(fleet.targets[p]) for p in fleet.targets
                                               if fleet.wave_of[p] == w)
                                        for w in ("canary", "second", "rest")}}
    with ExitStack() as stack:
        server = GitServer(fleet.base).start()
        stack.callback(server.stop)
        daemons: dict[str, SiteDaemon] = {}
        # started at random moments of one interval: sites do not run in step
        offsets = sorted(rng.uniform(0, interval) for _ in paths)
        began = time.monotonic()
        for (name, site_path), offset in zip(paths.items(), offsets, strict=True):
            time.sleep(max(0.0, began + offset - time.monotonic()))
            daemon = SiteDaemon(work / "waves" / "sites" / site_id(site_path), site_path,
                                server.url(name), interval,
                                {"remoteCheckInterval": remote_check} if remote_check else None)
            stack.callback(daemon.stop)
            daemons[site_path] = daemon.start()
        watcher = stack.enter_context(StatusWatcher(fleet.remote, fleet.targets, INSTANCE))

        def wait_all(release: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not watcher.all_ready(release):
                dead = [s for s, d in daemons.items() if not d.alive()]
                if dead:
                    raise RuntimeError(f"daemons exited: {dead} (--keep keeps their logs)")
                if time.monotonic() > deadline:
                    late = {t: watcher.latest.get(t) for ts in fleet.targets.values()
                            for t in ts if (t, release) not in watcher.ready}
                    raise RuntimeError(f"not every target Ready on {release} after "
                                       f"{timeout:.0f} s: {late}")
                time.sleep(0.1)

        started = time.time()
        wait_all("1.0.0", 300)
        result["start_to_all_ready_s"] = round(time.time() - started, 1)
        log(f"waves: every target Ready on 1.0.0 after {result['start_to_all_ready_s']} s")
        time.sleep(2 * interval)  # the last pushes of the first rollout, waits dropped

        def cpu_now() -> tuple[float, float]:
            return server.cpu(), sum(d.cpu() for d in daemons.values())

        log(f"waves: idle for {idle:.0f} s")
        a, (s0, d0) = time.time(), cpu_now()
        time.sleep(idle)
        b, (s1, d1) = time.time(), cpu_now()
        result["idle"] = {**request_rates(server, daemons, paths, a, b, interval),
                          **cpu_rates(s1 - s0, d1 - d0, b - a, interval)}
        runs: list[dict[str, Any]] = []
        for n in range(1, rollouts + 1):
            release = f"1.{n}.0"
            fleet.release(release)
            time.sleep(rng.uniform(0, interval))  # a push at any moment of the daemons' cycle
            s0, d0 = cpu_now()
            fleet.push(release)
            t0 = time.time()
            wait_all(release, 6 * interval * 3 + 60)
            done = max(watcher.ready[(t, release)] for ts in fleet.targets.values() for t in ts)
            # requests are counted over whole intervals from the push
            end = t0 + math.ceil((done - t0) / interval) * interval
            time.sleep(max(0.0, end - time.time()))
            s1, d1 = cpu_now()
            waves = wave_figures(watcher, fleet, release, t0)
            run = {"release": release, "all_ready_s": round(done - t0, 2), "waves": waves,
                   **request_rates(server, daemons, paths, t0, end, interval),
                   **cpu_rates(s1 - s0, d1 - d0, time.time() - t0, interval)}
            runs.append(run)
            log(f"waves: {release} on every target after {run['all_ready_s']} s "
                f"(waves {', '.join(str(w['latency_s']) for w in waves)} s)")
            time.sleep(interval)
        result["rollouts"] = runs
        last_site = next(reversed(fleet.targets))
        peers = git(daemons[last_site].state / "repo.git", "for-each-ref",
                    "--format=%(refname)", "refs/reconciler/peers/").splitlines()
        result["peer_branches_in_last_site_mirror"] = {
            "site": last_site, "waited_on_sites": 1 + second,
            "branches": [p.rsplit("/", 1)[1] for p in peers]}
    result["summary"] = summarize_waves(result, interval, pause)
    return result


def summarize_waves(result: dict[str, Any], interval: int, pause: int) -> dict[str, Any]:
    runs = result["rollouts"]
    waves: dict[str, dict[str, float]] = {}
    for name in ("canary", "second", "rest"):
        found = [w for r in runs for w in r["waves"] if w["wave"] == name]
        waves[name] = {k: median([w[k] for w in found])
                       for k in ("first_ready_s", "last_ready_s", "latency_s")}
    limit = GOAL_LATENCY_FACTOR * interval + pause
    worst_latency = max((w["latency_s"] for r in runs for w in r["waves"]), default=0.0)
    idle = result["idle"]
    return {
        "idle_fetches_per_site_interval": idle["fetches_per_site_interval"]["mean"],
        "idle_pushes_per_site_interval": idle["pushes_per_site_interval"]["mean"],
        "idle_max_fetches_in_a_run": idle["fetches_per_run"]["max"],
        "idle_git_server_cpu_s_per_interval": idle["git_server_cpu_s_per_interval"],
        "idle_site_daemons_cpu_s_per_interval": idle["site_daemons_cpu_s_per_interval"],
        "all_ready_s": median([r["all_ready_s"] for r in runs]),
        "all_ready_range_s": [min(r["all_ready_s"] for r in runs),
                              max(r["all_ready_s"] for r in runs)],
        "waves": waves, "latency_goal_s": limit, "worst_wave_latency_s": worst_latency,
        "rollout_fetches_per_site_interval": median(
            [r["fetches_per_site_interval"]["mean"] for r in runs]),
        "rollout_pushes_per_site_interval": median(
            [r["pushes_per_site_interval"]["mean"] for r in runs]),
        "rollout_max_fetches_in_a_run": max(r["fetches_per_run"]["max"] for r in runs),
        "rollout_max_pushes_in_a_run": max(r["pushes_per_run"]["max"] for r in runs),
        "rollout_git_server_cpu_s_per_interval": median(
            [r["git_server_cpu_s_per_interval"] for r in runs]),
        "rollout_site_daemons_cpu_s_per_interval": median(
            [r["site_daemons_cpu_s_per_interval"] for r in runs]),
    }


# ================================================================ part 2: 1,000 sites

def quiet_logs() -> None:
    from reconciler.daemon.logs import configure_logging
    configure_logging("error", "json", stream=io.StringIO())


def server_cost(server: GitServer, requests: int, make: Callable[[int], object],
                between: Callable[[int], None] | None = None) -> dict[str, float]:
    """CPU seconds of the server per request over ``requests`` calls of ``make`` (each one
    request), and the client's median wall time. ``between`` runs before each call, outside
    the measurement (it must not use the server)."""
    walls = []
    cpu = 0.0
    for i in range(requests):
        if between is not None:
            between(i)
        server.settle()
        before = server.cpu()
        t = time.perf_counter()
        make(i)
        walls.append(time.perf_counter() - t)
        server.settle()
        cpu += server.cpu() - before
    return {"server_cpu_ms": round(1000 * cpu / requests, 2),
            "client_wall_ms": round(1000 * statistics.median(walls), 1), "requests": requests}


def measure_scale(work: Path, *, requests: int, sim_sites: int, copies: int) -> dict[str, Any]:
    from reconciler.engine.peer_status import PeerStatuses
    from reconciler.gitops.source import GitSource
    from reconciler.gitops.status_branches import Layout
    from reconciler.gitops.status_push import StatusPublisher

    quiet_logs()
    shape = LargeFleet()
    paths = shape.site_paths()
    waited = paths[5::10]  # the earlier waves' sites: 10 %, spread over every region
    me = paths[-1]
    base = work / "scale"
    base.mkdir(parents=True)
    remote = base / "fleet.git"
    started = time.perf_counter()
    few = min(requests, 5)  # each round of these moves every branch
    counts, moves = write_large_remote(remote, shape, {
        "waited, daemon": (requests, waited), "waited, exact": (requests, waited),
        "all, daemon": (few, paths), "all, exact": (few, paths)})
    refs = len(git(remote, "for-each-ref", "--format=%(refname)").splitlines())
    advert = len(subprocess.run(["git", "receive-pack", "--advertise-refs", str(remote)],
                                capture_output=True, check=True).stdout)
    out: dict[str, Any] = {"fleet": {**counts, "refs": refs,
                                     "push_advertisement_bytes": advert,
                                     "generate_s": round(time.perf_counter() - started, 1)},
                           "site": me, "waited_on_sites": len(waited)}
    log(f"scale: remote of {counts['sites']} sites, {refs} refs written")
    server = GitServer(base).start()
    url = server.url("fleet.git")
    costs: dict[str, dict[str, float]] = {}

    def move(name: str) -> Callable[[int], None]:
        """Before request i: the branches of round i of move ``name`` move (one status
        commit each), in the remote directly (not through the server)."""
        def step(i: int) -> None:
            lines = "".join(f"update refs/heads/reconciler-status/{site_id(p)} {sha}\n"
                            for p, sha in moves[name][i].items())
            git(remote, "update-ref", "--stdin", input=lines.encode())
        return step

    try:
        def source(name: str) -> GitSource:
            return GitSource(url, "main", base / name)

        loose = source("loose")
        loose.fetch()
        costs["fetch, nothing new, every ref loose (a server before its first gc)"] = \
            server_cost(server, requests, lambda i: loose.fetch())
        pack_tags(remote)
        fresh = [source(f"first-{i}") for i in range(3)]
        costs["first fetch of a new site (tracked ref + every tag)"] = server_cost(
            server, len(fresh), lambda i: fresh[i].fetch())
        mirror = fresh[0]
        costs["fetch, nothing new (tracked ref + tags)"] = server_cost(
            server, requests, lambda i: mirror.fetch())
        costs["look for a newer revision (ls-remote of the tracked ref)"] = server_cost(
            server, requests, lambda i: mirror.remote_commit())

        # a site of the last wave waiting: the peer specs as PeerStatuses makes them
        waiting = source("waiting")
        waiting.fetch()
        peers = PeerStatuses(waiting, layout=lambda: Layout.PER_SITE,
                             shared_branch=lambda: "unused")
        peers.begin_run()
        wanted = {f"{p.rsplit('/', 1)[1]}-t0": p for p in waited}

        def first_wait(i: int) -> None:
            peers.statuses(wanted, "inst-000")

        costs["first waiting fetch (the peer specs fetched at once)"] = server_cost(
            server, 1, first_wait)
        peers.end_run()
        out["daemon_peer_specs"] = {"count": len(waiting.extra_specs),
                                    "first": list(waiting.extra_specs[:3])}
        out["peer_refs_fetched"] = len(git(waiting.git_dir, "for-each-ref",
                                           "--format=%(refname)", "refs/reconciler/peers/")
                                       .splitlines())
        # the same wait with one exact refspec per waited-on branch (docs/rollouts.md: only
        # the branches waited on)
        exact = source("exact")
        exact.fetch()
        exact.extra_specs = tuple(
            f"+refs/heads/reconciler-status/{site_id(p)}:refs/reconciler/peers/"
            f"reconciler-status/{site_id(p)}" for p in waited)
        def fetch_of(client: GitSource) -> Callable[[int], None]:
            return lambda i: client.fetch()

        for label, client in (("daemon's specs", waiting), ("exact branches", exact)):
            client.fetch()
            costs[f"waiting fetch, nothing new ({label})"] = server_cost(
                server, requests, fetch_of(client))
        for name, moved in (("waited", len(waited)), ("all", len(paths))):
            for label, client in (("daemon", waiting), ("exact", exact)):
                client.fetch()  # up to date with the moves of the series before
                n = len(moves[f"{name}, {label}"])
                costs[f"waiting fetch, {moved} branches moved ({label})"] = server_cost(
                    server, n, fetch_of(client), move(f"{name}, {label}"))
        # a status commit: one target's file changed
        publisher = StatusPublisher(base / "status.git", url, site_id=site_id(me),
                                    site_path=me)
        target = f"{me.rsplit('/', 1)[1]}-t0"

        def publish(i: int) -> None:
            publisher.publish({f"status/{me}/{target}.yaml": status_text(
                target, me, "0" * 40, "inst-099", "1.9.0", f"2030-01-01T00:00:{i % 60:02d}Z",
                phase="Ready" if i % 2 else "Waiting").encode()}, "status")

        publish(requests + 1)  # adopts the branch (a fetch) and pushes: not counted
        costs["status push (one status commit)"] = server_cost(server, requests, publish)
        # a new release reaches sites: main moves by one commit, a new release tag
        copies_made = [base / f"copy-{i}" for i in range(copies)]
        for path in copies_made:
            shutil.copytree(base / "first-0", path, symlinks=True)
        new_release(remote)
        clones = [GitSource(url, "main", path) for path in copies_made]
        costs["fetch of a new release (one commit, one tag)"] = server_cost(
            server, len(clones), lambda i: clones[i].fetch())
        out["simulated_idle_interval"] = simulate_idle(server, base / "first-0", url,
                                                       sim_sites)
    finally:
        server.stop()
    out["cost_per_request"] = costs
    out["extrapolation"] = extrapolate(costs, shape.sites)
    return out


def new_release(remote: Path) -> None:
    """One commit on main (an instance moved to a new version) and its release tag."""
    head = git(remote, "rev-parse", "refs/heads/main")
    tree = git(remote, "rev-parse", f"{head}^{{tree}}")
    blob = git(remote, "hash-object", "-w", "--stdin", input=b"# a new release\n")
    entries = git(remote, "ls-tree", tree) + f"\n100644 blob {blob}\tRELEASE-NOTES\n"
    new_tree = git(remote, "mktree", input=entries.encode())
    commit = git(remote, "commit-tree", new_tree, "-p", head, "-m", "inst-000: 2.0.0")
    git(remote, "update-ref", "refs/heads/main", commit, head)
    tag = git(remote, "mktag", input=(f"object {commit}\ntype commit\ntag sol-00/v2.0.0\n"
                                       "tagger fleet admin <admin@example.net> 0 +0000\n\n"
                                       "sol-00 2.0.0\n").encode())
    git(remote, "update-ref", "refs/tags/sol-00/v2.0.0", tag)


def simulate_idle(server: GitServer, mirror: Path, url: str, sites: int) -> dict[str, Any]:
    """One interval of ``sites`` idle sites: their fetches back to back, by two clients
    (plain ``git fetch`` with the daemon's arguments), and the server's CPU for them."""
    from reconciler.gitops.source import GitSource

    clients = [mirror.parent / f"sim-{i}" for i in range(2)]
    for path in clients:
        shutil.copytree(mirror, path, symlinks=True)
        GitSource(url, "main", path).fetch()  # up to date before the interval
    todo = list(range(sites))
    lock = threading.Lock()

    def client(path: Path) -> None:
        source = GitSource(url, "main", path)
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            source.fetch()

    server.settle()
    before, started = server.cpu(), time.perf_counter()
    threads = [threading.Thread(target=client, args=(p,)) for p in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    server.settle()
    cpu = server.cpu() - before
    return {"sites": sites, "clients": len(clients), "wall_s": round(wall, 1),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_ms_per_fetch": round(1000 * cpu / sites, 2)}


def extrapolate(costs: Mapping[str, Mapping[str, float]], sites: int) -> dict[str, Any]:
    """The server's CPU per interval at ``sites`` sites, from the cost per request.

    * idle: a fetch per run, the looks for a newer revision (one per run at most, at most one
      per remoteCheckInterval), the heartbeat's push;
    * rollout: every site waits and its status changes every interval (the count of Ready
      targets in its message moves as the wave before it progresses), so per site one
      waiting fetch, every site's branch having moved since the last one, and one push;
    * rollout at the budget: two such fetches and one push per site;

    each with the daemon's peer specs and with exact branches (docs/rollouts.md's).
    """
    def ms(prefix: str) -> float:
        return next(v["server_cpu_ms"] for k, v in costs.items() if k.startswith(prefix))

    idle_fetch, look = ms("fetch, nothing new ("), ms("look for")
    push = ms("status push")
    out: dict[str, Any] = {}
    for interval in (5.0, 180.0):
        looks = min(1.0, interval / REMOTE_CHECK_INTERVAL)
        beats = interval / HEARTBEAT
        mixes = {"idle": (1.0, idle_fetch, beats)}
        for label in ("daemon", "exact"):
            moved = ms(f"waiting fetch, {sites} branches moved ({label})")
            mixes[f"rollout ({label})"] = (1.0, moved, 1.0)
            mixes[f"rollout at the budget ({label})"] = (2.0, moved, 1.0)
        rows = {}
        for name, (fetches, fetch_ms, pushes) in mixes.items():
            cpu = sites * (fetches * fetch_ms + looks * look + pushes * push) / 1000
            rows[name] = {"upload_pack_per_site": round(fetches + looks, 3),
                          "receive_pack_per_site": round(pushes, 3),
                          "server_cpu_s_per_interval": round(cpu, 1),
                          "server_cpus_busy": round(cpu / interval, 2)}
        out[f"{interval:g}s"] = rows
    return out


# ================================================================ the report

def machine() -> dict[str, Any]:
    version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "ram_gb": ram_gb(),
            "python": platform.python_version(),
            "git": version.strip().removeprefix("git version "),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


def goals(results: Mapping[str, Any]) -> list[str]:
    missed = []
    summary = results.get("waves", {}).get("summary")
    if summary:
        limit = summary["latency_goal_s"]
        for name, wave in summary["waves"].items():
            if wave["latency_s"] > limit:
                missed.append(f"wave {name}: median latency {wave['latency_s']} s > {limit} s")
        for key, goal in (("rollout_fetches_per_site_interval", GOAL_FETCHES),
                          ("rollout_pushes_per_site_interval", GOAL_PUSHES),
                          ("rollout_max_fetches_in_a_run", GOAL_FETCHES),
                          ("rollout_max_pushes_in_a_run", GOAL_PUSHES)):
            if summary[key] > goal:
                missed.append(f"{key}: {summary[key]} > {goal}")
        idle = results["waves"]["idle"]
        if idle["fetches_per_run"]["max"] > GOAL_FETCHES:
            missed.append(f"idle: {idle['fetches_per_run']['max']} fetches in a run")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=["waves", "scale", "all"], default="all")
    parser.add_argument("--quick", action="store_true",
                        help="1 rollout, 15 s idle, 5 requests per cost, 50 simulated sites")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--targets", type=int, default=3, help="per site")
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--second", type=int, default=3, help="sites in the second wave")
    parser.add_argument("--pause", type=int, default=0, help="seconds after each wave")
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle counting")
    parser.add_argument("--requests", type=int, default=15, help="per measured request kind")
    parser.add_argument("--sim-sites", type=int, default=200,
                        help="idle fetches in the simulated interval")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--remote-check-interval", type=float,
                        help="the daemons' remoteCheckInterval (default: theirs, 30 s)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.rollouts, args.idle, args.requests, args.sim_sites = 1, 15.0, 5, 50
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    results: dict[str, Any] = {"machine": machine()}
    try:
        if args.part in ("waves", "all"):
            log(f"waves: {args.sites} site daemons, {args.rollouts} rollouts")
            results["waves"] = measure_waves(
                work, sites=args.sites, targets=args.targets, interval=args.interval,
                second=args.second, pause=args.pause, rollouts=args.rollouts,
                idle=args.idle, seed=args.seed, remote_check=args.remote_check_interval)
        if args.part in ("scale", "all"):
            log("scale: the git server's cost per request at 1,000 sites")
            results["scale"] = measure_scale(work, requests=args.requests,
                                             sim_sites=args.sim_sites, copies=args.requests)
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["goals_missed"] = goals(results)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 1 if results["goals_missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
