"""How far each instance's release has come through its waves, from the fleet index and the
status branches: what ``reconciler rollout status`` prints and the report's Rollouts section.

The fleet index (``reconciler.gitops.fleet_model``) holds, per instance, its release at the
tracked revision, its rollout's waves (names, pauses, approvals) and the wave of each of its
targets; the status files say which release each target runs and in which phase. The
verdicts are the daemons' own (:mod:`reconciler.engine.rollout_gate`), so what is shown is
what the sites decide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.cli.report_html import RolloutProgress
from reconciler.core.rollouts import LAST_WAVE, Rollout, Wave
from reconciler.engine.rollout_gate import PeerStatus, rollout_gate, wave_progress
from reconciler.gitops.fleet_model import FleetIndex, InstanceInfo
from reconciler.gitops.fleet_status import FleetStatus

__all__ = ["Approved", "approvals_in", "instance_progress", "peers_of", "state_of",
           "unfinished"]

# wave -> (approved, why not)
Approved = Callable[[str], tuple[bool, str]]


def peers_of(status: FleetStatus, instance: str,
             sites: Mapping[str, str]) -> dict[str, PeerStatus | None]:
    """What each of ``sites``' targets (target -> site path) reports of ``instance``."""
    entries = {e.key: e for e in status}
    out: dict[str, PeerStatus | None] = {}
    for target, site in sites.items():
        entry = entries.get((site, target))
        if entry is None:
            out[target] = None
            continue
        found = next((i for i in entry.instances if i.name == instance), None)
        out[target] = PeerStatus(target, found.phase if found else entry.phase,
                                 found.release if found else "", entry.last_change,
                                 entry.last_seen, found.failed_release if found else "")
    return out


def approvals_in(git_dir: Path, instance: str, release: str, rollout: Rollout | None,
                 keys: tuple[Path | None, Path | None] = (None, None)) -> Approved:
    """wave -> (approved, why not), from the approval tags in ``git_dir``; their signatures
    checked against ``keys`` (allowed signers, keyring) as the sites check them when given,
    else every approval tag counts (as at a site with verification off)."""
    from reconciler.gitops.approvals import approvals_for
    from reconciler.gitops.verification import VerifyMode, VerifyPolicy

    approvers = tuple(rollout.approvers) if rollout is not None else ()
    policy = VerifyPolicy(VerifyMode.COMMIT, keys[0], keys[1]) if any(keys) \
        else VerifyPolicy(VerifyMode.NONE)
    cache: dict[str, tuple[bool, str]] = {}

    def approved(wave: str) -> tuple[bool, str]:
        if wave not in cache:
            check = approvals_for(git_dir, instance, wave, release, policy=policy,
                                  approvers=approvers)
            cache[wave] = (check.approved, check.reason)
        return cache[wave]
    return approved


def instance_progress(index: FleetIndex, status: FleetStatus, info: InstanceInfo,
                      approved: Approved, now: dt.datetime) -> dict[str, Any]:
    """The rollout of ``info``'s release as a JSON-able document (docs/rollouts.md)."""
    sites = {t.target: t.site for t in index.targets if info.name in t.instances}
    plan = info.rollout or Rollout((Wave("all", sites=("/",)),))
    waves = dict(info.waves) if info.rollout else {t: LAST_WAVE for t in sites}
    peers = peers_of(status, info.name, sites)
    release = info.release
    label = f"{info.solution} {release}"
    messages = {e.target: e.message for e in status if e.target in sites}
    out_waves = []
    complete = True
    ready_total = 0
    for wave in wave_progress(plan, release, waves, peers, now):
        rows = []
        for target in wave.targets:
            peer = peers.get(target)
            on = peer is not None and peer.release == release and peer.phase == "Ready"
            complete = complete and on
            ready_total += on
            why = ""
            if not on:
                if peer is not None and peer.phase == "Waiting":
                    why = messages.get(target, "")
                else:
                    verdict = rollout_gate(plan, release, label, target, waves, peers,
                                           approved, now)
                    why = verdict.reason or ("moving: not yet Ready on the release"
                                             if peer is not None else "never reported")
            rows.append({"target": target, "site": sites[target],
                         "release": peer.release if peer else None,
                         "phase": peer.phase if peer else None, "waitingFor": why or None})
        out_waves.append({"name": wave.name, "targets": rows, "ready": len(wave.ready),
                          "total": len(wave.targets), "pauseSeconds": wave.pause,
                          "approval": wave.approval,
                          "approved": approved(wave.name)[0] if wave.approval else None,
                          "haltedBy": list(wave.halted_by)})
    return {"instance": info.name, "solution": info.solution, "release": release,
            "revision": index.commit, "hasRollout": info.rollout is not None,
            "complete": complete, "readyTargets": ready_total, "targets": len(sites),
            "waves": out_waves}


def state_of(progress: Mapping[str, Any]) -> tuple[str, str]:
    """(state, message) of a rollout for the report: Done, Halted, Waiting, Progressing."""
    if progress["complete"]:
        return "Done", ""
    for wave in progress["waves"]:
        if wave["haltedBy"]:
            return "Halted", f"halted by {', '.join(wave['haltedBy'])} in wave {wave['name']}"
    for wave in progress["waves"]:
        for row in wave["targets"]:
            if row["waitingFor"] and row["phase"] != "Ready":
                return "Progressing", f"{row['target']}: {row['waitingFor']}"
    return "Progressing", ""


def unfinished(index: FleetIndex | None, status: FleetStatus,
               git_dir: Path) -> list[RolloutProgress]:
    """The rollouts whose release has not reached all their targets, for the report."""
    if index is None:
        return []
    out = []
    now = dt.datetime.now(dt.UTC)
    for info in index.instances.values():
        if info.rollout is None:
            continue
        progress = instance_progress(index, status, info, approvals_in(
            git_dir, info.name, info.release, info.rollout), now)
        if progress["complete"]:
            continue
        state, message = state_of(progress)
        waves = progress["waves"]
        out.append(RolloutProgress(
            info.name, info.solution, info.release, state,
            sum(1 for w in waves if w["ready"] == w["total"]), len(waves),
            progress["readyTargets"], progress["targets"], message))
    return out
