"""Telling a drift repair from a change: records compared without what says when."""

from __future__ import annotations

from reconciler.core.provider_api import Record
from reconciler.engine.component_steps import same_state as _same_state

A, B = "a" * 40, "b" * 40


def helm(values: str, revision: int) -> Record:
    return Record("helm", "charts", {"release": "web", "values_digest": values,
                                     "revision": revision,
                                     "history": [{"revision": revision, "values": values}]})


def test_a_new_release_revision_alone_is_the_same_state_when_the_provider_says_so() -> None:
    volatile = frozenset({"revision", "history"})
    assert _same_state(helm("v1", 3), helm("v1", 4), {A, B}, volatile)
    assert not _same_state(helm("v1", 3), helm("v2", 4), {A, B}, volatile)
    assert not _same_state(helm("v1", 3), helm("v1", 4), {A, B})  # undeclared: it counts


def test_commit_ids_in_a_record_are_left_out() -> None:
    old = Record("script", "svc", {"revision": A, "digest": "d1"})
    assert _same_state(old, Record("script", "svc", {"revision": B, "digest": "d1"}), {A, B})
    assert not _same_state(old, Record("script", "svc", {"revision": B, "digest": "d2"}),
                           {A, B})
