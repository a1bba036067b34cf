"""The ``reconciler`` command line (click). One program, one subcommand per job.

Exit codes are a contract for scripts, listed per command in docs/cli.md: 0 success, 1 an
error or a failed check. ``plan`` and ``status`` give 2 an answer of its own (something would
change; some target is not Ready), so their usage errors exit 1, as do those of ``reconciler``
itself (a mistyped command name), so that a CI gate never reads a typo as "changes". Other
commands keep click's 2 for usage errors. ``run`` exits 78 (EX_CONFIG) on a bad config.

One-shot commands print their results and errors themselves; the log on stderr is for
diagnosis and shows errors only unless ``--log-level`` asks for more.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.core import tables
from reconciler.core.diagnostics import Diagnostic
from reconciler.daemon.logs import configure_logging

__all__ = ["main"]

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output for people or for tools.")


# commands whose exit code 2 is an answer, not a usage error
_TWO_IS_AN_ANSWER = frozenset({"plan", "status"})


class _UsageError(click.UsageError):
    """A usage error where exit code 2 would be read as an answer."""

    exit_code = 1


class _Main(click.Group):
    """The command group; usage errors that could be read as an answer exit 1 instead of 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # an unknown global option
            raise _UsageError(exc.format_message(), exc.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError:
            raise
        except click.UsageError as exc:
            command = exc.ctx.command if exc.ctx is not None else self
            if command is self or command.name in _TWO_IS_AN_ANSWER:
                # "no such command", or a usage error of plan or status
                raise _UsageError(exc.format_message(), exc.ctx) from None
            raise


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("--log-level", default="error", show_default=True,
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


@main.command()
@FORMAT
def providers(fmt: str) -> None:
    """List the installed providers (entry-point group `reconciler.providers`)."""
    from reconciler.core.registry import ProviderRegistry

    registry = ProviderRegistry.discover()
    rows: list[dict[str, str]] = []
    for name in sorted({*registry.providers, *registry.failures}):
        if name in registry.providers:
            cls = registry.providers[name]
            doc = (cls.__doc__ or "").replace("``", "").strip().splitlines()
            rows.append({"name": name, "status": "ok", "origin": registry.origins[name],
                         "description": doc[0] if doc else ""})
        else:
            rows.append({"name": name, "status": "failed", "origin": "",
                         "description": registry.failures[name]})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if rows:
        click.echo(tables.render([(r["name"], r["status"], r["description"]) for r in rows],
                                 min_widths=(4, 6)))
    if any(r["status"] == "failed" for r in rows):
        sys.exit(1)


CONFIG = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="RECONCILER_CONFIG", default="/etc/reconciler/config.yaml", show_default=True,
    help="Local daemon config (every key overridable by RECONCILER_* variables).")


def _load_config(path: Path, *, invalid_exit: int = 1) -> Any:
    """The local config, or exit ``invalid_exit`` with every problem on stderr."""
    from reconciler.core.errors import ConfigError
    from reconciler.daemon.config import load_config

    if not path.exists():
        click.echo(f"error: no config file at {path} (use --config FILE or "
                   "RECONCILER_CONFIG)", err=True)
        sys.exit(invalid_exit)
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems or [exc.message]:
            click.echo(problem, err=True)
        sys.exit(invalid_exit)


def _status_table(summary: Any) -> str:
    return tables.render([(s.target, s.site, s.phase.value, s.applied_revision[:12] or "-",
                           s.message[:80]) for s in summary.statuses],
                         header=("TARGET", "SITE", "PHASE", "REVISION", "MESSAGE"))


@main.command()
@CONFIG
@click.option("--once", is_flag=True,
              help="Run one full reconcile in this process (no daemon needed).")
@FORMAT
@click.pass_context
def sync(ctx: click.Context, config_path: Path, once: bool, fmt: str) -> None:
    """Reconcile now.

    With --once: fetch, validate, apply and push status in this process, then exit 0 when
    every target is Ready and 1 otherwise. Without it: ask the daemon running on this
    config's state directory to run at once (exit 0), or say that none runs (exit 1).
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.core.registry import ProviderRegistry
    from reconciler.core.statefiles import StateLock
    from reconciler.daemon.daemon import why_nothing_served
    from reconciler.engine.pipeline import Reconciler

    config = _load_config(config_path)
    if not once:
        _ask_daemon(config.state_dir)
        return
    try:
        with StateLock(config.state_dir):
            reconciler = Reconciler(config.engine_settings(), ProviderRegistry.discover())
            summary = reconciler.run("sync")
            # a run without a revision has logged why, as an error; say why for the others
            nothing = why_nothing_served(reconciler, summary) \
                if summary.revision and not summary.statuses else ""
    except ReconcilerError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    if nothing:
        click.echo(f"error: {nothing}", err=True)
    if fmt == "json":
        click.echo(json.dumps({
            "revision": summary.revision, "statusCommit": summary.status_commit,
            "statusPushed": summary.status_pushed, "fetchError": summary.fetch_error,
            "targets": [s.body("") for s in summary.statuses]}, indent=2, default=str))
    elif summary.statuses:  # without any, the error above says why: no empty table
        if summary.fetch_error:
            click.echo(f"warning: {summary.fetch_error}", err=True)
        click.echo(_status_table(summary))
        if summary.status_commit:
            pushed = "pushed" if summary.status_pushed else "queued locally"
            click.echo(f"status commit {summary.status_commit[:12]} ({pushed})")
    sys.exit(0 if summary.statuses and summary.ok else 1)


def _ask_daemon(state_dir: Path) -> None:
    """SIGHUP to the daemon that provably runs on ``state_dir``, or exit 1 saying none does.

    A signal, not an HTTP request: the daemon's HTTP server has no unauthenticated trigger
    (it may listen beyond loopback), while a signal needs the daemon's user or root.
    """
    import os
    import signal

    from reconciler.core.errors import NoDaemonError
    from reconciler.daemon.daemon import running_daemon

    try:
        daemon = running_daemon(state_dir)
        os.kill(daemon.pid, signal.SIGHUP)
    except NoDaemonError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    except ProcessLookupError:
        click.echo(f"error: no daemon is running for {state_dir} (it stopped just now)",
                   err=True)
        sys.exit(1)
    except PermissionError:
        click.echo(f"error: not allowed to signal the daemon (pid {daemon.pid}); run this as "
                   "the daemon's user", err=True)
        sys.exit(1)
    click.echo(f"asked daemon {daemon.pid} to reconcile now")


@main.command()
@CONFIG
def run(config_path: Path) -> None:
    """Run the site daemon (scheduled reconciles, webhooks, metrics) until SIGTERM."""
    from reconciler.core.errors import ConfigError, LockError
    from reconciler.core.registry import ProviderRegistry
    from reconciler.daemon.daemon import Daemon

    # EX_CONFIG: the systemd unit does not restart on it (RestartPreventExitStatus=78)
    config = _load_config(config_path, invalid_exit=78)
    # the daemon logs to stdout (journald, containers); other commands keep stdout for output
    configure_logging(config.log_level, config.log_format, stream=sys.stdout)
    try:
        code = Daemon(config, ProviderRegistry.discover()).run()
    except LockError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(78)  # EX_CONFIG: systemd does not restart on it (RestartPreventExitStatus)
    sys.exit(code)


@main.command()
@CONFIG
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Offline: compare two revisions of this repository instead "
              "of asking the site's targets.")
@click.option("--base", default=None, help="Offline: the revision a pull request starts from.")
@click.option("--head", "head", default="HEAD", show_default=True,
              help="Offline: the revision to compare with --base.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              default="text", show_default=True)
def plan(config_path: Path, repo: Path | None, base: str | None, head: str, fmt: str) -> None:
    """Show what would change on each target, without changing anything.

    Live (--config): ask each provider of this site what differs from the newest revision.
    Offline (--repo PATH --base REV [--head REV]): compare what every target of the fleet
    would get at two revisions — for a pull request, as Markdown with --format markdown.

    Exit 0 when nothing would change, 2 when something would, 1 on any error (usage, config,
    an invalid revision, a component that cannot be planned).
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.core.registry import ProviderRegistry
    from reconciler.core.secrets import redact
    from reconciler.daemon.config import served_problems
    from reconciler.engine.pipeline import Reconciler

    if repo is not None or base is not None:
        _offline_plan(repo or Path("."), base, head, fmt)
        return
    config = _load_config(config_path)
    try:
        reconciler = Reconciler(config.engine_settings(), ProviderRegistry.discover())
        revision, plans, errors = reconciler.plan()
        nothing = [] if plans else served_problems(
            config, reconciler.report_for(revision).fleet, revision)
    except ReconcilerError as exc:
        click.echo(f"error: {redact(exc.message)}", err=True)
        sys.exit(1)
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


def _offline_plan(repo: Path, base: str | None, head: str, fmt: str) -> None:
    from reconciler.engine.review import review_markdown, review_revisions, review_text
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
    review = review_revisions(git_dir, shas[0], shas[1])
    if fmt == "json":
        click.echo(json.dumps(review.to_dict(), indent=2, default=str))
    elif fmt == "markdown":
        click.echo(review_markdown(review), nl=False)
    else:
        click.echo(review_text(review), nl=False)
    sys.exit(1 if review.new_errors else 2 if review.changed else 0)


@main.command()
@click.option("--repo", "repo", required=True,
              help="Fleet repository URL or path (status branches are read from it).")
@click.option("--branch", "shared_branch", default="reconciler-fleet-status",
              show_default=True, help="The shared status branch, if the fleet uses one.")
@FORMAT
def status(repo: str, shared_branch: str, fmt: str) -> None:
    """Table of the fleet's targets from the status branches (one fetch).

    Exit 0 when every target shown is Ready, 2 when some are not (or none reports at all),
    1 when the status cannot be read.
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.fleet_status import format_table, read_fleet_status

    url = repo
    if "://" not in repo and Path(repo).exists():
        url = str(Path(repo).resolve())
    try:
        fleet = read_fleet_status(url, shared_branch=shared_branch)
    except ReconcilerError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps(fleet.to_dict(), indent=2, default=str))
    else:
        click.echo(format_table(fleet))
    # no status at all is not "all Ready": a gate waiting for a rollout must not pass on it
    ready = bool(fleet.entries) and all(e.phase == "Ready" and not e.error for e in fleet)
    sys.exit(0 if ready else 2)


@main.group("config")
def config_group() -> None:
    """Work with the local daemon config."""


@config_group.command("check")
@CONFIG
@click.option("--offline", is_flag=True,
              help="Do not contact the repository (skips the checks of the tracked revision).")
def config_check(config_path: Path, offline: bool) -> None:
    """Validate the local config and everything it points at; list every problem.

    Besides the file itself and the files it names, this fetches the tracked revision of
    the repository (into a temporary directory; the daemon's state directory is not
    touched) and checks that `site:` and `targets:` name a site and targets it has. Exit 0
    when all is well, 1 otherwise.
    """
    from reconciler.daemon.config_check import check_config

    checked = check_config(config_path, offline=offline)
    for problem in checked.problems:
        click.echo(problem)
    if checked.problems or checked.config is None:
        sys.exit(1)
    config = checked.config
    click.echo(f"{config_path}: OK (site {config.site}: {checked.served}; repo {config.repo_url}, "
               f"ref {config.ref}, state {config.state_dir})")


@main.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Working copy of the fleet repository.")
@click.argument("solution")
@click.argument("version")
@click.option("-m", "--message", default=None, help="Tag message (default: a summary).")
@click.option("--sign", is_flag=True, help="Sign the tag (git tag -s), for verify: tag.")
@click.option("--push", "remote", default=None, help="Push the tag to this remote.")
def release(repo: Path, solution: str, version: str, message: str | None, sign: bool,
            remote: str | None) -> None:
    """Release SOLUTION as VERSION: the annotated tag <solution>/v<version> at HEAD.

    Instances with `version: VERSION` then take the solution's files as they are in that
    commit. The repository must be valid and the solution's directory committed.
    """
    import semver

    from reconciler.core.errors import ManifestError, ReconcilerError
    from reconciler.gitops.releases import push_tag, tag_release, validate_checkout

    try:
        semver.Version.parse(version)
    except ValueError:
        raise click.UsageError(f"'{version}' is not a semantic version such as 1.4.0") from None
    report = validate_checkout(repo)
    found = report.fleet.solutions.get(solution)
    if found is None:
        raise click.UsageError(f"no valid Solution/{solution} in {repo}")
    try:
        tagged = tag_release(repo, report, found, version, message=message, sign=sign)
    except ManifestError as exc:
        for d in exc.diagnostics:
            click.echo(d.format(), err=True)
        raise click.ClickException(f"Solution/{solution} is invalid; nothing released") from None
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"tagged {tagged.tag} at {tagged.commit[:12]}")
    if tagged.newer:
        click.echo(f"note: {tagged.newer} is a newer release of {solution}", err=True)
    if remote:
        try:
            push_tag(repo, remote, tagged.tag)
        except ReconcilerError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"pushed {tagged.tag} to {remote}")


@main.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Working copy of the fleet repository.")
@click.argument("instance")
@click.option("--to", "version", required=True, help="The earlier release to go back to.")
@click.option("--branch", default=None,
              help="Branch for the change (default rollback/<instance>-v<version>).")
def rollback(repo: Path, instance: str, version: str, branch: str | None) -> None:
    """Pin INSTANCE to an earlier release, as a commit on a new branch for review.

    Sets the instance's `spec.version`, validates the result, and commits it on a branch;
    push it and open a pull request to roll the fleet back.
    """
    from reconciler.core.errors import ManifestError, ReconcilerError
    from reconciler.gitops.releases import git_dir_of, roll_back, validate_checkout

    report = validate_checkout(repo)
    inst = report.fleet.instances.get(instance)
    if inst is None:
        raise click.UsageError(f"no Instance/{instance} in {repo}")
    git_dir = git_dir_of(repo)
    if git_dir is None:
        raise click.UsageError(f"{repo} is not a git repository")
    try:
        name = roll_back(repo, git_dir, inst, version, branch)
    except ManifestError as exc:
        for d in exc.diagnostics:
            click.echo(d.format(), err=True)
        raise click.ClickException("the rollback would not validate; nothing committed") \
            from None
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"committed on branch {name}: Instance/{instance} pinned to {inst.solution} "
               f"{version} ({inst.source.path})\npush it and open a pull request: "
               f"git push -u origin {name}")


@main.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Clone of the fleet repository.")
@click.option("--solution", default=None, help="Releases of this solution only.")
@click.option("--target", default=None,
              help="Status history of this target (from the status branches in the clone).")
@FORMAT
def history(repo: Path, solution: str | None, target: str | None, fmt: str) -> None:
    """Releases of the fleet's solutions, or the status history of one target.

    Exit 1 when the target has no status on the status branches of the clone.
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.releases import git_dir_of, list_releases
    from reconciler.gitops.status_history import target_history

    git_dir = git_dir_of(repo)
    if git_dir is None:
        raise click.UsageError(f"{repo} is not a git repository")
    if target is None:
        rows = [{"solution": s, "version": v, "date": d} for s, v, d in
                list_releases(git_dir, solution)]
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
        elif rows:
            click.echo(tables.render([(r["solution"], r["version"], r["date"]) for r in rows],
                                     gaps=" ", min_widths=(28, 12)))
        else:
            click.echo("no releases (tags <solution>/v<semver>)")
        return
    try:
        changes = target_history(git_dir, target, clone=str(repo))
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    if fmt == "json":
        click.echo(json.dumps([c.to_dict() for c in changes], indent=2))
    elif changes:
        click.echo(tables.render([(c.date, c.phase, c.revision, c.message) for c in changes],
                                 gaps=("  ", " ", " "), min_widths=(0, 11, 12)))
