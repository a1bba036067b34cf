"""One component's step of a reconcile: observe, apply, wait for health; and a prune.

:class:`ComponentRunner` makes the provider calls of one target's run for
:mod:`reconciler.engine.executing`: transient errors retried with backoff, anything a
provider raises that is not ours turned into a permanent failure of the component, the
apply recorded in the inventory at once, health polled until Healthy, Degraded, the timeout
or cancellation. :func:`same_state` tells a drift repair from a change. Components of one
dependency level run in threads at the same time, so the call counts are locked and the
inventory locks itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from reconciler.core.backoff import Backoff, cancellable_sleep, retry
from reconciler.core.errors import PermanentError, ReconcilerError, TransientError
from reconciler.core.model import Target
from reconciler.core.provider_api import Component, Health, Provider, Record
from reconciler.engine.bindings import ProviderSet
from reconciler.engine.inventory import Entry, Inventory
from reconciler.engine.results import ComponentPhase, ComponentResult, RetryPolicy

__all__ = ["ComponentRunner", "not_run", "same_state"]

_log = structlog.get_logger("reconciler.engine.executing")
T = TypeVar("T")

_HEALTH_PHASES = {Health.HEALTHY: ComponentPhase.READY,
                  Health.PROGRESSING: ComponentPhase.PROGRESSING,
                  Health.DEGRADED: ComponentPhase.DEGRADED}


def same_state(old: Record, new: Record, revisions: set[str],
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


class ComponentRunner:
    def __init__(self, target: Target, providers: ProviderSet, inventory: Inventory,
                 revision: str, retry: RetryPolicy, cancelled: Callable[[], bool]) -> None:
        self.target = target
        self.providers = providers
        self.inventory = inventory
        self.revision = revision
        self.retry = retry
        self.cancelled = cancelled
        self.calls: dict[str, int] = {}
        self._calls_lock = threading.Lock()  # components of one level run in threads
        self.backoff = Backoff(retry.delay, retry.max_delay)
        self._log: Any = None

    @property
    def log(self) -> Any:
        """The target's logger, bound on first use: an idle run logs nothing per target."""
        if self._log is None:
            self._log = _log.bind(target=self.target.name, revision=self.revision[:12])
        return self._log

    def count(self, what: str) -> None:
        with self._calls_lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a provider call ``fn(*args)``, retried with backoff while it fails transiently
        (not once the run is cancelled); only ReconcilerError leaves."""
        self.count(what)
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
        self.count(what)
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
                self.count("health")
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
        """Observe ``comp``; when not in sync, apply it and wait for its health."""
        found = self.observe(comp, order, revision)
        return found if isinstance(found, ComponentResult) else found()

    def observe(self, comp: Component, order: int,
                revision: str) -> ComponentResult | Callable[[], ComponentResult]:
        """Observe ``comp``: its result when in sync (health checked), else the apply and
        health wait still to do, as a call (so that a level's applies can run together)."""
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
            return partial(self._apply, comp, order, revision, provider, entry, obs.exists,
                           obs.diff)
        except ReconcilerError as exc:
            return self._failed(comp, provider_name, entry, exc)

    def _apply(self, comp: Component, order: int, revision: str, provider: Provider,
               entry: Entry | None, exists: bool, diff: str) -> ComponentResult:
        key = comp.key
        binding = self.target.binding(comp.type)
        assert binding is not None  # observed with it
        provider_name = binding.provider
        record = entry.record if entry is not None else None
        try:
            new_record = self.call("apply", provider.apply, comp, record)
            drifted = entry is not None and (entry.revision == revision or same_state(
                entry.record, new_record, {entry.revision, revision} - {""},
                getattr(provider, "volatile_record_keys", frozenset())))
            self.inventory.put(key, new_record, binding.config, revision, order)
            self.log.info("component_applied", instance=comp.instance, component=comp.name,
                          provider=provider_name, action="update" if exists else "create",
                          drifted=drifted, diff=diff[:2000] if diff else None)
            # the message is the health message, the same one an in-sync run reports, so a
            # status file does not change (and make a commit) just because a run applied
            phase, message = self.wait_healthy(provider, comp, new_record)
            return ComponentResult(key, comp.instance, comp.name, provider_name, phase,
                                   message, revision, applied=True, drifted=drifted)
        except ReconcilerError as exc:
            return self._failed(comp, provider_name, entry, exc)

    def _failed(self, comp: Component, provider_name: str, entry: Entry | None,
                exc: ReconcilerError) -> ComponentResult:
        self.log.warning("component_failed", instance=comp.instance, component=comp.name,
                         provider=provider_name, reason=exc.reason, error=exc.message)
        return ComponentResult(comp.key, comp.instance, comp.name, provider_name,
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


def not_run(target: Target, comp: Component, phase: ComponentPhase, message: str,
             revision: str = "") -> ComponentResult:
    binding = target.binding(comp.type)
    return ComponentResult(comp.key, comp.instance, comp.name,
                           binding.provider if binding else "", phase, message, revision)
