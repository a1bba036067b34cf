"""systemd service notification (the sd_notify protocol), written directly.

The daemon calls :func:`ready` once its first run is scheduled, :func:`watchdog` from its main
loop every :func:`watchdog_interval` seconds, :func:`status` with a one-line summary after each
run, and :func:`stopping` when shutdown begins. The unit file sets ``Type=notify`` and
``WatchdogSec=``; systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``.

Every call is a no-op returning ``False`` when ``$NOTIFY_SOCKET`` is unset, so the same code runs
under systemd, in a container and in tests. A failed send is logged and reported, never raised:
a notification must not take the daemon down.
"""

from __future__ import annotations

import os
import socket

import structlog

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]

log = structlog.get_logger(__name__).bind(component="notify")


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` assignments in one datagram; ``True`` when it was delivered."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte instead of the '@'.
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        # vsock:... addresses (systemd inside VMs) are not supported by this small client.
        log.warning("notify_socket_unsupported", address=address)
        return False
    message = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message)
    except OSError as exc:
        log.warning("notify_failed", address=address, error=str(exc),
                    message=message.decode("utf-8"))
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """The service finished starting up (``READY=1``), optionally with a status line."""
    fields = ["READY=1"]
    if status_text is not None:
        fields.append(f"STATUS={_one_line(status_text)}")
    return notify(*fields)


def stopping() -> bool:
    """The service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """The main loop is alive (``WATCHDOG=1``); systemd restarts the service if these stop."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """A one-line, human-readable status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_interval() -> float | None:
    """Seconds between :func:`watchdog` calls: half of ``$WATCHDOG_USEC``.

    ``None`` when no watchdog is configured for this process: the variable is absent or not a
    positive integer, or ``$WATCHDOG_PID`` names another process (the variables were inherited
    from a parent that systemd watches, not us).
    """
    raw = os.environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())
