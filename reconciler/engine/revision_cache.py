"""Validated revisions kept on disk by commit id, so that a new process (``sync --once`` from
a timer, a restarted daemon) does not load, check and render an unchanged revision again.

A commit id names the repository's content exactly; what else a validation depended on is
recorded with its report and checked before the report is used:

* the program and the checks (the *context*): this file format, the program's version, the
  size and time of every module file of the program and of its providers, the versions of
  Python and of the libraries the checks use, the installed providers, the site's local
  policy and its secrets directory. A report made in another context is not used;
* the secrets the validation tried to read: none could be read (a revision whose validation
  read a secret value is not written to disk at all: the value is in its placements), and
  each must still be unreadable with the same error;
* the releases instances pinned: the tags of each solution looked up must be what they were
  (the same names naming the same objects), and the checkouts of the releases rendered are
  exported again when they were pruned.

One file per revision, ``<state dir>/revisions/<commit>.report``, written atomically: a magic
line, a header line (JSON: format, version, context digest, commit, recorded inputs, payload
length, MAC) and the payload, a pickle of the :class:`~reconciler.core.validation.Report`.
The MAC (HMAC-SHA256 over the header and the payload) is keyed with
``<state dir>/revisions/key`` (32 random bytes, made on first use, mode 0600); a key file that
is not a regular file of this user that no one else may read turns the cache off, so a file
written by someone who cannot read the key is never unpickled. The payload is unpickled only
after its MAC verifies, and then only into an allow-list of classes (:mod:`.revision_pickle`):
the dataclasses and enums of ``reconciler.core``, paths and times; a report holding anything
else is not written. Anything wrong with a file (missing, truncated, another format or
context, a bad MAC, inputs changed, a class that no longer loads) means the revision is
validated as if there were no file, and the file is written anew. Files of revisions no
longer in use are removed when a new one is written. Used by
:class:`~reconciler.engine.revisions.RevisionReader`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import structlog

import reconciler
from reconciler.core.errors import ConfigError
from reconciler.core.provider_api import LocalPolicy
from reconciler.core.registry import ProviderRegistry
from reconciler.core.secrets import secret_file
from reconciler.core.statefiles import write_atomic
from reconciler.engine.revision_pickle import dump_report, load_report

if TYPE_CHECKING:
    from reconciler.core.model import Solution
    from reconciler.core.validation import Report

__all__ = ["FORMAT", "Inputs", "RecordingReleases", "RecordingSecrets", "RevisionCache",
           "context_digest", "secret_digest"]

FORMAT = 1
_MAGIC = b"reconciler-revision\n"
_SUFFIX = ".report"
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # sha1 or sha256
_log = structlog.get_logger(__name__)


@dataclass
class Inputs:
    """What a validation read besides its commit: secret name -> digest of why it could not
    be read ("error:...") or "value" when it was; solution -> digest of its release tags
    (when a pinned release of it was looked up); and the commits of the release checkouts
    its placements render from."""

    secrets: dict[str, str] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)
    checkouts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"secrets": self.secrets, "releases": self.releases,
                "checkouts": self.checkouts}

    @classmethod
    def from_json(cls, raw: object) -> Inputs | None:
        """The inputs a header recorded; None when they are not well formed."""
        if not isinstance(raw, Mapping):
            return None
        found_secrets, releases, checkouts = (raw.get("secrets"), raw.get("releases"),
                                              raw.get("checkouts"))
        if not (_str_map(found_secrets) and _str_map(releases) and isinstance(checkouts, list)
                and all(isinstance(c, str) and _COMMIT.fullmatch(c) for c in checkouts)):
            return None
        return cls(dict(found_secrets), dict(releases), [str(c) for c in checkouts])


def _str_map(value: object) -> TypeGuard[dict[str, str]]:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RecordingSecrets:
    """A secret resolver that notes what it was asked for (for :class:`Inputs`)."""

    def __init__(self, reader: Callable[[Mapping[str, Any]], str], inputs: Inputs) -> None:
        self.reader = reader
        self.inputs = inputs

    def __call__(self, value: Mapping[str, Any]) -> str:
        name = secret_file(value)
        try:
            text = self.reader(value)
        except ConfigError as exc:
            self.inputs.secrets[name] = "error:" + _digest(exc.message)
            raise
        self.inputs.secrets[name] = "value"  # never its digest: the file is not written
        return text


def secret_digest(reader: Callable[[Mapping[str, Any]], str], name: str) -> str:
    """What :class:`RecordingSecrets` would note for secret ``name`` now."""
    try:
        reader({"secretFrom": {"file": name}})
    except ConfigError as exc:
        return "error:" + _digest(exc.message)
    return "value"


class RecordingReleases:
    """A release lookup that notes which solutions' releases were looked up."""

    def __init__(self, lookup: Callable[[str, str], Solution | str], inputs: Inputs,
                 tags: Callable[[Collection[str]], dict[str, str]]) -> None:
        self.lookup = lookup
        self.inputs = inputs
        self.tags = tags

    def __call__(self, solution: str, version: str) -> Solution | str:
        if solution not in self.inputs.releases:
            # before the lookup: a tag made in between is then seen as a change next time
            self.inputs.releases.update(self.tags([solution]))
        return self.lookup(solution, version)


