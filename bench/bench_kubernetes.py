"""Benchmark: plan and no-op sync of many Kubernetes objects against the test API server.

Builds a fleet repository with one Kubernetes target and one solution whose components hold
``--objects`` objects in total (ConfigMaps, Services and Deployments in a 2:2:1 mix, templated
from parameters, ``--components`` components), validates it with the real loader, applies it
once through ``reconciler.engine.executing.reconcile_target``, then measures ``--repeat`` times:

* plan: ``KubernetesProvider.observe`` over every component (a fresh provider each time, as
  a daemon run builds one, so discovery is included);
* no-op sync: a whole ``reconcile_target`` run (observe + health of every component, nothing
  to apply), with a fresh provider set and the inventory loaded from disk, as in a daemon run;
* baselines in the same run, because the machine is shared and noisy: the same number of
  plain GETs through the official client's typed API (``read_namespaced_*``), and the raw
  request pattern a no-op needs at the least (GET + dry-run apply per object, no parsing,
  no diff).

Requests are counted from the server's request log. The API server (``tests.kubeapi``) runs in
a child process, so its memory and CPU are not in the figures of the measuring process; peak
RSS is ``ru_maxrss`` of the measuring process. ``--profile`` adds a cProfile of one no-op
sync. The goal (from the issue): a no-op sync makes at most one dry-run and no write per object
and stays under 2 s for 500 objects.

Run: ``.venv/bin/python bench/bench_kubernetes.py [--objects 500] [--repeat 5] [--profile]``
(see bench/KUBERNETES.md for the figures).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import multiprocessing
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tests.kubeapi lives in the repository, not the venv
    sys.path.insert(0, str(REPO_ROOT))

NAMESPACE = "bench"
TARGET = "bench-cluster"
API = "reconciler/v1"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


# ---------------------------------------------------------------- the API server process

def _serve(conn: Connection, kubeconfig: str) -> None:
    """Child process: run the test API server (controller on, so Deployments roll out) and
    answer the parent's commands on ``conn`` until ``stop``."""
    import psutil  # type: ignore[import-untyped]
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    from tests.kubeapi import KubeAPIServer

    with KubeAPIServer(controller=True) as api:
        api.add_objects(*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                          for n in ("default", NAMESPACE)))
        api.write_kubeconfig(kubeconfig)
        conn.send(api.url)
        while True:
            command = conn.recv()
            if command == "stop":
                break
            if command == "reset":
                api.reset_requests()
                conn.send(None)
            elif command == "counts":
                conn.send([(r.method, r.dry_run, r.path, r.status) for r in api.requests])
            elif command == "rss":
                conn.send(psutil.Process().memory_info().rss)
    conn.send("stopped")


