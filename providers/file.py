"""The built-in ``file`` provider: rendered files written atomically under a site-allowed root.

Registered as the ``file`` entry point of ``reconciler.providers``; the core constructs one
instance per Target binding (``config: {root: /abs/dir}``) and revision, keeps it for the runs
that enforce that revision, and calls it per component, in the order described in
``reconciler.provider_api``.

Component properties::

    path: conf/app.ini        # relative to the binding's root, must stay under it
    content: "..."            # inline, already templated by the core   } exactly one
    template: files/app.ini   # a repository file, rendered here        }
    mode: "0644"              # octal string or int, default 0644

Decisions an operator can rely on:

* Content that is a string is written as-is (UTF-8). Any other value (a whole-value template
  such as ``${{ params.limits }}`` keeps its type) is written as JSON with a trailing newline.
* Drift is detected by SHA-256 of the bytes on disk and by the permission bits. Every observe
  reads and hashes the file (once); what it is compared with (path, digest, mode) is worked
  out once per component and revision. The path is checked to stay under the root then, and
  again before every write and every diff shown; in between, each observe pass looks at the
  root and the directories on the way (an ``lstat`` each per run), so one swapped for a
  symlink is checked again at once. The health check that follows an in-sync observe uses
  that observation (one ``lstat`` says the file is still the one hashed) instead of reading
  the file again.
* A file is only ever removed (on delete, or when a component's ``path`` moved) when it is
  still a regular file at the recorded path *and* its hash equals the one we recorded. A file
  changed by hand since we wrote it is kept and delete raises ``PermanentError`` (reason
  ``PruneConflict``), so the inventory keeps the entry and a human decides; a moved file's
  old copy that was changed by hand is left in place with a warning. Symlinks are never
  followed when removing. Parent directories are removed only when we created them and they
  are empty, never the root itself.
* Files are written through a temporary file next to them, renamed over the old one. A write
  killed half-way leaves that temporary file (``.reconciler-tmp.<16 hex>.<name>.tmp``); the
  first provider built for a root in a process removes such leftovers under the root, and only
  those: a user's file that merely looks similar, a symlink, or a temporary file another live
  process is still writing is kept (``write_atomic`` and ``remove_leftovers`` of the
  provider contract).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import structlog

from reconciler.provider_api import (
    Component,
    Health,
    HealthReport,
    LocalPolicy,
    Observation,
    PermanentError,
    PolicyError,
    Problem,
    ProviderContext,
    Record,
    remove_leftovers,
    render_text,
    write_atomic,
)

from ._paths import is_regular_file, map_os_error, relative_path_problem, repo_file

__all__ = ["FileProvider"]

_CONFIG_KEYS = frozenset({"root"})
_PROPERTY_KEYS = frozenset({"path", "content", "template", "mode"})
_DEFAULT_MODE = 0o644
_MODE_TEXT = re.compile(r"^0?[0-7]{3}$")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIFF_LIMIT = 64 * 1024  # characters of diff kept for a plan; beyond that a summary suffices

_log = structlog.get_logger(__name__)
# roots (resolved) whose leftovers this process has removed already; see FileProvider._sweep
_SWEPT: set[str] = set()
_SWEPT_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Desired:
    """One component's file as it should be on disk."""

    path: Path
    data: bytes
    sha256: str
    mode: int


class _Kept(NamedTuple):
    """What observe needs of a component's desired file, kept while the provider lives."""

    component: Component  # kept, so that its id is not reused while this lives
    where: str  # the path, checked to stay under the root
    digest: bytes  # SHA-256 of the content
    mode: int
    # the resolved root and each directory between it and the file: none was a symlink
    # when the path was checked, and observe makes sure none has become one
    checked: tuple[str, ...]


class _Seen(NamedTuple):
    """An in-sync observation, for the health call that follows it."""

    digest: bytes
    signature: tuple[int, ...]


# the answers of an idle run, the same every time
_IN_SYNC = Observation(exists=True, in_sync=True)
_HEALTHY = HealthReport(Health.HEALTHY)


