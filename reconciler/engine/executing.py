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

Components of one dependency level (none depends on another) are applied and waited for at
the same time, at most ``apply_concurrency`` at once, so a first apply of independent
components costs about one health wait, not one each. The provider calls themselves are
made by :class:`~reconciler.engine.component_steps.ComponentRunner`.

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

import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.core.model import Target
from reconciler.core.provider_api import Component
from reconciler.core.rendering import Placement
from reconciler.engine.bindings import ProviderSet
from reconciler.engine.component_steps import ComponentRunner, not_run
from reconciler.engine.inventory import Inventory
from reconciler.engine.results import ComponentPhase, ComponentResult, RetryPolicy, TargetResult

__all__ = ["ComponentPhase", "ComponentResult", "Execution", "InstanceOutcome", "RetryPolicy",
           "TargetResult", "reconcile_target"]


_STOPS = (ComponentPhase.FAILED, ComponentPhase.PROGRESSING)  # what stops an instance's step


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
                 retry: RetryPolicy, cancelled: Callable[[], bool] = lambda: False,
                 concurrency: int = 4) -> None:
        self.target = target
        self.concurrency = concurrency
        self.inventory = inventory
        self.cancelled = cancelled
        self.runner = ComponentRunner(target, providers, inventory, "", retry, cancelled)
        providers.begin_run()  # what providers read in the last run is read afresh
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
        if suspended:
            for comp in components:
                entry = inventory.get(comp.key)
                results.append(not_run(target, comp, ComponentPhase.SUSPENDED,
                                        "instance suspended", entry.revision if entry else ""))
        for level in _levels(() if suspended else components):
            if not stopped and self.cancelled():
                stopped = True
            if stopped:
                why = "run cancelled" if self.cancelled() \
                    else "not attempted: an earlier step failed"
                results.extend(not_run(target, comp, ComponentPhase.SKIPPED, why)
                               for comp in level)
                continue
            done = self._level(level, revision)
            results.extend(done)
            if any(r.phase in _STOPS for r in done):
                stopped = True
        if not stopped and not self.cancelled():  # a suspended instance keeps its entries
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

    def _level(self, level: Sequence[Component], revision: str) -> list[ComponentResult]:
        """Reconcile components that do not depend on each other: at the same time (at most
        ``concurrency`` at once), so that their health waits overlap; results in order."""
        first = self._order
        self._order += len(level)
        if len(level) == 1 or self.concurrency <= 1:  # one at a time, to the first failure
            done: list[ComponentResult] = []
            for i, comp in enumerate(level):
                if any(r.phase in _STOPS for r in done) or self.cancelled():
                    why = "run cancelled" if self.cancelled() \
                        else "not attempted: an earlier step failed"
                    done.append(not_run(self.target, comp, ComponentPhase.SKIPPED, why))
                    continue
                done.append(self.runner.component(comp, first + i, revision))
            return done
        # observed one after the other (cheap, and all of an idle run); what must be applied
        # is applied, and waited for, at the same time
        found = [self.runner.observe(comp, first + i, revision) for i, comp in enumerate(level)]
        pending = {i: f for i, f in enumerate(found) if not isinstance(f, ComponentResult)}
        applied: dict[int, ComponentResult] = {}
        if len(pending) > 1:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pending)),
                                    thread_name_prefix="apply") as pool:
                context = contextvars.copy_context()  # the run's log context, per thread
                futures = {i: pool.submit(context.copy().run, apply)
                           for i, apply in pending.items()}
                applied = {i: future.result() for i, future in futures.items()}
        return [f if isinstance(f, ComponentResult) else applied.get(i) or f()
                for i, f in enumerate(found)]

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


def _levels(components: Sequence[Component]) -> list[list[Component]]:
    """``components`` (in ``dependsOn`` order) by dependency level: a component's level is
    one more than the highest of the components it depends on."""
    level: dict[str, int] = {}
    out: list[list[Component]] = []
    for comp in components:
        mine = 1 + max((level[d] for d in comp.depends_on if d in level), default=-1)
        level[comp.name] = mine
        while len(out) <= mine:
            out.append([])
        out[mine].append(comp)
    return out


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
