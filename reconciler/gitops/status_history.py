"""The status history of one target, from the status branches of a clone.

Used by ``reconciler history --target``. Every commit of a status branch that changed the
target's status file is one entry, newest first, with what the file said after that commit
(a commit that deleted it says nothing: phase ``?``). The cost does not grow with the
history: one ``git for-each-ref``, one ``git log --raw`` (which names the blob of each
change) and one ``git cat-file --batch`` for every blob at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.errors import ReconcilerError
from reconciler.gitops.gitrun import Git

__all__ = ["StatusChange", "target_history"]

# where status branches live in a clone: pushed by a site (a bare remote), fetched from one
_REFS = ("refs/heads/reconciler-status", "refs/remotes", "refs/heads/reconciler-fleet-status")
# the empty tree, by object name length (SHA-1, SHA-256): diffed against a branch's tree it
# lists every file of the branch
_EMPTY_TREE = {40: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
               64: "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"}


@dataclass(frozen=True)
class StatusChange:
    """One commit that changed a target's status file, and what the file said after it."""

    commit: str
    date: str  # committer date, ISO 8601
    phase: str
    revision: str  # the applied revision, shortened to 12 characters
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"commit": self.commit, "date": self.date, "phase": self.phase,
                "revision": self.revision, "message": self.message}


def target_history(git_dir: Path, target: str, *, clone: str) -> list[StatusChange]:
    """Every change of ``target``'s status on the status branches of the clone whose git
    directory is ``git_dir``, newest first. :class:`ReconcilerError` when the clone has no
    status branches or none of them has a status of ``target`` (naming ``clone`` and the
    targets that come close)."""
    git = Git(git_dir)
    trees: dict[str, str] = {}  # status branch -> its tree, in for-each-ref's order
    for line in git.run("for-each-ref", "--format=%(refname) %(tree)", *_REFS).text \
            .splitlines():
        ref, _, tree = line.partition(" ")
        if "reconciler-status/" in ref or ref.endswith("reconciler-fleet-status"):
            trees[ref] = tree
    if not trees:
        raise ReconcilerError("no status branches in this clone (git fetch origin "
                              "'refs/heads/reconciler-status/*:refs/remotes/origin/"
                              "reconciler-status/*')", reason="NoStatusBranches")
    log = git.run("log", "--format=@%H %cI", "--raw", "--no-abbrev", *trees, "--",
                  f":(glob)status/**/{target}.yaml").stdout.decode("utf-8", "replace")
    changes: list[tuple[str, str, str]] = []  # (commit, date, blob after the commit)
    commit = date = ""
    for line in log.splitlines():
        if line.startswith("@"):
            commit, date = line[1:].split(" ", 1)
        elif line.startswith(":"):  # ":<mode> <mode> <blob before> <blob after> <change>"
            changes.append((commit, date, line.split("\t", 1)[0].split()[3]))
    if not log.strip():
        raise ReconcilerError(f"no target '{target}' on the status branches of {clone}"
                              f"{_did_you_mean(git, target, trees.values())}",
                              reason="NoSuchTarget")
    contents = git.read_blobs({blob for _, _, blob in changes if blob.strip("0")})
    return [_change(commit, date, contents.get(blob, b"")) for commit, date, blob in changes]


def _change(commit: str, date: str, raw: bytes) -> StatusChange:
    try:
        doc: Any = yaml.safe_load(raw.decode("utf-8", "replace")) or {}
    except yaml.YAMLError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    return StatusChange(commit=commit, date=date, phase=str(doc.get("phase", "?")),
                        revision=str(doc.get("appliedRevision", ""))[:12],
                        message=str(doc.get("message", "")))


def _did_you_mean(git: Git, target: str, trees: Iterable[str]) -> str:
    """`` (did you mean a, b?)`` from the targets with a status file at the branches' tips."""
    pairs = "".join(f"{_EMPTY_TREE.get(len(tree), '')} {tree}\n" for tree in trees if tree)
    listed = git.run("diff-tree", "--stdin", "-r", "--name-only", "--", "status/",
                     input=pairs.encode()).stdout.decode("utf-8", "replace")
    known = {Path(line).stem for line in listed.splitlines() if line.startswith("status/")}
    near = difflib.get_close_matches(target, sorted(known), n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""
