"""Apply one target: observe, apply in dependency order, wait for health, prune.

One reconcile of one target runs its instances one at a time (:class:`Execution`); one
instance's step is a sequence that stops at its first failure (its later components are
reported as not attempted), in the manner of Flux's kustomize-controller:

1. for each of the instance's components (in ``dependsOn`` order): ``observe``; when not in
   sync, ``apply`` and record the result in the inventory at once; then wait for health
   (polling until Healthy, Degraded, the timeout, or cancellation);
2. when every component succeeded: prune the instance's inventory entries that are no longer
   desired, in reverse apply order; a failed prune stays in the inventory and is retried next
   run. A failed, abandoned or cancelled step means no prune of that instance that run. An
   instance no longer on the target at all is pruned as a whole.

Instances are independent: one failing does not stop another. Which revision each instance
is reconciled to, and the rollback of a failed change, are decided by the caller
(:mod:`reconciler.engine.instance_steps`, :mod:`reconciler.engine.instance_runs`).

A component is *drifted* when it was out of sync although what it should be had not changed
since it was last applied: the same revision, or an apply that produced the same record as
the one in the inventory (whichever commit last touched the component).

Transient provider errors are retried with exponential backoff; permanent ones fail at once.
A provider that raises anything else is treated as a permanent failure of that component.
``cancelled()`` (shutdown, or a newer revision arrived) stops the run between steps and
abandons health waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from reconciler.engine.results import ComponentPhase, ComponentResult, RetryPolicy, TargetResult

__all__ = ["ComponentPhase", "ComponentResult", "Execution", "InstanceOutcome", "RetryPolicy",
           "TargetResult", "reconcile_target"]

_log = structlog.get_logger(__name__)
T = TypeVar("T")


_HEALTH_PHASES = {Health.HEALTHY: ComponentPhase.READY,
                  Health.PROGRESSING: ComponentPhase.PROGRESSING,
                  Health.DEGRADED: ComponentPhase.DEGRADED}


def _same_state(old: Record, new: Record, revisions: set[str],
                volatile: frozenset[str] = frozenset()) -> bool:
    """True when an apply recorded what the previous apply recorded: the desired state did
    not change, so the difference the apply repaired was drift.

    The commit ids are left out of the comparison: a provider may record which commit it
    applied (the script provider does), which says when the state was applied, not what it
    is. What a provider applies shows in its record (file digests, rendered object digests,
    input digests), so a change from the repository makes the records differ. Keys of the
    record's data the provider declares ``volatile_record_keys`` (what says when, not what:
    the Helm provider's release revision and history) are left out too.
    """
    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return "<revision>" if value in revisions else value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    def kept(record: Record) -> Any:
        data = record.to_dict()
        if volatile and isinstance(data.get("data"), dict):
            data["data"] = {k: v for k, v in data["data"].items() if k not in volatile}
        return plain(data)

    return bool(kept(old) == kept(new))


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

    def component(self, comp: Component, order: int, revision: str) -> ComponentResult:
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
            drifted = entry is not None and (entry.revision == revision or _same_state(
                entry.record, new_record, {entry.revision, revision} - {""},
                getattr(provider, "volatile_record_keys", frozenset())))
            self.inventory.put(key, new_record, binding.config, revision, order)
            self.log.info("component_applied", instance=comp.instance, component=comp.name,
                          provider=provider_name, action="update" if obs.exists else "create",
                          drifted=drifted, diff=obs.diff[:2000] if obs.diff else None)
            # the message is the health message, the same one an in-sync run reports, so a
            # status file does not change (and make a commit) just because a run applied
            phase, message = self.wait_healthy(provider, comp, new_record)
            return ComponentResult(key, comp.instance, comp.name, provider_name, phase,
                                   message, revision, applied=True, drifted=drifted)
        except ReconcilerError as exc:
            self.log.warning("component_failed", instance=comp.instance, component=comp.name,
                             provider=provider_name, reason=exc.reason, error=exc.message)
            return ComponentResult(key, comp.instance, comp.name, provider_name,
                                   ComponentPhase.FAILED, exc.message,
                                   entry.revision if entry else "", reason=exc.reason or "")

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


@dataclass(frozen=True)
class InstanceOutcome:
    """What one instance's step of a target's reconcile did."""

    instance: str
    revision: str  # the revision enforced ("" for none: everything of it removed)
    components: tuple[ComponentResult, ...]
    stopped: bool  # a step failed or was abandoned: nothing of the instance was pruned

    @property
    def failure(self) -> ComponentResult | None:
        """The component that failed (apply, health or prune), None when none did."""
        return next((c for c in self.components if c.phase in (
            ComponentPhase.FAILED, ComponentPhase.PRUNE_FAILED)), None)

    @property
    def succeeded(self) -> bool:
        return not self.stopped and self.failure is None


class Execution:
    """One target's reconcile in one run, one instance at a time (see the module
    docstring): :meth:`instance` applies an instance's placement at a revision and prunes
    what of the instance it no longer has; :meth:`result` sums the run up. An instance may
    be run twice in one run (a rollback after a failed change): the last outcome stands."""

    def __init__(self, target: Target, providers: ProviderSet, inventory: Inventory, *,
                 retry: RetryPolicy, cancelled: Callable[[], bool] = lambda: False) -> None:
        self.target = target
        self.inventory = inventory
        self.cancelled = cancelled
        self.runner = _Runner(target, providers, inventory, "", retry, cancelled)
        self.started = time.monotonic()
        self.outcomes: dict[str, InstanceOutcome] = {}
        self._order = 0

    def instance(self, name: str, placement: Placement | None, revision: str) -> \
            InstanceOutcome:
        """Reconcile instance ``name`` to ``placement`` (None: it has no components any
        more, everything of it is pruned); its components in ``dependsOn`` order, stopping
        at the first that fails; then, when none failed, prune its inventory entries that
        ``placement`` does not have, in reverse apply order."""
        target, inventory, runner = self.target, self.inventory, self.runner
        runner.revision = revision
        results: list[ComponentResult] = []
        stopped = False
        components = placement.components if placement is not None else ()
        suspended = placement is not None and placement.instance.suspend
        for comp in components:
            if suspended:
                entry = inventory.get(comp.key)
                results.append(_not_run(target, comp, ComponentPhase.SUSPENDED,
                                        "instance suspended", entry.revision if entry else ""))
                continue
            if not stopped and self.cancelled():
                stopped = True
            if stopped:
                why = "run cancelled" if self.cancelled() \
                    else "not attempted: an earlier step failed"
                results.append(_not_run(target, comp, ComponentPhase.SKIPPED, why))
                continue
            result = runner.component(comp, self._order, revision)
            self._order += 1
            results.append(result)
            if result.phase is ComponentPhase.FAILED or result.phase is \
                    ComponentPhase.PROGRESSING:
                stopped = True
        if not stopped and not self.cancelled():
            keep = {c.key for c in components}
            prefix = f"{name}/"
            for entry in [e for e in reversed(list(inventory))
                          if e.key.startswith(prefix) and e.key not in keep]:
                if self.cancelled():
                    stopped = True
                    break
                results.append(runner.prune(entry))
        outcome = self.outcomes[name] = InstanceOutcome(name, revision, tuple(results),
                                                         stopped or self.cancelled())
        return outcome

    def orphans(self, known: set[str]) -> list[str]:
        """Instances with inventory entries that are not in ``known``."""
        return sorted({e.key.partition("/")[0] for e in self.inventory.entries.values()}
                      - known)

    def result(self, revision: str) -> TargetResult:
        components = tuple(c for o in self.outcomes.values() for c in o.components)
        return TargetResult(self.target.name, revision, components,
                            cancelled=self.cancelled(),
                            duration=time.monotonic() - self.started,
                            provider_calls=self.runner.calls)


def reconcile_target(target: Target, placements: Sequence[Placement], providers: ProviderSet,
                     inventory: Inventory, revision: str, *, retry: RetryPolicy,
                     cancelled: Callable[[], bool] = lambda: False) -> TargetResult:
    """Reconcile every instance of ``placements`` at ``revision`` and remove the instances
    the inventory has that ``placements`` do not (a retired target: all of them)."""
    execution = Execution(target, providers, inventory, retry=retry, cancelled=cancelled)
    for placement in placements:
        execution.instance(placement.instance.name, placement, revision)
    for name in execution.orphans({p.instance.name for p in placements}):
        if cancelled():
            break
        execution.instance(name, None, revision)
    return execution.result(revision)
