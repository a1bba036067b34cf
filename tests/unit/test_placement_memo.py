"""reconciler.core.placement_memo and document_cache: validating a second revision through
what the first left gives the same findings and the same placements as validating it alone,
and renders only the pairs whose inputs changed.

Each test validates a copy of ``example-repo/`` (the base), then an edited copy (the head)
with one cache and one memo, and compares the head's result with a plain validation of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.document_cache import DocumentCache
from reconciler.core.placement_memo import PlacementMemo
from reconciler.core.registry import default_registry
from reconciler.core.rendering import Placement
from reconciler.core.validation import validate_repository

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
REGISTRY = default_registry()


def summarize(p: Placement) -> Any:
    return [(c.key, c.type, repr(c.properties), repr(sorted(c.params.items())), c.depends_on,
             p.instance.suspend) for c in p.components]


def replace_in(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))
    return edit


def remove(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


EDITS: dict[str, tuple[Callable[[Path], None], ...]] = {
    "nothing": (),
    "a site parameter": (replace_in("sites/eu.yaml", "    logLevel: debug\n",
                                    "    logLevel: warning\n"),),
    "a template file": (replace_in("solutions/telemetry-agent/agent.conf.tmpl", "[time]\n",
                                   "[time]\n# utc\n"),),
    "a value out of bounds": (replace_in("instances/dashboard.yaml", "refreshSeconds: 10",
                                         "refreshSeconds: 1000"),),
    "a template file removed": (remove("solutions/telemetry-agent/agent.conf.tmpl"),),
    "a solution and a suspended instance": (
        replace_in("solutions/line-dashboard/solution.yaml", "default: light",
                   "default: dark"),
        replace_in("instances/dashboard.yaml", "  solution: line-dashboard\n",
                   "  solution: line-dashboard\n  suspend: true\n")),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(EDITS))
def test_the_head_through_the_memo_is_the_head_alone(tmp_path: Path, name: str,
                                                     workers: int) -> None:
    """With two workers, half of the pairs not known yet are rendered in a child process
    (each revision's, here: ``min_ahead`` 1)."""
    base, head = tmp_path / "base", tmp_path / "head"
    shutil.copytree(EXAMPLE, base, symlinks=True)
    shutil.copytree(EXAMPLE, head, symlinks=True)
    for edit in EDITS[name]:
        edit(head)
    cache, memo = DocumentCache(), PlacementMemo(summarize, workers=workers, min_ahead=1)
    validate_repository(base, registry=REGISTRY, cache=cache, memo=memo)
    pairs = memo.rendered
    through = validate_repository(head, registry=REGISTRY, cache=cache, memo=memo)
    alone = validate_repository(head, registry=REGISTRY)

    assert through.diagnostics == alone.diagnostics
    expected = {target: [(p.instance.name, summarize(p)) for p in placements]
                for target, placements in alone.placements.items()}
    assert memo.summaries == expected
    assert memo.rendered + memo.reused == pairs + sum(len(v) for v in expected.values())
    if name == "nothing":
        assert memo.rendered == pairs  # nothing rendered twice
    else:
        assert memo.rendered > pairs  # what changed was rendered again
        assert memo.reused > 0  # and only that
    if name == "a value out of bounds":
        assert any("refreshSeconds" in d.message or "refreshSeconds" in d.field
                   for d in through.errors)
    if name == "a template file removed":
        assert any("agent.conf.tmpl" in d.message for d in through.errors)


def test_unchanged_files_keep_their_documents_and_fingerprints(tmp_path: Path) -> None:
    from reconciler.core.loading import load_fleet

    base, head = tmp_path / "base", tmp_path / "head"
    shutil.copytree(EXAMPLE, base, symlinks=True)
    shutil.copytree(EXAMPLE, head, symlinks=True)
    replace_in("instances/dashboard.yaml", "refreshSeconds: 10", "refreshSeconds: 20")(head)
    cache = DocumentCache()
    first = load_fleet(base.resolve(), cache=cache)
    second = load_fleet(head.resolve(), cache=cache)
    alone = load_fleet(head.resolve())
    assert second.diagnostics == alone.diagnostics
    assert second.fleet.instances == alone.fleet.instances
    assert second.fleet.solutions == alone.fleet.solutions
    assert second.fingerprints == alone.fingerprints
    changed = {k for k, fp in second.fingerprints.items() if first.fingerprints[k] != fp}
    assert changed == {
        k for k in second.fingerprints
        if k[0] == "Instance" and second.fleet.instances[k[1]].source.path
        == "instances/dashboard.yaml"}
    assert changed  # the documents of the edited file, and only those
