"""What the last status publish was made from and what it made, kept across processes.

An idle run has the statuses of the run before. A daemon remembers its last publish in
memory; a new process (``sync --once`` from a timer, a restart) reads it back from
``<state dir>/status-published.json``, written atomically after each publish, so that it
neither renders the status files (their YAML is about 1 ms per target) nor hands them to
the publisher only to find the same tree. :class:`Published` holds:

* ``inputs``: a digest of what the files are rendered from: the branch, the site paths the
  daemon owns, the heartbeat's time, and per status file its path, the canonical JSON of its
  status and its ``lastChange``. It stands for the rendered files only when redaction cannot
  change them: when no secret value known to this process occurs in any string of the
  statuses (else it is "" and the files are rendered and compared as bytes);
* ``files``: the digest of the rendered files (with the owned site paths);
* ``commit``, ``pushed``: the status commit and whether the remote holds it;
* ``beat``: the time written in the heartbeat file ("" when none).

A record read from the file is used only while the publisher's own status ref still names
its commit (a state directory whose git repository was replaced publishes again). Used by
:mod:`reconciler.engine.publishing`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.core.secrets import redact, redact_value
from reconciler.core.statefiles import read_json, write_atomic

__all__ = ["RECORD_FILE", "Published", "inputs_digest"]

RECORD_FILE = "status-published.json"
_FORMAT = 1
_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Published:
    """One publish (see the module docstring)."""

    inputs: str
    files: str
    commit: str
    pushed: bool
    beat: str = ""
    branch: str = ""

    def heartbeat(self) -> dt.datetime | None:
        """The heartbeat's time, None when there was none."""
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(self.beat) if self.beat else None
        return None

    def save(self, state_dir: Path) -> None:
        """Write the record; a failure is logged (the next process publishes again)."""
        try:
            write_atomic(state_dir / RECORD_FILE,
                         json.dumps({"format": _FORMAT, **asdict(self)}).encode())
        except OSError as exc:
            _log.warning("status_record_write_failed", error=str(exc))

    @classmethod
    def load(cls, state_dir: Path) -> Published | None:
        """The record of the last publish; None when there is none that reads well."""
        raw = read_json(state_dir / RECORD_FILE, None)
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            return None
        strings = ("inputs", "files", "commit", "beat", "branch")
        if not all(isinstance(raw.get(k), str) for k in strings) \
                or not isinstance(raw.get("pushed"), bool) or not raw["commit"]:
            return None
        return cls(**{k: raw[k] for k in (*strings, "pushed")})


def inputs_digest(*, branch: str, owned: Sequence[str], beat: dt.datetime | None,
                  files: Iterable[tuple[str, str, str]]) -> str:
    """The ``inputs`` of a publish of ``files`` ((path, canonical JSON of the status,
    lastChange) per status file); "" when a known secret value occurs in a status."""
    texts: list[str] = []
    digest = hashlib.sha256(json.dumps(
        [_FORMAT, branch, sorted(owned), beat.isoformat() if beat else None]).encode())
    for path, text, last_change in files:
        texts.append(text)
        digest.update(f"\0{path}\0{last_change}\0{len(text)}\0".encode() + text.encode())
    joined = "\0".join(texts)
    if redact(joined) != joined or ("\\" in joined and _secret_inside(texts)):
        return ""
    return digest.hexdigest()


def _secret_inside(texts: Iterable[str]) -> bool:
    """Whether a known secret value occurs in a string of the JSON ``texts``: the text
    itself escapes quotes, backslashes and control characters, which a secret may hold."""
    for text in texts:
        if "\\" in text:
            value: Any = json.loads(text)
            if redact_value(value) != value or _keys_redacted(value):
                return True
    return False


def _keys_redacted(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(redact(str(k)) != k or _keys_redacted(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_keys_redacted(v) for v in value)
    return False
