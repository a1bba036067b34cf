"""reconciler.core.document_cache with the loader: a document unchanged between two loads is
made into its object once, the findings made on the way repeated; loading through the cache
gives what loading alone gives."""

from __future__ import annotations

import shutil
from pathlib import Path

from reconciler.core.document_cache import DocumentCache
from reconciler.core.loading import load_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
# findings made while the objects are built, not by the schema check
EMPTY_SELECTOR = ("    selector:\n      matchLabels:\n        role: hmi\n",
                  "    selector: {}\n")
BAD_WINDOW = ("  solution: line-dashboard-helm\n",
              "  solution: line-dashboard-helm\n  windows:\n"
              "  - {schedule: 'not a cron', duration: 1h}\n")


def copy(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    root = tmp_path / name
    shutil.copytree(EXAMPLE, root, symlinks=True)
    path = root / "instances/dashboard.yaml"
    text = path.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path.write_text(text)
    return root.resolve()


def test_unchanged_documents_are_made_once_with_their_findings(tmp_path: Path) -> None:
    base = copy(tmp_path, "base", EMPTY_SELECTOR, BAD_WINDOW)
    head = copy(tmp_path, "head", EMPTY_SELECTOR, BAD_WINDOW)
    (head / "instances/telemetry.yaml").write_text(
        (head / "instances/telemetry.yaml").read_text() + "\n")
    cache = DocumentCache()
    first = load_fleet(base, cache=cache)
    second = load_fleet(head, cache=cache)
    alone = load_fleet(head)

    assert second.diagnostics == alone.diagnostics
    fields = {d.field for d in second.diagnostics}
    assert {"spec.targets.selector", "spec.windows[0].schedule"} <= fields
    for kind in ("sites", "targets", "solutions", "instances"):
        assert getattr(second.fleet, kind) == getattr(alone.fleet, kind)
    # the same files: the very objects of the first load; the edited file: made again
    assert second.fleet.targets["berlin-l1-gateway"] is first.fleet.targets["berlin-l1-gateway"]
    assert second.fleet.instances["line-dashboard"] is first.fleet.instances["line-dashboard"]
    telemetry = [name for name, inst in second.fleet.instances.items()
                 if inst.source.path == "instances/telemetry.yaml"]
    assert telemetry
    for name in telemetry:
        assert second.fleet.instances[name] is not first.fleet.instances[name]
        assert second.fleet.instances[name] == first.fleet.instances[name]
