"""The commits of a range of history, what each changes, and which commits a merge brings in.

Read for ``reconciler.gitops.tenancy`` with two ``git log`` calls whatever the size of the
range: one lists every commit in ``old..new`` (parents before children) with its parents and
the paths it changes against its first parent (every path of a root commit; renames as a
deletion and an addition, so both owners are asked); the second, only when the range holds
merges, lists for each merge the paths that differ from *every* parent (``--diff-merges=
combined``): what the merge itself wrote, as opposed to what it took unchanged from one side.

Which commits a merge brings in — those of the range that its other parents reach and its
first parent does not — is worked out from the parents with one bit set per commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.core.errors import VerificationError
from reconciler.gitops.gitrun import Git

__all__ = ["Commit", "History", "read_history", "resolve"]

# settings of the repository's own config that would change what git log prints
_QUIET = ("-c", "log.showSignature=false", "-c", "log.showRoot=true", "-c", "core.quotePath=false")


@dataclass(frozen=True)
class Commit:
    oid: str
    parents: tuple[str, ...]
    paths: tuple[str, ...]  # changed against the first parent (every path of a root commit)
    own: frozenset[str] = frozenset()  # a merge: paths that differ from every parent

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


class History:
    """The commits of one range, parents before children."""

    def __init__(self, commits: Sequence[Commit]) -> None:
        self.commits = commits
        self.index = {c.oid: i for i, c in enumerate(commits)}
        self._ancestors: list[int] | None = None
        self._touched: dict[str, int] | None = None

    def _bits(self) -> tuple[list[int], dict[str, int]]:
        if self._ancestors is None or self._touched is None:
            ancestors: list[int] = []
            touched: dict[str, int] = {}
            for i, commit in enumerate(self.commits):
                bits = 1 << i
                for parent in commit.parents:
                    j = self.index.get(parent)
                    if j is not None:
                        bits |= ancestors[j]
                ancestors.append(bits)
                for path in commit.paths:
                    touched[path] = touched.get(path, 0) | (1 << i)
            self._ancestors, self._touched = ancestors, touched
        return self._ancestors, self._touched

    def brought_in(self, merge: Commit) -> int:
        """The commits of the range a merge brings in, as bits of their indexes."""
        ancestors, _ = self._bits()
        first = self.index.get(merge.parents[0])
        mainline = ancestors[first] if first is not None else 0
        side = 0
        for parent in merge.parents[1:]:
            j = self.index.get(parent)
            if j is not None:
                side |= ancestors[j]
        return side & ~mainline

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        """Whether ``ancestor`` is ``commit`` or one of its ancestors (both in the range)."""
        ancestors, _ = self._bits()
        return bool(ancestors[self.index[commit]] >> self.index[ancestor] & 1)

    def touched_by(self, path: str, commits: int) -> bool:
        """Whether one of ``commits`` (bits) changed ``path``."""
        _, touched = self._bits()
        return bool(touched.get(path, 0) & commits)

    def members(self, bits: int) -> list[Commit]:
        """The commits of a set of bits, in order."""
        found: list[Commit] = []
        i = 0
        while bits:
            if bits & 1:
                found.append(self.commits[i])
            bits >>= 1
            i += 1
        return found


def resolve(git: Git, *revisions: str) -> list[str]:
    """The full object names of commits; :class:`VerificationError` when one is not a
    commit of the repository."""
    for rev in revisions:
        if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
            raise VerificationError(f"commit {rev[:12]!r}: not a valid revision name")
    done = git.run("rev-parse", *(f"{r}^{{commit}}" for r in revisions),
                   check=False, context="tenancy check")
    names = done.text.split()
    if done.returncode != 0 or len(names) != len(revisions):
        raise VerificationError(f"commits {', '.join(r[:12] for r in revisions)}: not all are "
                                f"commits of {git.name}")
    return names


def _records(out: bytes) -> list[tuple[list[str], list[str]]]:
    """(header words, paths) of each commit of ``git log -z --format=%x01...--name-only``."""
    records: list[tuple[list[str], list[str]]] = []
    for chunk in out.decode("utf-8", "surrogateescape").split("\x01")[1:]:
        header, _, rest = chunk.partition("\0")
        if rest.startswith("\n"):
            rest = rest[1:]
        records.append((header.split(), [p for p in rest.split("\0") if p]))
    return records


def read_history(git: Git, old: str | None, new: str) -> History:
    """The commits reachable from ``new`` and not from ``old`` (every one with no ``old``)."""
    limit = [new, "--not", old] if old else [new]
    common = ["-z", "--no-renames", "--name-only", *limit, "--"]
    out = git.run(*_QUIET, "log", "--topo-order", "--reverse", "--format=%x01%H %P",
                  "--diff-merges=first-parent", *common, context="reading new commits").stdout
    commits = [Commit(words[0], tuple(words[1:]), tuple(paths))
               for words, paths in _records(out)]
    if any(c.is_merge for c in commits):
        out = git.run(*_QUIET, "log", "--merges", "--format=%x01%H",
                      "--diff-merges=combined", *common, context="reading merges").stdout
        own = {words[0]: frozenset(paths) for words, paths in _records(out) if words}
        commits = [Commit(c.oid, c.parents, c.paths, own.get(c.oid, frozenset()))
                   if c.is_merge else c for c in commits]
    return History(commits)
