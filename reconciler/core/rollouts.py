"""Progressive rollout of an instance across its targets: waves, pauses, approvals.

``Instance.spec.rollout`` (docs/rollouts.md)::

    rollout:
      approvers: [ops-lead@plant.example]   # signers whose approvals count
      staleAfter: 30m                       # a status older than this is not Ready
      waves:
        - name: canary
          names: [press-line-01]            # and/or sites: [eu/berlin], matchLabels: {...}
          pause: 1h                         # soak time once the wave is Ready
        - name: ten-percent
          share: 10%                        # of the targets not in an earlier wave
          approval: true                    # waits for `reconciler approve`
        - name: eu
          sites: [eu]

A wave selects targets of the instance by names, site subtrees and labels (a target matching
any of them is in it), or a ``share`` of the targets that no earlier wave took, chosen by a
digest of the instance and target names so that every site computes the same split. A
target is in the first wave that selects it; targets in no wave form a last, implicit wave
named ``rest``. This module holds the values, their schema and the split; the gate that
moves a target is :mod:`reconciler.engine.rollout_gate`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.windows import parse_duration

if TYPE_CHECKING:  # model imports this module for Rollout
    from reconciler.core.model import Instance, Solution

__all__ = ["LAST_WAVE", "ROLLOUT_SCHEMA", "Rollout", "Wave", "assign_waves", "parse_rollout",
           "release_id", "rollout_problems"]

LAST_WAVE = "rest"  # the implicit wave of the targets no wave selects
DEFAULT_STALE_AFTER = 3 * 3600

_DNS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SHARE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")
_DURATION_RULE: dict[str, Any] = {"type": ["string", "integer"]}

ROLLOUT_SCHEMA: dict[str, Any] = {"type": "dict", "schema": {
    "approvers": {"type": "list", "schema": {"type": "string", "empty": False}},
    "staleAfter": _DURATION_RULE,
    "waves": {"type": "list", "required": True, "minlength": 1, "schema": {
        "type": "dict", "schema": {
            "name": {"type": "string", "required": True, "regex": _DNS, "maxlength": 63},
            "names": {"type": "list", "schema": {"type": "string", "empty": False}},
            "sites": {"type": "list", "schema": {"type": "string", "empty": False}},
            "matchLabels": {"type": "dict", "valuesrules": {"type": "string"}},
            "share": {"type": ["string", "number"]},
            "pause": _DURATION_RULE,
            "approval": {"type": "boolean"},
            "description": {"type": "string"},
        }}},
}}


@dataclass(frozen=True)
class Wave:
    name: str
    names: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    match_labels: Mapping[str, str] = field(default_factory=dict)
    share: float | None = None  # percent of the targets left, 0 < share <= 100
    pause: int = 0  # seconds after the wave is Ready before the next may move
    approval: bool = False

    @property
    def selects(self) -> bool:
        """Whether it names targets (rather than taking a share)."""
        return bool(self.names or self.sites or self.match_labels)


@dataclass(frozen=True)
class Rollout:
    waves: tuple[Wave, ...]
    approvers: tuple[str, ...] = ()
    stale_after: int = DEFAULT_STALE_AFTER


def _share(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a percentage such as 10%")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _SHARE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a percentage such as 10%")
        number = float(match.group(1))
    if not 0 < number <= 100:
        raise ValueError(f"must be more than 0% and at most 100%, got {number:g}%")
    return number


def rollout_problems(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each problem of a raw ``rollout`` that passed the schema."""
    problems: list[tuple[str, str]] = []
    if "staleAfter" in raw:
        try:
            parse_duration(raw["staleAfter"])
        except ValueError as exc:
            problems.append(("staleAfter", str(exc)))
    seen: set[str] = set()
    for index, wave in enumerate(raw.get("waves") or ()):
        where = f"waves[{index}]"
        name = wave.get("name", "")
        if name in seen:
            problems.append((f"{where}.name", f"wave '{name}' is defined twice"))
        if name == LAST_WAVE:
            problems.append((f"{where}.name", f"'{LAST_WAVE}' names the implicit last wave"))
        seen.add(name)
        selects = any(wave.get(k) for k in ("names", "sites", "matchLabels"))
        if "share" in wave:
            if selects:
                problems.append((f"{where}.share", "a wave takes a share or selects targets "
                                                   "(names, sites, matchLabels), not both"))
            try:
                _share(wave["share"])
            except ValueError as exc:
                problems.append((f"{where}.share", str(exc)))
        elif not selects:
            problems.append((where, "a wave needs names, sites, matchLabels or share"))
        if "pause" in wave:
            try:
                parse_duration(wave["pause"])
            except ValueError as exc:
                problems.append((f"{where}.pause", str(exc)))
    return problems


