"""Documents read and schema-checked once per file content, for loading several revisions.

The offline plan loads two revisions of one repository, which share nearly every file. A
:class:`DocumentCache` passed to :func:`reconciler.core.loading.load_fleet` keeps each YAML
file parsed by the digest of its content (and its path: a document's findings name the file),
each parsed document's schema check (its result and its findings), and the object the loader
made of it (a Site, a Target ..., with the findings made on the way): a file unchanged from
one revision to the next is neither parsed, nor checked, nor built again. Parsed documents
and what is made of them are shared, never changed, by the fleets built from them.

Each document also gets a *fingerprint*: a digest of its file's path and content and of its
place in the file. Two documents with equal fingerprints build equal objects with equal
sources (lines included); :mod:`reconciler.core.placement_memo` keys placements on them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.yamlio import YamlDocument, YamlFileError, read_documents

__all__ = ["DocumentCache", "Parsed", "file_digest", "read_file"]

Parsed = list[YamlDocument] | YamlFileError


def file_digest(rel: str, raw: bytes) -> bytes:
    return hashlib.blake2b(rel.encode() + b"\0" + raw, digest_size=16).digest()


def read_file(root: Path, rel: str, max_bytes: int) -> tuple[Parsed, bytes]:
    """The documents of one file (or why it cannot be read) and the digest of its path and
    content (empty when it cannot be read or is over the size limit)."""
    path = root / rel
    digest = b""
    try:
        if path.stat().st_size <= max_bytes:
            digest = file_digest(rel, path.read_bytes())
    except OSError:
        pass
    try:
        return read_documents(path, max_bytes=max_bytes), digest
    except YamlFileError as exc:
        return exc, digest


class DocumentCache:
    """Parsed files by digest, and schema checks by parsed document (see the module)."""

    def __init__(self) -> None:
        self._files: dict[bytes, Parsed] = {}
        # id of a parsed document -> (the document, kept alive; passed; findings)
        self._checks: dict[int, tuple[YamlDocument, bool, tuple[Diagnostic, ...]]] = {}
        # id of a checked document -> (the document, kept alive; the object the loader made
        # of it, a value never changed; findings)
        self._built: dict[int, tuple[YamlDocument, Any, tuple[Diagnostic, ...]]] = {}

    def read(self, root: Path, rel: str, max_bytes: int) -> tuple[Parsed, bytes]:
        path = root / rel
        try:
            raw = path.read_bytes() if path.stat().st_size <= max_bytes else None
        except OSError:
            raw = None
        if raw is None:  # reported by read_documents, as without a cache
            return read_file(root, rel, max_bytes)
        digest = file_digest(rel, raw)
        found = self._files.get(digest)
        if found is None:
            try:
                found = read_documents(path, max_bytes=max_bytes)
            except YamlFileError as exc:
                found = exc
            self._files[digest] = found
        return found, digest

    def built(self, doc: YamlDocument) -> tuple[Any, tuple[Diagnostic, ...]] | None:
        """What the loader made of a checked document, and the findings it made them with."""
        found = self._built.get(id(doc))
        return None if found is None else (found[1], found[2])

    def remember_built(self, doc: YamlDocument, made: Any,
                       findings: tuple[Diagnostic, ...]) -> None:
        self._built[id(doc)] = (doc, made, findings)

    def checked(self, doc: YamlDocument) -> tuple[bool, tuple[Diagnostic, ...]] | None:
        found = self._checks.get(id(doc))
        return None if found is None else (found[1], found[2])

    def remember(self, doc: YamlDocument, ok: bool, findings: tuple[Diagnostic, ...]) -> None:
        self._checks[id(doc)] = (doc, ok, findings)
