"""Apply one target: observe, apply in dependency order, wait for health, prune.

One reconcile of one target is a sequence of steps that stops at the first failure (later
components are reported as not attempted), in the manner of Flux's kustomize-controller:

1. for each desired component (instances in name order, components in ``dependsOn`` order):
   ``observe``; when not in sync, ``apply`` and record the result in the inventory at once;
   then wait for health (polling until Healthy, Degraded, the timeout, or cancellation);
2. when every component succeeded: prune inventory entries that are no longer desired, in
   reverse apply order; a failed prune stays in the inventory and is retried next run. A
   failed, abandoned or cancelled step means no prune at all for the target that run (as in
   Flux): what was applied stays until a run of the target succeeds.

A component is *drifted* when it was out of sync although what it should be had not changed
since it was last applied: the same revision, or an apply that produced the same record as
the one in the inventory (whichever commit last touched the component).

Transient provider errors are retried with exponential backoff; permanent ones fail at once.
A provider that raises anything else is treated as a permanent failure of that component.
``cancelled()`` (shutdown, or a newer revision arrived) stops the run between steps and
abandons health waits. Called by the pipeline for every target.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from reconciler.core.backoff import Backoff, cancellable_sleep, retry
from reconciler.core.errors import PermanentError, ReconcilerError, TransientError
from reconciler.core.model import Target
from reconciler.core.provider_api import Component, Health, Provider, Record
from reconciler.core.rendering import Placement
from reconciler.engine.bindings import ProviderSet
from reconciler.engine.inventory import Entry, Inventory
from reconciler.engine.planning import prunes

__all__ = ["ComponentPhase", "ComponentResult", "RetryPolicy", "TargetResult",
           "reconcile_target"]

_log = structlog.get_logger(__name__)
T = TypeVar("T")


class ComponentPhase(enum.Enum):
    READY = "Ready"  # in sync and healthy
    PROGRESSING = "Progressing"  # applied, not healthy yet (wait abandoned)
    DEGRADED = "Degraded"  # in sync but reports unhealthy
    FAILED = "Failed"
    SKIPPED = "Skipped"  # not attempted: an earlier step failed or the run was cancelled
    SUSPENDED = "Suspended"
    PRUNED = "Pruned"
    PRUNE_FAILED = "PruneFailed"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    delay: float = 5.0
    max_delay: float = 300.0
    health_timeout: float = 300.0
    health_poll: float = 2.0


@dataclass(frozen=True)
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


_HEALTH_PHASES = {Health.HEALTHY: ComponentPhase.READY,
                  Health.PROGRESSING: ComponentPhase.PROGRESSING,
                  Health.DEGRADED: ComponentPhase.DEGRADED}


def _same_state(old: Record, new: Record, revisions: set[str]) -> bool:
    """True when an apply recorded what the previous apply recorded: the desired state did
    not change, so the difference the apply repaired was drift.

    The commit ids are left out of the comparison: a provider may record which commit it
    applied (the script provider does), which says when the state was applied, not what it
    is. What a provider applies shows in its record (file digests, rendered object digests,
    input digests), so a change from the repository makes the records differ.
    """
    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return "<revision>" if value in revisions else value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return bool(plain(old.to_dict()) == plain(new.to_dict()))


def _asked_delay(exc: BaseException) -> float:
    """The delay a transient error asks for (a server's "retry after"), 0 when none."""
    return (exc.delay or 0.0) if isinstance(exc, TransientError) else 0.0


def _age(stamp: str) -> float:
    """Seconds since an inventory ``appliedAt`` time (0 when unknown)."""
    try:
        return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds())
    except ValueError:
        return 0.0


