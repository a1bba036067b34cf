"""Build status commits in the publisher's bare repository with git plumbing.

:class:`StatusRepo` is the status publisher's view of its repository (see
``reconciler.gitops.status_push``): it writes files as blobs, builds the tree of a status
commit from a base tree with the publisher's directories replaced, makes commits and moves
refs atomically. There is no work tree and no checkout: a tree is built in a private
temporary index. Every git call runs through the project's git runner
(``reconciler.gitops.gitrun``), which also carries the calls to the server made by
``reconciler.gitops.status_remote``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from reconciler.gitops.gitrun import Git, GitResult

__all__ = ["ZERO", "StatusRepo"]

ZERO = "0" * 40  # git's name for "no object": a ref that must not exist yet


class StatusRepo:
    """Local plumbing on the status branch ``branch`` of the repository ``runner`` runs in;
    ``remote_url`` is the server that calls with ``network=True`` talk to."""

    def __init__(self, runner: Git, *, remote_url: str, branch: str) -> None:
        self.runner = runner
        self.remote_url = remote_url
        self.branch = branch

    def git(
        self, *args: str, input: bytes = b"", check: bool = True,
        index: Path | None = None, network: bool = False,
    ) -> GitResult:
        # only calls to the server watch the stop: a local git command is quick, and ending
        # one could leave a lock file in our own repository
        return self.runner.run(*args, input=input, check=check,
                               env=None if index is None else {"GIT_INDEX_FILE": str(index)},
                               remote=self.remote_url if network else None,
                               context=f"status branch {self.branch}")

    def stopping(self) -> bool:
        """True once shutdown was asked for."""
        return self.runner.stopping()

    def rev(self, ref: str) -> str | None:
        done = self.git("rev-parse", "--verify", "--quiet", ref + "^{commit}", check=False)
        return done.stdout.decode().strip() if done.returncode == 0 else None

    def tree_of(self, commit: str) -> str:
        return self.git("rev-parse", commit + "^{tree}").stdout.decode().strip()

    def first_parent(self, commit: str) -> str | None:
        return self.rev(commit + "^")

    def set_ref(self, ref: str, new: str | None, old: str | None) -> None:
        # The old value makes the update atomic against anything else touching the ref.
        if new is None:
            if old is not None:
                self.git("update-ref", "-d", ref, old)
            return
        self.git("update-ref", "-m", "reconciler status", ref, new, old or ZERO)

    def hash_blobs(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """Write every file as a blob; returns path -> blob id."""
        if not files:
            return {}
        paths = sorted(files)
        with tempfile.TemporaryDirectory(prefix="reconciler-status-") as tmp:
            disk = []
            for i, path in enumerate(paths):
                target = Path(tmp) / str(i)
                target.write_bytes(files[path])
                disk.append(str(target))
            done = self.git("hash-object", "-w", "--no-filters", "--stdin-paths",
                            input=("\n".join(disk) + "\n").encode())
        ids = done.stdout.decode().split()
        return dict(zip(paths, ids, strict=True))

    def build_tree(self, base: str | None, blobs: Mapping[str, str],
                   prefixes: tuple[str, ...]) -> str:
        """The tree of ``base`` with the files directly in the directories ``prefixes``
        replaced by ``blobs``."""
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="reconciler-index-") as tmp:
            index = Path(tmp) / "index"
            if base is None:
                self.git("read-tree", "--empty", index=index)
            else:
                self.git("read-tree", base, index=index)
                listed = self.git("ls-tree", "-z", base, "--", *prefixes).stdout
                for entry in listed.decode("utf-8", "surrogateescape").split("\0"):
                    if not entry:
                        continue
                    meta, path = entry.split("\t", 1)
                    if meta.split()[1] == "blob" and path not in blobs:
                        lines.append(f"0 {ZERO}\t{path}")  # mode 0 removes the entry
            lines.extend(f"100644 {blob}\t{path}" for path, blob in sorted(blobs.items()))
            if lines:
                self.git("update-index", "-z", "--index-info", index=index,
                         input="".join(line + "\0" for line in lines).encode(
                             "utf-8", "surrogateescape"))
            return self.git("write-tree", index=index).stdout.decode().strip()

    def commit_tree(self, tree: str, parent: str | None, message: str) -> str:
        args = ["commit-tree", tree] + (["-p", parent] if parent else [])
        return self.git(*args, input=message.encode()).stdout.decode().strip()
