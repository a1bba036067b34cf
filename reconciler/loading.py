"""Load one revision of the fleet repository into a :class:`~reconciler.model.Fleet`.

How the loader tells our manifests from other YAML in the repository (documented in
docs/repository-format.md):

* every ``*.yaml`` / ``*.yml`` file is read, except hidden directories, the top-level ``status/``
  directory and files matching ``Settings.spec.ignore`` globs;
* a document whose ``apiVersion`` starts with ``reconciler/`` is ours and is validated strictly
  (unknown apiVersion, kind or field is an error);
* a file or directory that a component property names (``template:``, ``manifests:``,
  ``chart:``, a script path ...) is data for a provider and is not read as manifests at all;
* a repository without a ``Settings`` document in ``reconciler.yaml`` is not a fleet: that is
  an error, so that validating the wrong directory never reports success;
* any other YAML is foreign: a file that mixes foreign documents with ours is an error (a
  mistyped apiVersion), a document that looks like ours (one of our kinds, or an apiVersion or
  key that is a near miss of ours) is an error, an unparsable file is an error, and anything
  else is reported as a warning ("not a manifest, not referenced"), never silently skipped.

The loader reports problems as :class:`~reconciler.diagnostics.Diagnostic` values and never
raises on bad content; documents that fail their schema are left out of the fleet. Called by
``reconciler.validation`` (which adds the cross-object checks) and so by every command.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import gc
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cerberus
from cerberus.errors import BasicErrorHandler

from reconciler.diagnostics import Diagnostic, Severity
from reconciler.model import (
    API_VERSION,
    KINDS,
    Binding,
    ComponentDef,
    Defaults,
    Fleet,
    Instance,
    ParameterDef,
    Selector,
    Settings,
    Site,
    Solution,
    Source,
    StatusLayout,
    Target,
)
from reconciler.schemas import PARAMETER_KEYS, PATTERN_HELP, document_schema
from reconciler.yamlio import DEFAULT_MAX_BYTES, YamlDocument, YamlFileError, read_documents

__all__ = ["SETTINGS_FILE", "LoadResult", "bulk_allocation", "field_path", "load_fleet"]

SETTINGS_FILE = "reconciler.yaml"
_YAML_SUFFIXES = (".yaml", ".yml")
_MESSAGES = BasicErrorHandler.messages


@dataclass(frozen=True)
class LoadResult:
    fleet: Fleet
    diagnostics: tuple[Diagnostic, ...]
    manifest_files: tuple[str, ...]  # files that held our documents
    data_paths: frozenset[str]  # repository paths components reference


def field_path(path: tuple[str | int, ...]) -> str:
    """``("spec", "components", 1, "name")`` -> ``spec.components[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class _Doc:
    rel: str
    doc: YamlDocument

    @property
    def data(self) -> Any:
        return self.doc.data

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "")) if isinstance(self.data, dict) else ""

    @property
    def name(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def obj(self) -> str:
        return f"{self.kind or '?'}/{self.name or '?'}"

    def source(self) -> Source:
        return Source(self.rel, self.doc.line, self.doc.lines)


class _Collector:
    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, path: str, line: int, obj: str, fld: str, message: str,
            severity: Severity = Severity.ERROR) -> None:
        self.items.append(Diagnostic(path, line, obj, fld, message, severity))


def _is_ours(data: Any) -> bool:
    return isinstance(data, dict) and str(data.get("apiVersion", "")).startswith("reconciler/")


def _near(word: str, choices: tuple[str, ...] | list[str], cutoff: float = 0.75) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def _looks_like_ours(data: Any) -> str | None:
    """Why a foreign document is probably a mistyped manifest of ours, or None."""
    if not isinstance(data, dict):
        return None
    api = data.get("apiVersion")
    kind = data.get("kind")
    if "apiVersion" not in data:
        for key in data:
            if isinstance(key, str) and _near(key, ["apiVersion"], 0.8):
                return f"key '{key}' looks like a misspelt 'apiVersion'"
    if isinstance(api, str) and _near(api.lower(), [API_VERSION], 0.7):
        return f"apiVersion '{api}' looks like a misspelt '{API_VERSION}'"
    if api is None and isinstance(kind, str) and (kind in KINDS or _near(kind, KINDS, 0.8)):
        return f"kind '{kind}' without apiVersion looks like a reconciler manifest"
    return None


def _walk_yaml(root: Path, ignore: tuple[str, ...], col: _Collector) -> Iterator[str]:
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
                    col.add(rel, 0, "", "", f"symlink points outside the repository ({target})")
                else:
                    col.add(rel, 0, "", "", "symlinked manifest file skipped (it is read "
                            "through its real path)", Severity.WARNING)
                continue
            yield rel


