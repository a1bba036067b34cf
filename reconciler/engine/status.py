"""Status of a target, as the YAML file committed to the status branch.

``status/<site path>/<target>.yaml`` holds the observed revision, the phase, per instance (its
solution, and the release it runs when the instance pins one) and per component the result
and message, the validation errors (file and line) when the revision
was invalid, the last good revision and the time of the last change. The file contains nothing
that changes on an idle run (no "last run" time), so the publisher commits only when something
meaningful changed; ``lastChange`` moves only then. Built by the pipeline after every target.
What a status says is identified by a digest of its canonical JSON (keys sorted), which costs a
small fraction of emitting its YAML: the file is rendered only when it is published.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.model import API_VERSION
from reconciler.core.secrets import redact
from reconciler.engine.results import ComponentPhase, TargetResult

__all__ = ["Phase", "StatusRenderer", "TargetStatus", "build_status", "canonical",
           "render_status", "status_path"]

MAX_ERRORS = 50  # per status file; the rest is counted


class Phase(enum.Enum):
    READY = "Ready"  # every component in sync and healthy at observedRevision
    PROGRESSING = "Progressing"  # applied, waiting for health (or abandoned for a newer rev)
    DEGRADED = "Degraded"  # in sync but a component reports unhealthy
    FAILED = "Failed"  # a component failed after its retries
    INVALID = "Invalid"  # the revision failed validation: nothing of it applied
    BLOCKED = "Blocked"  # the revision is not signed by a trusted key: nothing applied
    PENDING = "Pending"  # nothing known yet (no revision could be fetched)
    ROLLED_BACK = "RolledBack"  # a change failed: an instance is back at its last good one
    WAITING = "Waiting"  # a change waits for a maintenance window or a hold


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: str
    site: str  # site path
    phase: Phase
    message: str
    observed_revision: str  # the newest revision the daemon saw
    applied_revision: str  # the revision the target's live state corresponds to
    last_good_revision: str
    instances: Mapping[str, Any]
    errors: tuple[Mapping[str, Any], ...]
    hold: Mapping[str, str] | None = None  # a local hold on the target (reconciler hold)

    def digest(self) -> str:
        """Identity of the meaningful content (everything but lastChange)."""
        return _digest_of(canonical(self))

    def body(self, last_change: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "TargetStatus",
            "metadata": {"name": self.target},
            "site": self.site,
            "target": self.target,
            "phase": self.phase.value,
            "message": self.message,
            "observedRevision": self.observed_revision,
            "appliedRevision": self.applied_revision,
            "lastGoodRevision": self.last_good_revision,
            "lastChange": last_change,
            "instances": dict(self.instances),
        }
        if self.hold:
            doc["hold"] = dict(self.hold)
        if self.errors:
            doc["errors"] = list(self.errors)
        return doc


def status_path(site_path: str, target: str) -> str:
    return f"status/{site_path}/{target}.yaml"


def _instances(result: TargetResult | None, solutions: Mapping[str, str],
               releases: Mapping[str, str],
               views: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result is None and not views:
        return out
    for comp in result.components if result is not None else ():
        if comp.phase is ComponentPhase.PRUNED:
            continue  # a prune is an event (logged), not a state: the component is gone
        inst = out.get(comp.instance)
        if inst is None:
            inst = out[comp.instance] = {"solution": solutions.get(comp.instance, "")}
            if releases.get(comp.instance):
                inst["release"] = releases[comp.instance]
            inst.update(phase="Ready", components={})
        entry: dict[str, Any] = {"phase": comp.phase.value, "provider": comp.provider}
        if comp.revision:
            entry["revision"] = comp.revision
        if comp.message:
            entry["message"] = comp.message
        inst["components"][comp.component] = entry
    order = [p.value for p in (ComponentPhase.FAILED, ComponentPhase.PRUNE_FAILED,
                               ComponentPhase.PROGRESSING, ComponentPhase.DEGRADED,
                               ComponentPhase.SKIPPED, ComponentPhase.SUSPENDED)]
    for inst in out.values():
        phases = [c["phase"] for c in inst["components"].values()]
        worst = next((p for p in order if p in phases), "Ready")
        if worst == ComponentPhase.PRUNE_FAILED.value:
            worst = "Failed"
        if worst == ComponentPhase.SKIPPED.value:
            worst = "Failed"
        inst["phase"] = worst
    for name, view in views.items():
        if not view or (name not in out and not view.get("phase")):
            continue
        inst = out.setdefault(name, {"solution": solutions.get(name, ""),
                                     "phase": "Ready", "components": {}})
        if releases.get(name):
            inst.setdefault("release", releases[name])
        # the instance's own phase (RolledBack, Waiting) unless a component failed now
        phase = view.get("phase")
        if phase and not (inst["phase"] == "Failed" and phase != "Failed"):
            inst["phase"] = phase
        inst.update({k: v for k, v in view.items() if k != "phase"})
    return dict(sorted(out.items()))


# What the statuses a daemon keeps say alike is kept once: targets at one revision with the
# same results have equal instances (their solution, release, phase, components). Bounded, as
# a daemon builds statuses run after run; the values are only ever read once built.
_SHARED_MAX = 1024
_shared_values: dict[Any, Any] = {}


def _frozen(value: Any) -> Any:
    """A key equal for equal JSON-like values (of the same types, dicts in the same order);
    TypeError for anything else that cannot be a key."""
    if isinstance(value, dict):
        return dict, tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, list):
        return list, tuple(_frozen(v) for v in value)
    return type(value), value


def _shared(instances: dict[str, Any]) -> dict[str, Any]:
    """``instances``, or an equal one a status made before (each instance shared too)."""
    try:
        for name, inst in instances.items():
            instances[name] = _shared_value(inst)
        return _shared_value(instances)  # type: ignore[no-any-return]
    except TypeError:  # a value that cannot be a key: kept as it is
        return instances


def _shared_value(value: Any) -> Any:
    key = _frozen(value)
    found = _shared_values.get(key)
    if found is None:
        if len(_shared_values) >= _SHARED_MAX:
            _shared_values.clear()
        found = _shared_values.setdefault(key, value)
    return found


_INSTANCE_RANK = ("Failed", "Blocked", "RolledBack", "Progressing", "Degraded", "Waiting")


def _instance_phase(instances: Mapping[str, Any]) -> tuple[Phase, str] | None:
    """The target's phase from an instance that is RolledBack or Waiting (or Failed in its
    rollback), None when every instance's phase comes from its components alone."""
    marked = [(name, inst) for name, inst in instances.items()
              if inst.get("message") and inst.get("phase") in _INSTANCE_RANK]
    if not marked:
        return None
    name, inst = min(marked, key=lambda item: _INSTANCE_RANK.index(item[1]["phase"]))
    return Phase(inst["phase"]), f"{name}: {inst['message']}"


