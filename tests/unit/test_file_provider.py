"""The ``file`` provider against real files in temporary directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from reconciler_providers.file import FileProvider

from reconciler.core.errors import PermanentError, PolicyError, TemplateError
from reconciler.core.provider_api import (
    Component,
    Health,
    LocalPolicy,
    Provider,
    ProviderContext,
    Record,
)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    root = allowed / "app"
    root.mkdir(parents=True)
    repo = tmp_path / "repo"
    (repo / "solutions" / "app" / "files").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return {"allowed": allowed, "root": root, "repo": repo, "outside": outside,
            "state": tmp_path / "state"}


def policy(site: dict[str, Path]) -> LocalPolicy:
    return LocalPolicy(file_roots=(site["allowed"],))


def provider(site: dict[str, Path]) -> FileProvider:
    context = ProviderContext(target="line-1", binding="config", policy=policy(site),
                              state_dir=site["state"])
    return FileProvider({"root": str(site["root"])}, context)


def component(site: dict[str, Path], properties: Mapping[str, Any], *,
              params: Mapping[str, Any] | None = None,
              secret: frozenset[str] = frozenset()) -> Component:
    params = dict(params or {"greeting": "hello"})
    return Component(
        name="conf", type="config", properties=properties, params=params,
        instance="app-eu", solution="app", target="line-1", site="eu/berlin",
        revision="0" * 40, base_dir=site["repo"] / "solutions" / "app",
        repo_root=site["repo"], secret_params=secret,
        template_context={"params": params, "target": {"name": "line-1"},
                          "site": {"name": "berlin", "labels": {}}},
    )


def reconcile(prov: FileProvider, comp: Component, record: Record | None) -> tuple[Record | None,
                                                                                   bool]:
    """What the core does for one component: observe, apply only when not in sync."""
    assert not prov.check_properties(comp.properties)
    observation = prov.observe(comp, record)
    if observation.in_sync:
        return record, False
    return prov.apply(comp, record), True


# ---- config and properties ------------------------------------------------------------------


def test_registered_and_conforms_to_the_provider_protocol(site: dict[str, Path]) -> None:
    (entry,) = [e for e in entry_points(group="reconciler.providers") if e.name == "file"]
    assert entry.load() is FileProvider
    assert isinstance(provider(site), Provider)


def test_check_config_requires_a_root_inside_the_policy_roots(
        site: dict[str, Path]) -> None:
    pol = policy(site)
    assert FileProvider.check_config({"root": str(site["root"])}, pol) == []
    assert [p.field for p in FileProvider.check_config({}, pol)] == ["root"]
    (escape,) = FileProvider.check_config({"root": "../app"}, pol)
    assert "must not contain '..'" in escape.message
    # a relative root resolves under the site's state directory (policy.base_dir)
    in_allowed = replace(pol, base_dir=site["allowed"])
    assert FileProvider.check_config({"root": "app"}, in_allowed) == []
    (relative,) = FileProvider.check_config({"root": "app"}, replace(pol, base_dir=site["outside"]))
    assert "local policy does not allow" in relative.message
    (outside,) = FileProvider.check_config({"root": str(site["outside"])}, pol)
    assert "local policy does not allow" in outside.message
    assert str(site["allowed"]) in outside.message
    (unknown,) = FileProvider.check_config({"root": str(site["root"]), "rooot": "x"}, pol)
    assert unknown.field == "rooot"


def test_constructor_refuses_a_root_the_policy_does_not_allow(site: dict[str, Path]) -> None:
    context = ProviderContext(target="line-1", binding="config", policy=policy(site),
                              state_dir=site["state"])
    with pytest.raises(PolicyError, match="local policy does not allow"):
        FileProvider({"root": str(site["outside"])}, context)
    # a symlink inside the allowed root that leads outside does not make outside allowed
    (site["allowed"] / "sneaky").symlink_to(site["outside"])
    with pytest.raises(PolicyError):
        FileProvider({"root": str(site["allowed"] / "sneaky")}, context)
    with pytest.raises(PermanentError, match="required"):
        FileProvider({}, context)


@pytest.mark.parametrize(("properties", "field", "words"), [
    ({"content": "x"}, "path", "required"),
    ({"path": "../etc/passwd", "content": "x"}, "path", "'..'"),
    ({"path": "a/../../b", "content": "x"}, "path", "'..'"),
    ({"path": "/etc/passwd", "content": "x"}, "path", "absolute"),
    ({"path": "a", "content": "x", "template": "t"}, "content", "exactly one"),
    ({"path": "a"}, "content", "exactly one"),
    ({"path": "a", "template": "/etc/shadow"}, "template", "absolute"),
    ({"path": "a", "content": "x", "mode": 644}, "mode", "octal string"),
    ({"path": "a", "content": "x", "mode": "4755"}, "mode", "at most 0777"),
    ({"path": "a", "content": "x", "mode": "rw-r--r--"}, "mode", "octal"),
    ({"path": "a", "content": "x", "owner": "root"}, "owner", "unknown"),
])
def test_check_properties_rejects(properties: dict[str, Any], field: str, words: str) -> None:
    problems = FileProvider.check_properties(properties)
    assert any(p.field == field and words in p.message for p in problems), problems


def test_check_properties_accepts_the_documented_forms() -> None:
    for properties in ({"path": "a/b.conf", "content": "x"},
                       {"path": "a", "content": {"k": 1}, "mode": "0600"},
                       {"path": "a", "template": "../shared/t.conf", "mode": 0o640},
                       {"path": "a", "content": "x", "mode": "755"}):
        assert FileProvider.check_properties(properties) == [], properties


# ---- create, no-op, update, drift ------------------------------------------------------------


def test_create_then_second_run_is_a_no_op(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "etc/app/app.ini", "content": "a = 1\n"})
    first = prov.observe(comp, None)
    assert (first.exists, first.in_sync) == (False, False)
    assert "+a = 1" in first.diff
    record, applied = reconcile(prov, comp, None)
    assert applied and record is not None
    target = site["root"] / "etc" / "app" / "app.ini"
    assert target.read_bytes() == b"a = 1\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE((site["root"] / "etc").stat().st_mode) == 0o755
    assert record.provider == "file" and record.binding == "config"
    assert record.data["path"] == str(target.resolve())
    assert record.data["mode"] == 0o644
    assert len(record.data["sha256"]) == 64
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]

    before = target.stat()
    again, applied = reconcile(prov, comp, record)
    assert not applied and again == record
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert prov.health(comp, record).state is Health.HEALTHY


def test_update_replaces_the_file_atomically_and_shows_a_diff(site: dict[str, Path]) -> None:
    prov = provider(site)
    record = prov.apply(component(site, {"path": "app.ini", "content": "a = 1\nb = 2\n"}), None)
    target = site["root"] / "app.ini"
    old_inode = target.stat().st_ino
    comp = component(site, {"path": "app.ini", "content": "a = 1\nb = 3\n"})
    observation = prov.observe(comp, record)
    assert observation.exists and not observation.in_sync
    assert "-b = 2" in observation.diff and "+b = 3" in observation.diff
    new_record, applied = reconcile(prov, comp, record)
    assert applied and new_record is not None
    assert target.read_text() == "a = 1\nb = 3\n"
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one
    assert new_record.data["sha256"] != record.data["sha256"]


def test_hand_edited_file_is_detected_and_put_back(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "app.ini", "content": "debug = false\n"})
    record = prov.apply(comp, None)
    target = site["root"] / "app.ini"
    target.write_text("debug = true\n")
    assert prov.health(comp, record).state is Health.DEGRADED
    observation = prov.observe(comp, record)
    assert not observation.in_sync and "content differs" in observation.message
    assert "-debug = true" in observation.diff and "+debug = false" in observation.diff
    assert target.read_text() == "debug = true\n"  # observe changes nothing
    reconcile(prov, comp, record)
    assert target.read_text() == "debug = false\n"


def test_mode_drift_and_mode_change(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "secret.conf", "content": "x\n", "mode": "0600"})
    record = prov.apply(comp, None)
    target = site["root"] / "secret.conf"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o644)
    observation = prov.observe(comp, record)
    assert not observation.in_sync and "mode 0644 -> 0600" in observation.message
    assert observation.diff == ""  # the content is the same
    reconcile(prov, comp, record)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    wider = component(site, {"path": "secret.conf", "content": "x\n", "mode": 0o640})
    record, applied = reconcile(prov, wider, record)
    assert applied and stat.S_IMODE(target.stat().st_mode) == 0o640


def test_non_string_content_is_written_as_json(site: dict[str, Path]) -> None:
    prov = provider(site)
    prov.apply(component(site, {"path": "limits.json", "content": {"cpu": 2, "név": "ü"}}), None)
    assert (site["root"] / "limits.json").read_text("utf-8") == (
        '{\n  "cpu": 2,\n  "név": "ü"\n}\n')
    prov.apply(component(site, {"path": "replicas", "content": 3}), None)
    assert (site["root"] / "replicas").read_bytes() == b"3\n"


def test_secret_values_are_not_shown_in_diffs(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "db.env", "content": "PASSWORD=hunter2\n"},
                     params={"password": "hunter2"}, secret=frozenset({"password"}))
    observation = prov.observe(comp, None)
    assert "hunter2" not in observation.diff
    assert "+PASSWORD=***" in observation.diff  # the diff is shown with the value masked
    record = prov.apply(comp, None)
    (site["root"] / "db.env").write_text("PASSWORD=changed\n")
    drift = prov.observe(comp, record).diff
    assert "hunter2" not in drift and "-PASSWORD=changed" in drift and "+PASSWORD=***" in drift


# ---- templates -----------------------------------------------------------------------------


def test_template_is_rendered_with_the_component_context(site: dict[str, Path]) -> None:
    template = site["repo"] / "solutions" / "app" / "files" / "motd.txt"
    template.write_text("${{ params.greeting }} from ${{ target.name }}\n")
    prov = provider(site)
    comp = component(site, {"path": "motd", "template": "files/motd.txt"})
    record, applied = reconcile(prov, comp, None)
    assert applied and (site["root"] / "motd").read_text() == "hello from line-1\n"
    assert prov.observe(comp, record).in_sync


def test_template_errors_name_the_file(site: dict[str, Path]) -> None:
    template = site["repo"] / "solutions" / "app" / "files" / "bad.txt"
    template.write_text("${{ params.missing }}\n")
    comp = component(site, {"path": "bad", "template": "files/bad.txt"})
    with pytest.raises(TemplateError, match=r"solutions/app/files/bad\.txt"):
        provider(site).apply(comp, None)


def test_template_outside_the_repository_is_rejected(site: dict[str, Path]) -> None:
    (site["outside"] / "stolen.txt").write_text("/etc/shadow contents\n")
    prov = provider(site)
    climbing = component(site, {"path": "x", "template": "../../../outside/stolen.txt"})
    with pytest.raises(PolicyError, match="outside"):
        prov.observe(climbing, None)
    link = site["repo"] / "solutions" / "app" / "files" / "link.txt"
    link.symlink_to(site["outside"] / "stolen.txt")
    via_symlink = component(site, {"path": "x", "template": "files/link.txt"})
    with pytest.raises(PolicyError, match="outside"):
        prov.apply(via_symlink, None)
    assert not (site["root"] / "x").exists()


# ---- path escapes ----------------------------------------------------------------------------


def test_paths_that_leave_the_root_are_rejected_at_run_time(site: dict[str, Path]) -> None:
    prov = provider(site)
    (site["root"] / "logs").symlink_to(site["outside"])
    escaping = component(site, {"path": "logs/app.log", "content": "pwned\n"})
    with pytest.raises(PolicyError, match="outside"):
        prov.observe(escaping, None)
    with pytest.raises(PolicyError):
        prov.apply(escaping, None)
    for bad in ("../outside/x", "/tmp/x", "a/../../x"):
        with pytest.raises(PermanentError):
            prov.apply(component(site, {"path": bad, "content": "pwned\n"}), None)
    assert list(site["outside"].iterdir()) == []


# ---- moves, delete, prune --------------------------------------------------------------------


def test_moved_path_writes_the_new_file_and_prunes_the_old(site: dict[str, Path]) -> None:
    prov = provider(site)
    record = prov.apply(component(site, {"path": "old/dir/app.ini", "content": "x\n"}), None)
    moved = component(site, {"path": "new/app.ini", "content": "x\n"})
    observation = prov.observe(moved, record)
    assert not observation.in_sync and not observation.exists  # the new path is not there yet
    new_record, applied = reconcile(prov, moved, record)
    assert applied and new_record is not None
    assert (site["root"] / "new" / "app.ini").read_text() == "x\n"
    assert not (site["root"] / "old").exists()  # file and the directories we made are gone
    assert prov.observe(moved, new_record).in_sync


def test_moved_path_keeps_an_old_file_someone_replaced(site: dict[str, Path]) -> None:
    prov = provider(site)
    record = prov.apply(component(site, {"path": "old.ini", "content": "x\n"}), None)
    (site["root"] / "old.ini").write_text("edited by hand\n")
    prov.apply(component(site, {"path": "new.ini", "content": "x\n"}), record)
    assert (site["root"] / "old.ini").read_text() == "edited by hand\n"
    assert (site["root"] / "new.ini").read_text() == "x\n"


def test_delete_removes_only_what_it_wrote(site: dict[str, Path]) -> None:
    prov = provider(site)
    (site["root"] / "shared").mkdir()  # exists before us: must survive
    ours = prov.apply(component(site, {"path": "shared/deep/a.conf", "content": "a\n"}), None)
    (site["root"] / "shared" / "deep" / "neighbour.conf").write_text("not ours\n")
    prov.delete(ours)
    assert not (site["root"] / "shared" / "deep" / "a.conf").exists()
    assert (site["root"] / "shared" / "deep" / "neighbour.conf").exists()  # dir not empty

    lone = prov.apply(component(site, {"path": "x/y/z.conf", "content": "z\n"}), None)
    prov.delete(lone)
    assert not (site["root"] / "x").exists()
    assert site["root"].is_dir() and (site["root"] / "shared").is_dir()
    prov.delete(lone)  # already gone: done


def test_delete_keeps_a_hand_edited_file_and_says_so(site: dict[str, Path]) -> None:
    prov = provider(site)
    record = prov.apply(component(site, {"path": "a.conf", "content": "a\n"}), None)
    (site["root"] / "a.conf").write_text("tuned on site\n")
    with pytest.raises(PermanentError, match="changed since it was written") as info:
        prov.delete(record)
    assert info.value.reason == "PruneConflict"
    assert (site["root"] / "a.conf").read_text() == "tuned on site\n"


def test_delete_never_follows_a_symlink(site: dict[str, Path]) -> None:
    prov = provider(site)
    record = prov.apply(component(site, {"path": "a.conf", "content": "a\n"}), None)
    victim = site["outside"] / "victim.conf"
    victim.write_text("a\n")  # same content, so a hash check through the link would pass
    (site["root"] / "a.conf").unlink()
    (site["root"] / "a.conf").symlink_to(victim)
    with pytest.raises(PermanentError, match="no longer a regular file"):
        prov.delete(record)
    assert victim.read_text() == "a\n"
    assert os.path.islink(site["root"] / "a.conf")


def test_health_reports_a_missing_file(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"path": "a.conf", "content": "a\n"})
    record = prov.apply(comp, None)
    (site["root"] / "a.conf").unlink()
    report = prov.health(comp, record)
    assert report.state is Health.DEGRADED and "missing" in report.message
