"""The project declarations as some commits hold them, read in bulk and kept per tree.

``reconciler.gitops.tenancy`` needs, for the commits a check starts from and for every commit
that changes ``projects/``, the Project documents in that commit's ``projects/`` directory.
Declarations rarely change, so they are kept by the object name of that directory's tree:
one ``git cat-file --batch-check`` names the trees of all the commits asked about, a
``git cat-file --batch`` per directory level reads the trees not seen yet, one more reads
their YAML files. Each document is checked against the Project schema, as the loader checks
it; a document that fails it is left out (its project then owns nothing at that commit, so
its paths fall to the platform project, which owns the declarations in any case).
"""

from __future__ import annotations

from collections.abc import Iterable

import cerberus
import yaml

from reconciler.core.model import API_VERSION, Source
from reconciler.core.projects import DECLARATIONS_DIR, Ownership, Project, parse_project
from reconciler.core.schemas import document_schema
from reconciler.gitops.gitrun import Git

__all__ = ["Declarations"]

_MAX_BYTES = 4 * 1024 * 1024
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Declarations:
    """Ownership by commit, through the tree of the commit's ``projects/`` directory."""

    def __init__(self, git: Git) -> None:
        self.git = git
        self._tree_of: dict[str, str] = {}  # commit -> tree of projects/ ("": none)
        self._ownership: dict[str, Ownership] = {"": Ownership({})}
        self._schema = cerberus.Validator(document_schema("Project"))

    def load(self, commits: Iterable[str]) -> None:
        """Read the declarations of ``commits`` that are not known yet."""
        wanted = sorted({c for c in commits if c not in self._tree_of})
        if not wanted:
            return
        lines = "".join(f"{c}:{DECLARATIONS_DIR}\n" for c in wanted).encode()
        out = self.git.run("cat-file", "--batch-check", input=lines,
                           context="reading project declarations").text.splitlines()
        for commit, line in zip(wanted, out, strict=True):
            words = line.split()
            self._tree_of[commit] = words[0] if len(words) == 3 and words[1] == "tree" else ""
        self._read_trees({t for t in self._tree_of.values() if t not in self._ownership})

    def tree(self, commit: str) -> str:
        """The tree of ``commit``'s declarations ("" for none); :meth:`load` first."""
        if commit not in self._tree_of:
            self.load([commit])
        return self._tree_of[commit]

    def ownership(self, tree: str) -> Ownership:
        """The declarations of one tree."""
        if tree not in self._ownership:
            self._read_trees({tree})
        return self._ownership[tree]

    def _read_trees(self, roots: set[str]) -> None:
        if not roots:
            return
        files: dict[str, list[tuple[str, str]]] = {root: [] for root in roots}
        level = [(root, root, DECLARATIONS_DIR) for root in sorted(roots)]
        while level:
            contents = self.git.read_blobs({tree for _, tree, _ in level},
                                           context="reading project declarations")
            below: list[tuple[str, str, str]] = []
            for root, tree, prefix in level:
                for mode, name, oid in _entries(contents[tree], len(tree) // 2):
                    path = f"{prefix}/{name}"
                    if mode == "40000":
                        below.append((root, oid, path))
                    elif mode.startswith("100") and name.endswith((".yaml", ".yml")):
                        files[root].append((path, oid))
            level = below
        blobs = self.git.read_blobs({oid for found in files.values() for _, oid in found},
                                    context="reading project declarations")
        for root, found in files.items():
            projects: dict[str, Project] = {}
            for path, oid in sorted(found):
                for project in self._projects(path, blobs[oid]):
                    projects.setdefault(project.name, project)
            self._ownership[root] = Ownership(projects)

    def _projects(self, path: str, data: bytes) -> list[Project]:
        if len(data) > _MAX_BYTES:
            return []
        try:
            documents = list(yaml.load_all(data.decode("utf-8"), Loader=_Loader))
        except (yaml.YAMLError, UnicodeDecodeError):
            return []
        found = []
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION \
                    or doc.get("kind") != "Project":
                continue
            if not self._schema.validate(doc, normalize=False):
                continue
            found.append(parse_project(doc["metadata"]["name"], doc["spec"], Source(path, 0),
                                       doc["metadata"].get("labels")))
        return found


def _entries(tree: bytes, width: int) -> Iterable[tuple[str, str, str]]:
    """(mode, name, object name) of each entry of a raw tree object."""
    pos = 0
    while pos < len(tree):
        space = tree.index(b" ", pos)
        nul = tree.index(b"\0", space)
        oid = tree[nul + 1:nul + 1 + width].hex()
        yield (tree[pos:space].decode(), tree[space + 1:nul].decode("utf-8", "surrogateescape"),
               oid)
        pos = nul + 1 + width
