"""Whether a target may move to an instance's new release, from its rollout's waves.

The rule (DESIGN §5, docs/rollouts.md): a target of wave N+1 moves to a new release only when
every target of waves 1..N reports ``Ready`` on that release in its status file, the pause
of wave N has passed since the last of them became Ready there, and, when wave N+1 requires
approval, a valid approval for it exists. Until then it keeps enforcing its previous release
and its status says why (``wave canary: 1/2 targets Ready on telemetry-agent 1.5.0``). A
target of an earlier wave that reports ``Failed`` or ``RolledBack`` on the release halts the
rollout: no later wave moves (a newer release starts again from wave 1). A target that never
reported, or whose site was last heard from longer ago than the rollout's ``staleAfter``,
counts as not Ready: the rollout waits, it never guesses.

:func:`rollout_gate` is pure: the statuses of the other targets (:class:`PeerStatus`, read
from the status branches by :mod:`reconciler.engine.peer_status`) and the approvals (a
callable) are given to it. ``reconciler rollout status`` shows the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.core.rollouts import LAST_WAVE, Rollout

__all__ = ["GateVerdict", "PeerStatus", "WaveProgress", "rollout_gate", "wave_progress"]

_HALTING = ("Failed", "RolledBack")


@dataclass(frozen=True)
class PeerStatus:
    """One target of the instance, as its status file reports the instance there."""

    target: str
    phase: str  # the instance's phase on the target ("" when it does not report it)
    release: str  # the instance's release there
    last_change: datetime | None  # when its status last changed
    seen: datetime | None  # the newest sign of life of its site
    failed_release: str = ""  # the release it was rolled back from


@dataclass(frozen=True)
class WaveProgress:
    """One wave of a rollout of one release."""

    name: str
    targets: tuple[str, ...]
    ready: tuple[str, ...]  # Ready on the release, and fresh
    halted_by: tuple[str, ...]  # Failed or RolledBack on the release
    ready_at: datetime | None  # when the last of them became Ready (all Ready only)
    pause: int
    approval: bool

    @property
    def complete(self) -> bool:
        return len(self.ready) == len(self.targets)


@dataclass(frozen=True)
class GateVerdict:
    go: bool
    wave: str  # the target's wave
    reason: str = ""  # why it waits ("" when it may go)
    halted: bool = False
    wake_at: datetime | None = None  # when a pause ends


def _fresh(peer: PeerStatus | None, now: datetime, stale_after: int) -> bool:
    return peer is not None and peer.seen is not None \
        and now - peer.seen <= timedelta(seconds=stale_after)


def wave_progress(rollout: Rollout, release: str, waves: Mapping[str, str],
                  peers: Mapping[str, PeerStatus | None], now: datetime) -> list[WaveProgress]:
    """Every wave (the implicit last one too, when it has targets) with its targets and
    which of them are Ready on ``release``."""
    order = [w.name for w in rollout.waves] + [LAST_WAVE]
    settings = {w.name: (w.pause, w.approval) for w in rollout.waves}
    out: list[WaveProgress] = []
    for name in order:
        targets = tuple(sorted(t for t, w in waves.items() if w == name))
        if name == LAST_WAVE and not targets:
            continue
        ready, halted = [], []
        for t in targets:
            peer = peers.get(t)
            if peer is None:
                continue
            if peer.phase in _HALTING and release in (peer.release, peer.failed_release):
                halted.append(t)
            elif peer.release != release:
                continue
            elif peer.phase == "Ready" and _fresh(peer, now, rollout.stale_after):
                ready.append(t)
        times = [p.last_change for t in targets if (p := peers.get(t)) and p.last_change]
        ready_at = max(times) if len(ready) == len(targets) and times else None
        pause, approval = settings.get(name, (0, False))
        out.append(WaveProgress(name, targets, tuple(ready), tuple(halted), ready_at, pause,
                                approval))
    return out


def rollout_gate(rollout: Rollout, release: str, label: str, target: str,
                 waves: Mapping[str, str], peers: Mapping[str, PeerStatus | None],
                 approved: Callable[[str], tuple[bool, str]], now: datetime) -> GateVerdict:
    """May ``target`` move to ``release`` now? ``label`` names the release for people
    ("telemetry-agent 1.5.0"); ``waves`` maps each target of the instance to its wave;
    ``approved(wave)`` says whether the wave is approved for the release, and why not."""
    mine = waves.get(target, LAST_WAVE)
    progress = wave_progress(rollout, release, waves, peers, now)
    earlier: list[WaveProgress] = []
    for wave in progress:
        if wave.name == mine:
            break
        earlier.append(wave)
    for wave in earlier:
        if wave.halted_by:
            return GateVerdict(False, mine, f"rollout of {label} halted: {wave.halted_by[0]} "
                               f"in wave {wave.name} failed on it", halted=True)
    for wave in earlier:
        if not wave.complete:
            missing = [t for t in wave.targets if t not in wave.ready]
            return GateVerdict(False, mine, f"wave {wave.name}: {len(wave.ready)}/"
                               f"{len(wave.targets)} targets Ready on {label} (waiting for "
                               f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    if earlier and earlier[-1].pause and earlier[-1].ready_at is not None:
        ends = earlier[-1].ready_at + timedelta(seconds=earlier[-1].pause)
        if now < ends:
            return GateVerdict(False, mine, f"wave {earlier[-1].name} Ready on {label}; "
                               f"pause until {ends.isoformat(timespec='seconds')}",
                               wake_at=ends)
    here = next((w for w in progress if w.name == mine), None)
    if here is not None and here.approval:
        ok, why = approved(mine)
        if not ok:
            return GateVerdict(False, mine, f"wave {mine} waits for approval of {label}"
                               + (f": {why}" if why else ""))
    return GateVerdict(True, mine)
