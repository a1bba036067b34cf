"""Status files from many sites at once, in both layouts, and the fleet table read back.

Ten site daemons (``reconciler sync --once`` processes, each with its own config and state
directory) reconcile their line and push status at the same moment to one remote served by a
real ``git daemon`` on 127.0.0.1: with per-site branches no push contends; with the shared
branch every push races and must fetch-rebase-retry until it lands. Then ``reconciler status``
reads the whole fleet back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fleetkit import (
    FleetRepo,
    Site,
    branches,
    file_component,
    instance,
    make_site,
    parse_events,
    reconciler,
    settings,
    site,
    solution,
    start_syncs,
    status_files,
    sync,
    target,
)
from tests.integration.test_status_push import GitDaemon

LINES = [f"line-{n:02d}" for n in range(1, 11)]


def line_fleet(root: Path, lines: list[str]) -> FleetRepo:
    """Plant ``fab`` with ``lines``, one panel target per line, one Instance for all panels."""
    return FleetRepo.from_docs(root, {
        "reconciler.yaml": settings(("plant", "line")),
        "sites.yaml": [site("fab"), *(site(line, "fab") for line in lines)],
        "targets.yaml": [target(f"panel-{line}", line, labels={"role": "panel"})
                         for line in lines],
        "solutions/panel.yaml": solution("panel", [file_component(
            "screen", "screen.txt", "${{ site.name }} of ${{ site.path }}\n")]),
        "instances.yaml": instance("panels", "panel", selector={"matchLabels": {"role": "panel"}}),
    })


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FleetRepo, GitDaemon]]:
    repo = line_fleet(tmp_path / "fleet", LINES)
    daemon = GitDaemon(repo.root)
    daemon.start()
    try:
        yield repo, daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("layout", ["per-site", "shared"])
def test_ten_sites_push_status_at_the_same_moment(
        tmp_path: Path, served: tuple[FleetRepo, GitDaemon], layout: str) -> None:
    repo, daemon = served
    head = repo.remote_head()
    sites = [make_site(tmp_path / "sites", line, repo=daemon.url("remote.git"),
                       site=f"fab/{line}", status={"layout": layout})
             for line in LINES]

    outcomes = []
    for s, proc in start_syncs(sites):
        out, err = proc.communicate(timeout=120)
        outcomes.append((s, proc.returncode, out.decode(), err.decode()))

    for s, code, stdout, stderr in outcomes:
        assert code == 0, f"{s.config}: exit {code}\n{stdout}\n{stderr[-4000:]}"
        assert "(pushed)" in stdout, f"{s.config}: status not pushed\n{stdout}\n{stderr}"
    for line, s in zip(LINES, sites, strict=True):
        assert s.file(f"panel-{line}", "screen.txt").read_text() == f"{line} of fab/{line}\n"
    if layout == "per-site":
        assert branches(repo.remote) == sorted(
            ["main", *(f"reconciler-status/fab_{line}" for line in LINES)])
        files: dict[str, dict[str, object]] = {}
        for line in LINES:
            mine = status_files(repo.remote, f"reconciler-status/fab_{line}")
            assert list(mine) == [f"status/fab/{line}/panel-{line}.yaml"]
            files.update(mine)
    else:
        assert branches(repo.remote) == ["main", "reconciler-fleet-status"]
        files = status_files(repo.remote, "reconciler-fleet-status")
        # everyone raced for one ref (rejected pushes fetch, rebase and retry; typically
        # 20-50 attempts in all here), and every one of them landed
        committed = [e for *_, stderr in outcomes
                     for e in parse_events(stderr, "status_committed")]
        assert len(committed) == len(LINES) and all(e["pushed"] for e in committed)
    assert sorted(files) == sorted(f"status/fab/{line}/panel-{line}.yaml" for line in LINES)
    for doc in files.values():
        assert doc["phase"] == "Ready" and doc["observedRevision"] == head
    assert repo.remote_head() == head


def test_status_command_prints_the_table_of_every_site(tmp_path: Path) -> None:
    lines = ["line-01", "line-02"]
    repo = line_fleet(tmp_path / "fleet", lines)
    sites: list[Site] = [make_site(tmp_path / "sites", line, repo=repo.url, site=f"fab/{line}")
                         for line in lines]
    for s in sites:
        sync(s)
    head = repo.remote_head()
    assert head is not None

    result = reconciler("status", "--repo", repo.url, env=sites[0].env())

    assert result.returncode == 0, result.describe()
    # the table, then (after a blank line) the roll-ups per instance and per site
    table, rollups = result.stdout.split("\n\n", 1)
    rows = [line.split() for line in table.splitlines()]
    assert rows[0][:4] == ["SITE", "TARGET", "PHASE", "REVISION"]
    body = {(r[0], r[1]): (r[2], r[3]) for r in rows[1:] if r}
    assert body == {(f"fab/{line}", f"panel-{line}"): ("Ready", head[:8]) for line in lines}
    assert "2/2 Ready on " + head[:8] in rollups, rollups
