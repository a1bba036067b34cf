"""The ``file`` provider kept for many runs: what it remembers never hides a change.

An instance lives as long as its binding's revision is enforced. It keeps each component's
desired path, digest and mode, and the health check that follows an in-sync observe uses
that observation instead of reading the file again; a file changed in between is read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reconciler.core.errors import PolicyError
from reconciler.core.provider_api import Health

# site: the fixture of the provider's own tests
from tests.unit.test_file_provider import component, provider, site

__all__ = ["site"]


def test_health_after_an_in_sync_observe_sees_a_file_replaced_in_between(
        site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "app.ini", "content": "a = 1\n"})
    record = prov.apply(comp, None)
    assert prov.observe(comp, record).in_sync
    assert prov.health(comp, record).state is Health.HEALTHY

    assert prov.observe(comp, record).in_sync
    other = site["root"] / "other"
    other.write_text("a = 2\n")
    os.replace(other, site["root"] / "app.ini")
    report = prov.health(comp, record)
    assert report.state is Health.DEGRADED and "changed" in report.message


def test_health_after_an_in_sync_observe_sees_a_file_removed_in_between(
        site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "app.ini", "content": "a = 1\n"})
    record = prov.apply(comp, None)
    assert prov.observe(comp, record).in_sync
    (site["root"] / "app.ini").unlink()
    assert prov.health(comp, record).state is Health.DEGRADED


def test_every_pass_over_the_components_looks_at_their_directories_again(
        site: dict[str, Path]) -> None:
    prov = provider(site)
    first = component(site, {"path": "logs/a.log", "content": "a\n"})
    second = component(site, {"path": "logs/b.log", "content": "b\n"})
    records = [prov.apply(c, None) for c in (first, second)]
    for _ in range(2):  # two runs
        assert all(prov.observe(c, r).in_sync for c, r in zip((first, second), records,
                                                               strict=True))
    logs = site["root"] / "logs"
    logs.rename(site["outside"] / "logs")
    logs.symlink_to(site["outside"] / "logs")
    # the next run begins with the first component again: the directory is looked at
    try:
        prov.observe(first, records[0])
    except PolicyError as exc:
        assert "outside" in exc.message
    else:
        raise AssertionError("a file reached through a symlink out of the root was observed")


def test_a_component_is_rendered_once_and_its_file_read_once_per_observe(
        site: dict[str, Path]) -> None:
    template = site["repo"] / "solutions" / "app" / "files" / "motd.txt"
    template.write_text("${{ params.greeting }}\n")
    prov = provider(site)
    comp = component(site, {"path": "motd", "template": "files/motd.txt"})
    record = prov.apply(comp, None)
    # the template changing in the checkout (it never does: a checkout is a revision's)
    # shows that observe does not render it again for the same component
    template.write_text("changed\n")
    assert prov.observe(comp, record).in_sync
    # another revision (its own checkout) is rendered afresh
    other = site["repo"].parent / "checkout-2"
    shutil.copytree(site["repo"], other)
    again = component({**site, "repo": other}, {"path": "motd", "template": "files/motd.txt"})
    assert not prov.observe(again, record).in_sync
