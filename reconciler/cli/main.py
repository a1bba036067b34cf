"""The ``reconciler`` command line (click). One program, one subcommand per job.

This module is the program itself: the command group, its global options and the exit code of
usage errors. The commands live by what they work on: :mod:`~reconciler.cli.model` (validate,
explain, plan), :mod:`~reconciler.cli.site` (run, sync, config check, providers),
:mod:`~reconciler.cli.holds` (hold, unhold, holds), :mod:`~reconciler.cli.fleet` (status,
report, history, release, rollback), :mod:`~reconciler.cli.approve` (approve) and
:mod:`~reconciler.cli.rollout` (rollout status); each imports the layers it drives only
when it runs, so that ``reconciler --help`` and ``validate`` start fast.

Exit codes are a contract for scripts, listed per command in docs/cli.md: 0 success, 1 an
error or a failed check. ``plan`` and ``status`` give 2 an answer of its own (something would
change; some target is not Ready), so their usage errors exit 1, as do those of ``reconciler``
itself (a mistyped command name), so that a CI gate never reads a typo as "changes". Other
commands keep click's 2 for usage errors. ``run`` exits 78 (EX_CONFIG) on a bad config.

One-shot commands print their results and errors themselves; the log on stderr is for
diagnosis and shows errors only unless ``--log-level`` asks for more.
"""

from __future__ import annotations

from typing import Any

import click

from reconciler import __version__
from reconciler.cli import approve, fleet, holds, model, rollout, site
from reconciler.daemon.logs import configure_logging

__all__ = ["main"]

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


for _command in (model.validate, model.explain, model.plan,
                 site.run, site.sync, site.config_group, site.providers,
                 holds.hold, holds.unhold, holds.holds,
                 fleet.status, fleet.report, fleet.history, fleet.release, fleet.rollback):
    main.add_command(_command)
main.add_command(approve.approve)
main.add_command(rollout.rollout)
