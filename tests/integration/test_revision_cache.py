"""Validated revisions kept on disk: a new process on the same state directory does not
validate an unchanged revision again, and never trusts a file it did not write itself.

Each "process" here is a new :class:`Reconciler` on the same state directory, as
``sync --once`` from a timer makes one per run. Whether a revision was validated shows in
how often the providers' property checks ran (a provider plug-in of the test counts them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from reconciler_providers.file import FileProvider

from reconciler.core.provider_api import LocalPolicy, Problem
from reconciler.core.registry import ProviderRegistry
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.pipeline import Reconciler, RunSummary
from tests.integration.fleetkit import (
    FleetRepo,
    component,
    git,
    instance,
    settings,
    site,
    solution,
    target,
)


class CheckedFileProvider(FileProvider):
    """The file provider, counting the property checks validation makes."""

    checks: ClassVar[list[str]] = []

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        CheckedFileProvider.checks.append(str(properties.get("path")))
        return super().check_properties(properties)


REGISTRY = ProviderRegistry({"file": CheckedFileProvider})  # type: ignore[dict-item]


def fleet(root: Path, *, params: Mapping[str, Any] | None = None,
          content: str = "level ${{ params.level }}\n", **pin: Any) -> FleetRepo:
    repo = FleetRepo(root / "fleet")
    write(repo, params=params, content=content, **pin)
    repo.commit("one target")
    return repo


def write(repo: FleetRepo, *, params: Mapping[str, Any] | None = None,
          content: str = "level ${{ params.level }}\n", **pin: Any) -> None:
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq"), site("line-1", "hq")])
    repo.write("targets.yaml", [target("alpha", "line-1", params=params),
                                instance("app", "app", names=["alpha"], **pin)])
    repo.write("solutions/app.yaml", solution(
        "app", [component("conf", "config-file", {"path": "app.conf", "content": content})],
        parameters={"level": {"type": "integer", "default": 1},
                    "password": {"type": "string", "default": "none"}}))


def process(repo: FleetRepo, state: Path, *, secrets: Path | None = None,
            roots: tuple[Path, ...] = ()) -> Reconciler:
    """A new engine on ``state``, as a new process makes one."""
    config = EngineSettings(repo_url=repo.url, site="hq", state_dir=state, retries=0,
                            health_poll_interval=0.05, secrets_dir=secrets,
                            policy=LocalPolicy(file_roots=(state / "files", *roots)))
    return Reconciler(config, REGISTRY)


def validated(run: RunSummary) -> bool:
    """Whether a process's run validated the revision (checks its run went well)."""
    assert run.ok, [s.message for s in run.statuses]
    return bool(CheckedFileProvider.checks)


def sync(reconciler: Reconciler) -> bool:
    CheckedFileProvider.checks.clear()
    return validated(reconciler.run("sync"))


def cache_file(state: Path, repo: FleetRepo) -> Path:
    return state / "revisions" / f"{repo.head()}.report"


def conf(state: Path) -> str:
    return (state / "files" / "alpha" / "app.conf").read_text()


def resign(path: Path, key: bytes, payload: bytes | None = None, **header: Any) -> None:
    """Rewrite a cache file with ``payload`` and ``header`` fields, MAC-ed with ``key``."""
    magic, line, rest = path.read_bytes().split(b"\n", 2)
    fields = {k: v for k, v in json.loads(line).items() if k != "mac"}
    payload = rest if payload is None else payload
    fields.update(header, length=len(payload))
    signed = json.dumps(fields, sort_keys=True).encode() + b"\n" + payload
    fields["mac"] = hmac.new(key, signed, hashlib.sha256).hexdigest()
    path.write_bytes(magic + b"\n" + json.dumps(fields, sort_keys=True).encode() + b"\n"
                     + payload)


