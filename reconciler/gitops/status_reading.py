"""Git plumbing that reads many status branches at once: list their files, read their blobs,
and what the blobs say.

Listing and reading run one git process for any number of branches or blobs (a fleet has
thousands), through the project's git runner. :func:`read_facts` reads and parses many blobs;
from a few thousand on, a forked child process reads and parses half of them meanwhile (with
two CPUs, parsing 50,000 status files takes half as long). Used by
``reconciler.gitops.fleet_status``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection

from reconciler.core.errors import ReconcilerError, SourceError
from reconciler.gitops.gitrun import Git
from reconciler.gitops.status_cache import BlobFacts
from reconciler.gitops.status_entries import HEARTBEAT_SUFFIX
from reconciler.gitops.status_files import facts_of

__all__ = ["list_trees", "read_blobs", "read_facts"]

# the empty tree, by object name length (SHA-1, SHA-256): diffed against a branch's tree it
# lists every file of the branch
_EMPTY_TREE = {40: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
               64: "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"}
_BLOBS_PER_READ = 10_000  # bounds what one git cat-file holds in memory (about 10 MB)
_SHARED_FROM = 4000  # blobs from which a child process parses half of them


def list_trees(git: Git, trees: set[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Tree -> its status files and heartbeat files as (path, blob), for all trees in one
    ``git diff-tree --stdin`` against the empty tree."""
    if not trees:
        return {}
    empty = _EMPTY_TREE[len(next(iter(trees)))]
    pairs = "".join(f"{empty} {tree}\n" for tree in sorted(trees))
    out = git.run("diff-tree", "--stdin", "-r", "-z", "--no-renames", "--", "status/",
                  input=pairs.encode(), context="listing status files").stdout
    listed: dict[str, list[tuple[str, str]]] = {tree: [] for tree in trees}
    current: list[tuple[str, str]] = []
    meta = ""
    for token in out.decode("utf-8", "surrogateescape").split("\0"):
        if meta:  # the path of the entry whose meta came before
            if token.endswith((".yaml", ".yml", HEARTBEAT_SUFFIX)):
                current.append((token, meta.split(" ")[3]))
            meta = ""
            continue
        while token.startswith(empty + " "):  # git echoes each pair before its entries
            line, _, token = token.partition("\n")
            current = listed.setdefault(line.split(" ", 1)[1], [])
        if token.startswith(":") and token.split(" ")[1] in ("100644", "100755"):
            meta = token  # ":000000 <mode> <zero> <blob> A" of a file
    return {tree: tuple(files) for tree, files in listed.items()}


def read_blobs(git: Git, blobs: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(blob, content) of every blob, read ``_BLOBS_PER_READ`` at a time by one ``git
    cat-file --batch --buffer`` each (buffered: one write per few kilobytes, not per
    object, which at tens of thousands of small objects is most of the time)."""
    for start in range(0, len(blobs), _BLOBS_PER_READ):
        wanted = blobs[start:start + _BLOBS_PER_READ]
        out = git.run("cat-file", "--batch", "--buffer",
                      input=("\n".join(wanted) + "\n").encode(),
                      context="reading status files").stdout
        pos = 0
        for sha in wanted:
            eol = out.index(b"\n", pos)
            header = out[pos:eol].split()
            if len(header) != 3:  # "<sha> missing"
                raise SourceError(f"reading status files: object {sha} is missing in {git.name}")
            size = int(header[2])
            yield sha, out[eol + 1:eol + 1 + size]
            pos = eol + 1 + size + 1  # content is followed by a newline


def read_facts(git: Git, blobs: Sequence[str], *, document: bool) -> dict[str, BlobFacts]:
    """What each of ``blobs`` says (:func:`~reconciler.gitops.status_files.facts_of`), the
    second half read and parsed by a child process when there are many and two CPUs."""
    if len(blobs) < _SHARED_FROM or (os.cpu_count() or 1) < 2:
        return {blob: facts_of(raw, document=document) for blob, raw in read_blobs(git, blobs)}
    half = len(blobs) // 2
    # fork: the child starts at once with what it needs, and leaves by os._exit, so it
    # closes nothing of ours (the cache's database)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_facts_in_child, args=(git, blobs[half:], document, send),
                            daemon=True)
    child.start()
    send.close()
    try:
        facts = {blob: facts_of(raw, document=document)
                 for blob, raw in read_blobs(git, blobs[:half])}
        try:
            kind, payload = receive.recv()
        except EOFError:
            kind, payload = "error", "the process reading the other half ended without an answer"
    finally:
        receive.close()
        child.join()
    if kind != "facts":
        raise SourceError(f"reading status files: {payload}")
    facts.update((blob, BlobFacts(*values)) for blob, values in payload)
    return facts


def _facts_in_child(git: Git, blobs: Sequence[str], document: bool, send: Connection) -> None:
    try:
        send.send(("facts", [(blob, dataclasses.astuple(facts_of(raw, document=document)))
                             for blob, raw in read_blobs(git, blobs)]))
    except ReconcilerError as exc:
        send.send(("error", exc.message))
    except Exception as exc:  # sent to the parent, which raises it as its own
        send.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
