"""reconciler.engine.state_store: the per-target state between runs, in the file format sites have
today (an upgraded site keeps its last good revisions), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reconciler.core.statefiles import is_temp_name
from reconciler.engine.state_store import StateStore, TargetRecord

A = "a" * 40
B = "b" * 40
C = "c" * 40

# state.json as the pipeline wrote it before the store existed (write_json: indent 1, keys
# sorted): a target at its last good revision, one that never had one, one with no site
TODAY = """{
 "revision": "<B>",
 "targets": {
  "alpha": {
   "applied": "<A>",
   "digest": "0f3c",
   "lastChange": "2026-03-01T10:00:00+00:00",
   "lastGood": "<A>",
   "site": "hq/line-1"
  },
  "beta": {
   "digest": "77aa",
   "lastChange": "2026-03-01T10:00:05+00:00",
   "site": "hq/line-1"
  },
  "gamma": {
   "applied": "<C>",
   "lastGood": "<C>",
   "site": ""
  }
 }
}
""".replace("<A>", A).replace("<B>", B).replace("<C>", C)


def test_reads_the_state_file_sites_have_today(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(TODAY)
    store = StateStore.load(path)
    assert store.revision == B
    assert list(store) == ["alpha", "beta", "gamma"]
    assert store.get("alpha") == TargetRecord(applied=A, last_good=A, site="hq/line-1",
                                              digest="0f3c",
                                              last_change="2026-03-01T10:00:00+00:00")
    assert store.get("beta") == TargetRecord(site="hq/line-1", digest="77aa",
                                             last_change="2026-03-01T10:00:05+00:00")
    assert store.get("gamma").last_good == C
    assert store.last_good_revisions() == [A, C]
    assert store.revisions_in_use() == {A, B, C}


def test_writes_the_same_format_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(TODAY)
    store = StateStore.load(path)
    store.save(B)
    assert json.loads(path.read_text()) == json.loads(TODAY)
    # what the old pipeline would read back: string keys, absent when never set
    assert "lastGood" not in json.loads(path.read_text())["targets"]["beta"]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.json"
    store = StateStore.load(path)
    assert len(store) == 0 and store.revision == ""
    store.touch("alpha")
    store.reconciled("alpha", A, newest=True)
    store.status_seen("alpha", site="eu/berlin", digest="d1", now="2026-01-01T00:00:00+00:00")
    store.touch("beta")
    store.reconciled("beta", A, newest=False)
    store.save(B)
    again = StateStore.load(path)
    assert again.revision == B
    assert again.get("alpha") == store.get("alpha")
    assert again.get("beta") == TargetRecord(applied=A)
    assert list(again) == ["alpha", "beta"]


@pytest.mark.parametrize(("steps", "expected"), [
    # (what happened, in order) -> the record
    ([("reconciled", A, True)], TargetRecord(applied=A, last_good=A)),
    ([("reconciled", A, True), ("reconciled", A, False)], TargetRecord(applied=A,
                                                                       last_good=A)),
    # enforcing the last good revision while a newer one is invalid: last good stays
    ([("reconciled", A, True), ("reconciled", B, False)], TargetRecord(applied=B,
                                                                       last_good=A)),
    ([("reconciled", A, True), ("reconciled", B, True)], TargetRecord(applied=B,
                                                                      last_good=B)),
    ([("status", "s", "d1", "t1")], TargetRecord(site="s", digest="d1", last_change="t1")),
    # the same status again: lastChange does not move
    ([("status", "s", "d1", "t1"), ("status", "s", "d1", "t2")],
     TargetRecord(site="s", digest="d1", last_change="t1")),
    ([("status", "s", "d1", "t1"), ("status", "s", "d2", "t2")],
     TargetRecord(site="s", digest="d2", last_change="t2")),
    # the site moved without the status changing otherwise
    ([("status", "s", "d1", "t1"), ("status", "u", "d1", "t2")],
     TargetRecord(site="u", digest="d1", last_change="t1")),
])
def test_records(tmp_path: Path, steps: list[tuple[object, ...]],
                 expected: TargetRecord) -> None:
    store = StateStore.load(tmp_path / "state.json")
    for step in steps:
        if step[0] == "reconciled":
            store.reconciled("t", str(step[1]), newest=bool(step[2]))
        else:
            store.status_seen("t", site=str(step[1]), digest=str(step[2]), now=str(step[3]))
    assert store.get("t") == expected


@pytest.mark.parametrize("content", [
    "",
    "{not json",
    "[]",
    '{"targets": []}',
    '{"targets": {"alpha": "at A"}, "revision": 7}',
])
def test_a_file_that_cannot_be_read_counts_as_absent(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    store = StateStore.load(path)
    assert store.revision == ""
    assert all(store.get(name) == TargetRecord() for name in store)


def test_values_of_the_wrong_type_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"targets": {"alpha": {"applied": A, "lastGood": 3,
                                                      "site": None, "extra": "x"}}}))
    assert StateStore.load(path).get("alpha") == TargetRecord(applied=A)


def test_forget(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(TODAY)
    store = StateStore.load(path)
    store.forget("alpha")
    store.forget("never-there")
    assert "alpha" not in store and store.get("alpha") == TargetRecord()
    assert store.revisions_in_use() == {B, C}


def test_save_is_atomic_and_says_when_the_os_refuses(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(TODAY)
    store = StateStore.load(path)
    store.save(C)
    assert json.loads(path.read_text())["revision"] == C
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]
    # a directory where the file belongs: refused even to root
    blocked = tmp_path / "blocked"
    (blocked / "state.json").mkdir(parents=True)
    refused = StateStore.load(blocked / "state.json")
    refused.touch("alpha")
    with pytest.raises(OSError):
        refused.save(A)
    assert not [n for n in os.listdir(blocked) if is_temp_name(n)]


def test_records_read_share_equal_strings(tmp_path: Path) -> None:
    # a daemon keeps a record per target: the revisions, releases and sites they have in
    # common are one string each, not one per target and field
    path = tmp_path / "state.json"
    instances = {"app": {"applied": A, "lastGood": A, "appliedDigest": "d1", "goodDigest": "d1",
                         "release": "r-1", "goodRelease": "r-1"}}
    path.write_text(json.dumps({"revision": A, "targets": {
        name: {"applied": A, "lastGood": A, "site": "hq/line-1", "digest": name,
               "lastChange": "2026-03-01T10:00:00+00:00", "instances": instances}
        for name in ("t1", "t2")}}))
    store = StateStore.load(path)
    one, two = store.get("t1"), store.get("t2")
    assert one.applied == A and one.applied is two.applied is one.last_good is store.revision
    assert one.site is two.site and one.last_change is two.last_change
    a, b = one.instances["app"], two.instances["app"]
    assert a.applied is b.applied is one.applied and a.release is b.good_release
    assert a.applied_digest is b.good_digest
