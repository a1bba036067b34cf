"""What the commands of the ``reconciler`` program share: the --format and --config options,
loading the local config with its problems said, and the ``error:`` line with its exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from reconciler.daemon.config import DaemonConfig

__all__ = ["CONFIG", "FORMAT", "fail", "load_config"]

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output for people or for tools.")

CONFIG = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="RECONCILER_CONFIG", default="/etc/reconciler/config.yaml", show_default=True,
    help="Local daemon config (every key overridable by RECONCILER_* variables).")


def fail(message: str, code: int = 1) -> NoReturn:
    """``error: message`` on stderr, then exit ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_config(path: Path, *, invalid_exit: int = 1) -> DaemonConfig:
    """The local config, or exit ``invalid_exit`` with every problem on stderr."""
    # imported here: commands that need no config start without the config schema
    from reconciler.core.errors import ConfigError
    from reconciler.daemon.config import load_config as load

    if not path.exists():
        fail(f"no config file at {path} (use --config FILE or RECONCILER_CONFIG)", invalid_exit)
    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems or [exc.message]:
            click.echo(problem, err=True)
        sys.exit(invalid_exit)
