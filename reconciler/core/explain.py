"""``reconciler explain``: what a target gets and why.

For each instance placed on a target: every resolved parameter with its value and origin
(file, line, hierarchy level, and the lower-precedence settings it overrode), and the rendered
components in apply order. Secret parameters are shown as ``<secret>``. Pure formatting over a
validation :class:`~reconciler.core.validation.Report`.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.rendering import Placement
from reconciler.core.secrets import PLACEHOLDER, mask
from reconciler.core.validation import Report

__all__ = ["explain_data", "explain_text"]


def _value(value: Any, secret: bool) -> Any:
    return PLACEHOLDER if secret else value


def explain_data(report: Report, target: str, instance: str | None = None) -> dict[str, Any]:
    fleet = report.fleet
    t = fleet.targets[target]
    placements = [p for p in report.placements.get(target, ())
                  if instance is None or p.instance.name == instance]
    return {
        "target": t.name,
        "site": fleet.site_path(t.site),
        "labels": fleet.target_labels(t),
        "bindings": [{"role": b.role, "provider": b.provider} for b in t.bindings],
        "instances": [_placement(p) for p in placements],
        "errors": [{**d.to_dict(), "text": d.format()} for d in report.errors_for(target)],
    }


def _placement(p: Placement) -> dict[str, Any]:
    secrets = {n for n, r in p.params.items() if r.secret}
    return {
        "instance": p.instance.name,
        "solution": p.solution.name,
        "version": p.instance.version,
        "release": p.solution.release or None,
        "source": f"{p.instance.source.path}:{p.instance.source.line}",
        "suspended": p.instance.suspend,
        "parameters": [
            {
                "name": r.name,
                "value": _value(r.value, r.secret),
                "level": r.origin.level,
                "object": r.origin.obj,
                "field": r.origin.field,
                "file": r.origin.path,
                "line": r.origin.line,
                "overrides": [{"level": o.level, "file": o.path, "line": o.line}
                              for o in reversed(r.overridden)],
            }
            for r in sorted(p.params.values(), key=lambda r: r.name)
        ],
        "components": [
            {
                "name": c.name,
                "type": c.type,
                "binding": next((f"{b.provider}" for b in p.target.bindings
                                 if b.role == c.type), None),
                "dependsOn": list(c.depends_on),
                "properties": mask(c.properties, {str(p.params[s].value) for s in secrets},
                                   PLACEHOLDER),
            }
            for c in p.components
        ],
    }


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value == PLACEHOLDER else json.dumps(value)


def explain_text(data: dict[str, Any]) -> str:
    lines = [f"Target {data['target']}  (site {data['site']})"]
    labels = ", ".join(f"{k}={v}" for k, v in sorted(data["labels"].items()))
    lines.append(f"  labels:   {labels or '-'}")
    lines.append("  bindings: " + (", ".join(f"{b['role']} -> {b['provider']}"
                                            for b in data["bindings"]) or "-"))
    if not data["instances"]:
        lines.append("  no instance selects this target")
    for inst in data["instances"]:
        lines.append("")
        suspended = "  [suspended]" if inst["suspended"] else ""
        release = f" {inst['version']} (tag {inst['release']})" if inst["release"] else ""
        lines.append(f"Instance {inst['instance']}  (solution {inst['solution']}{release}, "
                     f"{inst['source']}){suspended}")
        lines.append("  Parameters (highest precedence wins):")
        rows = [(p["name"], _show(p["value"]), p["level"], f"{p['file']}:{p['line']}",
                 f"{p['object']} {p['field']}") for p in inst["parameters"]]
        widths = [max([len(r[i]) for r in rows] + [len(h)])
                  for i, h in enumerate(("NAME", "VALUE", "LEVEL", "FILE"))]
        header = ("NAME", "VALUE", "LEVEL", "FILE", "SET BY")
        lines.append("    " + "  ".join(h.ljust(widths[i]) if i < 4 else h
                                        for i, h in enumerate(header)))
        for row, p in zip(rows, inst["parameters"], strict=True):
            lines.append("    " + "  ".join(c.ljust(widths[i]) if i < 4 else c
                                            for i, c in enumerate(row)))
            for o in p["overrides"]:
                lines.append(" " * (6 + widths[0]) + f"overrides {o['level']} at "
                             f"{o['file']}:{o['line']}")
        lines.append("  Components (apply order):")
        for c in inst["components"]:
            deps = f", after {', '.join(c['dependsOn'])}" if c["dependsOn"] else ""
            lines.append(f"    {c['name']}  ({c['type']} -> {c['binding'] or 'UNBOUND'}{deps})")
            for key, value in c["properties"].items():
                text = value if isinstance(value, str) else json.dumps(value)
                body = text.rstrip("\n").split("\n")
                lines.append(f"      {key}: {body[0]}")
                lines.extend(f"      {' ' * len(key)}  {more}" for more in body[1:])
    if data["errors"]:
        lines.append("")
        lines.append("Errors that stop this target:")
        lines.extend(f"  {e['text']}" for e in data["errors"])
    return "\n".join(lines)
