"""A built-in stand-in for the cluster's controllers, driven by reads.

With ``KubeAPIServer(controller=True)`` every GET (or list) of a Deployment, StatefulSet,
DaemonSet, Job, PersistentVolumeClaim, LoadBalancer Service or Pod first gives that object the
status its controller would write: "in progress" for the first ``delays[kind]`` reads after
each spec change (generation), then "done" (rolled out, complete, Bound, Running). Reads drive
it, not time, so tests are deterministic: a health poll sees Progressing, then Healthy. Status
is written as an Update by ``kube-controller-manager`` on the status subresource, like the
real controllers. Called by ``tests.kubeapi.server`` under the store lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.kubeapi.store import Store, Stored, now

__all__ = ["DEFAULT_DELAYS", "Controller"]

DEFAULT_DELAYS: Mapping[str, int] = {
    "Deployment": 1,
    "StatefulSet": 1,
    "DaemonSet": 1,
    "Job": 1,
    "PersistentVolumeClaim": 0,
    "Service": 0,
    "Pod": 1,
}

_MANAGER = "kube-controller-manager"


class Controller:
    def __init__(self, store: Store, delays: Mapping[str, int] | None = None) -> None:
        self._store = store
        self._delays = {**DEFAULT_DELAYS, **(delays or {})}
        # (group, plural, namespace, name) -> (generation seen, reads since it changed)
        self._reads: dict[tuple[str, str, str, str], tuple[int, int]] = {}

    def on_read(self, stored: Stored) -> None:
        """Advance the object's status by one read (no-op for kinds it does not handle)."""
        rt = stored.rt
        if not rt.builtin or rt.kind not in self._delays:
            return
        meta = stored.obj["metadata"]
        if rt.kind == "Service" and (stored.obj.get("spec") or {}).get("type") != "LoadBalancer":
            return
        key = (rt.group, rt.plural, meta.get("namespace", ""), meta["name"])
        generation = int(meta.get("generation", 0))
        seen, count = self._reads.get(key, (generation, 0))
        count = count + 1 if seen == generation else 1
        self._reads[key] = (generation, count)
        done = count > self._delays[rt.kind]
        status = _status(rt.kind, stored.obj, done)
        if status is not None and _timeless(status) != _timeless(stored.obj.get("status")):
            self._store.set_status(rt, meta.get("namespace", ""), meta["name"], status, _MANAGER)


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    stamp = now()
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": stamp, "lastTransitionTime": stamp}


def _status(kind: str, obj: dict[str, Any], done: bool) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    name = obj["metadata"]["name"]
    generation = obj["metadata"].get("generation", 1)
    replicas = int(spec.get("replicas", 1))
    old = obj.get("status") or {}
    if kind == "Deployment":
        rs = f'ReplicaSet "{name}-{generation:x}5d8f7c"'
        if not done:
            return _drop_zero({
                "observedGeneration": generation, "replicas": replicas, "updatedReplicas": 0,
                "unavailableReplicas": replicas,
                "conditions": [
                    _condition("Available", "False", "MinimumReplicasUnavailable",
                               "Deployment does not have minimum availability."),
                    _condition("Progressing", "True", "ReplicaSetUpdated",
                               f"{rs} is progressing."),
                ]})
        return _drop_zero({
            "observedGeneration": generation, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                _condition("Available", "True", "MinimumReplicasAvailable",
                           "Deployment has minimum availability."),
                _condition("Progressing", "True", "NewReplicaSetAvailable",
                           f"{rs} has successfully progressed."),
            ]})
    if kind == "StatefulSet":
        revision = f"{name}-{generation:x}6b9c"
        ready = replicas if done else 0
        return _drop_zero({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": ready,
            "currentReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready,
            "currentRevision": revision if done else old.get("currentRevision", revision),
            "updateRevision": revision, "collisionCount": 0})
    if kind == "DaemonSet":
        ready = 1 if done else 0
        return {"observedGeneration": generation, "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": ready,
                "updatedNumberScheduled": ready, "numberAvailable": ready,
                **({} if done else {"numberUnavailable": 1})}
    if kind == "Job":
        start = old.get("startTime") or now()
        if not done:
            return {"active": 1, "ready": 0, "terminating": 0, "startTime": start,
                    "uncountedTerminatedPods": {}}
        return {"succeeded": 1, "ready": 0, "terminating": 0, "startTime": start,
                "completionTime": old.get("completionTime") or now(),
                "uncountedTerminatedPods": {},
                "conditions": [
                    _condition("SuccessCriteriaMet", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods"),
                    _condition("Complete", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods"),
                ]}
    if kind == "PersistentVolumeClaim":
        if not done:
            return {"phase": "Pending"}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        return {"phase": "Bound", "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                "capacity": {"storage": storage}}
    if kind == "Service":
        if not done:
            return {"loadBalancer": {}}
        return {"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}]}}
    if kind == "Pod":
        containers = [c.get("name", "") for c in spec.get("containers") or []]
        if not done:
            return {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
                _condition("PodScheduled", "True", "Scheduled", "")]}
        return {"phase": "Running", "qosClass": "BestEffort", "podIP": "10.244.0.10",
                "startTime": old.get("startTime") or now(),
                "conditions": [_condition(t, "True", "", "") for t in
                               ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
                "containerStatuses": [
                    {"name": c, "ready": True, "started": True, "restartCount": 0,
                     "image": next((x.get("image", "") for x in spec.get("containers", [])
                                    if x.get("name") == c), ""),
                     "state": {"running": {"startedAt": now()}}} for c in containers]}
    return None


_TIMES = frozenset({"lastUpdateTime", "lastTransitionTime", "startTime", "completionTime",
                    "startedAt"})


def _timeless(value: Any) -> Any:
    """``value`` without timestamps, so a read that changes nothing writes nothing."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _drop_zero(status: dict[str, Any]) -> dict[str, Any]:
    # The API types omit zero counters (omitempty); so does this.
    return {k: v for k, v in status.items() if v != 0}
