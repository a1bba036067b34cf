"""The ``kubernetes`` provider: server-side apply of a component's manifests, with drift
detection from managed fields and by dry-run, pruning from the inventory and built-in health
rules.

Registered under the entry point ``kubernetes`` (group ``reconciler.providers``); the core
constructs one instance per target binding and calls it in the order the provider contract
(``reconciler.provider_api``) describes.

Binding config: ``kubeconfig`` (path), ``context``, ``inCluster`` (bool) and ``namespace`` (for
namespaced objects that name none; else the kubeconfig context's namespace, else ``default``).
Component properties: ``manifests`` (a file or directory, or a list of them) and/or inline
``resources``; ``force`` (take fields back from hand edits, default true), ``ignore`` (JSON
pointers never diffed nor fought over: on an existing object the live value is applied back),
``healthTimeout`` (used by the executor) and ``prune`` (default true).

The inventory record (``Record.data``) holds ``objects``: the references applied, in apply
order (each with the digests that prove it in sync later, see below), plus
``instance``/``component``/``target`` (to recognise our objects when pruning) and a ``digest``
of the rendered objects. Pruning is done from the inventory only: objects the
previous record lists and the new manifests do not are deleted in reverse order. The first
deletion that fails stops the pruning: that object and the ones not yet tried stay in the
returned record, flagged ``prunePending`` with the error, so they are never forgotten;
``observe`` then reports the component out of sync and the next ``apply`` retries them.
(Raising instead would lose the objects just applied from the inventory.) With
``prune: false`` such objects are left in the cluster and dropped from the inventory. An
object whose ownership annotations name another instance or component (it moved) is not
deleted.

Requests: ``observe`` reads the live objects from lists, one per kind and namespace per run
(``kubernetes_lists.py``), and shows an object in sync without a request of its own when the
object's desired state is the one our last apply made and our field manager's
``managedFields`` entry still owns the fields that apply left it, holding the same values
(``kubernetes_proofs.py``); any doubt falls back to a dry-run apply of that object (and a GET
for an object no list has). So an idle run costs one list per kind and namespace, not two
requests per object. The inventory record keeps, per object, the digests of the desired
object, of the field set our apply left us and of the values there.
``begin_run`` starts a run (the engine may call it; without it, observing a component twice
starts one). When ``observe`` finds the component in sync, it keeps the objects it read, and
the ``health`` call that follows it (the executor's next call for an in-sync component)
judges health from them instead of reading every object again. The kept objects are used
once, only within a few seconds, and dropped by ``apply``/``delete``; health polling after an
apply always reads afresh. Components may be observed, applied and checked from several
threads at once (the engine runs a dependency level concurrently): what the provider keeps
between calls is guarded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from reconciler.provider_api import (
    Component,
    Health,
    HealthReport,
    LocalPolicy,
    Observation,
    PermanentError,
    Problem,
    ProviderContext,
    ProviderError,
    Record,
    TransientError,
)

from .kube_diff import compare, mask_values, strip_noise, unified
from .kube_health import object_health, worst
from .kube_objects import ANNOTATION_COMPONENT, ANNOTATION_INSTANCE, ObjectRef
from .kubernetes_checks import check_config, check_properties
from .kubernetes_desired import (
    CRD,
    Desired,
    Options,
    crd_api_versions,
    desired_objects,
    record_refs,
    with_ignored,
)
from .kubernetes_proofs import (
    Proof,
    desired_digest,
    kept_proofs,
    proof_of,
    record_entry,
    shows_in_sync,
    verified,
)

if TYPE_CHECKING:  # the kubernetes client costs ~0.1 s to import: only when a target uses it
    from .kube_client import ResourceInfo
    from .kubernetes_lists import ListingClient, RunLists

__all__ = ["KubernetesProvider"]

_log = structlog.get_logger(__name__)
_Identity = tuple[str, str, str, str]

# how long apply waits for a CRD it just created to appear in discovery
_CRD_WAIT_SECONDS = 5.0
# how old the objects an in-sync observe read may be for the health check that follows it
_SEEN_SECONDS = 5.0


class KubernetesProvider:
    """Kubernetes objects by server-side apply; noise-free dry-run diff, prune, health.

    Server-side apply provider (see the module docstring).
    """

    name: ClassVar[str] = "kubernetes"
    untemplated: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        self._config = dict(config)
        self._context = context
        from .kube_client import ClientSettings
        from .kubernetes_lists import ListingClient, RunLists

        self._client: ListingClient = ListingClient(ClientSettings(
            kubeconfig=config.get("kubeconfig") or None,
            context=config.get("context") or None,
            in_cluster=bool(config.get("inCluster", False))))
        self._lists: RunLists = RunLists(self._client, context.target)
        self._log = _log.bind(provider=self.name, target=context.target,
                              binding=context.binding)
        # component key -> (when, live objects by identity) read by the last observe, if in sync
        # (components of one dependency level are observed from several threads at once)
        self._seen: dict[str, tuple[float, dict[_Identity, dict[str, Any]]]] = {}
        self._seen_lock = threading.Lock()
        # what showed each object in sync last (our apply, a dry-run, a proof that held)
        self._proofs: dict[_Identity, Proof] = {}

    def _forget_seen(self, key: str) -> None:
        """Drop what observe kept of ``key``, and whatever is too old to be used: a plan
        (observe only) must not hold every object it read."""
        now = time.monotonic()
        with self._seen_lock:
            self._seen.pop(key, None)
            for old in [k for k, (when, _) in self._seen.items()
                        if now - when > _SEEN_SECONDS]:
                del self._seen[old]

    def begin_run(self) -> None:
        """A run starts: objects are read afresh (lists are kept for one run only)."""
        self._lists.begin_run()

    # -- validation (pure) ------------------------------------------------------------------

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        return check_config(config, policy)

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        return check_properties(properties)

    # -- desired state ----------------------------------------------------------------------

    def _desired(self, component: Component) -> list[Desired]:
        return desired_objects(component, self._client, self._config.get("namespace") or None,
                               self._context.policy)

    @staticmethod
    def _digest(desired: Sequence[Desired]) -> str:
        canonical = json.dumps([d.body for d in desired], sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @staticmethod
    def _secrets(component: Component) -> list[str]:
        return [str(component.params[name]) for name in component.secret_params
                if name in component.params and component.params[name] is not None]

    # -- observe ----------------------------------------------------------------------------

    def observe(self, component: Component, record: Record | None) -> Observation:
        """Compare desired and live objects: live ones from this run's lists (a GET for one no
        list has); an object whose proof holds is in sync, any other one is compared by a
        dry-run apply (see the module docstring)."""
        log = self._log.bind(component=component.key)
        self._client.new_pass()
        self._lists.observing(component.key)
        lists_before = self._client.list_requests
        options = Options.of(component.properties)
        desired = self._desired(component)
        kept = kept_proofs((record.data.get("objects") or []) if record is not None else [])
        texts: list[str] = []
        counts = dict.fromkeys(("missing", "changed", "conflicts", "proven", "checked",
                                "read"), 0)
        self._forget_seen(component.key)
        seen: dict[_Identity, dict[str, Any]] = {}
        for item in desired:
            live = None if item.info is None else self._lists.find(item.info, item.ref)
            if live is None and item.info is not None:
                counts["read"] += 1
                live = self._client.get(item.info, item.ref)
            if live is None or item.info is None:
                counts["missing"] += 1
                texts.append(unified(item.ref, None, strip_noise(item.body)))
                continue
            seen[item.ref.identity] = live
            digest = desired_digest(item.body, options.force, options.ignore)
            proof = shows_in_sync(live, digest, options.ignore,
                                  self._proofs.get(item.ref.identity),
                                  kept.get(item.ref.identity))
            if proof is not None:
                self._proofs[item.ref.identity] = proof
                counts["proven"] += 1
                continue
            counts["checked"] += 1
            outcome, text, result = self._dry_run(item, item.info, live, options)
            if outcome == "in sync":
                self._proofs[item.ref.identity] = verified(live, result, digest,
                                                           options.ignore)
            else:
                counts[outcome] += 1
                texts.append(text)
        wanted = {d.ref.identity for d in desired}
        stale = [ref for ref, _ in record_refs(record) if ref.identity not in wanted]
        verb = "delete" if options.prune else "forget (prune is off)"
        texts.extend(f"will {verb}: {ref}\n" for ref in stale)
        missing, changed, conflicts = counts["missing"], counts["changed"], counts["conflicts"]
        in_sync = not (missing or changed or conflicts or stale)
        parts = [f"{n} {label}" for n, label in ((missing, "to create"), (changed, "changed"),
                                                 (conflicts, "in conflict"),
                                                 (len(stale), "to prune")) if n]
        message = ", ".join(parts) if parts else f"{len(desired)} objects in sync"
        if in_sync:
            with self._seen_lock:
                self._seen[component.key] = (time.monotonic(), seen)
        log.info("component_observed", in_sync=in_sync, objects=len(desired), stale=len(stale),
                 listed=self._client.list_requests - lists_before, **counts)
        return Observation(exists=bool(seen), in_sync=in_sync,
                           diff=mask_values("".join(texts), self._secrets(component)),
                           message=message)

    def _dry_run(self, item: Desired, info: ResourceInfo, live: Mapping[str, Any],
                 options: Options) -> tuple[str, str, dict[str, Any]]:
        """Compare ``live`` with a dry-run apply of the desired object: ``"in sync"``,
        ``"changed"`` (with the diff) or ``"conflicts"`` (with why), and the answer."""
        try:
            result = self._client.apply(info, with_ignored(item.body, live, options.ignore),
                                        force=options.force, dry_run=True)
        except PermanentError as exc:
            if exc.reason != "Conflict":
                raise
            # force is off and someone else holds a field we set: apply will fail the same
            # way, the plan says why
            return "conflicts", f"conflict: {exc.message}\n", {}
        diff = compare(live, result, ignore=options.ignore, desired=item.body)
        return ("changed" if diff.changed else "in sync"), diff.text, result

    # -- apply ------------------------------------------------------------------------------

    def _served(self, item: Desired) -> ResourceInfo:
        """The kind's resource, waiting briefly for a CRD applied in this pass to be served."""
        if item.info is not None:
            return item.info
        deadline = time.monotonic() + _CRD_WAIT_SECONDS
        while True:
            self._client.forget(item.ref.api_version)
            info = self._client.resource(item.ref.api_version, item.ref.kind)
            if info is not None:
                return info
            if time.monotonic() >= deadline or self._context.cancelled():
                raise TransientError(f"{item.ref}: kind {item.ref.kind} is not served yet "
                                     "(its CustomResourceDefinition is not established)",
                                     delay=5.0, reason="CRDNotEstablished")
            time.sleep(0.25)

    def apply(self, component: Component, record: Record | None) -> Record:
        log = self._log.bind(component=component.key)
        self._client.new_pass()
        self._forget_seen(component.key)
        options = Options.of(component.properties)
        desired = self._desired(component)
        objects: list[dict[str, Any]] = []
        for item in desired:
            info = self._served(item)
            live = self._client.get(info, item.ref) if options.ignore else None
            self._lists.wrote(item.ref, None)
            answer = self._client.apply(info, with_ignored(item.body, live, options.ignore),
                                        force=options.force)
            self._lists.wrote(item.ref, answer)
            # what our apply left is what later runs compare with
            proof = proof_of(answer, desired_digest(item.body, options.force, options.ignore),
                             options.ignore)
            self._proofs[item.ref.identity] = proof
            objects.append(record_entry(item.ref, proof))
            if (item.ref.group, item.ref.kind) == CRD:
                for api_version in crd_api_versions(item.body):
                    self._client.forget(api_version)
            log.info("object_applied", object=str(item.ref))
        wanted = {d.ref.identity for d in desired}
        stale = [ref for ref, _ in record_refs(record) if ref.identity not in wanted]
        if options.prune:
            objects.extend(self._prune(stale, component.instance, component.name, log))
        else:
            for ref in stale:
                log.info("object_orphaned", object=str(ref))
        return Record(provider=self.name, binding=self._context.binding, data={
            "objects": objects,
            "digest": self._digest(desired),
            "instance": component.instance,
            "component": component.name,
            "target": component.target,
        })

    # -- delete -----------------------------------------------------------------------------

    def _delete_one(self, ref: ObjectRef, instance: str, component: str) -> bool:
        """Delete one inventoried object; False when there was nothing (of ours) to delete."""
        info = self._client.resource(ref.api_version, ref.kind)
        if info is None:  # the kind is gone (its CRD was removed), so is the object
            return False
        self._lists.wrote(ref, None)
        self._proofs.pop(ref.identity, None)
        live = self._client.get(info, ref)
        if live is None:
            return False
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        owner = (annotations.get(ANNOTATION_INSTANCE), annotations.get(ANNOTATION_COMPONENT))
        if owner[0] is not None and owner != (instance, component):
            # another component applied it since (an object moved between components)
            self._log.info("object_prune_skipped", object=str(ref),
                           owner="/".join(str(o) for o in owner))
            return False
        return self._client.delete(info, ref)

    def _prune(self, stale: Sequence[ObjectRef], instance: str, component: str,
               log: Any) -> list[dict[str, Any]]:
        """Delete ``stale`` in reverse order, stopping at the first failure; what was not
        deleted comes back flagged ``prunePending`` for the record."""
        pending: list[dict[str, Any]] = []
        error = ""
        for ref in reversed(stale):
            if not error:
                try:
                    deleted = self._delete_one(ref, instance, component)
                except ProviderError as exc:
                    log.warning("prune_failed", object=str(ref), error=exc.message)
                    error = exc.message
                else:
                    log.info("object_pruned", object=str(ref), deleted=deleted)
                    continue
            pending.append({**ref.to_dict(), "prunePending": True, "error": error})
        pending.reverse()  # keep the original order, so a later delete still goes in reverse
        return pending

    def delete(self, record: Record) -> None:
        """Delete every object of ``record`` in reverse order.

        The first failure stops the deletion and is raised (later objects may be what the
        failed one depends on, e.g. its namespace or CRD); the core keeps the record and the
        next run starts again, counting objects already gone as done.
        """
        self._client.new_pass()
        instance = str(record.data.get("instance") or "")
        component = str(record.data.get("component") or "")
        self._forget_seen(f"{instance}/{component}")
        log = self._log.bind(component=f"{instance}/{component}")
        for ref, _ in reversed(record_refs(record)):
            try:
                deleted = self._delete_one(ref, instance, component)
            except ProviderError as exc:
                log.warning("delete_failed", object=str(ref), error=exc.message)
                raise
            log.info("object_deleted", object=str(ref), deleted=deleted)

    # -- health -----------------------------------------------------------------------------

    def health(self, component: Component, record: Record) -> HealthReport:
        """One check of every object the record lists (the executor does the waiting).

        Right after an in-sync ``observe`` of the component, the objects it read are used
        (once) instead of reading them again; see the module docstring.
        """
        self._client.new_pass()
        with self._seen_lock:
            when, seen = self._seen.pop(component.key, (0.0, {}))
        if time.monotonic() - when > _SEEN_SECONDS:
            seen = {}
        reports: list[tuple[str, HealthReport]] = []
        for ref, pending in record_refs(record):
            if pending:
                continue
            live = seen.get(ref.identity)
            if live is None:
                live = self._client.get(self._client.require(ref), ref)
            if live is None:
                reports.append((str(ref), HealthReport(Health.PROGRESSING, "not found")))
                continue
            reports.append((str(ref), object_health(live)))
        report = worst(reports)
        self._log.debug("component_health_checked", component=component.key,
                        state=report.state.value)
        return report
