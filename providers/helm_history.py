"""Pure helpers of the ``helm`` provider's rollbacks: what each release revision deployed,
the ``helm history`` and ``helm rollback`` command lines, and the choice between them and
``helm upgrade``.

After every successful apply the provider reads the revision helm just wrote (``helm history
--max 1``) and keeps, in the component's inventory record, a short newest-first list of
:class:`DeployedState` (at most :data:`HISTORY_MAX`, helm's own default ``--history-max``):
which revision holds which chart name, version, chart directory digest, chart source and
values digest. When a later apply wants one of those states again (the engine rolling an
instance back to its last good revision, or repairing a hand-made upgrade),
:func:`plan_rollback` picks that revision if helm still has it, unchanged, and it is not the
current one; the provider then runs ``helm rollback`` instead of ``helm upgrade``: no chart
download, no render, the exact manifest and values of that revision. No process is started
here; ``reconciler_providers.helm`` runs the commands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reconciler.provider_api import PermanentError

from .helm_commands import (
    ChartSource,
    Connection,
    HelmVersion,
    ReleaseSpec,
    conn_args,
    values_digest,
)

__all__ = [
    "HISTORY_MAX",
    "DeployedState",
    "HistoryEntry",
    "RollbackPlan",
    "content_of",
    "deployed_state",
    "history_argv",
    "next_history",
    "parse_history",
    "plan_rollback",
    "recorded_states",
    "rollback_argv",
]

# helm keeps 10 revisions per release by default (--history-max of upgrade and rollback,
# which we do not change): older states could not be rolled back to anyway.
HISTORY_MAX = 10


@dataclass(frozen=True)
class HistoryEntry:
    """One row of ``helm history -o json``."""

    revision: int
    updated: str  # when helm wrote that revision: tells it from a reused number
    status: str  # deployed, superseded, failed, pending-*, ...
    chart: str  # "<name>-<version>"
    description: str  # "Upgrade complete", "Rollback to 1", ...


@dataclass(frozen=True)
class DeployedState:
    """What one release revision deployed, as the inventory record keeps it."""

    revision: int
    updated: str
    chart_name: str
    version: str
    chart_digest: str  # content digest of a chart directory, "" for a fetched chart
    values_digest: str
    source: str  # repository URL or oci:// reference, "" for a chart directory

    @property
    def content(self) -> tuple[str, str, str, str, str]:
        """Equal for two revisions that deploy the same thing."""
        return (self.chart_name, self.version, self.chart_digest, self.values_digest,
                self.source)

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, raw: Any) -> DeployedState | None:
        """The state a record holds; None for anything malformed (a hand-edited record)."""
        if not isinstance(raw, Mapping):
            return None
        revision = raw.get("revision")
        if isinstance(revision, bool) or not isinstance(revision, int):
            return None
        text = {k: raw.get(k) for k in ("updated", "chart_name", "version", "chart_digest",
                                         "values_digest", "source")}
        if not all(isinstance(v, str) for v in text.values()):
            return None
        return cls(revision, **{k: str(v) for k, v in text.items()})


@dataclass(frozen=True)
class RollbackPlan:
    """Roll the release back from revision ``current`` to revision ``to``."""

    current: int
    to: int


def content_of(spec: ReleaseSpec) -> tuple[str, str, str, str, str]:
    chart = spec.chart
    directory = chart.source is ChartSource.DIRECTORY
    return (chart.name, chart.version, chart.digest if directory else "",
            values_digest(spec.values), "" if directory else chart.ref)


def deployed_state(spec: ReleaseSpec, entry: HistoryEntry) -> DeployedState:
    """The state ``spec`` describes, deployed as the revision ``entry``."""
    name, version, digest, values, source = content_of(spec)
    return DeployedState(entry.revision, entry.updated, name, version, digest, values, source)


# --------------------------------------------------------------------------- command lines


def history_argv(binary: str, release: str, namespace: str, conn: Connection, *,
                 last: int | None = None) -> list[str]:
    argv = [binary, "history", release, "--output", "json", *conn_args(conn, namespace)]
    if last is not None:
        argv += ["--max", str(last)]
    return argv


def rollback_argv(helm: HelmVersion, binary: str, release: str, revision: int,
                  namespace: str, conn: Connection, timeout: str) -> list[str]:
    """``helm rollback`` with the wait of an upgrade. Rollback has no rollback-on-failure
    flag (in helm 3 or 4): ``--cleanup-on-fail`` removes what a failed rollback created, and
    the provider then falls back to an upgrade, which has it."""
    return [binary, "rollback", release, str(revision), helm.wait_flag, "--cleanup-on-fail",
            "--timeout", timeout, *conn_args(conn, namespace)]


def parse_history(text: str, release: str) -> list[HistoryEntry]:
    """The rows of ``helm history -o json``, oldest first."""
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise PermanentError(f"release {release!r}: helm history printed invalid JSON: "
                             f"{exc}") from None
    out: list[HistoryEntry] = []
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, Mapping):
            continue
        try:
            revision = int(row.get("revision", ""))
        except (TypeError, ValueError):
            continue
        out.append(HistoryEntry(revision, str(row.get("updated", "")),
                                str(row.get("status", "")), str(row.get("chart", "")),
                                str(row.get("description", ""))))
    return sorted(out, key=lambda e: e.revision)


# --------------------------------------------------------------------------- the record


def recorded_states(data: Mapping[str, Any], spec: ReleaseSpec) -> list[DeployedState]:
    """The states a record says revisions of ``spec``'s release deployed, newest first;
    none when the record is of another release or namespace (their numbers mean nothing
    here)."""
    if (data.get("release"), data.get("namespace")) != (spec.release, spec.namespace):
        return []
    raw = data.get("history")
    states = (DeployedState.from_data(item) for item in raw) if isinstance(raw, list) else ()
    return [s for s in states if s is not None]


def next_history(recorded: Sequence[DeployedState],
                 deployed: DeployedState | None) -> list[dict[str, Any]]:
    """The record's history after an apply that deployed ``deployed`` (None: its revision
    could not be read): it comes first, replacing an older revision of the same content and
    whatever the record said of its revision number; at most HISTORY_MAX states."""
    states = list(recorded)
    if deployed is not None:
        states = [deployed] + [s for s in states if s.content != deployed.content
                               and s.revision != deployed.revision]
    return [s.to_data() for s in states[:HISTORY_MAX]]


def plan_rollback(spec: ReleaseSpec, recorded: Sequence[DeployedState],
                  live: Sequence[HistoryEntry]) -> RollbackPlan | None:
    """The revision to roll back to for ``spec``, or None to upgrade.

    A recorded state is used when it deploys exactly what ``spec`` describes (chart name,
    version, directory digest, source, values digest), and helm still has its revision,
    written at the recorded time (not a number reused after the release was deleted and
    installed again), superseded (not failed), with the same chart, and not the current one.
    """
    if not live:
        return None
    current = max(live, key=lambda e: e.revision)
    by_revision = {e.revision: e for e in live}
    wanted = content_of(spec)
    chart = f"{spec.chart.name}-{spec.chart.version}"
    for state in recorded:
        if state.content != wanted or state.revision == current.revision:
            continue
        entry = by_revision.get(state.revision)
        if (entry is not None and entry.status == "superseded" and entry.chart == chart
                and entry.updated == state.updated):
            return RollbackPlan(current=current.revision, to=state.revision)
    return None
