"""The ``reconciler`` command line (click). One program, one subcommand per job.

Exit codes: 0 success, 1 the thing checked is not OK (invalid repository, failed target),
2 usage or local configuration error.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.diagnostics import Diagnostic
from reconciler.logs import configure_logging

__all__ = ["main"]

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output for people or for tools.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level for messages on stderr.")
@click.option("--log-format", default="auto", show_default=True,
              type=click.Choice(["auto", "json", "console"]),
              help="auto: console on a terminal, JSON lines otherwise.")
@click.pass_context
def main(ctx: click.Context, log_level: str, log_format: str) -> None:
    """Reconciler: GitOps for fleets of edge sites.

    A Git repository holds the desired state of the fleet (sites, targets, solutions,
    instances); a daemon at each site applies it to that site's targets and commits status
    back. Start with `reconciler validate PATH` and `reconciler explain`.
    """
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    ctx.obj["log_format"] = log_format
    configure_logging(log_level, log_format)


def _group(diagnostics: list[Diagnostic]) -> list[tuple[Diagnostic, list[str], list[str]]]:
    """Merge diagnostics that differ only by the target/instance they concern."""
    merged: dict[str, tuple[Diagnostic, list[str], list[str]]] = {}
    for d in diagnostics:
        key = d.format()
        entry = merged.setdefault(key, (d, [], []))
        if d.target and d.target not in entry[1]:
            entry[1].append(d.target)
        if d.instance and d.instance not in entry[2]:
            entry[2].append(d.instance)
    return list(merged.values())


def _scope(targets: list[str], instances: list[str]) -> str:
    parts = []
    if instances:
        parts.append(f"instance {', '.join(instances)}")
    if targets:
        shown = ", ".join(targets[:5]) + (f" and {len(targets) - 5} more" if len(targets) > 5
                                          else "")
        parts.append(f"target{'s' if len(targets) > 1 else ''} {shown}")
    return f" [{'; '.join(parts)}]" if parts else ""


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path),
                default=".")
@FORMAT
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(path: Path, fmt: str, strict: bool) -> None:
    """Check a fleet repository and report every mistake at once.

    Each problem is one line: `path:line: Kind/name: field: message`. Exit 0 when the
    repository is valid, 1 when it is not.
    """
    from reconciler.validation import validate_repository

    report = validate_repository(path)
    errors = report.errors
    warnings = [d for d in report.diagnostics if not d.is_error]
    failed = bool(errors) or (strict and bool(warnings))
    if fmt == "json":
        click.echo(json.dumps({
            "valid": not failed,
            "errors": [d.to_dict() for d in errors],
            "warnings": [d.to_dict() for d in warnings],
            "objects": _counts(report.fleet),
        }, indent=2))
    else:
        for d, targets, instances in _group(list(report.diagnostics)):
            click.echo(d.format() + _scope(targets, instances))
        counts = ", ".join(f"{n} {k}" for k, n in _counts(report.fleet).items())
        click.echo(f"{path}: {counts}; {len(_group(errors))} error(s), "
                   f"{len(_group(warnings))} warning(s)", err=True)
    sys.exit(1 if failed else 0)


def _counts(fleet: Any) -> dict[str, int]:
    return {"sites": len(fleet.sites), "targets": len(fleet.targets),
            "solutions": len(fleet.solutions), "instances": len(fleet.instances)}


@main.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Fleet repository checkout.")
@click.option("--target", "target", required=True, help="Target name.")
@click.option("--instance", "instance", default=None, help="Only this instance.")
@FORMAT
def explain(repo: Path, target: str, instance: str | None, fmt: str) -> None:
    """Show which value each parameter of a target gets, and where it was set.

    For every instance on the target: each resolved parameter with its value, the hierarchy
    level and the file and line that set it (and what it overrode), then the rendered
    components in apply order.
    """
    from reconciler.explain import explain_data, explain_text
    from reconciler.validation import validate_repository

    report = validate_repository(repo)
    if target not in report.fleet.targets:
        import difflib

        near = difflib.get_close_matches(target, list(report.fleet.targets), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise click.UsageError(f"no target '{target}' in {repo}{hint}")
    if instance is not None and instance not in report.fleet.instances:
        raise click.UsageError(f"no instance '{instance}' in {repo}")
    data = explain_data(report, target, instance)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(explain_text(data))
    sys.exit(1 if data["errors"] else 0)


@main.command()
@FORMAT
def providers(fmt: str) -> None:
    """List the installed providers (entry-point group `reconciler.providers`)."""
    from reconciler.registry import ProviderRegistry

    registry = ProviderRegistry.discover()
    rows: list[dict[str, str]] = []
    for name in sorted({*registry.providers, *registry.failures}):
        if name in registry.providers:
            cls = registry.providers[name]
            doc = (cls.__doc__ or "").strip().splitlines()
            rows.append({"name": name, "status": "ok", "origin": registry.origins[name],
                         "description": doc[0] if doc else ""})
        else:
            rows.append({"name": name, "status": "failed", "origin": "",
                         "description": registry.failures[name]})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    by_status: dict[str, int] = defaultdict(int)
    width = max([len(r["name"]) for r in rows] + [4])
    for r in rows:
        by_status[r["status"]] += 1
        click.echo(f"{r['name'].ljust(width)}  {r['status']:<6}  {r['description']}")
    if by_status["failed"]:
        sys.exit(1)
