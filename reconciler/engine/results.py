"""What a reconcile of one target reports: per component a result, per target their sum.

Values only; made by :mod:`reconciler.engine.executing` and read by the status, the metrics
and the notifications.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["ComponentPhase", "ComponentResult", "RetryPolicy", "TargetResult"]


class ComponentPhase(enum.Enum):
    READY = "Ready"  # in sync and healthy
    PROGRESSING = "Progressing"  # applied, not healthy yet (wait abandoned)
    DEGRADED = "Degraded"  # in sync but reports unhealthy
    FAILED = "Failed"
    SKIPPED = "Skipped"  # not attempted: an earlier step failed or the run was cancelled
    SUSPENDED = "Suspended"
    PRUNED = "Pruned"
    PRUNE_FAILED = "PruneFailed"


@dataclass(frozen=True, slots=True)
class ComponentResult:
    key: str
    instance: str
    component: str
    provider: str
    phase: ComponentPhase
    message: str = ""
    revision: str = ""  # revision the live state corresponds to
    applied: bool = False
    drifted: bool = False  # was out of sync although its inputs had not changed
    reason: str = ""  # the error's reason when it failed (e.g. StateWriteFailed)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    delay: float = 5.0
    max_delay: float = 300.0
    health_timeout: float = 300.0
    health_poll: float = 2.0


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    revision: str
    components: tuple[ComponentResult, ...]
    cancelled: bool = False
    duration: float = 0.0
    provider_calls: dict[str, int] = field(default_factory=dict, compare=False)

    def count(self, *phases: ComponentPhase) -> int:
        return sum(1 for c in self.components if c.phase in phases)

    @property
    def applied(self) -> int:
        return sum(1 for c in self.components if c.applied)

    @property
    def drifted(self) -> int:
        return sum(1 for c in self.components if c.drifted)

    @property
    def pruned(self) -> int:
        return self.count(ComponentPhase.PRUNED)

    @property
    def failed(self) -> int:
        return self.count(ComponentPhase.FAILED, ComponentPhase.PRUNE_FAILED)

    @property
    def succeeded(self) -> bool:
        return not self.failed and not self.cancelled and not self.count(
            ComponentPhase.PROGRESSING)
