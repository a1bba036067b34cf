"""structlog set-up: JSON lines when not on a terminal (journald, containers), a console
renderer on one. Called once by the CLI before any command runs.

Context variables come first: the engine binds ``run_id``, ``site`` and ``revision`` for a
whole run and ``target`` (with the revision enforced) for one target's reconcile, so every
line logged meanwhile, a provider's too, carries them; a key the line sets itself wins.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from reconciler.core.secrets import log_processor

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", fmt: str = "auto",
                      stream: TextIO | None = None) -> None:
    """``fmt``: ``auto`` (console on a terminal, else JSON), ``json`` or ``console``."""
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty()) if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            log_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