def parse_rollout(raw: Mapping[str, Any]) -> Rollout:
    """The rollout in ``raw`` (checked by the schema and :func:`rollout_problems`)."""
    waves = tuple(Wave(
        name=w["name"], names=tuple(w.get("names") or ()), sites=tuple(w.get("sites") or ()),
        match_labels=dict(w.get("matchLabels") or {}),
        share=_share(w["share"]) if "share" in w else None,
        pause=parse_duration(w["pause"]) if "pause" in w else 0,
        approval=bool(w.get("approval", False))) for w in raw.get("waves") or ())
    stale = parse_duration(raw["staleAfter"]) if "staleAfter" in raw else DEFAULT_STALE_AFTER
    return Rollout(waves, tuple(raw.get("approvers") or ()), stale)


def _rank(instance: str, target: str) -> bytes:
    return hashlib.sha256(f"{instance}\0{target}".encode()).digest()


def assign_waves(instance: str, rollout: Rollout,
                 targets: Sequence[tuple[str, str, Mapping[str, str]]]) -> dict[str, str]:
    """Target name -> wave name for ``targets`` of ``instance``, each given as (name, site
    path, labels). Deterministic: the same on every site."""
    left = sorted(targets, key=lambda t: t[0])
    out: dict[str, str] = {}
    for wave in rollout.waves:
        if wave.selects:
            taken = [t for t in left if _selected(wave, t)]
        else:
            count = math.ceil(len(left) * (wave.share or 0) / 100) if left else 0
            taken = sorted(left, key=lambda t: _rank(instance, t[0]))[:count]
        names = {t[0] for t in taken}
        for name in names:
            out[name] = wave.name
        left = [t for t in left if t[0] not in names]
    for t in left:
        out[t[0]] = LAST_WAVE
    return out


def _selected(wave: Wave, target: tuple[str, str, Mapping[str, str]]) -> bool:
    name, site_path, labels = target
    if name in wave.names:
        return True
    parts = site_path.split("/")
    for ref in wave.sites:
        ref = ref.strip("/")
        # a path names that subtree; a bare name, the subtree of the site of that name
        if site_path == ref or site_path.startswith(ref + "/") or ("/" not in ref
                                                                     and ref in parts):
            return True
    return bool(wave.match_labels) and all(labels.get(k) == v
                                           for k, v in wave.match_labels.items())


def release_id(instance: Instance, solution: Solution, repo_root: Path) -> str:
    """The release of ``instance`` that a rollout moves: its solution's ``version`` when the
    instance pins one, otherwise ``r-`` and 12 hex digits of a digest of what it renders
    from: the solution's definition (parameters, profiles, components), the content of the
    repository files its components name (relative paths that exist, files or directories),
    and the instance's solution, profile and parameters. The same on every site for the same
    revision, since nothing of a site enters it: a change of a site's own parameters is not
    a new release."""
    if instance.version:
        return instance.version
    base = (solution.root or repo_root) / solution.directory \
        if solution.directory else (solution.root or repo_root)
    root = (solution.root or repo_root).resolve()
    files: dict[str, str] = {}
    for comp in solution.components:
        for value in _strings(comp.properties):
            if "://" in value or value.startswith("/") or "\n" in value or len(value) > 512:
                continue
            path = (base / value).resolve()
            if path.is_relative_to(root) and path.exists() and value not in files:
                files[value] = _tree(path)
    body = {"solution": solution.name, "release": solution.release,
            "parameters": {n: [dict(p.rules), p.editable_at, p.secret]
                           for n, p in sorted(solution.parameters.items())},
            "profiles": {n: dict(v) for n, v in sorted(solution.profiles.items())},
            "components": [[c.name, c.type, c.depends_on, c.properties]
                           for c in solution.components],
            "files": files, "instance": [instance.solution, instance.profile,
                                         dict(instance.params)]}
    text = json.dumps(body, sort_keys=True, default=str)
    return "r-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _tree(path: Path) -> str:
    digest = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in paths:
        digest.update(str(item.relative_to(path) if item != path else ".").encode() + b"\0")
        digest.update(hashlib.sha256(item.read_bytes()).digest())
    return digest.hexdigest()
