"""Git plumbing that reads many status branches at once: list their files, read their blobs,
and what the blobs say.

Listing and reading run one git process for any number of branches or a few thousand blobs
(a fleet has tens of thousands), through the project's git runner. :func:`read_facts` reads
and parses many blobs, a chunk at a time: git reads the next chunk while this one is parsed.
From several thousand blobs on, a forked child process reads and parses the second half
meanwhile (its start and its answer cost a few hundredths of a second; with two CPUs, even
shared with other work, the reading takes about a third less). Used by
``reconciler.gitops.fleet_status``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from reconciler.core.errors import ReconcilerError, SourceError
from reconciler.gitops.gitrun import Git
from reconciler.gitops.status_entries import HEARTBEAT_SUFFIX
from reconciler.gitops.status_files import facts_row

__all__ = ["list_trees", "read_blobs", "read_facts"]

# the empty tree, by object name length (SHA-1, SHA-256): diffed against a branch's tree it
# lists every file of the branch
_EMPTY_TREE = {40: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
               64: "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"}
_BLOBS_PER_READ = 10_000  # bounds what one git cat-file holds in memory (about 10 MB)
_BLOBS_PER_CHUNK = 4000  # read by git while the chunk before is parsed
_SHARED_FROM = 8000  # blobs from which a child process reads and parses half of them


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
        yield from _contents(_cat(git, wanted), wanted, git)


def _cat(git: Git, blobs: Sequence[str]) -> bytes:
    return git.run("cat-file", "--batch", "--buffer", input=("\n".join(blobs) + "\n").encode(),
                   context="reading status files").stdout


def _contents(out: bytes, wanted: Sequence[str], git: Git) -> Iterator[tuple[str, bytes]]:
    """(blob, content) of each of ``wanted`` in ``out``, what ``git cat-file --batch``
    printed for them."""
    pos = 0
    for sha in wanted:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        if len(header) != 3:  # "<sha> missing"
            raise SourceError(f"reading status files: object {sha} is missing in {git.name}")
        size = int(header[2])
        yield sha, out[eol + 1:eol + 1 + size]
        pos = eol + 1 + size + 1  # content is followed by a newline


def read_facts(git: Git, blobs: Sequence[str],
               documents: Callable[[dict[str, str]], None] | None = None, *,
               chunk: int = _BLOBS_PER_CHUNK, shared_from: int = _SHARED_FROM
               ) -> dict[str, tuple[Any, ...]]:
    """What each of ``blobs`` says: blob -> the facts as a row
    (:func:`~reconciler.gitops.status_files.facts_row`). Read ``chunk`` at a time, the next
    ones by git while these are parsed; from ``shared_from`` blobs on (with two CPUs), the
    second half by a forked child process meanwhile. With ``documents``, the documents
    (blob -> JSON) are handed to it as they are made, a chunk at a time, so they are never
    all held at once; the child calls it too (in its own process: a store it hands them to
    must not use a connection of this one, see ``StatusCache.document_store``).

    The values a fleet's files repeat (revisions, phases, messages, sites, instances) are
    kept once each (by ``facts_row``)."""
    if len(blobs) < shared_from or (os.cpu_count() or 1) < 2:
        return _read(git, blobs, documents, chunk)
    half = len(blobs) // 2
    # fork: the child starts at once with what it needs, and leaves by os._exit, so it
    # closes nothing of ours (the cache's database)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_in_child, args=(git, blobs[half:], documents, chunk,
                                                    receive, send), daemon=True)
    child.start()
    send.close()
    try:
        facts = _read(git, blobs[:half], documents, chunk)
        try:
            answer = receive.recv()
        except EOFError:
            answer = ("error", "the process reading the other half ended without an answer")
    finally:
        receive.close()
        child.join()
    if answer[0] != "facts":
        raise SourceError(f"reading status files: {answer[1]}")
    facts.update(answer[1])
    return facts


def _read(git: Git, blobs: Sequence[str],
          documents: Callable[[dict[str, str]], None] | None, chunk: int
          ) -> dict[str, tuple[Any, ...]]:
    facts: dict[str, tuple[Any, ...]] = {}
    chunks = [blobs[start:start + chunk] for start in range(0, len(blobs), chunk)]
    if not chunks:
        return facts
    with ThreadPoolExecutor(1, thread_name_prefix="status-read") as pool:
        ahead = pool.submit(_cat, git, chunks[0])
        for number, wanted in enumerate(chunks):
            out = ahead.result()
            if number + 1 < len(chunks):
                ahead = pool.submit(_cat, git, chunks[number + 1])
            made: dict[str, str] = {}
            for sha, raw in _contents(out, wanted, git):
                row, document = facts_row(raw, document=documents is not None)
                facts[sha] = row
                if document:  # "": not a mapping
                    made[sha] = document
            if documents is not None:
                documents(made)
    return facts


def _in_child(git: Git, blobs: Sequence[str],
              documents: Callable[[dict[str, str]], None] | None, chunk: int,
              receive: Connection, send: Connection) -> None:
    # the parent's end, inherited by the fork: closed, so that our answer meets a broken
    # pipe rather than waiting for ever when the parent stopped listening
    receive.close()
    try:
        try:
            answer: tuple[Any, ...] = ("facts", _read(git, blobs, documents, chunk))
        except ReconcilerError as exc:
            answer = ("error", exc.message)
        except Exception as exc:  # sent to the parent, which raises it as its own
            answer = ("error", f"{type(exc).__name__}: {exc}")
        send.send(answer)
    except OSError:  # the parent stopped listening (it failed itself): nothing to say
        pass
    finally:
        send.close()
