"""What the daemon does with a request on its control socket: check it, act, answer.

:class:`ControlActions` is handed every request :mod:`~reconciler.daemon.control_socket`
receives, as decoded JSON, with the peer the kernel names. Requests (``request`` says which)::

    {"request": "hold", "target": T, "until": ISO 8601 with offset, "reason": TEXT}
    {"request": "unhold", "target": T}        or {"request": "unhold", "all": true}
    {"request": "holds"}                      the holds in force, and what is served
    {"request": "retry", "target": T}         sync --retry: apply failed changes again
    {"request": "sync"}                       run now

``target`` "" (or absent) means every target the daemon serves. Any request may carry
``state_dir`` (the state directory the asker means: a daemon serving another one refuses it
before doing anything) and ``sudo_user``. Who asked is the user of the peer's uid, never a
name the client merely claims; only root's ``sudo_user`` is taken (``sudo`` sets
``SUDO_USER``), so a hold set with sudo records the operator, not root.

A target is checked against what the last run served (no run yet: not checked, and the
answer says so). After a hold, an unhold that ended something, and a retry, the daemon runs
at once, so status files show the change without waiting for the interval. Every answer is a
JSON object with ``ok``; refusals carry ``error`` (for the operator) and ``reason``
(``BadRequest``, ``UnknownTarget``, ``OtherStateDir``, ``HoldNotSaved``).
"""

from __future__ import annotations

import difflib
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cerberus
import structlog

from reconciler.core.errors import ReconcilerError
from reconciler.core.schema_messages import field_path, schema_errors
from reconciler.engine.holds import Hold, HoldStore

__all__ = ["REQUESTS", "ControlActions", "ControlRequest", "Peer", "identify",
           "parse_request"]

_log = structlog.get_logger(__name__)

REQUESTS = ("hold", "unhold", "holds", "retry", "sync")
REASON_MAX = 500
_TEXT = r"[^\x00-\x1f\x7f]*"  # one line, no control characters
_USER = r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?"  # a login name as useradd allows it
_TARGET = {"type": "string", "maxlength": 253, "regex": _TEXT}
_COMMON = {"request": {"type": "string", "required": True, "allowed": list(REQUESTS)},
           "state_dir": {"type": "string", "maxlength": 4096},
           # sudo sets SUDO_USER to the invoking user
           "sudo_user": {"type": "string", "maxlength": 64,
                         "regex": _USER}}