def _phase(result: TargetResult | None, errors: Sequence[Diagnostic], blocked: str,
           failure: str) -> tuple[Phase, str]:
    if blocked:
        return Phase.BLOCKED, blocked
    if errors:
        first = errors[0].format()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Phase.INVALID, f"revision failed validation: {first}{more}"
    if failure:
        return Phase.FAILED, failure
    if result is None:
        return Phase.PENDING, "no revision available yet"
    failed = [c for c in result.components
              if c.phase in (ComponentPhase.FAILED, ComponentPhase.PRUNE_FAILED)]
    if failed:
        c = failed[0]
        return Phase.FAILED, f"{c.key}: {c.message}"
    if result.cancelled or result.count(ComponentPhase.PROGRESSING):
        progressing = [c for c in result.components if c.phase is ComponentPhase.PROGRESSING]
        what = progressing[0].key if progressing else "run"
        return Phase.PROGRESSING, f"{what}: waiting for health" if progressing else \
            "run interrupted before completion"
    degraded = [c for c in result.components if c.phase is ComponentPhase.DEGRADED]
    if degraded:
        return Phase.DEGRADED, f"{degraded[0].key}: {degraded[0].message}"
    active = [c for c in result.components if c.phase is ComponentPhase.READY]
    suspended = result.count(ComponentPhase.SUSPENDED)
    parts = [f"{len(active)} component{'s' if len(active) != 1 else ''} ready"]
    if suspended:
        parts.append(f"{suspended} suspended")
    return Phase.READY, ", ".join(parts)


