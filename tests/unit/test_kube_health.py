"""Table-driven tests of the Kubernetes health rules (providers/kube_health.py)."""

from __future__ import annotations

from typing import Any

import pytest
from reconciler_providers.kube_health import object_health, worst

from reconciler.core.provider_api import Health, HealthReport

H, P, D = Health.HEALTHY, Health.PROGRESSING, Health.DEGRADED


def deployment(replicas: int = 3, generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas}, "status": status}


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def obj(api_version: str, kind: str, spec: Any = None, status: Any = None,
        generation: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if generation is not None:
        meta["generation"] = generation
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


CASES = [
    # Deployment
    ("deployment rolled out", deployment(observedGeneration=2, updatedReplicas=3,
                                         availableReplicas=3, replicas=3), H, "3/3"),
    ("deployment generation not observed", deployment(observedGeneration=1, updatedReplicas=3,
                                                      availableReplicas=3), P, "generation"),
    ("deployment no status yet", deployment(), P, ""),
    ("deployment updating", deployment(observedGeneration=2, updatedReplicas=1,
                                       availableReplicas=3), P, "1/3 replicas updated"),
    ("deployment not available", deployment(observedGeneration=2, updatedReplicas=3,
                                            availableReplicas=2), P, "2/3 replicas available"),
    ("deployment deadline exceeded",
     deployment(observedGeneration=2, updatedReplicas=1, availableReplicas=1,
                conditions=[cond("Progressing", "False", "ProgressDeadlineExceeded",
                                 "ReplicaSet web-1 has timed out progressing.")]),
     D, "ProgressDeadlineExceeded"),
    ("deployment default one replica",
     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "generation": 1},
      "spec": {}, "status": {"observedGeneration": 1, "updatedReplicas": 1,
                             "availableReplicas": 1}}, H, "1/1"),
    ("deployment scaled to zero", deployment(replicas=0, observedGeneration=2), H, "0/0"),
    # StatefulSet
    ("statefulset ready", obj("apps/v1", "StatefulSet", {"replicas": 2},
                              {"observedGeneration": 1, "readyReplicas": 2,
                               "updatedReplicas": 2}, generation=1), H, "2/2"),
    ("statefulset not ready", obj("apps/v1", "StatefulSet", {"replicas": 2},
                                  {"observedGeneration": 1, "readyReplicas": 1,
                                   "updatedReplicas": 2}, generation=1), P, "1/2 replicas ready"),
    ("statefulset on delete ignores updated",
     obj("apps/v1", "StatefulSet", {"replicas": 2, "updateStrategy": {"type": "OnDelete"}},
         {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 0}, generation=1),
     H, ""),
    # DaemonSet
    ("daemonset available", obj("apps/v1", "DaemonSet", {}, {
        "observedGeneration": 4, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
        "numberAvailable": 3}, generation=4), H, "3/3 pods"),
    ("daemonset updating", obj("apps/v1", "DaemonSet", {}, {
        "observedGeneration": 4, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2,
        "numberAvailable": 3}, generation=4), P, "2/3 pods updated"),
    # Job
    ("job complete", obj("batch/v1", "Job", {}, {"conditions": [cond("Complete", "True")]}),
     H, "complete"),
    ("job failed", obj("batch/v1", "Job", {}, {"conditions": [
        cond("Failed", "True", "BackoffLimitExceeded", "Job has reached the backoff limit")]}),
     D, "BackoffLimitExceeded"),
    ("job running", obj("batch/v1", "Job", {}, {"active": 1}), P, "1 active"),
    # Pod
    ("pod ready", obj("v1", "Pod", {}, {"phase": "Running",
                                        "conditions": [cond("Ready", "True")]}), H, "ready"),
    ("pod running not ready", obj("v1", "Pod", {}, {"phase": "Running",
                                                    "conditions": [cond("Ready", "False")]}),
     P, "not ready"),
    ("pod succeeded", obj("v1", "Pod", {}, {"phase": "Succeeded"}), H, "succeeded"),
    ("pod failed", obj("v1", "Pod", {}, {"phase": "Failed", "reason": "Evicted"}), D, "Evicted"),
    ("pod pending", obj("v1", "Pod", {}, {"phase": "Pending"}), P, "Pending"),
    ("pod crash looping", obj("v1", "Pod", {}, {"phase": "Running", "containerStatuses": [
        {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
     D, "container app: CrashLoopBackOff"),
    # PersistentVolumeClaim
    ("pvc bound", obj("v1", "PersistentVolumeClaim", {}, {"phase": "Bound"}), H, "bound"),
    ("pvc pending", obj("v1", "PersistentVolumeClaim", {}, {"phase": "Pending"}), P, "Pending"),
    ("pvc lost", obj("v1", "PersistentVolumeClaim", {}, {"phase": "Lost"}), D, "lost"),
    # Service
    ("service cluster ip", obj("v1", "Service", {"type": "ClusterIP"}, {}), H, ""),
    ("service default type", obj("v1", "Service", {}, {}), H, ""),
    ("service lb pending", obj("v1", "Service", {"type": "LoadBalancer"},
                               {"loadBalancer": {}}), P, "load balancer"),
    ("service lb ready", obj("v1", "Service", {"type": "LoadBalancer"},
                             {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}), H, ""),
    # generic Ready condition
    ("custom ready", obj("example.com/v1", "Widget", {}, {"conditions": [
        cond("Ready", "True", "Reconciled")]}), H, "Reconciled"),
    ("custom not ready", obj("example.com/v1", "Widget", {}, {"conditions": [
        cond("Ready", "False", "BrokenRef", "secret missing")]}), D, "secret missing"),
    ("custom unknown", obj("example.com/v1", "Widget", {}, {"conditions": [
        cond("Ready", "Unknown")]}), P, "unknown"),
    ("custom ready but stale generation", obj("example.com/v1", "Widget", {}, {
        "observedGeneration": 1, "conditions": [cond("Ready", "True")]}, generation=2),
     P, "generation"),
    # everything else
    ("configmap", obj("v1", "ConfigMap"), H, ""),
    ("namespace", obj("v1", "Namespace", {}, {"phase": "Active"}), H, ""),
    ("custom without conditions", obj("example.com/v1", "Widget", {}, {}), H, ""),
    ("kind named like a rule but another group", obj("example.com/v1", "Deployment", {}, {}),
     H, ""),
]


@pytest.mark.parametrize(("obj_", "state", "fragment"),
                         [pytest.param(o, s, f, id=name) for name, o, s, f in CASES])
def test_object_health(obj_: dict[str, Any], state: Health, fragment: str) -> None:
    report = object_health(obj_)
    assert report.state is state, report
    assert fragment in report.message


def test_worst_picks_the_worst_state_and_names_its_objects() -> None:
    report = worst([
        ("ConfigMap/shop/cfg", HealthReport(H)),
        ("Deployment/shop/web", HealthReport(P, "1/3 replicas available")),
        ("Job/shop/migrate", HealthReport(D, "job failed: BackoffLimitExceeded")),
    ])
    assert report.state is D
    assert report.message == "Job/shop/migrate: job failed: BackoffLimitExceeded"


def test_worst_lists_several_objects_in_the_same_state() -> None:
    reports = [(f"Deployment/shop/w{i}", HealthReport(P, "waiting")) for i in range(5)]
    report = worst(reports)
    assert report.state is P
    assert report.message.startswith("Deployment/shop/w0: waiting; Deployment/shop/w1")
    assert report.message.endswith("(and 2 more)")


def test_worst_of_healthy_objects_and_of_none() -> None:
    assert worst([("a", HealthReport(H)), ("b", HealthReport(H))]) == HealthReport(
        H, "2 objects healthy")
    assert worst([]).state is H
