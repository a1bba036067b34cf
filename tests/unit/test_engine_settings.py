"""reconciler.engine.engine_settings: the engine's settings as values, made from the daemon's
configuration by ``DaemonConfig.engine_settings()``."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from reconciler.core.model import StatusLayout
from reconciler.core.provider_api import LocalPolicy
from reconciler.daemon.config import DaemonConfig, load_config
from reconciler.engine.engine_settings import EngineSettings
from reconciler.gitops.verification import VerifyMode

FULL = """\
repo:
  url: git@git.example.net:fleet.git
  ref: release
  sshKey: keys/id_ed25519
  tokenFile: keys/token
  timeout: 30
site: /eu/berlin/
targets: [gw1, gw2]
stateDir: /var/lib/rec
retries: {count: 2, delay: 1.5, maxDelay: 30}
healthTimeout: 90
healthPollInterval: 0.5
shutdownGrace: 12
status: {layout: shared, branch: fleet-status, push: false}
policy:
  allowedProviders: [file, script]
  fileRoots: [files]
  allowScripts: true
  namespaces: [apps]
verify: {mode: tag, allowedSigners: signers, gpgKeyring: ring.gpg}
secretsDir: secrets
"""


def test_made_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir()
    path.write_text(FULL)
    etc = path.parent.resolve()
    settings = load_config(path, environ={}).engine_settings()
    assert settings == EngineSettings(
        repo_url="git@git.example.net:fleet.git", ref="release",
        ssh_key=etc / "keys/id_ed25519", token_file=etc / "keys/token", git_timeout=30,
        site="eu/berlin", targets=("gw1", "gw2"), state_dir=Path("/var/lib/rec"),
        retries=2, retry_delay=1.5, retry_max_delay=30.0, health_timeout=90,
        health_poll_interval=0.5, shutdown_grace=12.0,
        policy=LocalPolicy(allowed_providers=frozenset({"file", "script"}),
                           file_roots=(Path("/var/lib/rec/files"),), allow_scripts=True,
                           namespaces=frozenset({"apps"})),
        secrets_dir=etc / "secrets", verify_mode=VerifyMode.TAG,
        verify_allowed_signers=etc / "signers", verify_gpg_keyring=etc / "ring.gpg",
        status_layout=StatusLayout.SHARED, status_branch="fleet-status", status_push=False)


def test_the_defaults_are_the_daemons() -> None:
    """A field left out means the same to the engine as to the daemon's configuration."""
    made = DaemonConfig(repo_url="/srv/fleet.git", site="eu").engine_settings()
    assert made == EngineSettings(repo_url="/srv/fleet.git", site="eu")


def test_every_field_is_defaulted_and_documented() -> None:
    lines = inspect.getsource(EngineSettings).splitlines()
    for f in dataclasses.fields(EngineSettings):
        assert f.default is not dataclasses.MISSING or \
            f.default_factory is not dataclasses.MISSING, f.name
        at = next(i for i, line in enumerate(lines) if line.startswith(f"    {f.name}: "))
        assert lines[at - 1].strip().startswith("#: "), f"{f.name} has no #: comment"