# libraries whose behaviour is part of a validation's outcome (schemas, templates, windows)
_LIBRARIES = ("cerberus", "jinja2", "yaml", "apscheduler", "semver", "ruamel.yaml")


def context_digest(registry: ProviderRegistry, policy: LocalPolicy,
                   secrets_dir: Path | None) -> str:
    """What, besides the commit and the recorded inputs, decides a validation's outcome."""
    roots = {Path(reconciler.__file__).parent}
    for cls in registry.providers.values():
        module = sys.modules.get(getattr(cls, "__module__", ""))
        if module is not None and getattr(module, "__file__", None):
            roots.add(Path(str(module.__file__)).parent)
    described = {
        "format": FORMAT, "version": reconciler.__version__, "python": sys.version,
        "code": [_files(root) for root in sorted(roots)],
        "libraries": {name: _file_of(name) for name in _LIBRARIES},
        "providers": sorted(f"{name}={getattr(cls, '__module__', '')}."
                            f"{getattr(cls, '__qualname__', '')}"
                            for name, cls in registry.providers.items()),
        "failures": sorted(registry.failures.items()),
        "policy": {f.name: _canonical(getattr(policy, f.name)) for f in fields(policy)},
        "secrets": str(secrets_dir) if secrets_dir else None,
    }
    return _digest(json.dumps(described, sort_keys=True))


