"""The operator's commands at the site: ``hold``, ``unhold`` and ``holds``.

They reach the running daemon through its control socket
(:func:`reconciler.daemon.control.ask_daemon`), which root and members of the daemon's group
may use; the daemon records who asked (``SUDO_USER`` under sudo) and runs at once, so the
target's status file shows the hold. With no daemon running, ``hold`` and ``unhold`` change
``<stateDir>/holds.json`` themselves (which needs the daemon's user or root) and the next run
honours it. ``sync --retry`` (in :mod:`reconciler.cli.site`) goes the same way.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reconciler.cli.common import CONFIG, FORMAT, fail, load_config
from reconciler.core import tables

if TYPE_CHECKING:
    from reconciler.daemon.config import DaemonConfig
    from reconciler.engine.holds import HoldStore

__all__ = ["ask", "hold", "holds", "unhold"]

T = TypeVar("T")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")

TARGET = click.option(
    "--target", "target", default="", metavar="TARGET",
    help="The target (by name, as in `reconciler holds` or `status`). Without it: every "
         "target this daemon serves.")


def parse_until(text: str, now: datetime) -> datetime:
    """``--until``: an ISO 8601 time (``2026-12-01T06:00``, ``2026-12-01 06:00+01:00``,
    ``...Z``), in the machine's local time when it names no timezone; or a time of day
    alone (``18:00``), meaning its next occurrence. Timezone-aware."""
    text = text.strip()
    found = _TIME_OF_DAY.fullmatch(text)
    try:
        if found:
            hour, minute, second = (int(g or 0) for g in found.groups())
            local = now.astimezone()
            at = time(hour, minute, second)
            until = datetime.combine(local.date(), at).astimezone()
            if until <= now:
                until = datetime.combine(local.date() + timedelta(days=1), at).astimezone()
            return until
        until = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use ISO 8601 such as 2026-12-01T06:00 (local time), "
            "2026-12-01T06:00+01:00, or a time of day such as 18:00", param_hint="--until"
        ) from None
    return until.astimezone() if until.tzinfo is None else until


def shown(moment: datetime, now: datetime | None = None) -> str:
    """A time for people: local time of this machine with its zone, and how far off."""
    from reconciler.core.durations import format_duration

    text = moment.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    if now is not None and moment > now:
        left = (moment - now).total_seconds()
        text += f" (in {format_duration(round(left / 60) * 60 if left >= 60 else left)})"
    return text


def _user() -> str:
    """Who runs this command: the operator behind sudo, or this process's user."""
    if os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def ask(config: DaemonConfig, request: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's answer to ``request``; None when no daemon listens (the caller decides
    what then). Exits 1 with the reason on a refusal or when this user may not ask."""
    from reconciler.core.errors import NoDaemonError, ReconcilerError
    from reconciler.daemon.control import ask_daemon, socket_candidates

    paths = socket_candidates(config.control_socket_path,
                              explicit=config.control_socket_explicit)
    try:
        return ask_daemon(paths, request, state_dir=config.state_dir)
    except NoDaemonError:
        return None
    except ReconcilerError as exc:
        fail(exc.message)


def _without_daemon(config: DaemonConfig, change: Callable[[HoldStore, datetime], T], *,
                    writes: bool = True) -> T:
    """Apply ``change`` to ``<stateDir>/holds.json`` in this process (no daemon answered)."""
    from reconciler.engine.holds import HoldStore

    state, path = config.state_dir, config.state_dir / "holds.json"
    advice = ("run this with sudo (or, while the daemon runs, as a member of its group, "
              "which reaches it through its control socket)")
    if not state.is_dir():
        try:
            state.stat()
        except PermissionError:
            fail(f"no daemon answered, and {state} cannot be reached: {advice}")
        except OSError:
            pass
        fail(f"no daemon answered, and the state directory {state} does not exist: start the "
             "daemon once (it creates it), or check stateDir in the config")
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        pass
    except PermissionError:
        fail(f"no daemon answered, and {path} cannot be read: {advice}")
    store = HoldStore.load(path)
    try:
        result = change(store, datetime.now(UTC))
    except PermissionError:
        fail(f"no daemon answered, and {path} cannot be written (permission denied): {advice}")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    if writes:
        _give_to_daemon(path, state)
    return result


def _give_to_daemon(path: Path, state: Path) -> None:
    """Written as root: hand the file to the owner of the state directory (the daemon's
    user), or the daemon could not read it and would silently see no hold."""
    if os.geteuid() != 0:
        return
    try:
        info = state.stat()
        os.chown(path, info.st_uid, info.st_gid)
    except FileNotFoundError:
        pass  # no hold left: the file was written empty and renamed; nothing to hand over
    except OSError as exc:
        click.echo(f"warning: cannot give {path} to the daemon's user: {exc.strerror}",
                   err=True)


def _poke(config: DaemonConfig) -> str:
    """After writing holds.json directly: ask a daemon that runs without a control socket
    to run now; what to tell the operator."""
    from reconciler.core.errors import ReconcilerError
    from reconciler.daemon.control import signal_daemon

    try:
        pid = signal_daemon(config.state_dir)
    except ReconcilerError:
        return ("no daemon is running: the next run (when the daemon starts, or `reconciler "
                "sync --once`) honours it")
    return f"asked daemon {pid} to run now"


def _hold_line(raw: dict[str, Any], now: datetime) -> str:
    until = datetime.fromisoformat(raw["until"])
    what = f"target {raw['target']}" if raw["target"] else "every target of this site"
    return (f"{what} held until {shown(until, now)} by {raw['by'] or 'unknown'}: "
            f"{raw['reason']}")


@click.command()
@TARGET
@click.option("--until", "until_text", metavar="TIME",
              help="End of the hold: ISO 8601 (2026-12-01T06:00 is this machine's local "
                   "time; 2026-12-01T06:00+01:00 or ...Z name the zone) or a time of day "
                   "(18:00: its next occurrence).")
@click.option("--for", "for_text", metavar="DURATION",
              help="Length of the hold from now: 90m, 2h, 1h30m, 1d.")
@click.option("--reason", required=True,
              help="Why changes must wait (shown to the whole fleet in the status file), "
                   "e.g. \"production run of order 4711\".")
@CONFIG
def hold(target: str, until_text: str | None, for_text: str | None, reason: str,
         config_path: Path) -> None:
    """Defer changes to a target (or every target of this site) until a time.

    While the hold lasts, new revisions wait: nothing new is applied to the held target,
    while what is applied there stays enforced. The hold, its reason, who set it and until
    when are written into the target's status file, so the whole fleet sees why the line is
    behind. It ends by itself at the time given, or earlier with `reconciler unhold`. A new
    hold on the same target replaces the old one.

    Run it with sudo or as a member of the daemon's group (`reconciler`). The daemon
    records the user who ran it (the one behind sudo) and runs at once, so the status shows
    the hold within moments. With no daemon running, the hold is written to the state
    directory (needs sudo) and the next run honours it.

    For example, `sudo reconciler hold --target press-1 --for 2h --reason "production
    run"` holds press-1 for two hours; `reconciler hold --until 06:00 --reason "night
    shift"` holds every target of the site until six in the morning.
    """
    if (until_text is None) == (for_text is None):
        raise click.UsageError("give the end of the hold: --until TIME or --for DURATION "
                               "(one of them)")
    if not reason.strip():
        raise click.BadParameter("say why changes must wait", param_hint="--reason")
    now = datetime.now(UTC)
    if for_text is not None:
        from reconciler.core.durations import parse_duration

        try:
            until = (now.astimezone() + timedelta(seconds=parse_duration(for_text))
                     ).replace(microsecond=0)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--for") from None
    else:
        until = parse_until(str(until_text), now)
        if until <= now:
            raise click.BadParameter(f"{shown(until)} is not in the future",
                                     param_hint="--until")
    config = load_config(config_path)
    answer = ask(config, {"request": "hold", "target": target, "until": until.isoformat(),
                          "reason": reason})
    if answer is not None:
        click.echo(_hold_line(answer["hold"], now))
        if answer.get("note"):
            click.echo(f"note: {answer['note']}")
        click.echo(f"daemon {answer.get('pid')} runs now; end the hold early with "
                   f"`reconciler unhold{f' --target {target}' if target else ''}`")
        return
    from reconciler.engine.holds import Hold

    made = Hold(target, until, reason.strip(), _user(), now)
    _without_daemon(config, lambda store, at: store.add(made, at))
    click.echo(_hold_line(made.to_json(), now))
    click.echo(f"written to {config.state_dir / 'holds.json'}; {_poke(config)}")
    if target:
        click.echo("note: the target name could not be checked without a daemon to ask")


@click.command()
@TARGET
@click.option("--all", "every", is_flag=True, help="End every hold of this site.")
@CONFIG
def unhold(target: str, every: bool, config_path: Path) -> None:
    """End a hold before its time: changes waiting for it are applied now.

    Without --target, ends the hold on every target of the site (one set by `reconciler
    hold` without --target); holds on single targets stay. --all ends them all. Run with
    sudo or as a member of the daemon's group, as for `hold`.
    """
    if every and target:
        raise click.UsageError("give --target or --all, not both")
    config = load_config(config_path)
    request: dict[str, Any] = {"request": "unhold"}
    request.update({"all": True} if every else {"target": target})
    answer = ask(config, request)
    now = datetime.now(UTC)
    if answer is not None:
        ended, left = answer["ended"], answer["holds"]
        tail = f"; daemon {answer.get('pid')} runs now"
    else:
        ended = [h.to_json() for h in _without_daemon(
            config, lambda store, at: store.remove(None if every else target, at))]
        left = []
        tail = f"; {_poke(config)}" if ended else ""
    what = ("any target" if every else f"target {target}" if target
            else "every target of this site")
    if not ended:
        click.echo(f"no hold on {what}: nothing to end")
    for raw in ended:
        click.echo(f"ended: {_hold_line(raw, now)}{tail}")
    for raw in left:
        click.echo(f"still in force: {_hold_line(raw, now)}")


@click.command("holds")
@CONFIG
@FORMAT
def holds(config_path: Path, fmt: str) -> None:
    """List the holds in force at this site: target, until when, who set it, and why.

    Asks the running daemon (sudo or the daemon's group); with no daemon running, reads
    the state directory (sudo).
    """
    config = load_config(config_path)
    answer = ask(config, {"request": "holds"})
    now = datetime.now(UTC)
    if answer is not None:
        found, source = answer["holds"], "daemon"
    else:
        found = _without_daemon(config, lambda store, at: store.to_json(at), writes=False)
        source = str(config.state_dir / "holds.json")
    if fmt == "json":
        click.echo(json.dumps({"site": config.site, "source": source, "holds": found,
                               "served": (answer or {}).get("served")}, indent=2))
        return
    if not found:
        click.echo(f"no holds at site {config.site}")
        return
    click.echo(tables.render(
        [(h["target"] or "(every target)", shown(datetime.fromisoformat(h["until"]), now),
          h["by"], shown(datetime.fromisoformat(h["since"])), h["reason"]) for h in found],
        header=("TARGET", "UNTIL", "BY", "SINCE", "REASON")))
