"""Reading many status files from a real repository: read_facts gives, chunk by chunk (and a
child process for the second half), what each file says as facts_of does (status files of
the daemons' layout, others, broken ones), hands over the documents as they are made, and
fails on a missing object; and the first fetch
into an empty cache is a clone that leaves no file per branch and no remote behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from reconciler.core.errors import SourceError
from reconciler.engine.status import build_status, render_status
from reconciler.gitops.fleet_status import StatusReader
from reconciler.gitops.gitrun import Git
from reconciler.gitops.status_cache import StatusCache
from reconciler.gitops.status_files import document_of, facts_of, heartbeat_file
from reconciler.gitops.status_reading import read_facts
from tests.integration.test_status_push import git, make_remote

WHEN = dt.datetime(2026, 11, 23, 4, 10, tzinfo=dt.UTC)


def contents() -> list[bytes]:
    ready = build_status(target="press-01", site="eu/berlin", observed="a" * 40,
                         applied="a" * 40, last_good="a" * 40, result=None)
    failed = build_status(target="press-02", site="eu/berlin", observed="b" * 40,
                          applied="a" * 40, last_good="a" * 40, result=None,
                          failure="apply failed: " + "it's broken " * 12)
    return [
        render_status(ready, WHEN.isoformat()),  # the daemons' layout
        render_status(failed, "2026-11-23T04:10:00Z"),  # a message folded over lines
        heartbeat_file("eu/berlin", WHEN),
        b"phase: Ready\nerrors: []\nmetadata: {name: old}\n",  # an older layout
        b"phase: [unclosed\n",  # no YAML
        b"\xff\xfe not text",
        b"just words\n",
    ]


def test_read_facts_gives_what_each_file_says_chunk_by_chunk(tmp_path: Path) -> None:
    repo = make_remote(tmp_path / "repo.git")
    raws = contents()
    blobs = [git(repo, "hash-object", "-w", "--stdin", input=raw) for raw in raws]
    handed: list[dict[str, str]] = []

    facts = read_facts(Git(repo), blobs, handed.append, chunk=3)

    assert list(facts) == blobs
    for blob, raw in zip(blobs, raws, strict=True):
        assert facts[blob] == facts_of(raw).row()
        assert [type(v) for v in facts[blob]] == [type(v) for v in facts_of(raw).row()]
    assert [len(chunk) for chunk in handed] == [3, 1, 0]  # a file no mapping has none
    documents = {blob: text for chunk in handed for blob, text in chunk.items()}
    assert {blob: documents.get(blob, "null") for blob in blobs} == {
        blob: document_of(raw) for blob, raw in zip(blobs, raws, strict=True)}
    assert facts[blobs[0]][2] == "Pending" and facts[blobs[0]][12] == 0
    assert read_facts(Git(repo), blobs) == facts  # without documents: the same facts


def test_a_child_process_reads_the_second_half(tmp_path: Path) -> None:
    repo = make_remote(tmp_path / "repo.git")
    raws = contents()
    blobs = [git(repo, "hash-object", "-w", "--stdin", input=raw) for raw in raws]

    with StatusCache(tmp_path / "cache") as cache:
        store = cache.document_store()  # stores from both processes, each its connection
        facts = read_facts(Git(repo), blobs, store, chunk=2, shared_from=2)
        store.close()
        documents = cache.documents(blobs)

    assert facts == read_facts(Git(repo), blobs, chunk=2)
    assert [type(v) for v in facts[blobs[-1]]] == [type(v) for v in facts_of(raws[-1]).row()]
    assert {blob: documents.get(blob) or "null" for blob in blobs} == {
        blob: document_of(raw) for blob, raw in zip(blobs, raws, strict=True)}
    assert set(documents) == {blob for blob, raw in zip(blobs, raws, strict=True)
                              if document_of(raw) != "null"}


def test_a_missing_object_is_a_source_error(tmp_path: Path) -> None:
    repo = make_remote(tmp_path / "repo.git")
    blob = git(repo, "hash-object", "-w", "--stdin", input=b"phase: Ready\n")

    with pytest.raises(SourceError, match="missing"):
        read_facts(Git(repo), [blob, "1" * 40], chunk=1)
    with pytest.raises(SourceError, match="missing"):  # in the child's half
        read_facts(Git(repo), [blob, "1" * 40], chunk=1, shared_from=2)


def test_a_failure_of_this_half_leaves_the_child_quiet(tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    repo = make_remote(tmp_path / "repo.git")
    files = tmp_path / "files"
    files.mkdir()
    for number in range(3000):  # the child's answer is larger than a pipe holds
        (files / str(number)).write_bytes(f"phase: Ready\ntarget: t{number}\n".encode())
    paths = "\n".join(str(files / str(number)) for number in range(3000)) + "\n"
    blobs = git(repo, "hash-object", "-w", "--stdin-paths", input=paths.encode()).split()

    with pytest.raises(SourceError, match="missing"):
        read_facts(Git(repo), ["1" * 40, *blobs], chunk=500, shared_from=2)
    assert "Traceback" not in capfd.readouterr().err


def test_an_empty_cache_is_filled_by_a_clone(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    status = render_status(build_status(target="t", site="s", observed="a" * 40,
                                        applied="a" * 40, last_good="a" * 40, result=None),
                           WHEN.isoformat())
    for site in ("s", "u"):
        blob = git(remote, "hash-object", "-w", "--stdin", input=status.replace(
            b"site: s", f"site: {site}".encode()))
        tree = git(remote, "mktree", input=f"100644 blob {blob}\tt.yaml\n".encode())
        tree = git(remote, "mktree", input=f"040000 tree {tree}\t{site}\n".encode())
        tree = git(remote, "mktree", input=f"040000 tree {tree}\tstatus\n".encode())
        git(remote, "update-ref", f"refs/heads/reconciler-status/{site}",
            git(remote, "commit-tree", tree, "-m", "status"))
    git(remote, "tag", "v1", "main")
    cache = tmp_path / "cache"
    (cache / "repo.git.new").mkdir(parents=True)  # what an interrupted clone left

    with StatusReader(str(remote), cache_dir=cache, ref="main") as reader:
        first = reader.read()
        assert reader.tracked() == git(remote, "rev-parse", "main")
    repo = cache / "repo.git"
    assert sorted(first.branches) == ["reconciler-status/s", "reconciler-status/u"]
    assert first.get("s", "t") is not None and first.get("u", "t") is not None
    assert not (repo / "refs/reconciler").exists()  # every ref in packed-refs
    assert "refs/tags/v1" in (repo / "packed-refs").read_text()
    assert "remote" not in (repo / "config").read_text()
    assert not (cache / "repo.git.new").exists()

    git(remote, "update-ref", "-d", "refs/heads/reconciler-status/u")
    with StatusReader(str(remote), cache_dir=cache, ref="main") as reader:
        second = reader.read()  # a fetch into the clone: the branch that went is gone
    assert sorted(second.branches) == ["reconciler-status/s"] and second.get("u", "t") is None