class ServerProcess:
    """The parent's handle on the API server process."""

    def __init__(self, kubeconfig: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve, args=(child, str(kubeconfig)), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the API server process did not start")
        self.url = str(self._conn.recv())

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system)."""
        import psutil

        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def call(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def counts(self) -> Counts:
        return Counts.of(self.call("counts"))

    def stop(self) -> None:
        self._conn.send("stop")
        self._conn.recv()
        self._proc.join(10)


@dataclass(frozen=True)
class Counts:
    """Requests seen by the server during one measured operation."""

    gets: int
    dry_runs: int
    writes: int
    discovery: int
    errors: int

    @classmethod
    def of(cls, rows: list[tuple[str, bool, str, int]]) -> Counts:
        def discovery(path: str) -> bool:
            parts = [p for p in path.split("/") if p]
            return parts in (["api"], ["apis"], ["api", "v1"], ["version"]) or (
                parts[:1] == ["apis"] and len(parts) <= 3)

        return cls(
            gets=sum(1 for m, _, p, _ in rows if m == "GET" and not discovery(p)),
            dry_runs=sum(1 for _, d, _, _ in rows if d),
            writes=sum(1 for m, d, _, _ in rows if m in WRITES and not d),
            discovery=sum(1 for m, _, p, _ in rows if m == "GET" and discovery(p)),
            errors=sum(1 for *_, s in rows if s >= 400 and s != 404))


# ---------------------------------------------------------------- the fleet repository

def _objects(component: int, count: int) -> list[dict[str, Any]]:
    """``count`` objects, 2:2:1 ConfigMaps, Services and Deployments, templated."""
    out: list[dict[str, Any]] = []
    for index in range(count):
        name = f"c{component:02d}-o{index:03d}"
        labels = {"app": name, "line": "${{ params.lineId }}"}
        kind = ("ConfigMap", "Service", "ConfigMap", "Service", "Deployment")[index % 5]
        if kind == "ConfigMap":
            out.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": labels},
                        "data": {"LINE": "${{ params.lineId }}",
                                 "POLL": "every ${{ params.pollSeconds }}s",
                                 "settings.json": json.dumps({"object": name, "n": index})}})
        elif kind == "Service":
            out.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"selector": {"app": name},
                                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        else:
            out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": name, "labels": labels},
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                                     "containers": [{
                                         "name": "app", "image": "${{ params.image }}",
                                         "ports": [{"containerPort": 8080}],
                                         "env": [{"name": "LINE",
                                                  "value": "${{ params.lineId }}"}]}]}}}})
    return out


def write_fleet(root: Path, kubeconfig: Path, objects: int, components: int) -> None:
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}

    def dump(rel: str, *docs: dict[str, Any]) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))

    dump("reconciler.yaml", doc("Settings", "fleet", {"hierarchy": ["plant"]}))
    dump("sites.yaml", doc("Site", "bench-plant", {}))
    dump("targets.yaml", doc("Target", TARGET, {"site": "bench-plant", "bindings": [
        {"role": "kubernetes", "provider": "kubernetes",
         "config": {"kubeconfig": str(kubeconfig), "namespace": NAMESPACE}}]}))
    per = [objects // components + (1 if i < objects % components else 0)
           for i in range(components)]
    dump("solutions/bulk/solution.yaml", doc("Solution", "bulk", {
        "parameters": {"lineId": {"type": "string", "default": "BENCH-1"},
                       "pollSeconds": {"type": "integer", "default": 5},
                       "image": {"type": "string", "default": "nginx:1.27"}},
        "components": [{"name": f"part-{i:02d}", "type": "kubernetes",
                        "properties": {"manifests": f"manifests/part-{i:02d}"}}
                       for i in range(components)]}))
    for i, count in enumerate(per):
        dump(f"solutions/bulk/manifests/part-{i:02d}/objects.yaml", *_objects(i, count))
    dump("instances.yaml", doc("Instance", "bulk", {"solution": "bulk",
                                                     "targets": {"names": [TARGET]}}))


# ---------------------------------------------------------------- measuring

def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass(frozen=True)
class Figure:
    name: str
    median: float  # wall seconds
    runs: list[float]
    counts: Counts | None  # requests per run
    rss_mib: float  # peak RSS of the measuring process so far
    client_cpu: float  # CPU seconds of the measuring process, median per run
    server_cpu: float  # CPU seconds of the API server process, mean per run


def measure(name: str, repeat: int, run: Callable[[], None], server: ServerProcess,
            count: bool = True) -> Figure:
    """Run ``run`` ``repeat`` times; wall and CPU medians, requests per run from the log.

    CPU times matter on a shared machine: wall time includes waiting for other people's
    processes, CPU time (client + server) is what the work itself costs.
    """
    server.call("reset")
    walls, cpus = [], []
    server_before = server.cpu_seconds()
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    server_cpu = (server.cpu_seconds() - server_before) / repeat
    counts = None
    if count:
        total = server.counts()
        counts = Counts(*(round(getattr(total, f) / repeat) for f in
                          ("gets", "dry_runs", "writes", "discovery", "errors")))
    return Figure(name, statistics.median(walls), walls, counts, peak_rss_mib(),
                  statistics.median(cpus), server_cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of one no-op sync")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from reconciler_providers.kube_objects import stamp_ownership  # type: ignore[import-not-found, unused-ignore]

    from reconciler.core.provider_api import LocalPolicy
    from reconciler.core.registry import ProviderRegistry
    from reconciler.core.validation import validate_repository
    from reconciler.engine.bindings import ProviderSet
    from reconciler.engine.executing import ComponentPhase, RetryPolicy, reconcile_target
    from reconciler.engine.inventory import Inventory

    rss_start = peak_rss_mib()
    tmp = tempfile.TemporaryDirectory(prefix="bench-kube-")
    work = Path(tmp.name)
    kubeconfig = work / "kubeconfig"
    server = ServerProcess(kubeconfig)
    figures: list[Figure] = []
    try:
        write_fleet(work / "repo", kubeconfig, args.objects, args.components)
        registry = ProviderRegistry.discover()
        policy = LocalPolicy(base_dir=work / "state")
        report = validate_repository(work / "repo", registry=registry, policy=policy,
                                     revision="bench")
        if report.errors:
            raise SystemExit("invalid bench fleet: " + report.errors[0].format())
        target = report.fleet.targets[TARGET]
        placements = report.placements[TARGET]
        state = work / "state"
        retry = RetryPolicy(retries=0, health_timeout=120, health_poll=0.02)

        def sync(expect_applied: int | None) -> None:
            providers = ProviderSet(TARGET, registry, policy, state, lambda: False)
            inventory = Inventory.load(state, TARGET)
            result = reconcile_target(target, placements, providers, inventory, "bench",
                                      retry=retry)
            inventory.save()
            bad = [c for c in result.components if c.phase is not ComponentPhase.READY]
            if bad or (expect_applied is not None and result.applied != expect_applied):
                raise SystemExit(f"unexpected sync result: applied {result.applied}, "
                                 f"{bad[:1]}")

        figures.append(measure("initial apply (1 run)", 1, lambda: sync(None), server))

        inventory = Inventory.load(state, TARGET)
        components = [c for p in placements for c in p.components]

        def plan() -> None:
            providers = ProviderSet(TARGET, registry, policy, state, lambda: False)
            for comp in components:
                binding = target.binding(comp.type)
                assert binding is not None
                entry = inventory.get(comp.key)
                seen = providers.for_binding(binding).observe(
                    comp, entry.record if entry else None)
                if not seen.in_sync:
                    raise SystemExit(f"{comp.key} not in sync: {seen.message}\n{seen.diff}")

        figures.append(measure("plan (observe all)", args.repeat, plan, server))
        figures.append(measure("no-op sync (reconcile_target)", args.repeat,
                               lambda: sync(0), server))

        # -- baselines: the same server, the official client
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig),  # type: ignore[no-untyped-call]
                                    client_configuration=configuration)
        api_client = k8s_client.ApiClient(configuration)
        core, apps = k8s_client.CoreV1Api(api_client), k8s_client.AppsV1Api(api_client)
        readers = {"ConfigMap": core.read_namespaced_config_map,
                   "Service": core.read_namespaced_service,
                   "Deployment": apps.read_namespaced_deployment}
        plural = {"ConfigMap": f"/api/v1/namespaces/{NAMESPACE}/configmaps/",
                  "Service": f"/api/v1/namespaces/{NAMESPACE}/services/",
                  "Deployment": f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/"}
        # the bodies the provider sends: rendered, stamped with the ownership marks
        bodies: dict[tuple[str, str], dict[str, Any]] = {}
        for i in range(args.components):
            path = work / "repo" / f"solutions/bulk/manifests/part-{i:02d}/objects.yaml"
            text = path.read_text().replace("${{ params.lineId }}", "BENCH-1") \
                .replace("${{ params.pollSeconds }}", "5") \
                .replace("${{ params.image }}", "nginx:1.27")
            for obj in yaml.safe_load_all(text):
                body = stamp_ownership(obj, instance="bulk", target=TARGET,
                                       component=f"part-{i:02d}")
                body["metadata"]["namespace"] = NAMESPACE
                bodies[(obj["kind"], obj["metadata"]["name"])] = body
        names = list(bodies)

        def typed_gets() -> None:
            for kind, name in names:
                readers[kind](name, NAMESPACE)

        def raw(method: str, path: str, query: list[tuple[str, str]], body: Any,
                content_type: str = "application/json") -> None:
            request = api_client.param_serialize(
                method, path, query_params=query, body=body, auth_settings=["BearerToken"],
                header_params={"Accept": "application/json", "Content-Type": content_type})
            response = api_client.call_api(*request)
            json.loads(response.read())  # type: ignore[no-untyped-call]

        def raw_get_and_dry_run() -> None:
            for kind, name in names:
                raw("GET", plural[kind] + name, [], None)
                raw("PATCH", plural[kind] + name,
                    [("fieldManager", "reconciler"), ("force", "true"), ("dryRun", "All")],
                    bodies[(kind, name)], "application/apply-patch+yaml")

        figures.append(measure(f"baseline: {len(names)} typed GETs", args.repeat,
                               typed_gets, server, count=False))
        figures.append(measure(f"baseline: {len(names)} raw GET + dry-run", args.repeat,
                               raw_get_and_dry_run, server, count=False))
        api_client.close()  # type: ignore[no-untyped-call]

        profile_text = ""
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            sync(0)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
            profile_text = out.getvalue()
        server_rss = int(server.call("rss")) / 2**20
    finally:
        server.stop()
        tmp.cleanup()

    print(machine())
    print(f"objects: {args.objects} in {args.components} components; repeat {args.repeat}; "
          f"API server in a child process (its RSS at the end: {server_rss:.0f} MiB)")
    print(f"peak RSS of the measuring process before the work: {rss_start:.0f} MiB")
    print(f"{'operation':38} {'wall s':>7} {'cpu cli':>7} {'cpu srv':>7} {'GET/obj':>7} "
          f"{'dry/obj':>7} {'wr/obj':>6} {'disc':>4} {'RSS MiB':>7}  runs (s)")
    for f in figures:
        runs = " ".join(f"{r:.2f}" for r in f.runs)
        if f.counts is not None:
            c = f.counts
            per = (f"{c.gets / args.objects:7.2f} {c.dry_runs / args.objects:7.2f} "
                   f"{c.writes / args.objects:6.2f} {c.discovery:4d}")
        else:
            per = f"{'':7} {'':7} {'':6} {'':4}"
        print(f"{f.name:38} {f.median:7.3f} {f.client_cpu:7.3f} {f.server_cpu:7.3f} {per} "
              f"{f.rss_mib:7.0f}  {runs}")
    noop = next(f for f in figures if f.name.startswith("no-op"))
    assert noop.counts is not None
    goal = (noop.counts.dry_runs <= args.objects and noop.counts.writes == 0
            and noop.median < 2.0)
    print(f"goal (no-op: <= 1 dry-run and no write per object, < 2 s): "
          f"{'met' if goal else 'MISSED'}")
    if profile_text:
        print(profile_text)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "objects": args.objects, "components": args.components,
            "figures": [{"name": f.name, "median": f.median, "runs": f.runs,
                         "client_cpu": f.client_cpu, "server_cpu": f.server_cpu,
                         "counts": None if f.counts is None else vars(f.counts),
                         "peak_rss_mib": f.rss_mib} for f in figures]}, indent=2))
    return 0 if goal else 1


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal"))
        ram = f"{mem / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        ram = "RAM unknown"
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), {ram}; Python "
            f"{platform.python_version()}")


if __name__ == "__main__":
    sys.exit(main())
