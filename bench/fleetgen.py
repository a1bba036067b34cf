"""Generate a large, valid fleet repository for benchmarks.

The default shape is the one the model benchmark measures: 5 regions x 4 factories x 5 lines
(a three-level hierarchy), 10 targets per line (1,000 targets), 50 solutions of 5 file
components each (templated content using several parameters, ``dependsOn`` chains, one
component rendered from a template file), and 100 instances, half chosen by site/label
selectors and half by target names. Parameters are set at every level: solution defaults,
profiles, instances, regions, factories (general and solution-scoped), lines and targets.

Which provider the components are bound to is a parameter (``provider`` and
``binding_config``), so an end-to-end benchmark can reuse the same fleet with ``file``
components writing under a root of its choice. Used by bench/bench_model.py; runnable on its
own: ``python bench/fleetgen.py OUTDIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FleetShape", "generate"]

API = "reconciler/v1"
ROLES = ("gateway", "hmi", "plc", "camera", "historian")
PRODUCTS = ("gearbox", "axle", "pump")
LEVELS = ("debug", "info", "warning", "error")

PARAMETERS: dict[str, Any] = {
    "lineId": {"type": "string", "required": True, "editableAt": ["line", "target"]},
    "mqttBroker": {"type": "string", "required": True, "regex": "^mqtts?://.+",
                   "editableAt": ["region", "factory", "line"]},
    "timezone": {"type": "string", "default": "UTC"},
    "ntpServer": {"type": "string", "default": "pool.ntp.org"},
    "logLevel": {"type": "string", "allowed": list(LEVELS), "default": "info"},
    "sampleRate": {"type": "integer", "min": 1, "max": 600, "default": 10},
    "replicas": {"type": "integer", "min": 0, "max": 9, "default": 1,
                 "editableAt": ["factory", "line", "target", "instance"]},
    "signals": {"type": "list", "schema": {"type": "string"},
                "default": ["spindle_speed", "temperature", "vibration"]},
    "retention": {"type": "dict", "default": {"days": 7, "maxMb": 512}},
}


@dataclass(frozen=True)
class FleetShape:
    regions: int = 5
    factories: int = 4  # per region
    lines: int = 5  # per factory
    targets_per_line: int = 10
    solutions: int = 50
    components: int = 5  # per solution
    instances: int = 100  # the first half by selector, the rest by names
    names_per_instance: int = 10

    @property
    def targets(self) -> int:
        return self.regions * self.factories * self.lines * self.targets_per_line


def file_binding(root: str) -> Callable[[str], dict[str, Any]]:
    """Binding config for the ``file`` provider: one directory per target under ``root``."""
    return lambda target: {"root": f"{root.rstrip('/')}/{target}"}


def _doc(kind: str, name: str, spec: dict[str, Any],
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, width=100))


def _names(shape: FleetShape) -> Iterator[tuple[int, int, int, str, str, str]]:
    for r in range(shape.regions):
        for f in range(shape.factories):
            for li in range(shape.lines):
                yield r, f, li, f"r{r}", f"r{r}-f{f}", f"r{r}-f{f}-l{li}"


def _solution(index: int, shape: FleetShape) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    for c in range(shape.components):
        name = f"c{c}"
        props: dict[str, Any] = {"path": f"sol-{index:02d}/{name}.conf", "mode": "0644"}
        if c == 0:
            props["template"] = "base.conf.tmpl"
        else:
            props["content"] = (
                f"# {name} of sol-{index:02d} on ${{{{ target.name }}}} "
                "(${{ site.path }})\n"
                "line = ${{ params.lineId }}\n"
                "broker = ${{ params.mqttBroker }}\n"
                "timezone = ${{ params.timezone }}\n"
                "log_level = ${{ params.logLevel }}\n"
                "sample_rate = ${{ params.sampleRate }}\n"
                "replicas = ${{ params.replicas }}\n"
                "signals = ${{ params.signals | tojson }}\n"
                "retention_days = ${{ params.retention.days }}\n"
                "product = ${{ site.labels.product }}\n")
        comp: dict[str, Any] = {"name": name, "type": "config-file", "properties": props}
        if c > 0:  # a chain c0 <- c1 <- c2 ..., plus the last one also after c1
            deps = [f"c{c - 1}"] + (["c1"] if c == shape.components - 1 and c > 2 else [])
            comp["dependsOn"] = deps
        components.append(comp)
    spec = {
        "description": f"benchmark solution {index}",
        "parameters": PARAMETERS,
        "profiles": {"small": {"replicas": 1, "sampleRate": 30},
                     "large": {"replicas": 3, "sampleRate": 5}},
        "components": components,
    }
    return _doc("Solution", f"sol-{index:02d}", spec, {"team": f"team-{index % 7}"})


def generate(root: Path, shape: FleetShape = FleetShape(), *, provider: str = "file",
             binding_config: Callable[[str], dict[str, Any]] | None = None) -> FleetShape:
    """Write the fleet under ``root`` (created); returns the shape written."""
    config = binding_config or file_binding("files")
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "reconciler.yaml", [_doc("Settings", "fleet", {
        "hierarchy": ["region", "factory", "line"],
        "defaults": {"interval": 180, "jitter": 20},
        "ignore": ["docs/**"],
    })])

    # sites: one file per region holding the region, its factories and their lines
    per_region: dict[str, list[dict[str, Any]]] = {}
    targets: dict[str, list[dict[str, Any]]] = {}
    target_names: list[str] = []
    for r, f, li, region, factory, line in _names(shape):
        docs = per_region.setdefault(region, [])
        if f == 0 and li == 0:
            docs.append(_doc("Site", region, {
                "params": {"timezone": f"Zone/{region}", "ntpServer": f"ntp.{region}.example",
                           "logLevel": "info"},
                "solutionParams": {f"sol-{s:02d}": {"sampleRate": 20 + r}
                                   for s in range(r, shape.solutions, shape.regions)},
            }, {"region": region}))
        if li == 0:
            docs.append(_doc("Site", factory, {
                "parent": region,
                "params": {"mqttBroker": f"mqtt://broker.{factory}.example:1883",
                           "replicas": 1 + f % 3},
                "solutionParams": {f"sol-{s:02d}": {"logLevel": "warning"}
                                   for s in range(f, shape.solutions, shape.factories)},
            }, {"plant": factory}))
        docs.append(_doc("Site", line, {
            "parent": factory,
            "params": {"lineId": line.upper(), "logLevel": LEVELS[li % len(LEVELS)]},
        }, {"line": str(li), "product": PRODUCTS[(r + f + li) % len(PRODUCTS)]}))
        for t in range(shape.targets_per_line):
            name = f"{line}-t{t}"
            target_names.append(name)
            spec: dict[str, Any] = {
                "site": line,
                "bindings": [{"role": "config-file", "provider": provider,
                              "config": config(name)}],
            }
            if t % 2 == 0:
                spec["params"] = {"sampleRate": 1 + t, "replicas": t % 4}
            targets.setdefault(f"targets/{region}/{factory}.yaml", []).append(
                _doc("Target", name, spec, {"role": ROLES[t % len(ROLES)]}))
    for region, docs in per_region.items():
        _write(root / "sites" / f"{region}.yaml", docs)
    for rel, docs in targets.items():
        _write(root / rel, docs)

    for s in range(shape.solutions):
        directory = root / "solutions" / f"sol-{s:02d}"
        _write(directory / "solution.yaml", [_solution(s, shape)])
        (directory / "base.conf.tmpl").write_text(
            "# rendered by the file provider from the repository\n"
            "[agent]\nline = ${{ params.lineId }}\nbroker = ${{ params.mqttBroker }}\n"
            "ntp = ${{ params.ntpServer }}\n")

    selected: list[dict[str, Any]] = []
    named: list[dict[str, Any]] = []
    half = shape.instances // 2
    for i in range(shape.instances):
        solution = f"sol-{i % shape.solutions:02d}"
        spec = {"solution": solution, "params": {"timezone": "UTC"},
                "profile": "small" if i % 3 == 0 else "large"}
        if i < half:
            role = ROLES[i % len(ROLES)]
            if i % 2 == 0:  # a region subtree, one role
                selector: dict[str, Any] = {"sites": [f"r{i % shape.regions}"],
                                            "matchLabels": {"role": role}}
            else:  # labels inherited from lines, anywhere in the fleet
                selector = {"matchLabels": {"role": role,
                                            "product": PRODUCTS[i % len(PRODUCTS)]}}
            spec["targets"] = {"selector": selector}
            selected.append(_doc("Instance", f"inst-sel-{i:03d}", spec))
        else:
            start = (i * 37) % len(target_names)
            chosen = [target_names[(start + k * 13) % len(target_names)]
                      for k in range(shape.names_per_instance)]
            spec["targets"] = {"names": chosen}
            spec["params"]["replicas"] = 2
            named.append(_doc("Instance", f"inst-named-{i:03d}", spec))
    _write(root / "instances" / "selected.yaml", selected)
    _write(root / "instances" / "named.yaml", named)
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "notes.yaml").write_text("not: a manifest\n")
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--provider", default="file")
    parser.add_argument("--file-root", default="files",
                        help="root of each target's file binding (relative: state dir)")
    args = parser.parse_args()
    shape = generate(args.outdir, provider=args.provider,
                     binding_config=file_binding(args.file_root))
    print(f"{args.outdir}: {shape.targets} targets, {shape.solutions} solutions, "
          f"{shape.instances} instances")


if __name__ == "__main__":
    main()
