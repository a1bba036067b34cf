"""The ``kubernetes`` provider: server-side apply of a component's manifests, with drift
detection by dry-run, pruning from the inventory and built-in health rules.

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
order, plus ``instance``/``component``/``target`` (to recognise our objects when pruning) and a
``digest`` of the rendered objects. Pruning is done from the inventory only: objects the
previous record lists and the new manifests do not are deleted in reverse order. The first
deletion that fails stops the pruning: that object and the ones not yet tried stay in the
returned record, flagged ``prunePending`` with the error, so they are never forgotten;
``observe`` then reports the component out of sync and the next ``apply`` retries them.
(Raising instead would lose the objects just applied from the inventory.) With
``prune: false`` such objects are left in the cluster and dropped from the inventory. An
object whose ownership annotations name another instance or component (it moved) is not
deleted.

Requests: ``observe`` makes one GET and one dry-run apply per object. When it finds the
component in sync, it keeps the objects it read, and the ``health`` call that follows it (the
executor's next call for an in-sync component) judges health from them instead of reading
every object again, so a no-op run costs one GET per object, not two. The kept objects are
used once, only within a few seconds, and dropped by ``apply``/``delete``; health polling
after an apply always reads afresh.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from reconciler.provider_api import (
    Component,
    Health,
    HealthReport,
    LocalPolicy,
    Observation,
    PermanentError,
    PolicyError,
    Problem,
    ProviderContext,
    ProviderError,
    Record,
    TransientError,
)

from .kube_diff import compare, mask_values, strip_noise, unified
from .kube_health import object_health, worst
from .kube_manifests import duplicate, load_objects, manifest_path_problem
from .kube_objects import (
    ANNOTATION_COMPONENT,
    ANNOTATION_INSTANCE,
    ObjectRef,
    apply_order,
    get_pointer,
    remove_pointer,
    set_pointer,
    stamp_ownership,
)

if TYPE_CHECKING:  # the kubernetes client costs ~0.1 s to import: only when a target uses it
    from .kube_client import ResourceInfo

__all__ = ["KubernetesProvider"]

_log = structlog.get_logger(__name__)

_CONFIG_TYPES: dict[str, type] = {"kubeconfig": str, "context": str, "inCluster": bool,
                                  "namespace": str}
_PROPERTIES = ("manifests", "resources", "force", "ignore", "healthTimeout", "prune")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
# how long apply waits for a CRD it just created to appear in discovery
_CRD_WAIT_SECONDS = 5.0
# how old the objects an in-sync observe read may be for the health check that follows it
_SEEN_SECONDS = 5.0


@dataclass(frozen=True)
class _Options:
    force: bool
    prune: bool
    ignore: tuple[str, ...]

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> _Options:
        return cls(force=bool(properties.get("force", True)),
                   prune=bool(properties.get("prune", True)),
                   ignore=tuple(str(p) for p in properties.get("ignore") or ()))


@dataclass(frozen=True)
class _Desired:
    ref: ObjectRef
    body: dict[str, Any]
    info: ResourceInfo | None  # None: a custom kind whose CRD is in this component, not yet served


def _templated(value: Any) -> bool:
    """True for a value still holding an expression (checked again once rendered)."""
    return isinstance(value, str) and "${{" in value


def _crd_kinds(objects: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
    """``(group, kind) -> namespaced`` for the CRDs among ``objects``."""
    found: dict[tuple[str, str], bool] = {}
    for obj in objects:
        if (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind")) != _CRD:
            continue
        spec = obj.get("spec") or {}
        kind = str((spec.get("names") or {}).get("kind") or "")
        found[(str(spec.get("group") or ""), kind)] = spec.get("scope", "Namespaced") != "Cluster"
    return found


def _crd_api_versions(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    return [f"{spec.get('group')}/{v.get('name')}" for v in spec.get("versions") or []
            if isinstance(v, Mapping)]


def _with_ignored(body: Mapping[str, Any], live: Mapping[str, Any] | None,
                  ignore: Sequence[str]) -> dict[str, Any]:
    """The body to apply: ignored fields carry the live value, so we never fight over them."""
    out = json.loads(json.dumps(body))
    if live is None:
        return dict(out)
    for pointer in ignore:
        found, value = get_pointer(live, pointer)
        if found:
            set_pointer(out, pointer, value)
        else:
            remove_pointer(out, pointer)
    return dict(out)


def _record_refs(record: Record | None) -> list[tuple[ObjectRef, bool]]:
    """``(ref, prune_pending)`` for every object a record lists."""
    if record is None:
        return []
    out = []
    for raw in record.data.get("objects") or []:
        if isinstance(raw, Mapping):
            out.append((ObjectRef.from_dict(raw), bool(raw.get("prunePending"))))
    return out


class KubernetesProvider:
    """Kubernetes objects by server-side apply; noise-free dry-run diff, prune, health.

    Server-side apply provider (see the module docstring).
    """

    name: ClassVar[str] = "kubernetes"
    untemplated: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        self._config = dict(config)
        self._context = context
        from .kube_client import ClientSettings, KubeClient

        self._client = KubeClient(ClientSettings(
            kubeconfig=config.get("kubeconfig") or None,
            context=config.get("context") or None,
            in_cluster=bool(config.get("inCluster", False))))
        self._log = _log.bind(provider=self.name, target=context.target,
                              binding=context.binding)
        # component key -> (when, live objects by identity) read by the last observe, if in sync
        self._seen: dict[str, tuple[float, dict[tuple[str, str, str, str], dict[str, Any]]]] = {}

    # -- validation (pure) ------------------------------------------------------------------

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        problems: list[Problem] = []
        for key, value in config.items():
            expected = _CONFIG_TYPES.get(key)
            if expected is None:
                problems.append(Problem(key, "unknown key; expected one of "
                                        + ", ".join(_CONFIG_TYPES)))
            elif not isinstance(value, expected):
                problems.append(Problem(key, f"must be a {expected.__name__}, "
                                        f"not {type(value).__name__}"))
        if config.get("inCluster") is True and config.get("kubeconfig"):
            problems.append(Problem("inCluster", "cannot be combined with kubeconfig"))
        namespace = config.get("namespace")
        if isinstance(namespace, str):
            if not _DNS_LABEL.match(namespace):
                problems.append(Problem("namespace", f"{namespace!r} is not a valid namespace "
                                        "name (lowercase DNS label)"))
            elif policy.namespaces is not None and namespace not in policy.namespaces:
                problems.append(Problem("namespace", f"namespace {namespace!r} is not allowed "
                                        "by the local policy (allowed: "
                                        f"{', '.join(sorted(policy.namespaces)) or 'none'})"))
        return problems

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        problems: list[Problem] = [
            Problem(key, "unknown property; expected one of " + ", ".join(_PROPERTIES))
            for key in properties if key not in _PROPERTIES]
        if "manifests" not in properties and "resources" not in properties:
            problems.append(Problem("manifests", "one of manifests or resources is required"))
        manifests = properties.get("manifests")
        if manifests is not None and not _templated(manifests):
            items = [manifests] if isinstance(manifests, str) else manifests
            if not isinstance(items, list):
                problems.append(Problem("manifests", "must be a path or a list of paths"))
            else:
                for index, item in enumerate(items):
                    field = "manifests" if isinstance(manifests, str) else f"manifests.{index}"
                    problem = manifest_path_problem(item) if isinstance(item, str) else \
                        "must be a path (string)"
                    if problem is not None:
                        problems.append(Problem(field, problem))
        resources = properties.get("resources")
        if resources is not None and not _templated(resources):
            if not isinstance(resources, list):
                problems.append(Problem("resources", "must be a list of Kubernetes objects"))
            else:
                for index, item in enumerate(resources):
                    if not isinstance(item, Mapping):
                        problems.append(Problem(f"resources.{index}",
                                                "must be a Kubernetes object (a mapping)"))
                    elif not item.get("apiVersion") or not item.get("kind"):
                        problems.append(Problem(f"resources.{index}",
                                                "apiVersion and kind are required"))
        for key in ("force", "prune"):
            value = properties.get(key)
            if value is not None and not _templated(value) and not isinstance(value, bool):
                problems.append(Problem(key, "must be true or false"))
        ignore = properties.get("ignore")
        if ignore is not None and not _templated(ignore):
            if not isinstance(ignore, list):
                problems.append(Problem("ignore", "must be a list of JSON pointers"))
            else:
                for index, pointer in enumerate(ignore):
                    if not isinstance(pointer, str) or not pointer.startswith("/"):
                        problems.append(Problem(f"ignore.{index}", "must be a JSON pointer "
                                                "such as /spec/replicas"))
        timeout = properties.get("healthTimeout")
        if timeout is not None and not _templated(timeout) and (
                isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or timeout <= 0):
            problems.append(Problem("healthTimeout", "must be a positive number of seconds"))
        return problems

    # -- desired state ----------------------------------------------------------------------

    def _namespace_for(self, obj: Mapping[str, Any]) -> str:
        given = (obj.get("metadata") or {}).get("namespace")
        if given:
            return str(given)
        configured = self._config.get("namespace")
        return str(configured) if configured else self._client.default_namespace

    def _check_policy(self, ref: ObjectRef) -> None:
        allowed = self._context.policy.namespaces
        if allowed is None:
            return
        namespace = ref.name if (ref.group, ref.kind) == ("", "Namespace") else ref.namespace
        if namespace and namespace not in allowed:
            raise PolicyError(f"{ref}: namespace {namespace!r} is not allowed by the local "
                              f"policy (allowed: {', '.join(sorted(allowed)) or 'none'})")

    def _desired(self, component: Component) -> list[_Desired]:
        objects = load_objects(component)
        crds = _crd_kinds(objects)
        desired: list[_Desired] = []
        for obj in apply_order(objects):
            body = stamp_ownership(obj, instance=component.instance, target=component.target,
                                   component=component.name)
            api_version, kind = str(body["apiVersion"]), str(body["kind"])
            info = self._client.resource(api_version, kind)
            namespaced = info.namespaced if info is not None else \
                crds.get((api_version.rpartition("/")[0], kind))
            if namespaced is None:
                raise PermanentError(f"{ObjectRef.of(body)}: the API server does not know kind "
                                     f"{kind} in {api_version}", reason="UnknownKind")
            if namespaced:
                body["metadata"]["namespace"] = self._namespace_for(body)
            else:
                body["metadata"].pop("namespace", None)
            ref = ObjectRef.of(body)
            self._check_policy(ref)
            desired.append(_Desired(ref, body, info))
        twice = duplicate([d.ref for d in desired])
        if twice is not None:
            raise PermanentError(f"component {component.name}: {twice} is defined twice",
                                 reason="InvalidManifest")
        return desired

    @staticmethod
    def _digest(desired: Sequence[_Desired]) -> str:
        canonical = json.dumps([d.body for d in desired], sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @staticmethod
    def _secrets(component: Component) -> list[str]:
        return [str(component.params[name]) for name in component.secret_params
                if name in component.params and component.params[name] is not None]

    # -- observe ----------------------------------------------------------------------------

    def observe(self, component: Component, record: Record | None) -> Observation:
        """Compare by GET and dry-run apply: one GET per object, one dry-run per existing one."""
        log = self._log.bind(component=component.key)
        self._client.new_pass()
        options = _Options.of(component.properties)
        desired = self._desired(component)
        texts: list[str] = []
        missing = changed = conflicts = 0
        exists = False
        # only the component observed last is kept: the executor's health call follows its
        # observe at once, and a plan (observe only) must not hold every object it read
        self._seen.clear()
        seen: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for item in desired:
            live = None if item.info is None else self._client.get(item.info, item.ref)
            if live is None or item.info is None:
                missing += 1
                texts.append(unified(item.ref, None, strip_noise(item.body)))
                continue
            exists = True
            seen[item.ref.identity] = live
            try:
                result = self._client.apply(item.info, _with_ignored(item.body, live,
                                                                     options.ignore),
                                            force=options.force, dry_run=True)
            except PermanentError as exc:
                if exc.reason != "Conflict":
                    raise
                # force is off and someone else holds a field we set: apply will fail the
                # same way, the plan says why
                conflicts += 1
                texts.append(f"conflict: {exc.message}\n")
                continue
            diff = compare(live, result, ignore=options.ignore, desired=item.body)
            if diff.changed:
                changed += 1
                texts.append(diff.text)
        wanted = {d.ref.identity for d in desired}
        stale = [ref for ref, _ in _record_refs(record) if ref.identity not in wanted]
        verb = "delete" if options.prune else "forget (prune is off)"
        texts.extend(f"will {verb}: {ref}\n" for ref in stale)
        in_sync = not (missing or changed or conflicts or stale)
        parts = [f"{n} {label}" for n, label in ((missing, "to create"), (changed, "changed"),
                                                 (conflicts, "in conflict"),
                                                 (len(stale), "to prune")) if n]
        message = ", ".join(parts) if parts else f"{len(desired)} objects in sync"
        if in_sync:
            self._seen[component.key] = (time.monotonic(), seen)
        log.info("component_observed", in_sync=in_sync, objects=len(desired), missing=missing,
                 changed=changed, conflicts=conflicts, stale=len(stale))
        return Observation(exists=exists, in_sync=in_sync,
                           diff=mask_values("".join(texts), self._secrets(component)),
                           message=message)

    # -- apply ------------------------------------------------------------------------------

    def _served(self, item: _Desired) -> ResourceInfo:
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
        self._seen.pop(component.key, None)
        options = _Options.of(component.properties)
        desired = self._desired(component)
        for item in desired:
            info = self._served(item)
            live = self._client.get(info, item.ref) if options.ignore else None
            self._client.apply(info, _with_ignored(item.body, live, options.ignore),
                               force=options.force)
            if (item.ref.group, item.ref.kind) == _CRD:
                for api_version in _crd_api_versions(item.body):
                    self._client.forget(api_version)
            log.info("object_applied", object=str(item.ref))
        objects: list[dict[str, Any]] = [d.ref.to_dict() for d in desired]
        wanted = {d.ref.identity for d in desired}
        stale = [ref for ref, _ in _record_refs(record) if ref.identity not in wanted]
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
        self._seen.pop(f"{instance}/{component}", None)
        log = self._log.bind(component=f"{instance}/{component}")
        for ref, _ in reversed(_record_refs(record)):
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
        when, seen = self._seen.pop(component.key, (0.0, {}))
        if time.monotonic() - when > _SEEN_SECONDS:
            seen = {}
        reports: list[tuple[str, HealthReport]] = []
        for ref, pending in _record_refs(record):
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
