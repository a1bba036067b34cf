"""The rollout gate of one daemon: releases, waves and approvals, worked out once per revision.

:class:`Rollouts` answers, for an instance placed on a target, its release
(:func:`reconciler.core.rollouts.release_id`) and whether the target may move to it now
(:func:`reconciler.engine.rollout_gate.rollout_gate`), from the waves of the instance's
rollout (split once per revision and instance), the statuses of the targets of the earlier
waves (:class:`~reconciler.engine.peer_status.PeerStatuses`, read only while some target
waits) and the approvals of the wave (signed tags, checked by ``approvals``). Used by
:mod:`reconciler.engine.reconciling` for every instance that renders a new release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from reconciler.core.model import Fleet
from reconciler.core.rendering import Placement, select_targets
from reconciler.core.rollouts import LAST_WAVE, assign_waves, release_id
from reconciler.engine.peer_status import PeerStatuses
from reconciler.engine.rollout_gate import GateVerdict, rollout_gate

__all__ = ["Approvals", "Rollouts"]

# (instance, wave, release, approvers) -> (approved, why not)
Approvals = Callable[[str, str, str, Sequence[str]], tuple[bool, str]]


def _no_approvals(instance: str, wave: str, release: str,
                  approvers: Sequence[str]) -> tuple[bool, str]:
    return False, "no approval found"


class Rollouts:
    """See the module docstring. ``peers`` and ``approvals`` are set by the pipeline."""

    def __init__(self) -> None:
        self.peers: PeerStatuses | None = None
        self.approvals: Approvals = _no_approvals
        self._releases: dict[tuple[str, str, str], str] = {}
        self._waves: dict[tuple[str, str], dict[str, str]] = {}
        self._sites: dict[tuple[str, str], dict[str, str]] = {}

    def keep(self, revisions: set[str]) -> None:
        """Forget what was worked out for revisions no longer in use."""
        self._releases = {k: v for k, v in self._releases.items() if k[0] in revisions}
        self._waves = {k: v for k, v in self._waves.items() if k[0] in revisions}
        self._sites = {k: v for k, v in self._sites.items() if k[0] in revisions}

    def release_of(self, placement: Placement) -> str:
        """The release ``placement`` renders (the same for every target of the instance)."""
        comp = placement.components[0] if placement.components else None
        revision = comp.revision if comp is not None else ""
        key = (revision, placement.instance.name, placement.solution.release)
        found = self._releases.get(key)
        if found is None:
            root = comp.repo_root if comp is not None else placement.solution.root
            found = self._releases[key] = release_id(placement.instance, placement.solution,
                                                     root or Path("."))
        return found

    def gate(self, placement: Placement, fleet: Fleet, revision: str,
             now: datetime) -> GateVerdict | None:
        """Whether the target of ``placement`` may move to its release now; None when the
        instance has no rollout."""
        instance = placement.instance
        rollout = instance.rollout
        if rollout is None:
            return None
        key = (revision, instance.name)
        waves = self._waves.get(key)
        if waves is None:
            chosen = select_targets(fleet, instance)
            self._sites[key] = {t.name: fleet.site_path(t.site) for t in chosen}
            waves = self._waves[key] = assign_waves(
                instance.name, rollout, [(t.name, fleet.site_path(t.site),
                                          fleet.target_labels(t)) for t in chosen])
        order = [w.name for w in rollout.waves] + [LAST_WAVE]
        mine = order.index(waves.get(placement.target.name, LAST_WAVE))
        earlier = {t: site for t, site in self._sites[key].items()
                   if order.index(waves[t]) < mine}
        peers = self.peers.statuses(earlier, instance.name) \
            if earlier and self.peers is not None else {}
        release = self.release_of(placement)
        label = f"{placement.solution.name} {release}"
        return rollout_gate(rollout, release, label, placement.target.name, waves, peers,
                            lambda wave: self.approvals(instance.name, wave, release,
                                                        rollout.approvers), now)