class Evil:
    """Unpickling this creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_new_process_does_not_validate_an_unchanged_revision_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    assert cache_file(state, repo).is_file()
    key = state / "revisions" / "key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32

    assert not sync(process(repo, state))
    assert conf(state) == "level 1\n"

    for level in (2, 3):
        write(repo, params={"level": level})
        previous = repo.head()
        repo.commit(f"level {level}")
        assert sync(process(repo, state))  # a new revision is validated
        assert conf(state) == f"level {level}\n"
        assert not sync(process(repo, state))
    # kept: the files of the revisions in use (the last one applied, its fallback)
    assert sorted(p.name for p in (state / "revisions").glob("*.report")) == \
        sorted(f"{c}.report" for c in (previous, repo.head()))


def test_another_local_policy_validates_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    assert sync(process(repo, state, roots=(tmp_path / "elsewhere",)))
    assert not sync(process(repo, state, roots=(tmp_path / "elsewhere",)))


def test_a_changed_cache_file_is_not_trusted(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    path = cache_file(state, repo)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # a byte of the pickle
    path.write_bytes(bytes(data))

    assert sync(process(repo, state))
    assert not sync(process(repo, state))  # written anew, and good again
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert sync(process(repo, state))


def test_a_file_made_without_the_key_is_never_unpickled(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    # what someone who can write the directory but not read the key could make: a pickle
    # that runs code when loaded, with a well-formed header and a MAC of a key of their own
    marker = tmp_path / "pwned"
    resign(cache_file(state, repo), b"k" * 32, pickle.dumps(Evil(marker)))

    assert sync(process(repo, state))
    assert not marker.exists()


def test_even_with_the_key_a_payload_names_only_allowed_classes(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    marker = tmp_path / "pwned"
    key = (state / "revisions" / "key").read_bytes()
    resign(cache_file(state, repo), key, pickle.dumps(Evil(marker)))

    assert sync(process(repo, state))
    assert not marker.exists()


def test_a_file_of_another_program_version_is_ignored(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    key = (state / "revisions" / "key").read_bytes()
    resign(cache_file(state, repo), key, version="0.0.1-other")
    assert sync(process(repo, state))
    assert not sync(process(repo, state))
    resign(cache_file(state, repo), key, format=0)
    assert sync(process(repo, state))


def test_a_key_others_may_read_turns_the_cache_off(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    key = state / "revisions" / "key"
    key.chmod(0o644)

    assert sync(process(repo, state))
    assert sync(process(repo, state))
    key.chmod(0o600)
    assert not sync(process(repo, state))


def test_a_revision_that_read_a_secret_is_not_written_to_disk(tmp_path: Path) -> None:
    secret = "s3cr3t-value-9f2c"
    repo = fleet(tmp_path, params={"password": {"secretFrom": {"file": "db"}}},
                 content="password ${{ params.password }}\n")
    state = tmp_path / "state"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db").write_text(secret + "\n")

    assert sync(process(repo, state, secrets=secrets))
    assert conf(state) == f"password {secret}\n"
    holders = [p for p in state.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert holders == [state / "files" / "alpha" / "app.conf"]
    assert not cache_file(state, repo).exists()

    (secrets / "db").write_text("rotated-value-77\n")
    assert sync(process(repo, state, secrets=secrets))
    assert conf(state) == "password rotated-value-77\n"


def test_a_secret_that_could_not_be_read_is_looked_for_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path, params={"password": {"secretFrom": {"file": "db"}}},
                 content="password ${{ params.password }}\n")
    state = tmp_path / "state"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    summary = process(repo, state, secrets=secrets).run("sync")
    assert not summary.ok  # the secret is missing: the revision is invalid for alpha
    assert cache_file(state, repo).is_file()
    CheckedFileProvider.checks.clear()
    assert not process(repo, state, secrets=secrets).run("sync").ok
    assert not CheckedFileProvider.checks  # still missing: the stored report holds

    (secrets / "db").write_text("now-there-1234\n")
    assert sync(process(repo, state, secrets=secrets))
    assert conf(state) == "password now-there-1234\n"


def test_a_pruned_checkout_is_exported_again(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    state = tmp_path / "state"
    assert sync(process(repo, state))
    checkout = state / "checkouts" / repo.head()
    for path in sorted(checkout.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    checkout.rmdir()

    assert not sync(process(repo, state))
    assert (checkout / "solutions" / "app.yaml").is_file()
    assert os.listdir(state / "files" / "alpha") == ["app.conf"]


def tag(repo: FleetRepo, name: str, commit: str) -> None:
    git(repo.work, "tag", "-a", name, "-m", f"release {name}", commit)
    git(repo.work, "push", "--quiet", str(repo.remote), f"refs/tags/{name}")


def test_a_release_tagged_after_validation_is_seen_by_the_next_process(
        tmp_path: Path) -> None:
    repo = fleet(tmp_path, content="release one\n")
    tag(repo, "app/v1.0.0", repo.head())
    write(repo, content="release two\n")
    two = repo.commit("release two")
    write(repo, content="head\n", version="2.0.0")  # pinned, not released yet
    repo.commit("pin 2.0.0")
    state = tmp_path / "state"
    summary = process(repo, state).run("sync")
    assert not summary.ok and "no release 2.0.0" in summary.statuses[0].message
    assert cache_file(state, repo).is_file()

    tag(repo, "app/v2.0.0", two)
    assert sync(process(repo, state))  # a new tag of the solution: validated again
    assert conf(state) == "release two\n"
    assert not sync(process(repo, state))

    # the release's checkout, pruned, is exported again without validating
    checkout = state / "checkouts" / two
    assert checkout.is_dir()
    for path in sorted(checkout.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    checkout.rmdir()
    assert not sync(process(repo, state))
    assert (checkout / "solutions" / "app.yaml").is_file()
    assert conf(state) == "release two\n"
