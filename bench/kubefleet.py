"""Parts of the Kubernetes benchmark (``bench_kubernetes.py``): the test API server in a child
process with its request log, the bench fleet repository, and timing.

The API server (``tests.kubeapi.KubeAPIServer``, controller on so Deployments roll out) runs
in a child process, so its memory and CPU are not in the figures of the measuring process.
Requests are counted from its log by verb: lists, reads of one object, dry-run applies,
writes and discovery.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml
from benchkit import cpu_model, ram_gb

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
                conn.send([(r.method, r.dry_run, r.verb, r.status) for r in api.requests])
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

    lists: int  # list requests (pages)
    gets: int  # reads of one object
    dry_runs: int
    writes: int
    discovery: int
    errors: int

    @property
    def per_object(self) -> int:
        """Requests about one object each: reads, dry-runs, writes."""
        return self.gets + self.dry_runs + self.writes

    @classmethod
    def of(cls, rows: list[tuple[str, bool, str, int]]) -> Counts:
        return cls(
            lists=sum(1 for _, _, v, _ in rows if v == "list"),
            gets=sum(1 for _, _, v, _ in rows if v == "get"),
            dry_runs=sum(1 for _, d, _, _ in rows if d),
            writes=sum(1 for m, d, _, _ in rows if m in WRITES and not d),
            discovery=sum(1 for m, _, v, _ in rows if m == "GET" and not v),
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
                          ("lists", "gets", "dry_runs", "writes", "discovery", "errors")))
    return Figure(name, statistics.median(walls), walls, counts, peak_rss_mib(),
                  statistics.median(cpus), server_cpu)


def machine() -> str:
    return (f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {ram_gb()} GiB RAM; Python "
            f"{platform.python_version()}")
