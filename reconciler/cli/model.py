"""The commands that read the fleet's model: ``validate``, ``explain`` and ``plan``.

``plan`` gives exit code 2 an answer of its own (something would change); the group in
:mod:`reconciler.cli.main` turns its usage errors into exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.common import CONFIG, FORMAT, fail, load_config

if TYPE_CHECKING:
    from reconciler.core.diagnostics import Diagnostic
    from reconciler.core.model import Fleet

__all__ = ["explain", "plan", "validate"]


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


def _counts(fleet: Fleet) -> dict[str, int]:
    return {"sites": len(fleet.sites), "targets": len(fleet.targets),
            "solutions": len(fleet.solutions), "instances": len(fleet.instances)}


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path),
                default=".")
@FORMAT
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(path: Path, fmt: str, strict: bool) -> None:
    """Check a fleet repository and report every mistake at once.

    Each problem is one line: `path:line: Kind/name: field: message`. Exit 0 when the
    repository is valid, 1 when it is not.
    """
    from reconciler.gitops.releases import validate_checkout

    report = validate_checkout(path)
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


@click.command()
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
    from reconciler.core.explain import explain_data, explain_text
    from reconciler.gitops.releases import validate_checkout

    report = validate_checkout(repo)
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


@click.command()
@CONFIG
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Offline: compare two revisions of this repository instead "
              "of asking the site's targets.")
@click.option("--base", default=None, help="Offline: the revision a pull request starts from.")
@click.option("--head", "head", default="HEAD", show_default=True,
              help="Offline: the revision to compare with --base.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              default="text", show_default=True,
              help="Output for people, for tools, or for a pull-request comment.")
@click.option("--jobs", type=click.IntRange(1, 2), default=None,
              help="Offline: render the base revision's placements in 2 processes at once "
              "(the default when there are 2 CPUs) or in 1; the head revision costs what "
              "differs from the base either way.")
def plan(config_path: Path, repo: Path | None, base: str | None, head: str, fmt: str,
         jobs: int | None) -> None:
    """Show what would change on each target, without changing anything.

    Live (--config): ask each provider of this site what differs from the newest revision.
    Offline (--repo PATH --base REV [--head REV]): compare what every target of the fleet
    would get at two revisions — for a pull request, as Markdown with --format markdown.

    Exit 0 when nothing would change, 2 when something would, 1 on any error (usage, config,
    an invalid revision, a component that cannot be planned).
    """
    from reconciler.cli.progress import Progress, ProgressObserver
    from reconciler.core.errors import ReconcilerError
    from reconciler.core.registry import ProviderRegistry
    from reconciler.core.secrets import redact
    from reconciler.daemon.config import served_problems
    from reconciler.engine.pipeline import Reconciler

    if repo is not None or base is not None:
        _offline_plan(repo or Path("."), base, head, fmt, jobs)
        return
    config = load_config(config_path)
    try:
        with Progress() as progress:
            reconciler = Reconciler(config.engine_settings(), ProviderRegistry.discover(),
                                    observer=ProgressObserver(progress, "plan"))
            revision, plans, errors = reconciler.plan()
        nothing = [] if plans else served_problems(
            config, reconciler.report_for(revision).fleet, revision)
    except ReconcilerError as exc:
        fail(redact(exc.message))
    if nothing:  # a plan of no target is not "no changes"
        for problem in nothing:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)

    def echo(text: str) -> None:  # plans quote rendered content: mask the site's secrets
        click.echo(redact(text))

    if fmt == "json":
        echo(json.dumps({"revision": revision, "errors": [d.to_dict() for d in errors],
                         "targets": [{"target": p.target, "changes": [
                             {"key": c.key, "action": c.action.value,
                              "provider": c.provider, "diff": c.diff,
                              "message": c.message} for c in p.changes]}
                             for p in plans]}, indent=2))
    else:
        md = fmt == "markdown"
        echo(("## Plan at " if md else "Plan at ") + revision[:12])
        for d in errors:
            echo(("- :x: " if md else "error: ") + d.format())
        for p in plans:
            pending = p.pending
            echo("")
            echo((f"### {p.target}" if md else f"{p.target}:") +
                 (f" {len(pending)} change(s)" if pending else " no changes"))
            for c in p.changes:
                symbol = {"create": "+", "update": "~", "prune": "-", "in-sync": "=",
                          "suspended": "#", "error": "!"}[c.action.value]
                line = f"  {symbol} {c.key} ({c.provider}) {c.action.value}"
                if c.message:
                    line += f": {c.message.strip().splitlines()[0]}" if c.message.strip() else ""
                echo(("- " + line.strip()) if md else line)
                if c.diff and c.action.value != "in-sync":
                    body = c.diff.rstrip("\n")
                    echo(f"```diff\n{body}\n```" if md else
                         "\n".join("      " + x for x in body.splitlines()))
    failed = bool(errors) or any(c.action.value == "error" for p in plans for c in p.changes)
    sys.exit(1 if failed else 2 if any(p.pending for p in plans) else 0)


def _offline_plan(repo: Path, base: str | None, head: str, fmt: str, jobs: int | None) -> None:
    from reconciler.cli.progress import Progress
    from reconciler.core.errors import ReconcilerError
    from reconciler.engine.review import review_revisions
    from reconciler.engine.review_format import review_markdown, review_text
    from reconciler.gitops.releases import git_dir_of, resolve_commit

    if base is None:
        raise click.UsageError("--base REV is needed to compare two revisions")
    git_dir = git_dir_of(repo)
    if git_dir is None:
        raise click.UsageError(f"{repo} is not a git repository")
    shas = []
    for rev in (base, head):
        sha = resolve_commit(repo, rev)
        if not sha:
            raise click.UsageError(f"no revision '{rev}' in {repo}")
        shas.append(sha)
    try:
        with Progress() as progress:
            review = review_revisions(git_dir, shas[0], shas[1], progress=progress.report,
                                      parallel=None if jobs is None else jobs == 2)
    except ReconcilerError as exc:
        fail(exc.message)
    if fmt == "json":
        click.echo(json.dumps(review.to_dict(), indent=2, default=str))
    elif fmt == "markdown":
        click.echo(review_markdown(review), nl=False)
    else:
        click.echo(review_text(review), nl=False)
    sys.exit(1 if review.new_errors else 2 if review.changed else 0)
