"""What one instance renders on one target at a revision, as a digest.

A change of an instance on a target is a change of this digest, not of the commit: a commit
that touches another solution, another site's parameters or a README renders the same for
the instance and is no change for it (it neither waits for a window nor retries a failed
change). The digest covers the solution and its release, and per component its name, type,
``dependsOn``, rendered properties, resolved parameter values and the content of the
repository files its provider reads (the provider's ``path_properties``: templates, scripts,
manifests, charts). Not the ``suspend`` flag: suspending is not a change to roll back.

Parameter values include secrets, and digests are written to ``state.json`` and compared
across runs, so they are keyed with a random key of the site kept in
``<state dir>/digest.key`` (made on first use, mode 0600): a digest tells two renders apart
without telling what a secret is. Digests are kept per revision in memory (an idle run looks
them up); :meth:`RenderDigests.keep` drops those of revisions no longer in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconciler.core.provider_api import Component
from reconciler.core.registry import ProviderRegistry
from reconciler.core.rendering import Placement
from reconciler.core.statefiles import write_atomic

__all__ = ["RenderDigests"]


def _site_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    with contextlib.suppress(OSError):  # digests still compare within this process's life
        write_atomic(path, key, mode=0o600)
    return key


class RenderDigests:
    """Digests of placements, keyed by the site's key (see the module docstring)."""

    def __init__(self, state_dir: Path, registry: ProviderRegistry) -> None:
        self.registry = registry
        self._key = _site_key(state_dir / "digest.key")
        self._known: dict[tuple[str, str, str], str] = {}
        self._trees: dict[tuple[str, Path], bytes] = {}
        # (revision, checkout, directory, value) -> its tree digest (b"": names no file)
        self._named: dict[tuple[str, Path, Path, str], bytes] = {}

    def of(self, placement: Placement, revision: str) -> str:
        """The digest of ``placement`` (rendered from ``revision``)."""
        key = (revision, placement.target.name, placement.instance.name)
        found = self._known.get(key)
        if found is None:
            solution = placement.solution
            parts: list[Any] = [solution.name, solution.release]
            for comp in placement.components:
                parts.append((comp.name, comp.type, comp.depends_on, comp.properties,
                              comp.params, self._files(placement, comp, revision)))
            found = self._known[key] = self._digest(parts).hex()
        return found

    def keep(self, revisions: Iterable[str]) -> None:
        """Forget the digests of every revision but ``revisions``."""
        wanted = set(revisions)
        self._known = {k: v for k, v in self._known.items() if k[0] in wanted}
        self._trees = {k: v for k, v in self._trees.items() if k[0] in wanted}
        self._named = {k: v for k, v in self._named.items() if k[0] in wanted}

    def _files(self, placement: Placement, comp: Component,
               revision: str) -> list[tuple[str, bytes]]:
        binding = placement.target.binding(comp.type)
        cls = self.registry.get(binding.provider) if binding is not None else None
        props = sorted(getattr(cls, "path_properties", frozenset())) if cls else []
        out: list[tuple[str, bytes]] = []
        for prop in props:
            value = comp.properties.get(prop)
            if isinstance(value, list):
                value = value[0] if value and isinstance(value[0], str) else None
            if not isinstance(value, str) or "://" in value or os.path.isabs(value):
                continue
            key = (revision, comp.repo_root, comp.base_dir, value)
            tree = self._named.get(key)
            if tree is None:  # resolved once per revision, not once per component
                root = comp.repo_root.resolve()
                path = (comp.base_dir / value).resolve()
                tree = self._tree(revision, path) \
                    if path.is_relative_to(root) and path.exists() else b""
                self._named[key] = tree
            if tree:
                out.append((prop, tree))
        return out

    def _tree(self, revision: str, path: Path) -> bytes:
        key = (revision, path)
        found = self._trees.get(key)
        if found is None:
            files: list[tuple[str, bytes]] = []
            if path.is_file():
                files.append((".", hashlib.sha256(path.read_bytes()).digest()))
            else:
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames.sort()
                    for name in sorted(filenames):
                        full = Path(dirpath) / name
                        files.append((str(full.relative_to(path)),
                                      hashlib.sha256(full.read_bytes()).digest()))
            found = self._trees[key] = self._digest(files)
        return found

    def _digest(self, value: Any) -> bytes:
        # marshal (format 2: no back-references) is exact for plain data; repr for the rest
        try:
            data = marshal.dumps(value, 2)
        except ValueError:
            data = repr(value).encode()
        return hashlib.blake2b(data, key=self._key, digest_size=16).digest()