def _referenced_paths(root: Path, docs: list[_Doc]) -> set[str]:
    """Repository paths (files and directories) that Solution components name."""
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

    for d in docs:
        if d.kind != "Solution" or not isinstance(d.data.get("spec"), dict):
            continue
        base = PurePosixPath(d.rel).parent
        for comp in d.data["spec"].get("components") or []:
            if isinstance(comp, dict):
                visit(comp.get("properties"), base)
    return found


def _under(rel: str, paths: set[str]) -> bool:
    rel = os.path.normpath(rel)
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") or p == "." for p in paths)


def _schema_keys(schema: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
    """Keys allowed by the (dict) schema found at ``path``, for did-you-mean hints."""
    current: Any = {"type": "dict", "schema": schema}
    for part in path:
        if isinstance(part, int):
            current = current.get("schema", {}) if isinstance(current, dict) else {}
            continue
        sub = current.get("schema") if isinstance(current, dict) else None
        if not isinstance(sub, dict) or part not in sub:
            return []
        current = sub[part]
    sub = current.get("schema") if isinstance(current, dict) else None
    return list(sub) if isinstance(sub, dict) else []


def _schema_errors(errors: Any, schema: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    for error in errors:
        if error.child_errors:
            yield from _schema_errors(error.child_errors, schema)
            continue
        path = tuple(error.document_path)
        if error.code == 0x03:  # unknown field
            hint = _near(str(path[-1]), _schema_keys(schema, path[:-1]), 0.6)
            yield path, "unknown field" + (f" (did you mean '{hint}'?)" if hint else "")
        elif error.rule == "regex" and error.constraint in PATTERN_HELP:
            yield path, f"'{error.value}' {PATTERN_HELP[error.constraint]}"
        elif error.code in _MESSAGES:
            message = _MESSAGES[error.code].format(
                *error.info, constraint=error.constraint, field=error.field, value=error.value)
            yield path, message
        else:  # pragma: no cover - every cerberus code has a message
            yield path, f"invalid ({error.rule})"


class _Loader:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.col = _Collector()
        self.validators = {kind: cerberus.Validator(document_schema(kind)) for kind in KINDS}

    # -- reading -----------------------------------------------------------------------
    def read(self, rel: str) -> list[YamlDocument] | YamlFileError:
        try:
            return read_documents(self.root / rel, max_bytes=self.max_bytes)
        except YamlFileError as exc:
            return exc

    def settings(self) -> tuple[Settings, list[_Doc]]:
        path = self.root / SETTINGS_FILE
        if not path.exists():
            return Settings(), []
        parsed = self.read(SETTINGS_FILE)
        if isinstance(parsed, YamlFileError):
            return Settings(), []  # reported when the file is read again with the others
        docs = [_Doc(SETTINGS_FILE, d) for d in parsed if _is_ours(d.data)]
        for d in docs:
            if d.kind == "Settings" and self.check(d):
                return self.build_settings(d), docs
        return Settings(), docs

    def load(self) -> LoadResult:
        settings, _ = self.settings()
        files = list(_walk_yaml(self.root, settings.ignore, self.col))
        parsed = {rel: self.read(rel) for rel in files}
        ours: list[_Doc] = []
        for rel, result in parsed.items():
            if isinstance(result, list):
                ours.extend(_Doc(rel, d) for d in result if _is_ours(d.data))
        data_paths = _referenced_paths(self.root, ours)
        manifests: list[_Doc] = []
        manifest_files: list[str] = []
        for rel, result in parsed.items():
            if _under(rel, data_paths):
                continue
            if isinstance(result, YamlFileError):
                self.col.add(rel, result.line, "", "", result.message)
                continue
            mine = [d for d in result if _is_ours(d.data)]
            foreign = [d for d in result if not _is_ours(d.data)]
            if mine:
                manifest_files.append(rel)
                manifests.extend(_Doc(rel, d) for d in mine)
                for d in foreign:
                    self.col.add(rel, d.line, "", "",
                                 "document is not a reconciler manifest (apiVersion "
                                 f"'{API_VERSION}' missing or mistyped) in a file of manifests")
            elif foreign:
                flagged = False
                for d in foreign:
                    why = _looks_like_ours(d.data)
                    if why:
                        self.col.add(rel, d.line, "", "", why)
                        flagged = True
                if not flagged:
                    self.col.add(rel, 0, "", "", "not a reconciler manifest and not referenced "
                                 "by any component: ignored (list it in Settings spec.ignore to "
                                 "silence this)", Severity.WARNING)
        self.require_settings(parsed, manifests)
        fleet = self.build(settings, manifests)
        return LoadResult(fleet, tuple(self.col.items), tuple(manifest_files),
                          frozenset(data_paths))

    def require_settings(self, parsed: Mapping[str, list[YamlDocument] | YamlFileError],
                         manifests: list[_Doc]) -> None:
        """A fleet has a Settings document: without one this is not a fleet repository (or
        not its root), and "0 targets, 0 errors" would read as success."""
        if any(d.kind == "Settings" for d in manifests):
            return  # where it is and what is in it are checked with the others
        mine = parsed.get(SETTINGS_FILE)
        if isinstance(mine, YamlFileError) or (mine is not None and any(
                isinstance(d.data, dict) and d.data.get("kind") == "Settings" for d in mine)):
            return  # the file is there but broken: already reported
        self.col.add(SETTINGS_FILE, 0, "", "",
                     f"no Settings document found: expected {SETTINGS_FILE} at the repository "
                     f"root with 'apiVersion: {API_VERSION}' and 'kind: Settings' (is this "
                     "the root of a fleet repository?)")

    # -- checking ----------------------------------------------------------------------
    def check(self, d: _Doc) -> bool:
        data = d.data
        for path, line in d.doc.duplicates:
            self.col.add(d.rel, line, d.obj, field_path(path), "key defined twice")
        api = data.get("apiVersion")
        if api != API_VERSION:
            self.col.add(d.rel, d.doc.line_of(("apiVersion",)), d.obj, "apiVersion",
                         f"unknown apiVersion '{api}' (expected '{API_VERSION}')")
            return False
        kind = data.get("kind")
        if kind not in KINDS:
            hint = _near(str(kind), KINDS, 0.6)
            self.col.add(d.rel, d.doc.line_of(("kind",)), d.obj, "kind",
                         f"unknown kind '{kind}'" + (f" (did you mean '{hint}'?)" if hint else
                                                     f"; known kinds: {', '.join(KINDS)}"))
            return False
        validator = self.validators[kind]
        # no schema here defaults, coerces or renames, so normalizing would only cost time
        # (it copies the schema for every nested mapping: most of the loader's run time)
        if validator.validate(data, normalize=False):
            return not d.doc.duplicates
        schema = document_schema(kind)
        for path, message in _schema_errors(validator._errors, schema):
            self.col.add(d.rel, d.doc.line_of(path), d.obj, field_path(path), message)
        return False

    # -- building ----------------------------------------------------------------------
    def build_settings(self, d: _Doc) -> Settings:
        spec = d.data.get("spec") or {}
        dflt = spec.get("defaults") or {}
        status = spec.get("status") or {}
        base = Defaults()
        return Settings(
            hierarchy=tuple(spec.get("hierarchy") or Settings().hierarchy),
            defaults=Defaults(
                interval=dflt.get("interval", base.interval),
                jitter=dflt.get("jitter", base.jitter),
                retries=dflt.get("retries", base.retries),
                retry_delay=float(dflt.get("retryDelay", base.retry_delay)),
                health_timeout=dflt.get("healthTimeout", base.health_timeout),
            ),
            status_layout=StatusLayout(status.get("layout", "per-site")),
            status_branch=status.get("branch", Settings().status_branch),
            ignore=tuple(spec.get("ignore") or ()),
            source=d.source(),
        )

    def build(self, settings: Settings, docs: list[_Doc]) -> Fleet:
        sites: dict[str, Site] = {}
        targets: dict[str, Target] = {}
        solutions: dict[str, Solution] = {}
        instances: dict[str, Instance] = {}
        seen: dict[tuple[str, str], _Doc] = {}
        settings_docs = 0
        broken: set[tuple[str, str]] = set()
        for d in docs:
            if not self.check(d):
                broken.add((d.kind, d.name))
                continue
            key = (d.kind, d.name)
            if key in seen:
                first = seen[key]
                self.col.add(d.rel, d.doc.line_of(("metadata", "name")), d.obj, "metadata.name",
                             f"duplicate name: {d.obj} is already defined at "
                             f"{first.rel}:{first.doc.line_of(('metadata', 'name'))}")
                continue
            seen[key] = d
            meta = d.data["metadata"]
            labels = dict(meta.get("labels") or {})
            spec = d.data.get("spec") or {}
            src = d.source()
            if d.kind == "Settings":
                settings_docs += 1
                if d.rel != SETTINGS_FILE:
                    self.col.add(d.rel, d.doc.line, d.obj, "",
                                 f"Settings must be in {SETTINGS_FILE} at the repository root")
                elif settings_docs > 1:
                    self.col.add(d.rel, d.doc.line, d.obj, "", "only one Settings is allowed")
            elif d.kind == "Site":
                sites[d.name] = Site(d.name, labels, spec.get("parent"),
                                     dict(spec.get("params") or {}),
                                     {k: dict(v or {}) for k, v in
                                      (spec.get("solutionParams") or {}).items()},
                                     src, spec.get("description", ""))
            elif d.kind == "Target":
                bindings = tuple(Binding(b["role"], b["provider"], dict(b.get("config") or {}))
                                 for b in spec.get("bindings") or [])
                targets[d.name] = Target(d.name, labels, spec["site"],
                                         dict(spec.get("params") or {}), bindings, src,
                                         spec.get("description", ""))
            elif d.kind == "Solution":
                solution = self.build_solution(d, labels, spec, src)
                if solution is not None:
                    solutions[d.name] = solution
                else:
                    broken.add((d.kind, d.name))
            elif d.kind == "Instance":
                tsel = spec["targets"]
                selector = None
                if "selector" in tsel:
                    sel = tsel["selector"] or {}
                    selector = Selector(tuple(sel.get("sites") or ()),
                                        dict(sel.get("matchLabels") or {}))
                    if not selector.sites and not selector.match_labels:
                        self.col.add(d.rel, d.doc.line_of(("spec", "targets", "selector")),
                                     d.obj, "spec.targets.selector",
                                     "empty selector: name sites and/or matchLabels")
                if not tsel.get("names") and selector is None:
                    self.col.add(d.rel, d.doc.line_of(("spec", "targets")), d.obj,
                                 "spec.targets", "names or selector is required")
                instances[d.name] = Instance(
                    d.name, labels, spec["solution"], spec.get("version"),
                    tuple(tsel.get("names") or ()), selector, spec.get("profile"),
                    dict(spec.get("params") or {}), bool(spec.get("suspend", False)), src)
        return Fleet(self.root, settings, sites, targets, solutions, instances,
                     frozenset(broken))

    def build_solution(self, d: _Doc, labels: dict[str, str], spec: dict[str, Any],
                       src: Source) -> Solution | None:
        params: dict[str, ParameterDef] = {}
        ok = True
        for pname, raw in (spec.get("parameters") or {}).items():
            rules = {k: v for k, v in raw.items() if k not in PARAMETER_KEYS}
            line = d.doc.line_of(("spec", "parameters", pname))
            fld = f"spec.parameters.{pname}"
            try:
                cerberus.Validator({pname: rules})
            except Exception as exc:  # cerberus raises SchemaError with the bad rule
                self.col.add(d.rel, line, d.obj, fld, f"invalid parameter schema: {exc}")
                ok = False
                continue
            if "default" in rules:
                check = cerberus.Validator({pname: rules})
                if not check.validate({pname: rules["default"]}):
                    for _, message in _schema_errors(check._errors, {}):
                        self.col.add(d.rel, d.doc.line_of(("spec", "parameters", pname,
                                                           "default")),
                                     d.obj, f"{fld}.default", message)
                    ok = False
            editable = raw.get("editableAt")
            if editable is not None and (not isinstance(editable, list) or
                                         not all(isinstance(x, str) for x in editable)):
                self.col.add(d.rel, d.doc.line_of(("spec", "parameters", pname, "editableAt")),
                             d.obj, f"{fld}.editableAt", "must be a list of level names")
                ok = False
                continue
            params[pname] = ParameterDef(
                pname, rules, tuple(editable) if editable is not None else None,
                bool(raw.get("secret", False)), str(raw.get("description", "")))
        components = tuple(
            ComponentDef(c["name"], c["type"], dict(c.get("properties") or {}),
                         tuple(c.get("dependsOn") or ()), i)
            for i, c in enumerate(spec.get("components") or []))
        if not ok:
            return None
        return Solution(d.name, labels, params,
                        {k: dict(v or {}) for k, v in (spec.get("profiles") or {}).items()},
                        components, src, spec.get("description", ""))


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading or validating a whole fleet.

    Both allocate hundreds of thousands of objects that stay alive, in one burst; each
    collection this triggers rescans everything alive, imported modules included (the
    kubernetes client alone is several hundred thousand objects): on a 1,000-target fleet
    that was a fifth of the run. Reference counting still frees everything that is not in a
    cycle, and the collector runs again as usual afterwards. Only re-enabled by whoever
    disabled it, so nesting and concurrent use leave it as it was.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_fleet(root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadResult:
    """Read every manifest under ``root``; bad content becomes diagnostics, never exceptions."""
    with bulk_allocation():
        return _Loader(root, max_bytes).load()
