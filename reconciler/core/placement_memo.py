"""Placements checked once per set of inputs, for validating several revisions of a fleet.

The offline plan validates two revisions of one repository; a pull request changes few of the
(instance, target) pairs. A :class:`PlacementMemo` passed to
:func:`reconciler.core.validation.validate_fleet` renders and checks a pair only when no pair
with the same inputs was rendered before, in this revision or an earlier one; otherwise it
repeats that pair's findings. What it keeps of a pair is what its ``summarize`` function makes
of the placement (the plan's digests of its components), not the placement itself, so memory
follows the size of those summaries.

A pair's inputs, by the fingerprints of the documents they come from (see
:mod:`reconciler.core.document_cache`): the instance, the target, the solution, the sites on
the target's chain, and, for every pair of the revision, the ``Settings`` document (the
hierarchy), the projects (and then every site: their bounds are site subtrees), the revision,
and the registry, policy and secrets the validation uses. A pair of a pinned release (whose
documents come from another checkout) or of a document without a fingerprint is always
rendered. Its components may name repository files (templates, charts, scripts): every
string of its rendered properties that could be a path is looked up in the revision
(where it leads, the content there, once per path and revision), and a pair whose paths
differ from when it was rendered is rendered again.

The findings of a pair are every finding its checks add, repeated ones included
(:meth:`~reconciler.core.checks.findings.Findings.record`); replayed in the order the pairs
come, they give the same findings, in the same order, as rendering every pair.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generic, TypeVar

from reconciler.core.checks.findings import Findings
from reconciler.core.diagnostics import Diagnostic
from reconciler.core.model import Fleet, Instance, Solution, Target
from reconciler.core.rendering import Placement

__all__ = ["PairResult", "PlacementMemo"]

T = TypeVar("T")
MIN_AHEAD = 500  # pairs to render before a second worker is worth its fork
Check = Callable[[Placement], None]
Todo = tuple[bytes | None, Callable[[], Placement]]  # a pair's key, and how to render it


@dataclass(frozen=True)
class PairResult(Generic[T]):
    findings: tuple[Diagnostic, ...]
    summary: T
    paths: tuple[tuple[str, str], ...]  # (directory, string) its components could name
    state: bytes  # what the repository had there when it was rendered


def _digest(parts: Iterable[bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()


def _could_name(value: str) -> bool:
    return bool(value) and len(value) <= 4096 and "\n" not in value and "://" not in value \
        and not os.path.isabs(value)


def _named(value: Any, out: set[str]) -> None:
    """Every string of a rendered property that could name a repository path."""
    if isinstance(value, str):
        if _could_name(value):
            out.add(value)
        return
    if isinstance(value, dict):
        items: Iterable[Any] = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return
    for item in items:  # strings here, without a call each: most properties are strings
        if isinstance(item, str):
            if "\n" not in item and _could_name(item):
                out.add(item)
        elif isinstance(item, dict | list):
            _named(item, out)


def _path_state(root: Path, directory: str, value: str) -> bytes:
    """What the repository has at ``value`` (relative to ``directory``): where it leads,
    and the content of the file or of every file and link under the directory."""
    path = root / directory / value
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return b"!"
    if not real.is_relative_to(root):
        return b"outside"
    parts = [str(real.relative_to(root)).encode()]
    try:
        if real.is_file():
            parts.append(hashlib.blake2b(real.read_bytes(), digest_size=16).digest())
        elif real.is_dir():
            for dirpath, dirnames, filenames in os.walk(real):
                dirnames.sort()
                for name in sorted([*dirnames, *filenames]):
                    full = Path(dirpath) / name
                    parts.append(str(full.relative_to(real)).encode())
                    if full.is_symlink():
                        parts.append(b"->" + os.readlink(full).encode())
                    elif full.is_file():
                        parts.append(hashlib.blake2b(full.read_bytes(),
                                                     digest_size=16).digest())
        else:
            parts.append(b"absent" if not os.path.lexists(path) else b"other")
    except OSError:
        parts.append(b"?")
    return _digest(parts)


class PlacementMemo(Generic[T]):
    """Pairs rendered and checked, by their inputs (see the module docstring)."""

    def __init__(self, summarize: Callable[[Placement], T], *, workers: int = 1,
                 min_ahead: int = MIN_AHEAD) -> None:
        self.summarize = summarize
        self.workers = workers
        self.min_ahead = min_ahead
        self._results: dict[bytes, PairResult[T]] = {}
        self.rendered = 0  # pairs rendered, of every revision
        self.reused = 0  # pairs whose findings and summary were repeated
        # of the revision validated last: target -> (instance, summary) by instance name
        self.summaries: dict[str, list[tuple[str, T]]] = {}
        self.solutions: dict[str, Solution] = {}  # instance -> the solution it renders from
        self._root = Path("/")
        self._states: dict[tuple[str, str], bytes] = {}  # of the revision being validated
        # a set of paths -> their state (most pairs of a solution name the same paths),
        # and the set itself, so that equal sets are kept once
        self._sets: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._interned: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self._dirs: dict[Path, str] = {}  # a component's directory -> relative to the root
        self._ahead: set[bytes | None] = set()  # keys rendered ahead, not asked for yet

    def begin(self, root: Path) -> None:
        """A revision checked out at ``root`` is validated next."""
        self._root = root.resolve()
        self._states = {}
        self._sets = {}
        self._dirs = {}
        self.summaries = {}

    def _state(self, paths: tuple[tuple[str, str], ...]) -> bytes:
        known = self._sets.get(paths)
        if known is not None:
            return known
        states = self._states
        out = []
        for named in paths:
            found = states.get(named)
            if found is None:
                found = states[named] = _path_state(self._root, *named)
            out.append(found)
        known = self._sets[paths] = _digest(out)
        return known

    def context(self, fleet: Fleet, fingerprints: Mapping[tuple[str, str], bytes],
                extra: Iterable[bytes]) -> bytes:
        """What every pair of a revision depends on besides its own documents."""
        parts = [*extra, fingerprints.get(("Settings", _settings_name(fingerprints)), b"")]
        if fleet.projects:
            parts += [fp for (kind, _), fp in sorted(fingerprints.items())
                      if kind in ("Project", "Site")]
        return _digest(parts)

    def key(self, fleet: Fleet, fingerprints: Mapping[tuple[str, str], bytes], context: bytes,
            inst: Instance, target: Target, solution: Solution) -> bytes | None:
        if solution.release:
            return None
        parts = [context, b"S" if inst.suspend else b"-",
                 fingerprints.get(("Instance", inst.name), b""),
                 fingerprints.get(("Target", target.name), b""),
                 fingerprints.get(("Solution", solution.name), b"")]
        parts += [fingerprints.get(("Site", s.name), b"")
                  for s in fleet.site_chains.get(target.site, ())]
        if not all(parts):
            return None
        return _digest(parts)

    def _known(self, key: bytes | None) -> PairResult[T] | None:
        found = self._results.get(key) if key is not None else None
        return found if found is not None and self._state(found.paths) == found.state else None

    def pair(self, key: bytes | None, findings: Findings,
             render: Callable[[], Placement], checks: Iterable[Check]) -> T:
        """The summary of one pair, rendered and checked unless known; its findings are
        added to ``findings`` either way."""
        found = self._known(key)
        if found is not None:
            if key in self._ahead:  # rendered ahead for this very pair
                self._ahead.discard(key)
            else:
                self.reused += 1
            findings.replay(found.findings)
            return found.summary
        result = self._compute(render, findings, checks)
        if key is not None:
            self._results[key] = result
        return result.summary

    def _compute(self, render: Callable[[], Placement], findings: Findings,
                 checks: Iterable[Check]) -> PairResult[T]:
        self.rendered += 1
        placement = render()
        record = findings.record()
        for check in checks:
            check(placement)
        findings.stop(record)
        strings: set[str] = set()
        for c in placement.components:  # of one solution: one directory
            _named(c.properties, strings)
        paths: tuple[tuple[str, str], ...] = ()
        if strings:
            base_dir = placement.components[0].base_dir
            directory = self._dirs.get(base_dir)
            if directory is None:
                directory = self._dirs[base_dir] = os.path.relpath(base_dir, self._root)
            paths = tuple(sorted((directory, value) for value in strings))
            paths = self._interned.setdefault(paths, paths)
        return PairResult(tuple(record), self.summarize(placement), paths, self._state(paths))

    def render_ahead(self, pairs: Sequence[Todo], findings: Findings,
                     checks: Sequence[Check]) -> None:
        """With two workers, render and check the pairs not known yet half here and half
        in a child process (forked: it has everything this one has) at once, keeping only
        what :meth:`pair` keeps: findings are only recorded (:meth:`Findings.scratch`), so
        that :meth:`pair`, called in order next, repeats them in the order of the pairs.
        If the child fails, its pairs are simply rendered by :meth:`pair`."""
        if self.workers < 2:
            return
        todo = [(key, render) for key, render in pairs
                if key is not None and self._known(key) is None]
        if len(todo) < self.min_ahead:
            return
        mine, theirs = todo[:len(todo) // 2], todo[len(todo) // 2:]
        context = multiprocessing.get_context("fork")
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(target=self._serve, args=(writer, theirs, findings, checks),
                                daemon=True)
        child.start()
        writer.close()
        try:
            with findings.scratch():
                for key, render in mine:
                    self._results[key] = self._compute(render, findings, checks)
                    self._ahead.add(key)
            try:
                results: list[PairResult[T]] | None = reader.recv()
            except EOFError:
                results = None
        finally:
            reader.close()
            child.join()
        for (key, _), result in zip(theirs, results or (), strict=False):
            self._results[key] = result
            self._ahead.add(key)
            self.rendered += 1  # there

    def _serve(self, writer: Connection, pairs: Sequence[Todo], findings: Findings,
               checks: Sequence[Check]) -> None:
        try:
            with findings.scratch():
                results = [self._compute(render, findings, checks) for _, render in pairs]
            writer.send(results)
        except Exception:
            writer.send(None)
        finally:
            writer.close()


def _settings_name(fingerprints: Mapping[tuple[str, str], bytes]) -> str:
    return next((name for kind, name in fingerprints if kind == "Settings"), "")
