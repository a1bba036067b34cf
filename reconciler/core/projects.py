"""Projects: the tenants of one fleet repository, their bounds, members and roles.

A ``Project`` document (docs/tenancy.md) lives under ``projects/`` at the repository root::

    apiVersion: reconciler/v1
    kind: Project
    metadata: {name: line-ops}
    spec:
      paths: [teams/line-ops/**]          # repository paths it owns (globs)
      sites: [eu/berlin]                  # site subtrees its instances may target
      providers: [file, kubernetes]       # providers its instances may use
      namespaces: [line-ops]              # Kubernetes namespaces they may use
      fileRoots: [/srv/line-ops]          # roots the file provider may write under for them
      members:                            # who signs its commits
        - {name: alice, ssh: "ssh-ed25519 AAAA... alice@laptop"}
        - {name: bob, openpgp: 7D45392F6C5A398D2D16C869044EFC4376C9DCDB}
      roles:
        solutions: [alice]                # may change its solutions (and their schema)
        parameters:                       # may set its parameter values, at these levels
          - {members: [bob], levels: [line, instance]}
        approvers: [alice]                # may approve its instances' rollout waves

One project has ``platform: true``: it owns the fleet-level files (``reconciler.yaml``, the
hierarchy, everything under ``projects/``) and every path no other project claims. A bound
left out does not bound (no ``providers``: any provider); no Project at all: no tenancy.

This module holds the values, their schema, path ownership and the site policy narrowed to a
project; the cross-document checks are :mod:`reconciler.core.checks.projects`, the site-side
check of signed history is :mod:`reconciler.gitops.tenancy`. Values are built leniently from
a document that passed the schema: a malformed key or glob is kept as written, reported by the
checks, and never matches anything.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.core.provider_api import LocalPolicy

if TYPE_CHECKING:
    from reconciler.core.model import Source

__all__ = ["DECLARATIONS_DIR", "FLEET_FILES", "NO_PLATFORM", "PROJECT_SCHEMA", "Member",
           "Ownership", "ParameterRole", "Project", "build_projects", "fingerprint_problem",
           "glob_claims", "glob_problem", "is_fleet_level", "normalize_ssh_key", "parse_project",
           "project_policy", "ssh_key_problem"]

DECLARATIONS_DIR = "projects"  # where Project documents live, at the repository root
FLEET_FILES = ("reconciler.yaml",)  # fleet-level files besides the declarations
# the owner of fleet-level paths when no project says ``platform: true``: a name no project
# can have, with no members, so that nobody may change them
NO_PLATFORM = "(platform)"

_DNS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_MEMBER = r"^[A-Za-z0-9]([-A-Za-z0-9_.@+]*[A-Za-z0-9])?$"
_STRINGS: dict[str, Any] = {"type": "list", "schema": {"type": "string", "empty": False}}
_ONE_OR_MORE: dict[str, Any] = {"type": ["string", "list"], "empty": False,
                                "schema": {"type": "string", "empty": False}}
_NAMES: dict[str, Any] = {"type": "list", "schema": {"type": "string", "regex": _MEMBER}}

PROJECT_SCHEMA: dict[str, Any] = {
    "platform": {"type": "boolean"},
    "description": {"type": "string"},
    "paths": _STRINGS,
    "sites": _STRINGS,
    "providers": _STRINGS,
    "namespaces": {"type": "list", "schema": {"type": "string", "regex": _DNS}},
    "fileRoots": _STRINGS,
    "members": {"type": "list", "schema": {"type": "dict", "schema": {
        "name": {"type": "string", "required": True, "regex": _MEMBER, "maxlength": 100},
        "ssh": _ONE_OR_MORE,
        "openpgp": _ONE_OR_MORE,
        "description": {"type": "string"},
    }}},
    "roles": {"type": "dict", "schema": {
        "solutions": _NAMES,
        "parameters": {"type": "list", "schema": {"type": "dict", "schema": {
            "members": {**_NAMES, "required": True},
            "levels": {"type": "list", "required": True, "minlength": 1,
                       "schema": {"type": "string", "regex": _DNS}},
        }}},
        "approvers": _NAMES,
    }},
}

_SSH_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
})
_FINGERPRINT = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")


def normalize_ssh_key(text: str) -> str | None:
    """``"<type> <base64>"`` of an SSH public key line (comment dropped), None when the line
    is not a public key whose encoded type matches its written type."""
    parts = text.split()
    if len(parts) < 2 or parts[0] not in _SSH_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    size = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4:4 + size].decode("ascii", "replace") != parts[0]:
        return None
    return f"{parts[0]} {parts[1]}"


def ssh_key_problem(text: str) -> str | None:
    if normalize_ssh_key(text) is not None:
        return None
    return (f"{text[:40]!r} is not an SSH public key (expected '<type> <base64> [comment]' "
            f"with a type among {', '.join(sorted(_SSH_TYPES))})")


def _fingerprint(text: str) -> str:
    return "".join(text.split()).upper()


def fingerprint_problem(text: str) -> str | None:
    if _FINGERPRINT.match(_fingerprint(text)):
        return None
    return (f"{text!r} is not an OpenPGP fingerprint (40 hexadecimal digits, or 64 for a "
            "version 5 key; a short key id is not enough)")


def glob_problem(pattern: str) -> str | None:
    """What is wrong with a ``paths`` glob, or None."""
    if pattern.startswith("/") or "\\" in pattern:
        return f"{pattern!r}: a path glob is relative to the repository root, with '/'"
    if ".." in PurePosixPath(pattern).parts:
        return f"{pattern!r}: '..' is not allowed in a path glob"
    return None


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """The regex of a ``paths`` glob: ``*`` and ``?`` stay inside one path segment, ``**``
    spans segments, and a pattern that matches a directory owns everything under it."""
    if glob_problem(pattern) is not None:
        return None
    parts = [p for p in pattern.strip("/").split("/") if p not in ("", ".")]
    while len(parts) > 1 and parts[-1] == "**":  # a/** owns what a owns: a, and all below
        parts.pop()
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        text = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                       for c in part)
        out.append(text if last else text + "/")
    body = "".join(out)
    return re.compile(f"^{body}(?:/.*)?$") if body else None


def glob_claims(pattern: str, path: str) -> bool:
    """Whether one ``paths`` glob matches ``path`` (or a directory above it)."""
    regex = _glob_regex(pattern)
    return regex is not None and regex.match(path) is not None


def is_fleet_level(path: str) -> bool:
    """Whether ``path`` always belongs to the platform project: the Settings file and the
    project declarations."""
    return path in FLEET_FILES or path == DECLARATIONS_DIR \
        or path.startswith(DECLARATIONS_DIR + "/")


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@dataclass(frozen=True)
class Member:
    """A person (or a robot) who signs commits for a project."""

    name: str
    ssh: tuple[str, ...] = ()  # public key lines, as written
    openpgp: tuple[str, ...] = ()  # primary key fingerprints, as written

    @cached_property
    def ssh_keys(self) -> frozenset[str]:
        """The valid SSH keys, as ``"<type> <base64>"``."""
        return frozenset(k for k in map(normalize_ssh_key, self.ssh) if k is not None)

    @cached_property
    def fingerprints(self) -> frozenset[str]:
        """The valid OpenPGP fingerprints, upper case without blanks."""
        return frozenset(_fingerprint(f) for f in self.openpgp
                         if fingerprint_problem(f) is None)


@dataclass(frozen=True)
class ParameterRole:
    """Members who may set a project's parameter values at some levels (hierarchy level
    names, ``instance``, ``target``)."""

    members: tuple[str, ...]
    levels: tuple[str, ...]


@dataclass(frozen=True)
class Project:
    name: str
    source: Source
    platform: bool = False
    paths: tuple[str, ...] = ()
    sites: tuple[str, ...] | None = None  # site subtrees; None: any site
    providers: frozenset[str] | None = None  # None: any provider
    namespaces: frozenset[str] | None = None  # None: any namespace
    file_roots: tuple[str, ...] | None = None  # None: any root the site allows
    members: tuple[Member, ...] = ()
    solution_authors: tuple[str, ...] | None = None  # roles.solutions; None: every member
    parameter_roles: tuple[ParameterRole, ...] | None = None  # None: anyone, any level
    approvers: tuple[str, ...] | None = None  # roles.approvers; None: every member
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @cached_property
    def _globs(self) -> tuple[re.Pattern[str], ...]:
        return tuple(r for r in map(_glob_regex, self.paths) if r is not None)

    def claims(self, path: str) -> bool:
        """Whether one of its ``paths`` globs matches ``path`` (or a directory above it)."""
        return any(glob.match(path) for glob in self._globs)

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def member_by_key(self, ssh_key: str | None = None,
                      fingerprints: Iterable[str] = ()) -> Member | None:
        """The member who holds an SSH key (``"<type> <base64>"``) or one of the OpenPGP
        ``fingerprints`` (upper case), if any."""
        wanted = frozenset(fingerprints)
        return next((m for m in self.members
                     if (ssh_key is not None and ssh_key in m.ssh_keys)
                     or m.fingerprints & wanted), None)

    @property
    def parameter_levels(self) -> frozenset[str] | None:
        """Levels at which its parameter values may be set at all (None: everywhere)."""
        if self.parameter_roles is None:
            return None
        return frozenset(level for role in self.parameter_roles for level in role.levels)

    def may_author_solutions(self, member: str) -> bool:
        return self.solution_authors is None or member in self.solution_authors

    def may_set_parameters(self, member: str, level: str) -> bool:
        return self.parameter_roles is None or any(
            member in role.members and level in role.levels for role in self.parameter_roles)

    def may_approve(self, member: str) -> bool:
        return self.member(member) is not None and (self.approvers is None
                                                    or member in self.approvers)


def parse_project(name: str, spec: Mapping[str, Any], source: Source,
                  labels: Mapping[str, str] | None = None) -> Project:
    """The project of a document that passed :data:`PROJECT_SCHEMA`."""
    roles = spec.get("roles") or {}

    def optional(key: str, raw: Mapping[str, Any] = spec) -> tuple[str, ...] | None:
        return tuple(raw[key]) if key in raw and raw[key] is not None else None

    providers, namespaces = optional("providers"), optional("namespaces")
    parameters = roles.get("parameters")
    return Project(
        name=name, source=source, platform=bool(spec.get("platform", False)),
        paths=tuple(spec.get("paths") or ()), sites=optional("sites"),
        providers=frozenset(providers) if providers is not None else None,
        namespaces=frozenset(namespaces) if namespaces is not None else None,
        file_roots=optional("fileRoots"),
        members=tuple(Member(m["name"], _strings(m.get("ssh")), _strings(m.get("openpgp")))
                      for m in spec.get("members") or ()),
        solution_authors=optional("solutions", roles),
        parameter_roles=None if parameters is None else tuple(
            ParameterRole(tuple(r["members"]), tuple(r["levels"])) for r in parameters),
        approvers=optional("approvers", roles),
        labels=dict(labels or {}), description=str(spec.get("description", "")))


class _Document(Protocol):
    """What :func:`build_projects` reads of a loaded document."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def data(self) -> Any: ...
    def source(self) -> Source: ...