class _Runner:
    def __init__(self, target: Target, providers: ProviderSet, inventory: Inventory,
                 revision: str, retry: RetryPolicy, cancelled: Callable[[], bool]) -> None:
        self.target = target
        self.providers = providers
        self.inventory = inventory
        self.revision = revision
        self.retry = retry
        self.cancelled = cancelled
        self.calls: dict[str, int] = {}
        self.backoff = Backoff(retry.delay, retry.max_delay)
        self._log: Any = None

    @property
    def log(self) -> Any:
        """The target's logger, bound on first use: an idle run logs nothing per target."""
        if self._log is None:
            self._log = _log.bind(target=self.target.name, revision=self.revision[:12])
        return self._log

    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a provider call ``fn(*args)``, retried with backoff while it fails transiently
        (not once the run is cancelled); only ReconcilerError leaves."""
        calls = self.calls
        calls[what] = calls.get(what, 0) + 1
        try:  # inline: the retry machinery only after a failure
            return fn(*args)
        except TransientError as exc:
            first = exc
        except ReconcilerError:
            raise
        except Exception as exc:
            raise self._crashed(what, exc) from exc

        def retried(failures: int, delay: float, error: BaseException) -> None:
            self.log.warning("provider_call_retried", call=what, attempt=failures,
                             delay=round(delay, 2), error=str(error))

        return retry(partial(self._attempt, what, fn, *args), on=TransientError,
                     attempts=self.retry.retries + 1, backoff=self.backoff, sleep=self.sleep,
                     give_up=self.cancelled, at_least=_asked_delay, before_sleep=retried,
                     failed=first)

    def _attempt(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        self.calls[what] = self.calls.get(what, 0) + 1
        try:
            return fn(*args)
        except ReconcilerError:
            raise
        except Exception as exc:
            raise self._crashed(what, exc) from exc

    def _crashed(self, what: str, exc: Exception) -> PermanentError:
        """A provider bug: fail the component, keep the daemon."""
        self.log.exception("provider_crashed", call=what)
        return PermanentError(f"provider crashed in {what}: {type(exc).__name__}: {exc}",
                              reason="ProviderCrashed")

    def sleep(self, seconds: float) -> None:
        cancellable_sleep(seconds, self.cancelled)

    def health_timeout(self, comp: Component) -> float:
        value = comp.properties.get("healthTimeout")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else self.retry.health_timeout

    def wait_healthy(self, provider: Provider, comp: Component, record: Record, *,
                     timeout: float | None = None) -> tuple[ComponentPhase, str]:
        timeout = self.health_timeout(comp) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        message = ""
        while True:
            try:
                self.calls["health"] = self.calls.get("health", 0) + 1
                report = provider.health(comp, record)
            except TransientError as exc:
                report = None
                message = exc.message
            except ReconcilerError as exc:
                return ComponentPhase.FAILED, f"health check failed: {exc.message}"
            except Exception as exc:
                self.log.exception("provider_crashed", call="health")
                return ComponentPhase.FAILED, f"provider crashed in health: {exc}"
            if report is not None:
                message = report.message
                if report.state is Health.HEALTHY:
                    return ComponentPhase.READY, message
                if report.state is Health.DEGRADED:
                    return ComponentPhase.FAILED, f"unhealthy: {message}"
            if self.cancelled():
                return ComponentPhase.PROGRESSING, "health wait abandoned" + (
                    f" ({message})" if message else "")
            if time.monotonic() >= deadline:
                return ComponentPhase.FAILED, (f"not healthy after {timeout:g}s"
                                               + (f": {message}" if message else ""))
            self.sleep(self.retry.health_poll)

    def component(self, placement: Placement, comp: Component, order: int) -> ComponentResult:
        key = comp.key
        binding = self.target.binding(comp.type)
        if binding is None:
            return ComponentResult(key, comp.instance, comp.name, "", ComponentPhase.FAILED,
                                   f"no binding for role '{comp.type}'")
        provider_name = binding.provider
        entry = self.inventory.get(key)
        try:
            provider = self.providers.for_binding(binding)
            if entry is not None and (entry.record.provider != provider_name
                                      or entry.record.binding != binding.role):
                # moved to another provider or binding: remove what the old one applied first
                self.prune(entry)
                entry = None
            record = entry.record if entry is not None else None
            obs = self.call("observe", provider.observe, comp, record)
            if obs.in_sync and entry is not None:
                if entry.order != order:
                    self.inventory.reorder({key: order})
                health = self.call("health", provider.health, comp, entry.record)
                phase = _HEALTH_PHASES[health.state]
                message = health.message
                if phase is ComponentPhase.PROGRESSING:
                    # applied by an earlier (perhaps abandoned) run and still settling: wait
                    # for it as that run would have, for what is left of its health timeout,
                    # so components depending on it are not skipped until the next schedule
                    left = self.health_timeout(comp) - _age(entry.applied_at)
                    phase, message = self.wait_healthy(provider, comp, entry.record,
                                                       timeout=max(left, 0.0))
                return ComponentResult(key, comp.instance, comp.name, provider_name, phase,
                                       message, entry.revision)
            new_record = self.call("apply", provider.apply, comp, record)
            drifted = entry is not None and (entry.revision == self.revision or _same_state(
                entry.record, new_record, {entry.revision, self.revision} - {""}))
            self.inventory.put(key, new_record, binding.config, self.revision, order)
            self.log.info("component_applied", instance=comp.instance, component=comp.name,
                          provider=provider_name, action="update" if obs.exists else "create",
                          drifted=drifted, diff=obs.diff[:2000] if obs.diff else None)
            # the message is the health message, the same one an in-sync run reports, so a
            # status file does not change (and make a commit) just because a run applied
            phase, message = self.wait_healthy(provider, comp, new_record)
            return ComponentResult(key, comp.instance, comp.name, provider_name, phase,
                                   message, self.revision, applied=True, drifted=drifted)
        except ReconcilerError as exc:
            self.log.warning("component_failed", instance=comp.instance, component=comp.name,
                             provider=provider_name, reason=exc.reason, error=exc.message)
            return ComponentResult(key, comp.instance, comp.name, provider_name,
                                   ComponentPhase.FAILED, exc.message,
                                   entry.revision if entry else "")

    def prune(self, entry: Entry) -> ComponentResult:
        instance, _, name = entry.key.partition("/")
        base: dict[str, Any] = {"key": entry.key, "instance": instance, "component": name,
                                "provider": entry.record.provider}
        try:
            provider = self.providers.get(entry.record.provider, entry.record.binding,
                                          entry.binding_config)
            self.call("delete", provider.delete, entry.record)
            # still in the file when this fails: the next run deletes again (deletes of
            # what is already gone succeed) and then forgets it
            self.inventory.remove(entry.key)
        except ReconcilerError as exc:
            self.log.warning("component_prune_failed", instance=instance, component=name,
                             error=exc.message)
            return ComponentResult(**base, phase=ComponentPhase.PRUNE_FAILED,
                                   message=f"prune failed (kept, retried next run): "
                                           f"{exc.message}", revision=entry.revision)
        self.log.info("component_pruned", instance=instance, component=name,
                      provider=entry.record.provider)
        return ComponentResult(**base, phase=ComponentPhase.PRUNED, message="pruned",
                               revision=entry.revision)


def _not_run(target: Target, comp: Component, phase: ComponentPhase, message: str,
             revision: str = "") -> ComponentResult:
    binding = target.binding(comp.type)
    return ComponentResult(comp.key, comp.instance, comp.name,
                           binding.provider if binding else "", phase, message, revision)


def reconcile_target(target: Target, placements: Sequence[Placement], providers: ProviderSet,
                     inventory: Inventory, revision: str, *, retry: RetryPolicy,
                     cancelled: Callable[[], bool] = lambda: False) -> TargetResult:
    started = time.monotonic()
    runner = _Runner(target, providers, inventory, revision, retry, cancelled)
    results: list[ComponentResult] = []
    stopped = False
    order = 0
    for placement in placements:
        for comp in placement.components:
            if placement.instance.suspend:
                entry = inventory.get(comp.key)
                results.append(_not_run(target, comp, ComponentPhase.SUSPENDED,
                                        "instance suspended", entry.revision if entry else ""))
                continue
            if not stopped and cancelled():
                stopped = True
            if stopped:
                why = "run cancelled" if cancelled() else "not attempted: an earlier step failed"
                results.append(_not_run(target, comp, ComponentPhase.SKIPPED, why))
                continue
            result = runner.component(placement, comp, order)
            order += 1
            results.append(result)
            if result.phase is ComponentPhase.FAILED or result.phase is \
                    ComponentPhase.PROGRESSING:
                stopped = True
    # every desired component has a result when the run was not stopped: nothing to prune
    # when each inventory entry is one of them (the idle case, without sorting the entries)
    if not stopped and not cancelled() and not inventory.entries.keys() <= {
            r.key for r in results}:
        for entry in prunes(inventory, placements):
            if cancelled():
                break
            results.append(runner.prune(entry))
    return TargetResult(target.name, revision, tuple(results), cancelled=cancelled(),
                        duration=time.monotonic() - started, provider_calls=runner.calls)