def _parse_mode(value: Any) -> tuple[int | None, str | None]:
    """(mode, problem): ints as given (YAML ``0644`` is already octal), strings as octal."""
    if isinstance(value, bool):
        return None, "must be an octal string such as \"0644\""
    if isinstance(value, int):
        if 0 <= value <= 0o777:
            return value, None
        return None, (f"{value} is not a file mode (at most 0777, no setuid/setgid/sticky "
                      "bits); write it as an octal string such as \"0644\"")
    if isinstance(value, str) and _MODE_TEXT.match(value):
        return int(value, 8), None
    return None, f"{value!r} is not an octal mode such as \"0644\" (at most 0777)"


def _encode(content: Any, what: str) -> bytes:
    if isinstance(content, str):
        return content.encode("utf-8")
    try:
        return (json.dumps(content, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"{what}: content cannot be written as JSON: {exc}") from None


def _secret_values(component: Component) -> list[str]:
    values = []
    for name in component.secret_params:
        value = component.params.get(name)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if text:
            values.append(text)
    return values


# (checkout, solution directory, name) -> (template text, its path in the repository): a
# checkout is one commit's files, so a template is found and read once however many
# components and targets render it
_TEMPLATES: dict[tuple[Path, Path, str], tuple[str, str]] = {}
# one int object per file mode for the components kept (0644 is not among Python's small ints)
_MODES: dict[int, int] = {}
_TEMPLATES_KEPT = 4096


class FileProvider:
    """Rendered files written atomically under a root the site allows; drift by content hash.

    Writes one file per component under the binding's ``root``.
    """

    name: ClassVar[str] = "file"
    untemplated: ClassVar[frozenset[str]] = frozenset()
    path_properties: ClassVar[frozenset[str]] = frozenset({"template"})
    # an instance lives as long as its binding's revision is enforced, one per target
    __slots__ = ("_context", "_directories", "_first", "_known", "_observed",
                 "_resolved_root", "_root", "_seen", "_sound")

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        policy = context.policy
        raw = config.get("root")
        root = policy.resolve(raw) if isinstance(raw, str) and raw and "\0" not in raw \
            else None
        # resolved once here, held to the policy by the check, again before every write
        real = Path(os.path.realpath(root)) if root is not None else None
        problems = self._config_problems(config, policy, real)
        if problems:
            text = "; ".join(f"{p.field}: {p.message}" for p in problems)
            message = f"file provider of binding {context.binding!r} on {context.target}: {text}"
            if any("local policy" in p.message for p in problems):
                raise PolicyError(message)
            raise PermanentError(message, reason="InvalidConfig")
        if root is None or real is None:
            raise PermanentError(f"file provider of binding {context.binding!r} on "
                                 f"{context.target}: root: relative root without a site "
                                 "state directory", reason="InvalidConfig")
        self._root = root
        self._resolved_root = real  # see _contained
        self._known: dict[int, _Kept] = {}  # see _desired
        self._directories: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._seen: dict[str, _Seen] = {}  # see health
        self._first = 0  # see _moved_out
        self._observed = 0
        self._sound: set[str] = set()
        self._context = context
        self._sweep()

    @property
    def _log(self) -> Any:
        """The provider's logger, bound when it logs (seldom: not kept with the instance)."""
        return _log.bind(provider=self.name, target=self._context.target,
                         binding=self._context.binding)

    # ---- validation (pure) ----------------------------------------------------------------

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        return cls._config_problems(config, policy, None)

    @classmethod
    def _config_problems(cls, config: Mapping[str, Any], policy: LocalPolicy,
                         real: Path | None) -> list[Problem]:
        """The problems of ``config``; ``real``: its root resolved already, when it is."""
        problems = [Problem(key, "unknown setting of the file provider (known: root)")
                    for key in sorted(set(config) - _CONFIG_KEYS)]
        root = config.get("root")
        if root is None:
            problems.append(Problem("root", "is required: the directory files are written under"))
        elif not isinstance(root, str) or not root or "\0" in root:
            problems.append(Problem("root", "must be a non-empty string"))
        elif not Path(root).is_absolute() and ".." in Path(root).parts:
            problems.append(Problem("root", f"{root!r}: a relative root (resolved under the "
                                            "site's state directory) must not contain '..'"))
        elif (resolved := policy.resolve(root)) is not None and not (
                policy.allows_path(resolved) if real is None else policy.allows_resolved(real)):
            allowed = ", ".join(str(r) for r in policy.file_roots) or "none"
            problems.append(Problem("root", f"the local policy does not allow writing under "
                                            f"{resolved} (allowed file roots: {allowed})"))
        return problems

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        problems = [Problem(key, "unknown property of a file component (known: content, mode, "
                                 "path, template)")
                    for key in sorted(set(properties) - _PROPERTY_KEYS)]
        if "path" not in properties:
            problems.append(Problem("path", "is required: where to write, relative to the root"))
        else:
            problem = relative_path_problem(properties["path"], allow_parent=False)
            if problem is not None:
                problems.append(Problem("path", problem))
        has_content, has_template = "content" in properties, "template" in properties
        if has_content == has_template:
            problems.append(Problem("content", "exactly one of content and template is required"))
        if has_template:
            problem = relative_path_problem(properties["template"], allow_parent=True)
            if problem is not None:
                problems.append(Problem("template", problem))
        if "mode" in properties:
            _, problem = _parse_mode(properties["mode"])
            if problem is not None:
                problems.append(Problem("mode", problem))
        return problems

    # ---- the provider calls --------------------------------------------------------------

    def observe(self, component: Component, record: Record | None) -> Observation:
        known = self._known.get(id(component))
        kept = known if known is not None and known.component is component \
            else self._kept(component)
        if self._moved_out(component, kept):
            # a directory on the way became a symlink since the path was checked: check it
            # again from the root down (PolicyError when it now leads outside)
            self._desired(component, fresh=True)
            kept = self._known[id(component)]
        info, data = self._look(kept.where, component)
        if info is not None and data is not None:
            digest = hashlib.sha256(data).digest()
            moved_from = record.data.get("path") if record is not None else None
            if digest == kept.digest and stat.S_IMODE(info.st_mode) == kept.mode and (
                    moved_from is None or moved_from == kept.where):
                if isinstance(moved_from, str) and moved_from is not kept.where:
                    # one copy of the path for the daemon to keep: the inventory's
                    kept = self._known[id(component)] = kept._replace(where=moved_from)
                # the health call that follows an in-sync observe uses this, not the file
                self._seen[kept.where] = _Seen(digest, _signature(info))
                return _IN_SYNC
        # not in sync: what to show is worked out afresh, the path checked from the root
        return self._difference(component, record, info, data)

    def _difference(self, component: Component, record: Record | None,
                    info: os.stat_result | None, data: bytes | None) -> Observation:
        """The observation of a component found out of sync (``info`` and ``data``: what
        observe found at the path it kept, None when nothing or not a regular file)."""
        kept = self._known[id(component)]
        desired = self._desired(component, fresh=True)
        rel = component.properties["path"]
        if str(desired.path) != kept.where:  # the path resolves elsewhere now: look there
            info, data = self._look(str(desired.path), component)
        if info is None:
            diff = self._diff(component, b"", desired.data, rel, created=True)
            return Observation(exists=False, in_sync=False, diff=diff,
                               message=f"{desired.path} does not exist")
        if data is None:
            return Observation(exists=True, in_sync=False,
                               message=f"{desired.path} exists but is not a regular file")
        notes = []
        moved_from = record.data.get("path") if record is not None else None
        if moved_from is not None and moved_from != str(desired.path):
            notes.append(f"path changed from {moved_from} to {desired.path}")
        mode = stat.S_IMODE(info.st_mode)
        if mode != desired.mode:
            notes.append(f"mode {mode:04o} -> {desired.mode:04o}")
        diff = ""
        if hashlib.sha256(data).hexdigest() != desired.sha256:
            notes.append("content differs")
            diff = self._diff(component, data, desired.data, rel, created=False)
        return Observation(exists=True, in_sync=not notes, diff=diff,
                           message="; ".join(notes))

    def apply(self, component: Component, record: Record | None) -> Record:
        # a write checks the path from the root down, whatever was checked before
        desired = self._desired(component, fresh=True)
        what = f"component {component.key}: writing {component.properties['path']}"
        self._seen.pop(str(desired.path), None)
        created = self._make_parents(desired.path.parent, what)
        self._write(desired, what)
        dirs = set(created)
        if record is not None:
            old_dirs = [Path(d) for d in record.data.get("dirs", ())]
            dirs.update(str(d) for d in old_dirs if desired.path.is_relative_to(d))
            old = record.data.get("path")
            if old is not None and old != str(desired.path):
                self._prune(record, component.key, strict=False)
        self._log.info("file_written", component=component.key, path=str(desired.path),
                       sha256=desired.sha256, mode=f"{desired.mode:04o}")
        # the record shares the path string observe keeps (inventories stay in memory)
        where = self._known[id(component)].where
        return Record(provider=self.name, binding=self._context.binding, data={
            "path": where, "sha256": desired.sha256, "mode": desired.mode,
            "dirs": sorted(dirs), "component": component.key,
        })

    def delete(self, record: Record) -> None:
        self._seen.pop(str(record.data.get("path", "")), None)
        self._prune(record, str(record.data.get("component", "?")), strict=True)

    def health(self, component: Component, record: Record) -> HealthReport:
        where = str(record.data.get("path", ""))
        seen = self._seen.pop(where, None)
        if seen is not None:
            # observe hashed this very file a moment ago and found it in sync: one lstat
            # says it is still that file (same inode, size, times, mode), so it is not read
            # and hashed again; anything else about it reads it afresh below
            try:
                same = _signature(os.stat(where, follow_symlinks=False)) == seen.signature
            except OSError:
                same = False
            if same:
                if seen.digest.hex() != record.data.get("sha256"):
                    return HealthReport(Health.DEGRADED,
                                        f"{where} was changed since it was written")
                return _HEALTHY
        path = Path(where)
        if not is_regular_file(path):
            return HealthReport(Health.DEGRADED, f"{path} is missing or not a regular file")
        try:
            current = path.read_bytes()
        except OSError as exc:
            return HealthReport(Health.DEGRADED, f"{path} cannot be read: {exc.strerror}")
        if hashlib.sha256(current).hexdigest() != record.data.get("sha256"):
            return HealthReport(Health.DEGRADED, f"{path} was changed since it was written")
        return _HEALTHY

    # ---- helpers -------------------------------------------------------------------------

    def _desired(self, component: Component, *, fresh: bool = False) -> _Desired:
        """The component's file as it should be: its path (checked to stay under the root,
        which is resolved again when ``fresh``), content and mode.

        What observe needs of it is kept (:meth:`_kept`): what a component renders to is a
        pure function of the component (its revision's checkout, properties and context),
        and an instance of this provider serves one revision of one binding. The content
        itself is not kept: it is rendered again when it is written or shown in a diff.
        """
        props = component.properties
        rel = props.get("path")
        what = f"component {component.key}: path"
        problem = relative_path_problem(rel, allow_parent=False)
        if problem is not None:
            raise PermanentError(f"{what}: {problem}")
        path, root, parents = self._contained(str(rel), what, fresh=fresh)
        mode, problem = _parse_mode(props.get("mode", _DEFAULT_MODE))
        if mode is None:
            raise PermanentError(f"component {component.key}: mode: {problem}")
        if "template" in props:
            data = self._render_template(component, str(props["template"]))
        else:
            data = _encode(props.get("content"), f"component {component.key}")
        digest = hashlib.sha256(data)
        directory = str(root)
        dirs = [directory]
        for part in parents:
            directory = f"{directory}/{part}" if directory != "/" else f"/{part}"
            dirs.append(directory)
        checked = tuple(dirs)
        # the files of a directory share one tuple
        checked = self._directories.setdefault(checked, checked)
        self._known[id(component)] = _Kept(component, str(path), digest.digest(),
                                           _MODES.setdefault(mode, mode), checked)
        return _Desired(path, data, digest.hexdigest(), mode)

    def _kept(self, component: Component) -> _Kept:
        """What observe needs of the component's desired file (see :meth:`_desired`)."""
        known = self._known.get(id(component))
        if known is None or known.component is not component:
            self._desired(component)
            known = self._known[id(component)]
        return known

    def _moved_out(self, component: Component, kept: _Kept) -> bool:
        """True when the root or a directory between it and the file is now a symlink.

        Each directory is looked at (one lstat) once per pass over the components. The
        executor observes each component at most once per run, in an order the revision
        fixes, so a run begins with the component that began the last one: a pass ends
        there, or after as many observes as there are components, whichever comes first.
        So the files of one directory share its lstat in a run, and every run looks again.
        """
        if id(component) == self._first or self._observed >= len(self._known):
            self._first, self._observed = id(component), 0
            self._sound.clear()
        self._observed += 1
        for directory in kept.checked:
            if directory in self._sound:
                continue
            try:
                if stat.S_ISLNK(os.lstat(directory).st_mode):
                    return True
            except OSError:
                continue  # missing: the file is missing too, which observe reports
            self._sound.add(directory)
        return False

    def _look(self, path: str,
              component: Component) -> tuple[os.stat_result | None, bytes | None]:
        """The file at ``path`` (its lstat, None when there is none) and its bytes, read
        once; a file that is not a regular one (a symlink, never followed) is not read."""
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise map_os_error(exc, f"component {component.key}: reading "
                                    f"{component.properties['path']}") from None
        if not stat.S_ISREG(info.st_mode):
            return info, None
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as exc:
            raise map_os_error(exc, f"component {component.key}: reading {path}") from None
        try:
            data = os.read(fd, info.st_size + 1)
            if len(data) != info.st_size:  # it changed size since, or a short read: all
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            raise map_os_error(exc, f"component {component.key}: reading {path}") from None
        finally:
            os.close(fd)
        return info, data

    def _contained(self, rel: str, what: str, *,
                   fresh: bool = False) -> tuple[Path, Path, tuple[str, ...]]:
        """``contained(root, rel)``, the resolved root, and the directories between them
        (names, from the root down). The root is resolved (and held to the local policy)
        once per provider instance (in ``__init__``), and again when ``fresh``.

        Resolving the root again for each of its files (``Path.resolve`` lstat()s every
        component of the path) was about a third of the time a no-op run spent observing
        files. ``rel`` has passed ``relative_path_problem`` already, so it is relative and
        free of NUL bytes.
        """
        if fresh:
            resolved = Path(os.path.realpath(self._root))
            if resolved != self._resolved_root and not self._context.policy.allows_path(
                    resolved):
                raise PolicyError(f"{what}: the root {self._root} now resolves to {resolved}, "
                                  "which the local policy does not allow writing under")
            self._resolved_root = resolved
        base = self._resolved_root
        # the parts Path(base, rel) would have below base: "." and empty names dropped
        parts = [part for part in rel.split("/") if part and part != "."]
        if parts and ".." not in parts and not _any_symlink(str(base), parts):
            # what resolve() returns when no component below the resolved root is a
            # symlink: the path itself (two lstat() calls instead of a dozen)
            return base.joinpath(*parts), base, tuple(parts[:-1])
        try:
            resolved = (base / rel).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise PermanentError(f"{what}: {rel!r} cannot be resolved: {exc}") from None
        if resolved == base or not resolved.is_relative_to(base):
            raise PolicyError(f"{what}: {rel!r} resolves to {resolved}, outside {base}")
        return resolved, base, resolved.parent.relative_to(base).parts

    def _render_template(self, component: Component, template: str) -> bytes:
        key = (component.repo_root, component.base_dir, template)
        found = _TEMPLATES.get(key)
        if found is None:
            what = f"component {component.key}: template"
            source = repo_file(component.base_dir, component.repo_root, template, what=what)
            try:
                text = source.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise PermanentError(f"{what}: {template} is not UTF-8 text") from None
            except OSError as exc:
                raise map_os_error(exc, what) from None
            rel = source.relative_to(component.repo_root.resolve()).as_posix()
            if len(_TEMPLATES) >= _TEMPLATES_KEPT:
                _TEMPLATES.clear()
            found = _TEMPLATES[key] = (text, rel)
        text, rel = found
        return render_text(text, component.template_context, source=rel).encode("utf-8")

    def _diff(self, component: Component, old: bytes, new: bytes, rel: str, *,
              created: bool) -> str:
        secrets = _secret_values(component)
        old_text = old.decode("utf-8", errors="replace")
        new_text = new.decode("utf-8", errors="replace")
        if any(secret in old_text or secret in new_text for secret in secrets):
            # show the difference with every secret value masked
            for secret in sorted(secrets, key=len, reverse=True):
                old_text, new_text = old_text.replace(secret, "***"), new_text.replace(
                    secret, "***")
            if old_text == new_text:
                return "content differs only in secret values (not shown)"
        lines = difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
            fromfile="/dev/null" if created else f"a/{rel}", tofile=f"b/{rel}")
        diff = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in lines)
        if len(diff) > _DIFF_LIMIT:
            diff = diff[:_DIFF_LIMIT] + f"\n[diff truncated: {len(diff)} characters in all]\n"
        return diff

    def _make_parents(self, parent: Path, what: str) -> list[str]:
        """Create the missing directories between the root and ``parent``; return them."""
        missing = []
        current = parent
        while not current.exists():
            missing.append(current)
            current = current.parent
        created = []
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o755)
                # mkdir's mode is narrowed by the umask; the contract is 0755 like any /etc dir
                os.chmod(directory, 0o755)  # noqa: S103
            except FileExistsError:
                continue  # made concurrently by another writer: not ours to remove later
            except OSError as exc:
                raise map_os_error(exc, what) from None
            created.append(str(directory))
        if not current.is_dir():
            raise PermanentError(f"{what}: {current} exists but is not a directory")
        return created

    def _write(self, desired: _Desired, what: str) -> None:
        """Write via a temp file in the same directory, so readers never see half a file."""
        try:
            write_atomic(desired.path, desired.data, mode=desired.mode)
        except OSError as exc:
            raise map_os_error(exc, what) from None

    def _sweep(self) -> None:
        """Remove what writes killed half-way left under the root (see the module docstring).

        Once per root and process: leftovers come only from a process that died, so a
        daemon's start is the moment. Another daemon's write in progress is left alone.
        """
        root = str(self._resolved_root)
        with _SWEPT_LOCK:
            if root in _SWEPT:
                return
            _SWEPT.add(root)
        removed = remove_leftovers(Path(root), depth=-1)
        if removed:
            self._log.info("leftover_files_removed", root=root,
                           files=[str(p) for p in removed])

    def _prune(self, record: Record, key: str, *, strict: bool) -> None:
        """Remove the recorded file if it is still what we wrote (see the module docstring)."""
        raw = record.data.get("path")
        if not raw:
            return
        path = Path(str(raw))
        what = f"file {path} (component {key})"
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            self._remove_dirs(path.parent, record)
            return
        except OSError as exc:
            raise map_os_error(exc, what) from None
        current = None
        if stat.S_ISREG(info.st_mode):
            with contextlib.suppress(OSError):
                current = hashlib.sha256(path.read_bytes()).hexdigest()
        if current is None or current != record.data.get("sha256"):
            kind = "changed since it was written" if stat.S_ISREG(info.st_mode) else (
                "no longer a regular file")
            if strict:
                raise PermanentError(f"{what} is {kind}; it was not removed: remove it by "
                                     "hand or restore its content", reason="PruneConflict")
            self._log.warning("file_prune_skipped", path=str(path), component=key, why=kind)
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise map_os_error(exc, f"removing {what}") from None
        _fsync_dir(path.parent)
        self._remove_dirs(path.parent, record)
        self._log.info("file_removed", path=str(path), component=key)

    def _remove_dirs(self, directory: Path, record: Record) -> None:
        """Remove empty directories we created, from ``directory`` up, never the root."""
        ours = {str(d) for d in record.data.get("dirs", ())}
        root = self._root.resolve()
        while directory != root and directory.is_relative_to(root) and str(directory) in ours:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): it holds something else
            directory = directory.parent


def _any_symlink(base: str, parts: Sequence[str]) -> bool:
    """True when a component of ``base/parts...`` below ``base`` is a symlink.

    A component that cannot be looked at (missing, not a directory) counts as no symlink,
    as ``os.path.realpath`` counts it.
    """
    current = base
    for part in parts:
        current = os.path.join(current, part)
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return True
        except OSError:
            continue
    return False


def _signature(info: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced, written or chmod-ed (``git``'s stat check)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
            info.st_mode)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink durable: a power cut must not bring back the old file."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself happened
    finally:
        os.close(fd)