def build_status(*, target: str, site: str, observed: str, applied: str, last_good: str,
                 result: TargetResult | None, errors: Sequence[Diagnostic] = (),
                 blocked: str = "", solutions: Mapping[str, str] | None = None,
                 failure: str = "", releases: Mapping[str, str] | None = None,
                 instances: Mapping[str, Mapping[str, Any]] | None = None,
                 hold: Mapping[str, str] | None = None) -> TargetStatus:
    """The status of one target after a run. ``failure`` is an error of the target's run
    that no component result carries (its state could not be read or written, an
    unexpected error): the target is Failed with that message. ``solutions`` and
    ``releases`` map each instance to its solution and to the version of the solution's
    release it runs ("" or absent: the solution as at the revision)."""
    phase, message = _phase(result, errors, blocked, failure)
    shown_instances = _shared(_instances(result, solutions or {}, releases or {},
                                         instances or {}))
    marked = _instance_phase(shown_instances)
    if marked is not None and phase in (Phase.READY, Phase.DEGRADED, Phase.PROGRESSING,
                                        Phase.FAILED):
        ranks = ("Failed", "Blocked", "RolledBack", "Progressing", "Degraded", "Waiting",
                 "Ready")
        if ranks.index(marked[0].value) <= ranks.index(phase.value):
            phase, message = marked
    if phase in (Phase.INVALID, Phase.BLOCKED) and failure:
        message += f"; enforcing {applied[:12] or 'the last good revision'} failed: {failure}"
    elif phase in (Phase.INVALID, Phase.BLOCKED) and result is not None and result.failed:
        bad = next(c for c in result.components if c.phase in (ComponentPhase.FAILED,
                                                               ComponentPhase.PRUNE_FAILED))
        message += f"; enforcing {applied[:12]} failed: {bad.key}: {bad.message}"
    if hold and phase is Phase.READY:  # a held line says so in every listing
        message += (f"; held by {hold.get('by') or 'unknown'} until {hold.get('until')}"
                    + (f": {hold['reason']}" if hold.get("reason") else ""))
    shown = [{"file": d.path, "line": d.line, "object": d.obj, "field": d.field,
              "message": d.message} for d in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        shown.append({"message": f"{len(errors) - MAX_ERRORS} more errors not shown"})
    return TargetStatus(target, site, phase, message, observed, applied, last_good,
                        shown_instances, tuple(shown), hold)


def render_status(status: TargetStatus, last_change: str) -> bytes:
    return redact(_yaml_of(status.body(last_change))).encode()  # no secret value leaves


def canonical(status: TargetStatus) -> str:
    """The status's content but lastChange as canonical JSON (keys sorted, no blanks): equal
    statuses give equal text in every process."""
    return json.dumps(status.body(""), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=repr)


def _digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _yaml_of(body: dict[str, Any]) -> str:
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)


class StatusRenderer:
    """:func:`canonical`, :meth:`TargetStatus.digest` and :func:`render_status`, remembering
    recent results.

    A status is identified by the digest of its canonical JSON, and its text is kept for the
    run by the status object (the reconciler hands an idle target the object of its last
    run, and the publisher asks for the same text again). The YAML of the status file is
    rendered only to be published: PyYAML's pure-Python emitter takes about 1 ms per target,
    and an idle run publishes nothing new. A rendered file is kept with a digest of the
    ``repr`` of the status body, which is exact for the plain values a body holds (str, int,
    bool, None, lists, dicts), so the bytes are the same as :func:`render_status` gives.
    It is kept compressed (a fifth of its size; 2 µs to read back against 1 ms to render).
    Redaction still runs on every render, because the set of known secret values can grow
    between runs. Both are kept per target, one of each: a target's new status replaces
    what its last one left (a run that changes every status does not keep the last run's
    as well). Built once per daemon by the pipeline, which calls :meth:`next_run` at the
    start of every run: what was unused for a whole run (a target no longer served) is
    dropped, so memory follows the number of targets served.
    """

    def __init__(self) -> None:
        # target -> (its status, kept alive so that its identity is its own; its JSON)
        self._texts: dict[str, tuple[TargetStatus, str]] = {}
        self._previous_texts: dict[str, tuple[TargetStatus, str]] = {}
        # target -> (digest of the repr of the body rendered; the YAML, compressed)
        self._current: dict[str, tuple[bytes, bytes]] = {}
        self._previous: dict[str, tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def next_run(self) -> None:
        with self._lock:
            self._previous, self._current = self._current, {}
            self._previous_texts, self._texts = self._texts, {}

    def canonical(self, status: TargetStatus) -> str:
        """:func:`canonical` of ``status``, worked out once per status object."""
        key = status.target
        with self._lock:
            found = self._texts.get(key) or self._previous_texts.pop(key, None)
            if found is not None and found[0] is status:
                self._texts[key] = found
                return found[1]
        text = canonical(status)
        with self._lock:
            self._texts[key] = (status, text)
        return text

    def digest(self, status: TargetStatus) -> str:
        """:meth:`TargetStatus.digest` of ``status``."""
        return _digest_of(self.canonical(status))

    def render(self, status: TargetStatus, last_change: str) -> bytes:
        body = status.body(last_change)
        key = hashlib.sha256(repr(body).encode()).digest()
        target = status.target
        with self._lock:
            found = self._current.get(target) or self._previous.pop(target, None)
            kept: bytes | None = None
            if found is not None and found[0] == key:
                self._current[target] = found
                kept = found[1]
        if kept is not None:
            text = zlib.decompress(kept).decode()
        else:
            text = _yaml_of(body)
            packer = zlib.compressobj(1, zlib.DEFLATED, 12, 4)  # a small file: a small window
            packed = packer.compress(text.encode()) + packer.flush()
            with self._lock:
                self._current[target] = (key, packed)
        return redact(text).encode()