_SCHEMAS: dict[str, dict[str, Any]] = {
    "hold": {**_COMMON, "target": _TARGET,
             "until": {"type": "string", "required": True, "maxlength": 64},
             "reason": {"type": "string", "required": True, "empty": False,
                        "maxlength": REASON_MAX, "regex": _TEXT}},
    "unhold": {**_COMMON, "target": _TARGET, "all": {"type": "boolean"}},
    "holds": _COMMON,
    "retry": {**_COMMON, "target": _TARGET},
    "sync": _COMMON,
}


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel says (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class ControlRequest:
    kind: str  # one of REQUESTS
    target: str = ""  # "" : every served target
    until: datetime | None = None  # hold: timezone-aware
    reason: str = ""  # hold
    every: bool = False  # unhold --all
    sudo_user: str = ""
    state_dir: str = ""


def _refuse(message: str, reason: str = "BadRequest") -> ReconcilerError:
    return ReconcilerError(message, reason=reason)


def parse_request(payload: object) -> ControlRequest:
    """The request in ``payload`` (decoded JSON); raises :class:`ReconcilerError` (reason
    ``BadRequest``) saying every problem found."""
    if not isinstance(payload, dict):
        raise _refuse("a request is a JSON object such as {\"request\": \"holds\"}")
    kind = payload.get("request")
    schema = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    validator = cerberus.Validator(schema or _COMMON, allow_unknown=schema is None)
    if not validator.validate(payload) or schema is None:
        problems = [f"{field_path(path)}: {_said(message)}"
                    for path, message in schema_errors(validator._errors, schema or _COMMON)]
        raise _refuse("; ".join(problems or ["request: unknown request"]))
    reason = str(payload.get("reason", ""))
    if kind == "hold" and not reason.strip():
        raise _refuse("reason: say why changes must wait (it is shown in the status file)")
    if kind == "unhold" and payload.get("all") and payload.get("target") is not None:
        raise _refuse("unhold: give a target or all, not both")
    until = _until(payload["until"]) if kind == "hold" else None
    return ControlRequest(str(kind), str(payload.get("target") or ""), until, reason.strip(),
                          bool(payload.get("all")), str(payload.get("sudo_user") or ""),
                          str(payload.get("state_dir") or ""))


def _said(message: str) -> str:
    """Cerberus' message for our patterns, in words."""
    if _TEXT in message:
        return "one line of text (no control characters)"
    if _USER in message:
        return "not a user name"
    return message


def _until(text: str) -> datetime:
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        raise _refuse(f"until: {text!r} is not an ISO 8601 time") from None
    if until.tzinfo is None or until.utcoffset() is None:
        raise _refuse(f"until: {text!r} must name its timezone (e.g. +01:00 or Z)")
    return until


def identify(peer: Peer, sudo_user: str) -> str:
    """The user who asked: root's ``sudo_user`` when root names one, else the user of the
    peer's uid ("uid N" when it has no name)."""
    if peer.uid == 0 and sudo_user:
        return sudo_user
    try:
        return pwd.getpwuid(peer.uid).pw_name
    except KeyError:
        return f"uid {peer.uid}"


class ControlActions:
    """Answers the requests of one daemon (see the module docstring).

    ``holds`` is the reconciler's store; ``now`` its wall clock; ``retry`` asks it to apply
    failed changes again; ``trigger`` asks the daemon for a run (with a reason);
    ``served`` gives the target names the last run served (None before a run served any
    revision).
    """

    def __init__(self, *, holds: HoldStore, now: Callable[[], datetime],
                 retry: Callable[[str], None], trigger: Callable[[str], None],
                 served: Callable[[], tuple[str, ...] | None], state_dir: Path,
                 site: str) -> None:
        self.holds = holds
        self.now = now
        self.retry = retry
        self.trigger = trigger
        self.served = served
        self.state_dir = state_dir
        self.site = site

    def answer(self, payload: object, peer: Peer) -> dict[str, Any]:
        kind = payload.get("request") if isinstance(payload, dict) else None
        try:
            request = parse_request(payload)
            self._check_state_dir(request.state_dir)
            by = identify(peer, request.sudo_user)
            act = {"hold": self._hold, "unhold": self._unhold, "holds": self._list,
                   "retry": self._retry, "sync": self._sync}[request.kind]
            return {"ok": True, **act(request, by)}
        except ReconcilerError as exc:
            _log.warning("control_request_refused", request=str(kind)[:20], uid=peer.uid,
                         pid=peer.pid, reason=exc.reason, error=exc.message)
            return {"ok": False, "error": exc.message, "reason": exc.reason}

    def _check_state_dir(self, asked: str) -> None:
        if asked and os.path.realpath(asked) != os.path.realpath(self.state_dir):
            raise _refuse(f"this daemon serves state directory {self.state_dir}, not {asked} "
                          "(check controlSocket in the config)", "OtherStateDir")

    def _check_target(self, target: str, *, held: bool = False) -> str:
        """"" when ``target`` is served (or cannot be checked: then a note); refuses a
        name the last run did not serve, unless ``held`` (ending a hold is always fine)."""
        served = self.served()
        if not target or held:
            return ""
        if served is None:
            return ("the target name was not checked: the daemon has not finished a run yet; "
                    "`reconciler holds` lists what it serves once it has")
        if target in served:
            return ""
        near = difflib.get_close_matches(target, served, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        shown = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
        what = f"it serves: {shown}" if served else "it serves no target right now"
        raise _refuse(f"this daemon (site {self.site}) serves no target named {target!r}"
                      f"{hint}; {what}", "UnknownTarget")

    def _hold(self, request: ControlRequest, by: str) -> dict[str, Any]:
        note = self._check_target(request.target)
        now = self.now()
        assert request.until is not None  # parse_request requires it
        if request.until <= now:
            raise _refuse(f"until: {request.until.isoformat(timespec='seconds')} is not in the "
                          f"future (it is {now.isoformat(timespec='seconds')} now)")
        hold = Hold(request.target, request.until, request.reason, by, now)
        try:
            self.holds.add(hold, now)
        except OSError as exc:
            raise _refuse(f"cannot write {self.holds.path}: {exc.strerror or exc}",
                          "HoldNotSaved") from None
        _log.info("hold_set", target=request.target or "*", by=by,
                  until=hold.until.isoformat(timespec="seconds"), hold_reason=hold.reason)
        self.trigger("hold")
        return {"hold": hold.to_json(), "holds": self.holds.to_json(now),
                **({"note": note} if note else {})}

    def _unhold(self, request: ControlRequest, by: str) -> dict[str, Any]:
        now = self.now()
        target = None if request.every else request.target
        if target:
            held = any(h.target == target for h in self.holds.current(now))
            self._check_target(target, held=held)
        try:
            ended = self.holds.remove(target, now)
        except OSError as exc:
            raise _refuse(f"cannot write {self.holds.path}: {exc.strerror or exc}",
                          "HoldNotSaved") from None
        for hold in ended:
            _log.info("hold_ended", target=hold.target or "*", by=by, set_by=hold.by)
        if ended:
            self.trigger("unhold")
        return {"ended": [h.to_json() for h in ended], "holds": self.holds.to_json(now)}

    def _list(self, request: ControlRequest, by: str) -> dict[str, Any]:
        served = self.served()
        return {"holds": self.holds.to_json(self.now()), "site": self.site,
                "served": list(served) if served is not None else None}

    def _retry(self, request: ControlRequest, by: str) -> dict[str, Any]:
        note = self._check_target(request.target)
        self.retry(request.target)
        _log.info("retry_requested", target=request.target or "*", by=by)
        self.trigger("retry")
        return {"target": request.target, **({"note": note} if note else {})}

    def _sync(self, request: ControlRequest, by: str) -> dict[str, Any]:
        _log.info("sync_requested", by=by)
        self.trigger("sync")
        return {}
