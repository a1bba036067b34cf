"""Benchmark: plan and idle runs of many Kubernetes objects against the test API server.

Builds a fleet repository with one Kubernetes target and one solution whose components hold
``--objects`` objects in total (ConfigMaps, Services and Deployments in a 2:2:1 mix, templated
from parameters, ``--components`` components, one namespace), validates it with the real
loader, applies it once through ``reconciler.engine.executing.reconcile_target``, then measures
``--repeat`` times and takes medians:

* plan: ``KubernetesProvider.observe`` over every component, a fresh provider each time
  (discovery included);
* idle run, providers kept: a whole ``reconcile_target`` run (observe + health of every
  component, nothing to apply) with the provider set of the previous run, as the daemon keeps
  it per binding and revision; the inventory is read from disk and saved;
* idle run, fresh providers: the same with a new provider set each time, as after a restart or
  in ``sync --once`` (discovery included);
* baselines in the same run, because the machine is shared and noisy: plain GETs through the
  official client's typed API, the raw request pattern of a per-object check (GET + dry-run
  apply per object, ``json.loads`` only), and the raw lists an idle run needs at the least (one
  labelled list per kind and namespace).

``--providers DIR`` measures the provider package found in ``DIR/reconciler_providers`` instead
of the installed one, for before/after figures from one checkout::

    git archive <commit> providers | tar -x -C /tmp/old
    mv /tmp/old/providers /tmp/old/reconciler_providers
    .venv/bin/python bench/bench_kubernetes.py --providers /tmp/old

The goal (issue 13): an idle run costs O(kinds x namespaces) requests, not O(objects): here,
no request about a single object, and at most one list per kind and namespace (3 of them).
Run: ``.venv/bin/python bench/bench_kubernetes.py [--objects 500] [--repeat 5] [--profile]``
(figures in bench/README.md, section "Kubernetes idle run").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
for _path in (REPO_ROOT, HERE):  # tests.kubeapi lives in the repository, not the venv
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from kubefleet import (  # noqa: E402
    NAMESPACE,
    TARGET,
    Figure,
    ServerProcess,
    machine,
    measure,
    peak_rss_mib,
    write_fleet,
)

KINDS_X_NAMESPACES = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of one plan (every component observed)")
    parser.add_argument("--providers", type=Path,
                        help="measure DIR/reconciler_providers instead of the installed one")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.providers is not None:
        sys.path.insert(0, str(args.providers.resolve()))

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import reconciler_providers  # type: ignore[import-not-found, unused-ignore]
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

        def provider_set() -> ProviderSet:
            return ProviderSet(TARGET, registry, policy, state, lambda: False)

        kept = provider_set()

        def sync(providers: ProviderSet | None, expect_applied: int | None) -> None:
            inventory = Inventory.load(state, TARGET)
            result = reconcile_target(target, placements, providers or provider_set(),
                                      inventory, "bench", retry=retry)
            inventory.save()
            bad = [c for c in result.components if c.phase is not ComponentPhase.READY]
            if bad or (expect_applied is not None and result.applied != expect_applied):
                raise SystemExit(f"unexpected sync result: applied {result.applied}, "
                                 f"{bad[:1]}")

        figures.append(measure("initial apply (1 run)", 1, lambda: sync(kept, None), server))

        inventory = Inventory.load(state, TARGET)
        components = [c for p in placements for c in p.components]

        def plan() -> None:
            providers = provider_set()
            for comp in components:
                binding = target.binding(comp.type)
                assert binding is not None
                entry = inventory.get(comp.key)
                seen = providers.for_binding(binding).observe(
                    comp, entry.record if entry else None)
                if not seen.in_sync:
                    raise SystemExit(f"{comp.key} not in sync: {seen.message}\n{seen.diff}")

        figures.append(measure("plan (observe all)", args.repeat, plan, server))
        sync(kept, 0)  # the first run after the apply, not measured
        figures.append(measure("idle run, providers kept (daemon)", args.repeat,
                               lambda: sync(kept, 0), server))
        figures.append(measure("idle run, fresh providers (restart)", args.repeat,
                               lambda: sync(None, 0), server))

        # -- baselines: the same server, the official client
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig),  # type: ignore[no-untyped-call]
                                    client_configuration=configuration)
        api_client = k8s_client.ApiClient(configuration)
        core, apps = k8s_client.CoreV1Api(api_client), k8s_client.AppsV1Api(api_client)
        readers = {"ConfigMap": core.read_namespaced_config_map,
                   "Service": core.read_namespaced_service,
                   "Deployment": apps.read_namespaced_deployment}
        plural = {"ConfigMap": f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                  "Service": f"/api/v1/namespaces/{NAMESPACE}/services",
                  "Deployment": f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"}
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
                raw("GET", f"{plural[kind]}/{name}", [], None)
                raw("PATCH", f"{plural[kind]}/{name}",
                    [("fieldManager", "reconciler"), ("force", "true"), ("dryRun", "All")],
                    bodies[(kind, name)], "application/apply-patch+yaml")

        def raw_lists() -> None:
            selector = f"app.kubernetes.io/managed-by=reconciler,reconciler.io/target={TARGET}"
            for path in plural.values():
                raw("GET", path, [("labelSelector", selector), ("limit", "500")], None)

        figures.append(measure(f"baseline: {len(names)} typed GETs", args.repeat,
                               typed_gets, server, count=False))
        figures.append(measure(f"baseline: {len(names)} raw GET + dry-run", args.repeat,
                               raw_get_and_dry_run, server, count=False))
        figures.append(measure(f"baseline: {len(plural)} raw lists", args.repeat,
                               raw_lists, server, count=False))
        api_client.close()  # type: ignore[no-untyped-call]

        profile_text = ""
        if args.profile:
            # the provider's own work, in this thread: the engine runs independent components
            # in worker threads, which cProfile does not see
            profiler = cProfile.Profile()
            profiler.enable()
            plan()
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
    print(f"providers: {Path(reconciler_providers.__file__).parent}")
    print(f"objects: {args.objects} in {args.components} components; repeat {args.repeat}; "
          f"API server in a child process (its RSS at the end: {server_rss:.0f} MiB)")
    print(f"peak RSS of the measuring process before the work: {rss_start:.0f} MiB")
    print(f"{'operation':38} {'wall s':>7} {'cpu cli':>7} {'cpu srv':>7} {'lists':>5} "
          f"{'GET':>5} {'dry':>5} {'wr':>5} {'disc':>4} {'RSS MiB':>7}  runs (s)")
    for f in figures:
        runs = " ".join(f"{r:.3f}" for r in f.runs)
        if f.counts is not None:
            c = f.counts
            per = f"{c.lists:5d} {c.gets:5d} {c.dry_runs:5d} {c.writes:5d} {c.discovery:4d}"
        else:
            per = f"{'':5} {'':5} {'':5} {'':5} {'':4}"
        print(f"{f.name:38} {f.median:7.3f} {f.client_cpu:7.3f} {f.server_cpu:7.3f} {per} "
              f"{f.rss_mib:7.0f}  {runs}")
    idle = next(f for f in figures if f.name.startswith("idle run, providers kept"))
    assert idle.counts is not None
    goal = idle.counts.per_object == 0 and idle.counts.lists <= KINDS_X_NAMESPACES
    print(f"goal (idle run: no request per object, <= {KINDS_X_NAMESPACES} lists "
          f"= kinds x namespaces): {'met' if goal else 'MISSED'}")
    if profile_text:
        print(profile_text)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "objects": args.objects, "components": args.components,
            "providers": str(Path(reconciler_providers.__file__).parent),
            "figures": [{"name": f.name, "median": f.median, "runs": f.runs,
                         "client_cpu": f.client_cpu, "server_cpu": f.server_cpu,
                         "counts": None if f.counts is None else vars(f.counts),
                         "peak_rss_mib": f.rss_mib} for f in figures]}, indent=2))
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
