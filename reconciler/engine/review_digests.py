"""Digests of one plan's rendered components, and what its revisions share in one process.

Used by :mod:`reconciler.engine.review_sides`: each pair (instance, target) of a revision is
summed up as a keyed digest per component (type, ``dependsOn``, rendered properties, resolved
values, the content of the repository files it names), by :meth:`Digests.summarize`, which
the :class:`~reconciler.core.placement_memo.PlacementMemo` of a :class:`Shared` calls once per
set of inputs.
"""

from __future__ import annotations

import hashlib
import marshal
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.core.loading import DocumentCache
from reconciler.core.model import Target
from reconciler.core.placement_memo import PlacementMemo
from reconciler.core.provider_api import Component
from reconciler.core.registry import ProviderRegistry
from reconciler.core.rendering import Placement

__all__ = ["Digests", "PairSummary", "Shared", "tree_digest"]


def tree_digest(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (a file: itself, as ".")."""
    out: dict[str, str] = {}
    if path.is_file():
        out["."] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            out[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


PairSummary = dict[str, tuple[str, bytes, bool]]  # component key -> (type, digest, suspended)


class Digests:
    """Digests of rendered components, keyed with the plan's key: what a placement is summed
    up as (:meth:`summarize`, the :class:`PlacementMemo`'s summary of a pair), and the
    repository files a component names, resolved and hashed once per path."""

    def __init__(self, registry: ProviderRegistry, secret_key: bytes) -> None:
        self.registry = registry
        self.secret_key = secret_key
        self._props: dict[str, tuple[str, ...]] = {}  # provider -> its path properties
        self._referenced: dict[tuple[Path, str], tuple[str, Path] | None] = {}
        self._digests: dict[Path, bytes] = {}

    def summarize(self, p: Placement) -> PairSummary:
        values = self.digest(p.components[0].params) if p.components else b""
        suspended = p.instance.suspend
        by_role: dict[str, tuple[str, ...]] = {}  # the path properties of each role bound
        out: dict[str, tuple[str, bytes, bool]] = {}
        for c in p.components:
            props = by_role.get(c.type)
            if props is None:
                props = by_role[c.type] = self._path_props(p.target, c.type)
            named = self._files(c, props) if props else ()
            files = [(label, self._tree(path)) for label, path in named] if named else []
            out[c.key] = (c.type, self.digest((c.type, c.depends_on, c.properties, values,
                                                files)), suspended)
        return out

    def _path_props(self, target: Target, role: str) -> tuple[str, ...]:
        binding = target.binding(role)
        if binding is None:
            return ()
        found = self._props.get(binding.provider)
        if found is None:
            cls = self.registry.get(binding.provider)
            found = tuple(sorted(getattr(cls, "path_properties", frozenset()))) \
                if cls is not None else ()
            self._props[binding.provider] = found
        return found

    def files(self, target: Target, c: Component) -> Iterator[tuple[str, Path]]:
        """The repository files and directories a component names in the path properties of
        the provider its target binds its type to: (path in the repository, path on
        disk)."""
        return iter(self._files(c, self._path_props(target, c.type)))

    def _files(self, c: Component, props: tuple[str, ...]) -> list[tuple[str, Path]]:
        out: list[tuple[str, Path]] = []
        for prop in props:
            value = c.properties.get(prop)
            if value is None:
                continue
            if isinstance(value, list):
                value = value[0] if value and isinstance(value[0], str) else None
            if not isinstance(value, str) or "://" in value or os.path.isabs(value):
                continue
            cached = (c.base_dir, value)
            if cached not in self._referenced:
                root = c.repo_root.resolve()
                candidate = (c.base_dir / value).resolve()
                inside = candidate.is_relative_to(root) and candidate.exists()
                self._referenced[cached] = \
                    (str(candidate.relative_to(root)), candidate) if inside else None
            found = self._referenced[cached]
            if found is not None:
                out.append(found)
        return out

    def _tree(self, path: Path) -> bytes:
        if path not in self._digests:
            self._digests[path] = self.digest(sorted(tree_digest(path).items()))
        return self._digests[path]

    def digest(self, value: Any) -> bytes:
        # marshal (format 2: no back-references, so equal values give equal bytes) is
        # exact and about three times as fast as repr for the plain data of rendered
        # components; repr for what marshal refuses (dates). A dict that differs only in key
        # order gives another digest: the full comparison then finds no change. Keyed with a
        # key of this plan only: values hold secrets, and digests must not tell them
        try:
            data = marshal.dumps(value, 2)
        except ValueError:
            data = repr(value).encode()
        return hashlib.blake2b(data, key=self.secret_key, digest_size=16).digest()


class Shared:
    """What the revisions validated in one process share: files parsed and documents
    checked (:class:`DocumentCache`), and pairs rendered and summed up
    (:class:`PlacementMemo`): the second revision costs what differs from the first."""

    def __init__(self, registry: ProviderRegistry, secret_key: bytes, workers: int) -> None:
        self.registry = registry
        self.digests = Digests(registry, secret_key)
        self.cache = DocumentCache()
        self.memo: PlacementMemo[PairSummary] = PlacementMemo(self.digests.summarize,
                                                              workers=workers)