def _files(root: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every module file under ``root``: a changed program."""
    out: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    info = os.stat(path)
                    out.append((path, info.st_size, info.st_mtime_ns))
    return out


def _file_of(module: str) -> tuple[str, int, int] | None:
    """(path, size, mtime) of a library's module file, found without importing it."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            info = os.stat(spec.origin)
            return spec.origin, info.st_size, info.st_mtime_ns
    return None


def _canonical(value: object) -> object:
    """``value`` as JSON data that is the same in every process (sets sorted)."""
    if isinstance(value, frozenset | set):
        return sorted(str(v) for v in value)
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return None if value is None else str(value)


class RevisionCache:
    """The validated revisions of one state directory (see the module docstring)."""

    def __init__(self, directory: Path, context: str) -> None:
        self.directory = directory
        self.context = context
        self._key: bytes | None = None
        self._off = False

    def path(self, commit: str) -> Path:
        return self.directory / f"{commit}{_SUFFIX}"

    def load(self, commit: str, still: Callable[[Inputs], bool]) -> Report | None:
        """The report of ``commit`` if a valid file has it and ``still(inputs)`` says what
        its validation read is unchanged; None otherwise (never raises)."""
        try:
            with open(self.path(commit), "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        key = self.key()
        if key is None:
            return None
        try:
            found = self._verified(data, key, commit)
            if found is None:
                return None
            inputs, offset = found
            if not still(inputs):
                _log.info("revision_cache_stale", revision=commit[:12])
                return None
            return load_report(data, offset=offset)
        except Exception as exc:  # a file of an older program, a class that moved
            _log.info("revision_cache_unusable", revision=commit[:12],
                      error=f"{type(exc).__name__}: {exc}")
            return None

    def _verified(self, data: bytes, key: bytes, commit: str) -> tuple[Inputs, int] | None:
        """The inputs of a file whose header matches and whose MAC verifies, and where in
        ``data`` its payload begins (it is not copied out: it is most of the file)."""
        if not data.startswith(_MAGIC):
            return None
        header_end = data.find(b"\n", len(_MAGIC))
        if header_end < 0:
            return None
        header = json.loads(data[len(_MAGIC):header_end])
        offset = header_end + 1
        if (not isinstance(header, dict) or header.get("format") != FORMAT
                or header.get("version") != reconciler.__version__
                or header.get("context") != self.context or header.get("commit") != commit
                or header.get("length") != len(data) - offset):
            return None
        with memoryview(data) as view:
            expected = _mac(key, header, view[offset:])
        if not hmac.compare_digest(expected, str(header.get("mac", ""))):
            _log.warning("revision_cache_rejected", revision=commit[:12],
                         why="its MAC does not verify")
            return None
        inputs = Inputs.from_json(header.get("inputs"))
        return (inputs, offset) if inputs is not None else None

    def store(self, commit: str, report: Report, inputs: Inputs, keep: Collection[str]) -> None:
        """Write the file of ``commit`` and remove those of revisions not in ``keep``; a
        failure is logged (the cache saves time, it is never a reason to fail a run).

        A revision whose validation read a secret value is not written: its placements hold
        the value (in parameters, and rendered into properties in any form a template gave
        it), and secret values stay only where components put them."""
        if "value" in inputs.secrets.values():
            return
        key = self.key()
        if key is None:
            return
        try:
            payload = dump_report(report)
            header: dict[str, Any] = {"format": FORMAT, "version": reconciler.__version__,
                                      "context": self.context, "commit": commit,
                                      "inputs": inputs.to_json(), "length": len(payload)}
            header["mac"] = _mac(key, header, payload)
            write_atomic(self.path(commit), _MAGIC + json.dumps(header, sort_keys=True)
                         .encode() + b"\n" + payload)
            wanted = {f"{c}{_SUFFIX}" for c in (*keep, commit)}
            for old in self.directory.glob(f"*{_SUFFIX}"):
                if old.name not in wanted:
                    old.unlink(missing_ok=True)
        except Exception as exc:
            _log.warning("revision_cache_write_failed", revision=commit[:12],
                         error=f"{type(exc).__name__}: {exc}")

    def key(self) -> bytes | None:
        """The MAC key, made on first use; None (the cache off) when it cannot be trusted."""
        if self._key is not None or self._off:
            return self._key
        path = self.directory / "key"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, secrets.token_bytes(32))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                info = os.fstat(fd)
                key = os.read(fd, 64)
            finally:
                os.close(fd)
        except OSError as exc:
            self._disable(f"cannot use {path}: {exc.strerror or exc}")
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() \
                or stat.S_IMODE(info.st_mode) & 0o077 or len(key) != 32:
            self._disable(f"{path} is not a 32-byte file of this user that only it may read "
                          "(mode 0600)")
            return None
        self._key = key
        return key

    def _disable(self, why: str) -> None:
        _log.warning("revision_cache_off", why=why)
        self._off = True


def _mac(key: bytes, header: Mapping[str, Any], payload: bytes | memoryview) -> str:
    """The MAC of the header (without the MAC) and the payload: over the header's JSON, a
    newline and the payload (fed in parts: the payload is not copied)."""
    fields = {k: v for k, v in header.items() if k != "mac"}
    mac = hmac.new(key, json.dumps(fields, sort_keys=True).encode() + b"\n", hashlib.sha256)
    mac.update(payload)
    return mac.hexdigest()
