"""Which YAML files of a revision hold our manifests, and which are something else.

The rules (documented in docs/repository-format.md and applied by ``reconciler.core.loading``):
every ``*.yaml`` / ``*.yml`` file is a candidate, except hidden ones, the top-level
``status/`` directory and ``Settings.spec.ignore`` globs; a symlinked file is not read (it is
reached through its real path, or points out of the repository); files and directories that a
Solution's components name are provider data, not manifests; a document is ours when its
``apiVersion`` starts with ``reconciler/``, and a foreign one that looks like a mistyped
manifest of ours is said to be so.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.model import API_VERSION, KINDS
from reconciler.core.schema_messages import closest

__all__ = ["is_ours", "looks_like_ours", "referenced_paths", "under", "yaml_files"]

_YAML_SUFFIXES = (".yaml", ".yml")


def is_ours(data: Any) -> bool:
    return isinstance(data, dict) and str(data.get("apiVersion", "")).startswith("reconciler/")


def looks_like_ours(data: Any) -> str | None:
    """Why a foreign document is probably a mistyped manifest of ours, or None."""
    if not isinstance(data, dict):
        return None
    api = data.get("apiVersion")
    kind = data.get("kind")
    if "apiVersion" not in data:
        for key in data:
            if isinstance(key, str) and closest(key, ["apiVersion"], 0.8):
                return f"key '{key}' looks like a misspelt 'apiVersion'"
    if isinstance(api, str) and closest(api.lower(), [API_VERSION], 0.7):
        return f"apiVersion '{api}' looks like a misspelt '{API_VERSION}'"
    if api is None and isinstance(kind, str) and (kind in KINDS or closest(kind, KINDS, 0.8)):
        return f"kind '{kind}' without apiVersion looks like a reconciler manifest"
    return None


def yaml_files(root: Path, ignore: tuple[str, ...]) -> tuple[list[str], list[Diagnostic]]:
    """Repository-relative YAML files to read, in a stable order, and the symlinks skipped."""
    files: list[str] = []
    skipped: list[Diagnostic] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (rel_dir == "." and d == "status"))
        for name in sorted(filenames):
            if not name.endswith(_YAML_SUFFIXES) or name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if any(fnmatch.fnmatch(rel, pattern) for pattern in ignore):
                continue
            full = root / rel
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(root.resolve()):
                    skipped.append(Diagnostic(
                        rel, 0, "", "", f"symlink points outside the repository ({target})"))
                else:
                    skipped.append(Diagnostic(
                        rel, 0, "", "", "symlinked manifest file skipped (it is read through "
                        "its real path)", Severity.WARNING))
                continue
            files.append(rel)
    return files, skipped


def referenced_paths(root: Path, solutions: Iterable[tuple[str, Any]]) -> set[str]:
    """Repository paths (files and directories) that Solution components name.

    ``solutions``: (file, document) of every Solution document read, valid or not.
    """
    found: set[str] = set()
    resolved_root = root.resolve()

    def visit(value: Any, base: PurePosixPath) -> None:
        if isinstance(value, str):
            if not value or "://" in value or "\n" in value or len(value) > 4096 \
                    or "${{" in value:
                return
            candidate = (root / base / value)
            try:
                real = candidate.resolve()
            except (OSError, RuntimeError):
                return
            if real.is_relative_to(resolved_root) and os.path.exists(candidate):
                found.add(os.path.normpath(str(real.relative_to(resolved_root))))
        elif isinstance(value, dict):
            for item in value.values():
                visit(item, base)
        elif isinstance(value, list):
            for item in value:
                visit(item, base)

    for rel, data in solutions:
        if not isinstance(data.get("spec"), dict):
            continue
        base = PurePosixPath(rel).parent
        for comp in data["spec"].get("components") or []:
            if isinstance(comp, dict):
                visit(comp.get("properties"), base)
    return found


def under(rel: str, paths: set[str]) -> bool:
    """Whether ``rel`` is one of ``paths`` or inside one of them."""
    rel = os.path.normpath(rel)
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") or p == "." for p in paths)
