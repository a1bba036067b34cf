"""Loading a component's Kubernetes objects from its ``manifests`` files and ``resources``.

Called by ``KubernetesProvider`` (observe/apply) to turn a rendered :class:`Component` into
the list of object bodies it asks for, in manifest order. ``manifests`` names a file or a
directory of YAML files relative to the component's ``base_dir``; every path must stay inside
the checked-out repository (no absolute paths, no ``..``, no symlink leading out). Files are
rendered with the project's sandboxed templating and the component's ``template_context``,
then parsed with PyYAML's safe loader (libyaml's when present). Inline ``resources`` arrive
already rendered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from reconciler.provider_api import Component, PermanentError, render_text

from .kube_objects import ObjectRef

__all__ = ["MANIFEST_SUFFIXES", "load_objects", "manifest_path_problem"]

# libyaml when present: the same safe constructors, several times faster
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
_REASON = "InvalidManifest"


def manifest_path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a manifests path, judged without touching the disk."""
    if not value.strip():
        return "must not be empty"
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("\\") or (len(value) > 1 and value[1] == ":"):
        return f"{value!r} must be relative to the solution's directory"
    if ".." in path.parts:
        return f"{value!r} must not contain '..'"
    return None


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or resolved.is_relative_to(root)


def _manifest_files(component: Component, value: str) -> Iterator[Path]:
    problem = manifest_path_problem(value)
    if problem is not None:
        raise PermanentError(f"component {component.name}: manifests: {problem}",
                             reason=_REASON)
    root = component.repo_root.resolve()
    start = component.base_dir / value
    if not _inside(start, root):
        raise PermanentError(f"component {component.name}: manifests: {value!r} leads outside "
                             "the repository (symlink)", reason=_REASON)
    if start.is_file():
        yield start
        return
    if not start.is_dir():
        raise PermanentError(f"component {component.name}: manifests: "
                             f"{_relative_name(start, component.repo_root)} does not exist",
                             reason=_REASON)
    for path in sorted(start.rglob("*"), key=lambda p: p.relative_to(start).as_posix()):
        if path.suffix not in MANIFEST_SUFFIXES or not path.is_file():
            continue
        if not _inside(path, root):
            raise PermanentError(
                f"component {component.name}: manifests: "
                f"{_relative_name(path, component.repo_root)} leads outside the repository "
                "(symlink)", reason=_REASON)
        yield path


def _check_object(obj: Any, source: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise PermanentError(f"{source}: expected a Kubernetes object (a mapping), "
                             f"got {type(obj).__name__}", reason=_REASON)
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise PermanentError(f"{source}: {field}: required string", reason=_REASON)
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) \
            or not meta["name"]:
        raise PermanentError(f"{source}: {obj['kind']}: metadata.name: required string",
                             reason=_REASON)
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise PermanentError(f"{source}: {obj['kind']}/{meta['name']}: metadata.namespace: "
                             "must be a string", reason=_REASON)
    return dict(obj)


def _expand(obj: Any, source: str) -> Iterator[dict[str, Any]]:
    # "kind: List" (and FooList) documents, as kubectl writes them, hold objects in items
    if isinstance(obj, Mapping) and str(obj.get("kind", "")).endswith("List") \
            and isinstance(obj.get("items"), list) and "metadata" not in obj:
        for index, item in enumerate(obj["items"]):
            yield _check_object(item, f"{source}: items[{index}]")
        return
    yield _check_object(obj, source)


def _load_file(component: Component, path: Path) -> Iterator[dict[str, Any]]:
    source = _relative_name(path, component.repo_root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{source}: cannot read: {exc}", reason=_REASON) from None
    rendered = render_text(text, component.template_context, source=source)
    try:
        documents = list(yaml.load_all(rendered, Loader=_LOADER))
    except yaml.YAMLError as exc:
        raise PermanentError(f"{source}: invalid YAML: {exc}", reason=_REASON) from None
    for index, document in enumerate(documents):
        if document is None:  # an empty document between two "---"
            continue
        yield from _expand(document, f"{source}: document {index + 1}")


def load_objects(component: Component) -> list[dict[str, Any]]:
    """Every object the component asks for, files first, then inline ``resources``."""
    objects: list[dict[str, Any]] = []
    manifests = component.properties.get("manifests")
    paths = [manifests] if isinstance(manifests, str) else list(manifests or [])
    for value in paths:
        for path in _manifest_files(component, str(value)):
            objects.extend(_load_file(component, path))
    resources = component.properties.get("resources") or []
    if not isinstance(resources, list):
        raise PermanentError(f"component {component.name}: resources: must be a list",
                             reason=_REASON)
    for index, item in enumerate(resources):
        objects.extend(_expand(item, f"component {component.name}: resources[{index}]"))
    if not objects:
        raise PermanentError(f"component {component.name}: no Kubernetes objects in manifests "
                             "or resources", reason=_REASON)
    return objects


def duplicate(refs: list[ObjectRef]) -> ObjectRef | None:
    """The first reference that appears twice (after namespaces were defaulted)."""
    seen: set[tuple[str, str, str, str]] = set()
    for ref in refs:
        if ref.identity in seen:
            return ref
        seen.add(ref.identity)
    return None
