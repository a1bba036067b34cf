"""Roles at the site: which of a project's members may change its solutions, and who may set
its parameters on instances (``roles.solutions``, ``roles.parameters``; docs/tenancy.md).

``reconciler.gitops.tenancy`` hands over every (commit, path) whose signer is a member of the
path's project but is not named by one of that project's roles. For those only, the file
before and after the commit is read (one ``git cat-file --batch`` for all of them) and
classified:

* a file that holds only Instance documents, before and after, is about deployments: any
  member may change it, but a change of an instance's ``params`` or ``profile`` needs a
  member whom ``roles.parameters`` allows at level ``instance``;
* anything else in the project's paths — Solution documents (their components and parameter
  schema), the templates, manifests, charts and scripts they use — is solution content and
  needs a member named in ``roles.solutions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.core.model import API_VERSION
from reconciler.core.projects import Project
from reconciler.gitops.gitrun import Git

__all__ = ["RoleQuestion", "needs_role_check", "role_problems"]

_MAX_BYTES = 4 * 1024 * 1024
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class RoleQuestion:
    """May ``member`` of ``project`` make the change ``commit`` makes to ``path``?"""

    commit: str
    parent: str | None
    path: str
    project: Project
    member: str


def needs_role_check(project: Project, member: str) -> bool:
    """Whether a role of ``project`` leaves ``member`` out (else any change is theirs)."""
    return not project.platform and (not project.may_author_solutions(member)
                                     or not project.may_set_parameters(member, "instance"))


def _read(git: Git, specs: Sequence[str]) -> dict[str, bytes | None]:
    """Contents of ``<rev>:<path>`` specs; None for what does not exist or is not a file."""
    if not specs:
        return {}
    out = git.run("cat-file", "--batch", input="".join(f"{s}\n" for s in specs).encode(),
                  context="reading changed files").stdout
    found: dict[str, bytes | None] = {}
    pos = 0
    for spec in specs:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        if len(header) == 3 and header[1] in (b"blob", b"tree", b"commit", b"tag"):
            size = int(header[2])
            found[spec] = out[eol + 1:eol + 1 + size] if header[1] == b"blob" else None
            pos = eol + 1 + size + 1
        else:  # "<spec> missing" / "ambiguous"
            found[spec] = None
            pos = eol + 1
    return found


def _instances(path: str, data: bytes | None) -> Mapping[str, Any] | None:
    """Instance name -> (params, profile) when the file holds only Instance documents (an
    absent file holds none); None when it holds anything else."""
    if data is None:
        return {}
    if not path.endswith((".yaml", ".yml")) or len(data) > _MAX_BYTES:
        return None
    try:
        documents = [d for d in yaml.load_all(data.decode("utf-8"), Loader=_Loader)
                     if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    found: dict[str, Any] = {}
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION \
                or doc.get("kind") != "Instance":
            return None
        meta, spec = doc.get("metadata"), doc.get("spec")
        name = meta.get("name") if isinstance(meta, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        found[str(name)] = (spec.get("params"), spec.get("profile"))
    return found


def role_problems(git: Git, questions: Iterable[RoleQuestion]) -> list[tuple[RoleQuestion,
                                                                             str]]:
    """Each question whose answer is no, with the reason."""
    asked = list(questions)
    specs = sorted({s for q in asked for s in (f"{q.commit}:{q.path}",
                                               *([f"{q.parent}:{q.path}"] if q.parent else []))
                    if "\n" not in s})
    contents = _read(git, specs)
    problems: list[tuple[RoleQuestion, str]] = []
    for q in asked:
        before = _instances(q.path, contents.get(f"{q.parent}:{q.path}") if q.parent else None)
        after = _instances(q.path, contents.get(f"{q.commit}:{q.path}"))
        project = q.project
        if before is None or after is None:
            if not project.may_author_solutions(q.member):
                problems.append((q, f"{q.member} may not change project '{project.name}''s "
                                 f"solutions (roles.solutions: "
                                 f"{', '.join(project.solution_authors or ()) or 'none'})"))
            continue
        changed = any((before.get(name) or (None, None)) != (after.get(name) or (None, None))
                      for name in set(before) | set(after))
        if changed and not project.may_set_parameters(q.member, "instance"):
            allowed = sorted({m for role in project.parameter_roles or ()
                              if "instance" in role.levels for m in role.members})
            problems.append((q, f"{q.member} may not set project '{project.name}''s parameters "
                             f"on instances (roles.parameters at level instance: "
                             f"{', '.join(allowed) or 'nobody'})"))
    return problems
