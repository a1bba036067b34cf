"""Health rules for Kubernetes objects: one live object in, one :class:`HealthReport` out.

Pure functions, no I/O. ``KubernetesProvider.health`` fetches each object of a component's
inventory and folds the per-object reports with :func:`worst`; the executor polls that until
healthy or timed out (the waiting loop is the executor's, one call here is one check).

Rules (the first that applies wins):

* Deployment: ``ProgressDeadlineExceeded`` is Degraded; healthy once the controller observed the
  newest generation and every replica is updated and available.
* StatefulSet / DaemonSet: the same idea with their own status counters.
* Job: ``Complete`` Healthy, ``Failed`` Degraded, anything else Progressing.
* Pod: Running and Ready, or Succeeded, is Healthy; Failed (or a container stuck in a back-off)
  is Degraded.
* PersistentVolumeClaim: Bound is Healthy, Lost is Degraded.
* Service: a LoadBalancer needs an ingress address; other types are Healthy.
* Anything with a ``Ready`` condition: True / False / Unknown map to Healthy / Degraded /
  Progressing.
* Everything else is Healthy once it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reconciler.provider_api import Health, HealthReport

__all__ = ["object_health", "worst"]

_RANK = {Health.HEALTHY: 0, Health.PROGRESSING: 1, Health.DEGRADED: 2}

# container waiting reasons that do not resolve without a change: treated like a crash
_STUCK_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError",
})

Obj = Mapping[str, Any]


def _healthy(message: str = "") -> HealthReport:
    return HealthReport(Health.HEALTHY, message)


def _progressing(message: str) -> HealthReport:
    return HealthReport(Health.PROGRESSING, message)


def _degraded(message: str) -> HealthReport:
    return HealthReport(Health.DEGRADED, message)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int = 0) -> int:
    # bool is an int subclass; a status counter never is a bool
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def _conditions(obj: Obj) -> dict[str, Mapping[str, Any]]:
    raw = _map(obj.get("status")).get("conditions")
    if not isinstance(raw, list):
        return {}
    return {str(c.get("type")): c for c in raw if isinstance(c, Mapping)}


def _condition_text(cond: Mapping[str, Any]) -> str:
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")
    return ": ".join(p for p in (reason, message) if p)


def _generation_pending(obj: Obj) -> bool:
    """True while the controller has not yet seen the newest spec."""
    generation = _map(obj.get("metadata")).get("generation")
    observed = _map(obj.get("status")).get("observedGeneration")
    if not isinstance(generation, int) or isinstance(generation, bool):
        return False
    return _int(observed, -1) < generation


def _deployment(obj: Obj) -> HealthReport:
    progressing = _conditions(obj).get("Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return _degraded("rollout stuck: " + _condition_text(progressing))
    if _generation_pending(obj):
        return _progressing("waiting for the controller to observe the new generation")
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    want = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    available = _int(status.get("availableReplicas"))
    if updated < want:
        return _progressing(f"{updated}/{want} replicas updated")
    if available < want:
        return _progressing(f"{available}/{want} replicas available")
    return _healthy(f"{available}/{want} replicas available")


def _statefulset(obj: Obj) -> HealthReport:
    if _generation_pending(obj):
        return _progressing("waiting for the controller to observe the new generation")
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    want = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    strategy = _map(spec.get("updateStrategy")).get("type", "RollingUpdate")
    if strategy != "OnDelete":
        updated = _int(status.get("updatedReplicas"))
        if updated < want:
            return _progressing(f"{updated}/{want} replicas updated")
    if ready < want:
        return _progressing(f"{ready}/{want} replicas ready")
    return _healthy(f"{ready}/{want} replicas ready")


def _daemonset(obj: Obj) -> HealthReport:
    if _generation_pending(obj):
        return _progressing("waiting for the controller to observe the new generation")
    status = _map(obj.get("status"))
    want = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < want:
        return _progressing(f"{updated}/{want} pods updated")
    if available < want:
        return _progressing(f"{available}/{want} pods available")
    return _healthy(f"{available}/{want} pods available")


def _job(obj: Obj) -> HealthReport:
    conditions = _conditions(obj)
    failed = conditions.get("Failed")
    if failed is not None and failed.get("status") == "True":
        return _degraded("job failed: " + _condition_text(failed))
    complete = conditions.get("Complete")
    if complete is not None and complete.get("status") == "True":
        return _healthy("job complete")
    active = _int(_map(obj.get("status")).get("active"))
    return _progressing(f"job running ({active} active)")


def _pod(obj: Obj) -> HealthReport:
    status = _map(obj.get("status"))
    phase = status.get("phase")
    if phase == "Succeeded":
        return _healthy("pod succeeded")
    if phase == "Failed":
        return _degraded("pod failed: " + str(status.get("reason") or status.get("message") or ""))
    for container in status.get("containerStatuses") or []:
        waiting = _map(_map(_map(container).get("state")).get("waiting"))
        if waiting.get("reason") in _STUCK_REASONS:
            name = _map(container).get("name", "?")
            return _degraded(f"container {name}: {_condition_text(waiting)}")
    ready = _conditions(obj).get("Ready")
    if phase == "Running" and ready is not None and ready.get("status") == "True":
        return _healthy("pod running and ready")
    return _progressing(f"pod {phase or 'Pending'}, not ready")


def _pvc(obj: Obj) -> HealthReport:
    phase = _map(obj.get("status")).get("phase")
    if phase == "Bound":
        return _healthy("bound")
    if phase == "Lost":
        return _degraded("volume lost")
    return _progressing(f"claim {phase or 'Pending'}")


def _service(obj: Obj) -> HealthReport:
    if _map(obj.get("spec")).get("type") != "LoadBalancer":
        return _healthy()
    ingress = _map(_map(obj.get("status")).get("loadBalancer")).get("ingress")
    if isinstance(ingress, list) and ingress:
        return _healthy("load balancer ready")
    return _progressing("waiting for a load balancer address")


def _ready_condition(obj: Obj) -> HealthReport | None:
    ready = _conditions(obj).get("Ready")
    if ready is None:
        return None
    if _generation_pending(obj):
        return _progressing("waiting for the controller to observe the new generation")
    status = ready.get("status")
    text = _condition_text(ready)
    if status == "True":
        return _healthy(text)
    if status == "False":
        return _degraded("not ready: " + text if text else "not ready")
    return _progressing("readiness unknown: " + text if text else "readiness unknown")


_RULES: dict[tuple[str, str], Callable[[Obj], HealthReport]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
}


def object_health(obj: Obj) -> HealthReport:
    """The health of one live object (as returned by the API server)."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.rpartition("/")[0]
    rule = _RULES.get((group, str(obj.get("kind") or "")))
    if rule is not None:
        return rule(obj)
    generic = _ready_condition(obj)
    return generic if generic is not None else _healthy()


def worst(reports: Iterable[tuple[str, HealthReport]]) -> HealthReport:
    """Fold named reports into one: the worst state, its message naming the objects."""
    items: Sequence[tuple[str, HealthReport]] = list(reports)
    if not items:
        return _healthy("no objects")
    state = max((r.state for _, r in items), key=_RANK.__getitem__)
    if state is Health.HEALTHY:
        return _healthy(f"{len(items)} objects healthy")
    named = [f"{name}: {r.message}" if r.message else name
             for name, r in items if r.state is state]
    shown = "; ".join(named[:3])
    if len(named) > 3:
        shown += f" (and {len(named) - 3} more)"
    return HealthReport(state, shown)
