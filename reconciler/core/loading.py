"""Load one revision of the fleet repository into a :class:`~reconciler.core.model.Fleet`.

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

The loader reports problems as :class:`~reconciler.core.diagnostics.Diagnostic` values and never
raises on bad content; documents that fail their schema are left out of the fleet. Which files
are read is ``reconciler.core.manifest_files``; how a schema finding is worded is
``reconciler.core.schema_messages``. Called by ``reconciler.core.validation`` (which adds the
cross-object checks) and so by every command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cerberus

from reconciler.core.allocation import bulk_allocation
from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.document_cache import DocumentCache, Parsed, read_file
from reconciler.core.fast_schema import conforms
from reconciler.core.loaded_documents import Collector as _Collector
from reconciler.core.loaded_documents import LoadedDocument as _Doc
from reconciler.core.manifest_files import (
    is_ours,
    looks_like_ours,
    referenced_paths,
    under,
    yaml_files,
)
from reconciler.core.model import (
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
from reconciler.core.projects import build_projects
from reconciler.core.rollouts import Rollout, parse_rollout, rollout_problems
from reconciler.core.schema_messages import closest, field_path, schema_errors, split_field
from reconciler.core.schemas import PARAMETER_KEYS, document_schema
from reconciler.core.windows import Window, parse_window, window_problems
from reconciler.core.yamlio import DEFAULT_MAX_BYTES, YamlDocument, YamlFileError

__all__ = ["SETTINGS_FILE", "DocumentCache", "LoadResult", "bulk_allocation", "field_path",
           "load_fleet"]

SETTINGS_FILE = "reconciler.yaml"

# the daemon's config check imports it from here
_schema_errors = schema_errors


@dataclass(frozen=True)
class LoadResult:
    fleet: Fleet
    diagnostics: tuple[Diagnostic, ...]
    manifest_files: tuple[str, ...]  # files that held our documents
    data_paths: frozenset[str]  # repository paths components reference
    # (kind, name) -> fingerprint of the document it was built from (document_cache)
    fingerprints: Mapping[tuple[str, str], bytes] = field(default_factory=dict)


class _Loader:
    def __init__(self, root: Path, max_bytes: int, cache: DocumentCache | None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.cache = cache
        self.digests: dict[str, bytes] = {}  # file -> digest of its path and content
        self.fingerprints: dict[tuple[str, str], bytes] = {}
        self.col = _Collector()
        self.schemas = {kind: document_schema(kind) for kind in KINDS}
        self.validators = {kind: cerberus.Validator(document_schema(kind)) for kind in KINDS}

    # -- reading -----------------------------------------------------------------------
    def read(self, rel: str) -> Parsed:
        if self.cache is not None:
            parsed, digest = self.cache.read(self.root, rel, self.max_bytes)
        else:
            parsed, digest = read_file(self.root, rel, self.max_bytes)
        self.digests[rel] = digest
        return parsed

    def settings(self) -> tuple[Settings, list[_Doc]]:
        path = self.root / SETTINGS_FILE
        if not path.exists():
            return Settings(), []
        parsed = self.read(SETTINGS_FILE)
        if isinstance(parsed, YamlFileError):
            return Settings(), []  # reported when the file is read again with the others
        docs = [_Doc(SETTINGS_FILE, d) for d in parsed if is_ours(d.data)]
        for d in docs:
            if d.kind == "Settings" and self.check(d):
                return self.build_settings(d), docs
        return Settings(), docs

    def load(self) -> LoadResult:
        settings, _ = self.settings()
        files, skipped = yaml_files(self.root, settings.ignore)
        self.col.items.extend(skipped)
        parsed = {rel: self.read(rel) for rel in files}
        ours: list[_Doc] = []
        for rel, result in parsed.items():
            if isinstance(result, list):
                ours.extend(_Doc(rel, d) for d in result if is_ours(d.data))
        data_paths = referenced_paths(self.root, ((d.rel, d.data) for d in ours
                                                  if d.kind == "Solution"))
        manifests: list[_Doc] = []
        manifest_files: list[str] = []
        for rel, result in parsed.items():
            if under(rel, data_paths):
                continue
            if isinstance(result, YamlFileError):
                self.col.add(rel, result.line, "", "", result.message)
                continue
            mine = [d for d in result if is_ours(d.data)]
            foreign = [d for d in result if not is_ours(d.data)]
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
                    why = looks_like_ours(d.data)
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
                          frozenset(data_paths), self.fingerprints)

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
        if self.cache is None:
            return self._check(d)
        found = self.cache.checked(d.doc)
        if found is not None:
            self.col.items.extend(found[1])
            return found[0]
        mark = len(self.col.items)
        ok = self._check(d)
        self.cache.remember(d.doc, ok, tuple(self.col.items[mark:]))
        return ok

    def _check(self, d: _Doc) -> bool:
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
            hint = closest(str(kind), KINDS, 0.6)
            self.col.add(d.rel, d.doc.line_of(("kind",)), d.obj, "kind",
                         f"unknown kind '{kind}'" + (f" (did you mean '{hint}'?)" if hint else
                                                     f"; known kinds: {', '.join(KINDS)}"))
            return False
        # a quick yes first (fast_schema); cerberus has the last word and words the findings
        schema = self.schemas[kind]
        if conforms(data, schema):
            return not d.doc.duplicates
        validator = self.validators[kind]
        # no schema here defaults, coerces or renames, so normalizing would only cost time
        # (it copies the schema for every nested mapping: most of the loader's run time)
        if validator.validate(data, normalize=False):
            return not d.doc.duplicates
        for path, message in schema_errors(validator._errors, schema):
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
        by_kind: dict[str, dict[str, Any]] = {"Site": sites, "Target": targets,
                                              "Solution": solutions, "Instance": instances}
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
            if d.kind == "Settings":
                settings_docs += 1
                if d.rel != SETTINGS_FILE:
                    self.col.add(d.rel, d.doc.line, d.obj, "",
                                 f"Settings must be in {SETTINGS_FILE} at the repository root")
                elif settings_docs > 1:
                    self.col.add(d.rel, d.doc.line, d.obj, "", "only one Settings is allowed")
                continue
            built = self.built(d)
            if built is not None:
                by_kind[d.kind][d.name] = built
            elif d.kind == "Solution":
                broken.add((d.kind, d.name))
        self.fingerprints = {key: self.fingerprint(d) for key, d in seen.items()}
        return Fleet(self.root, settings, sites, targets, solutions, instances,
                     frozenset(broken), build_projects(seen.values()))

    def built(self, d: _Doc) -> Site | Target | Solution | Instance | None:
        """The object a checked document of a kind besides Settings makes (None: a Solution
        with a problem), its findings added; once per parsed document with a cache."""
        if self.cache is None:
            return self.build_one(d)
        if (found := self.cache.built(d.doc)) is not None:
            self.col.items.extend(found[1])
            made: Site | Target | Solution | Instance | None = found[0]
            return made
        mark = len(self.col.items)
        made = self.build_one(d)
        self.cache.remember_built(d.doc, made, tuple(self.col.items[mark:]))
        return made

    def build_one(self, d: _Doc) -> Site | Target | Solution | Instance | None:
        meta = d.data["metadata"]
        labels = dict(meta.get("labels") or {})
        spec = d.data.get("spec") or {}
        src = d.source()
        if d.kind == "Site":
            return Site(d.name, labels, spec.get("parent"), dict(spec.get("params") or {}),
                        {k: dict(v or {}) for k, v in (spec.get("solutionParams") or {}).items()},
                        src, spec.get("description", ""), self.windows(d, spec),
                        bool(spec.get("suspend", False)))
        if d.kind == "Target":
            bindings = tuple(Binding(b["role"], b["provider"], dict(b.get("config") or {}))
                             for b in spec.get("bindings") or [])
            return Target(d.name, labels, spec["site"], dict(spec.get("params") or {}),
                          bindings, src, spec.get("description", ""), self.windows(d, spec),
                          bool(spec.get("suspend", False)))
        if d.kind == "Solution":
            return self.build_solution(d, labels, spec, src)
        if d.kind == "Instance":
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
            return Instance(
                d.name, labels, spec["solution"], spec.get("version"),
                tuple(tsel.get("names") or ()), selector, spec.get("profile"),
                dict(spec.get("params") or {}), bool(spec.get("suspend", False)), src,
                spec.get("onFailure", "rollback"), self.windows(d, spec),
                self.rollout(d, spec))
        return None  # another kind of ours: its document is kept for the projects

    def fingerprint(self, d: _Doc) -> bytes:
        digest = self.digests.get(d.rel, b"")
        return hashlib.blake2b(digest + str(d.doc.line).encode(), digest_size=16).digest() \
            if digest else b""

    def windows(self, d: _Doc, spec: Mapping[str, Any]) -> tuple[Window, ...]:
        """The document's ``spec.windows``; a window with a problem (a schedule cron cannot
        read, an unknown time zone) is reported and left out."""
        out: list[Window] = []
        for index, raw in enumerate(spec.get("windows") or ()):
            problems = window_problems(raw)
            for fld, message in problems:
                self.col.add(d.rel, d.doc.line_of(("spec", "windows", index, fld)), d.obj,
                             f"spec.windows[{index}].{fld}", message)
            if not problems:
                out.append(parse_window(raw))
        return tuple(out)

    def rollout(self, d: _Doc, spec: Mapping[str, Any]) -> Rollout | None:
        """The Instance's ``spec.rollout``; None when it has none or it has a problem
        (reported: the instance is then invalid and nothing of its change moves)."""
        raw = spec.get("rollout")
        if raw is None:
            return None
        problems = rollout_problems(raw)
        for fld, message in problems:
            path = ("spec", "rollout", *split_field(fld))
            self.col.add(d.rel, d.doc.line_of(path), d.obj, f"spec.rollout.{fld}", message)
        return None if problems else parse_rollout(raw)

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
                    for _, message in schema_errors(check._errors, {}):
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


def load_fleet(root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
               cache: DocumentCache | None = None) -> LoadResult:
    """Read every manifest under ``root``; bad content becomes diagnostics, never exceptions.

    ``cache`` (the plan's, across revisions): files parsed and documents checked before are
    taken from it, with the same findings."""
    with bulk_allocation():
        return _Loader(root, max_bytes, cache).load()