def build_projects(documents: Iterable[_Document]) -> dict[str, Project]:
    """The projects among documents that passed their schema (the loader's)."""
    return {d.name: parse_project(d.name, d.data.get("spec") or {}, d.source(),
                                  (d.data.get("metadata") or {}).get("labels"))
            for d in documents if d.kind == "Project"}


class Ownership:
    """Which project owns each repository path, under one set of declarations."""

    def __init__(self, projects: Mapping[str, Project]) -> None:
        self.projects = projects
        platforms = sorted(n for n, p in projects.items() if p.platform)
        self.platform = platforms[0] if platforms else NO_PLATFORM

    @property
    def active(self) -> bool:
        """Whether any project is declared (no projects: no tenancy, nothing is owned)."""
        return bool(self.projects)

    def claims(self, path: str) -> tuple[str, ...]:
        """The projects whose ``paths`` match ``path``, by name."""
        return tuple(sorted(n for n, p in self.projects.items() if p.claims(path)))

    def owners(self, path: str) -> tuple[str, ...]:
        """Who owns ``path``: the platform for fleet-level files and paths no project
        claims, else every project that claims it (one, unless declarations overlap)."""
        if not self.projects:
            return ()
        if is_fleet_level(path):
            return (self.platform,)
        return self.claims(path) or (self.platform,)

    def project_of(self, path: str) -> Project | None:
        """The one project that owns ``path`` (None: none declared, or an overlap)."""
        owners = self.owners(path)
        return self.projects.get(owners[0]) if len(owners) == 1 else None


def project_policy(policy: LocalPolicy, project: Project) -> LocalPolicy:
    """The site's local policy narrowed to ``project``'s bounds, for the providers of its
    instances: what neither the site nor the project allows is refused at apply time too
    (a namespace inside a Kubernetes manifest, say). A relative file root resolves under
    the site's state directory, as a binding's does; one the site does not allow is dropped."""
    providers, namespaces = policy.allowed_providers, policy.namespaces
    if project.providers is not None:
        providers = project.providers if providers is None else providers & project.providers
    if project.namespaces is not None:
        namespaces = project.namespaces if namespaces is None \
            else namespaces & project.namespaces
    roots = policy.file_roots
    if project.file_roots is not None:
        resolved = [policy.resolve(r) for r in project.file_roots]
        roots = tuple(r for r in resolved if r is not None and policy.allows_path(r))
    return replace(policy, allowed_providers=providers, namespaces=namespaces,
                   file_roots=roots)
