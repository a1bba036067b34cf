"""The commands of one site: ``run`` (the daemon), ``sync``, ``config check`` and ``providers``.

``sync`` asks the running daemon to run: by SIGHUP where this user may signal it, otherwise
through its control socket (members of the daemon's group); ``sync --retry`` always goes
through the socket (:mod:`reconciler.cli.holds`), or, with ``--once``, asks the reconciler of
this process before its run.

``run`` exits 78 (EX_CONFIG) on a bad config: the systemd unit does not restart on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.common import CONFIG, FORMAT, fail, load_config
from reconciler.core import tables
from reconciler.daemon.logs import configure_logging

if TYPE_CHECKING:
    from reconciler.daemon.config import DaemonConfig
    from reconciler.engine.pipeline import RunSummary

__all__ = ["config_group", "providers", "run", "sync"]

EX_CONFIG = 78


@click.command()
@CONFIG
def run(config_path: Path) -> None:
    """Run the site daemon (scheduled reconciles, webhooks, metrics) until SIGTERM."""
    from reconciler.core.errors import ConfigError, LockError
    from reconciler.core.registry import ProviderRegistry
    from reconciler.daemon.daemon import Daemon

    config = load_config(config_path, invalid_exit=EX_CONFIG)
    # the daemon logs to stdout (journald, containers); other commands keep stdout for output
    configure_logging(config.log_level, config.log_format, stream=sys.stdout)
    try:
        code = Daemon(config, ProviderRegistry.discover()).run()
    except LockError as exc:
        fail(exc.message)
    except ConfigError as exc:  # e.g. the listen address cannot be bound
        fail(exc.message, EX_CONFIG)
    sys.exit(code)


@click.command()
@CONFIG
@click.option("--once", is_flag=True,
              help="Run one full reconcile in this process (no daemon needed).")
@click.option("--retry", is_flag=True,
              help="Apply again the changes that failed and were rolled back. A failed "
                   "change is otherwise not tried again until a new revision changes it.")
@click.option("--target", "target", default="", metavar="TARGET",
              help="With --retry: only on this target (default: every target).")
@FORMAT
def sync(config_path: Path, once: bool, retry: bool, target: str, fmt: str) -> None:
    """Reconcile now.

    With --once: fetch, validate, apply and push status in this process, then exit 0 when
    every target is Ready and 1 otherwise. Without it: ask the daemon running on this
    config's state directory to run at once (exit 0), or say that none runs (exit 1); this
    works as root, as the daemon's user, or as a member of the daemon's group.

    With --retry, the run applies again the changes that failed and were rolled back (on
    --target only, or on every target), once the cause is fixed at the site: a pump that
    was offline, a full disk. A hold or a closed maintenance window still defers them.
    """
    from reconciler.core.errors import ReconcilerError

    if target and not retry:
        raise click.UsageError("--target goes with --retry (a run always covers every target)")
    config = load_config(config_path)
    if not once:
        _ask_daemon_to_run(config, retry, target)
        return

    from reconciler.cli.progress import Progress, ProgressObserver
    from reconciler.core.registry import ProviderRegistry
    from reconciler.core.statefiles import StateLock
    from reconciler.engine.pipeline import Reconciler

    try:
        with StateLock(config.state_dir), Progress() as progress:
            reconciler = Reconciler(config.engine_settings(), ProviderRegistry.discover(),
                                    observer=ProgressObserver(progress, "sync"))
            if retry:
                reconciler.request_retry(target)
            summary = reconciler.run("sync")
            # a run without a revision has logged why, as an error; say why for the others
            nothing = ""
            if summary.revision and not summary.statuses:  # the daemon only imported then
                from reconciler.daemon.daemon import why_nothing_served
                nothing = why_nothing_served(reconciler, summary)
    except ReconcilerError as exc:
        fail(exc.message)
    if nothing:
        click.echo(f"error: {nothing}", err=True)
    if target and summary.statuses and target not in {s.target for s in summary.statuses}:
        click.echo(f"warning: no served target is named {target!r}: nothing was retried",
                   err=True)
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


def _ask_daemon_to_run(config: DaemonConfig, retry: bool, target: str) -> None:
    """``sync`` without ``--once``: the daemon runs now (and first takes the retry)."""
    from reconciler.cli.holds import ask
    from reconciler.core.errors import ReconcilerError
    from reconciler.daemon.control import signal_daemon

    if retry:
        answer = ask(config, {"request": "retry", "target": target})
        if answer is None:
            fail(f"no daemon is running for {config.state_dir}; `reconciler sync --once "
                 "--retry` retries without one")
        what = f"target {target}" if target else "every target"
        click.echo(f"asked daemon {answer.get('pid')} to apply again the failed changes on "
                   f"{what} now")
        if answer.get("note"):
            click.echo(f"note: {answer['note']}")
        return
    pid: object
    try:
        pid = signal_daemon(config.state_dir)
    except ReconcilerError as exc:
        # not the daemon's user: its group may still reach it through the control socket
        from reconciler.daemon.control import ask_daemon, socket_candidates

        try:
            answer = ask_daemon(socket_candidates(config.control_socket_path,
                                                  explicit=config.control_socket_explicit),
                                {"request": "sync"}, state_dir=config.state_dir)
        except ReconcilerError:
            fail(exc.message)
        pid = answer.get("pid")
    click.echo(f"asked daemon {pid} to reconcile now")


def _status_table(summary: RunSummary) -> str:
    return tables.render([(s.target, s.site, s.phase.value, s.applied_revision[:12] or "-",
                           s.message[:80]) for s in summary.statuses],
                         header=("TARGET", "SITE", "PHASE", "REVISION", "MESSAGE"))


@click.group("config")
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


@click.command()
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
