"""reconciler.daemon.config: the daemon's local config file and its RECONCILER_* overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.core.errors import ConfigError
from reconciler.core.model import StatusLayout
from reconciler.daemon.config import DaemonConfig, load_config, site_id

MINIMAL = """\
repo:
  url: https://git.example.net/fleet.git
site: eu/berlin
"""

FULL = """\
repo:
  url: git@git.example.net:fleet.git
  ref: release
  sshKey: keys/id_ed25519
  timeout: 30
site: /eu/berlin/
targets: [gw1, gw2]
stateDir: /var/lib/rec
interval: 60
jitter: 5
retries: {count: 2, delay: 1.5, maxDelay: 30}
healthTimeout: 90
healthPollInterval: 0.5
status: {layout: shared, branch: fleet-status, push: false}
policy:
  allowedProviders: [file, script]
  fileRoots: [files, /srv/edge]
  allowScripts: true
  namespaces: [apps]
listen: {address: 0.0.0.0, port: 9000, enabled: false}
webhook: {secretFile: /etc/reconciler/webhook.secret}
verify: {mode: commit, allowedSigners: signers}
secretsDir: secrets
watch: false
log: {format: json, level: debug}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> DaemonConfig:
    path = write(tmp_path, text) if text is not None else None
    return load_config(path, environ=env or {})


def test_minimal_config_takes_safe_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert (cfg.repo_url, cfg.site, cfg.ref) == ("https://git.example.net/fleet.git",
                                                 "eu/berlin", "main")
    assert cfg.state_dir == Path("/var/lib/reconciler")
    assert cfg.policy.allowed_providers is None and cfg.policy.allow_scripts is False
    assert cfg.policy.file_roots == (Path("/var/lib/reconciler/files"),)
    assert (cfg.interval, cfg.retries, cfg.status_layout) == (None, None, None)
    assert (cfg.listen_address, cfg.listen_port, cfg.status_push) == ("127.0.0.1", 9420, True)
    assert cfg.verify_mode == "none" and cfg.watch is True
    assert not cfg.is_local_repo and cfg.local_repo_path is None


def test_every_key_of_a_full_config(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL)
    etc = tmp_path / "etc"
    assert cfg.repo_url == "git@git.example.net:fleet.git"  # scp-like URL left alone
    assert cfg.site == "eu/berlin" and cfg.ref == "release" and cfg.git_timeout == 30
    assert cfg.ssh_key == etc / "keys/id_ed25519"
    assert cfg.targets == ("gw1", "gw2")
    assert (cfg.interval, cfg.jitter, cfg.retries, cfg.retry_delay, cfg.retry_max_delay) == (
        60, 5, 2, 1.5, 30.0)
    assert (cfg.health_timeout, cfg.health_poll_interval) == (90, 0.5)
    assert (cfg.status_layout, cfg.status_branch, cfg.status_push) == (
        StatusLayout.SHARED, "fleet-status", False)
    assert cfg.policy.allowed_providers == frozenset({"file", "script"})
    assert cfg.policy.file_roots == (Path("/var/lib/rec/files"), Path("/srv/edge"))
    assert cfg.policy.allow_scripts is True and cfg.policy.namespaces == frozenset({"apps"})
    assert (cfg.listen_address, cfg.listen_port, cfg.listen_enabled) == ("0.0.0.0", 9000, False)
    assert cfg.webhook_secret_file == Path("/etc/reconciler/webhook.secret")
    assert (cfg.verify_mode, cfg.verify_allowed_signers) == ("commit", etc / "signers")
    assert cfg.secrets_dir == etc / "secrets" and cfg.watch is False
    assert (cfg.log_format, cfg.log_level, cfg.source_file) == ("json", "debug",
                                                                tmp_path / "etc/config.yaml")


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        pytest.param({"RECONCILER_REPO_URL": "https://other/fleet.git"}, "repo_url",
                     "https://other/fleet.git", id="string-overrides-file"),
        pytest.param({"RECONCILER_REPO_REF": "v1.2"}, "ref", "v1.2", id="nested-key"),
        pytest.param({"RECONCILER_REPO_REF": "123"}, "ref", "123", id="number-kept-as-string"),
        pytest.param({"RECONCILER_REPO_REF": "true"}, "ref", "true", id="bool-kept-as-string"),
        pytest.param({"RECONCILER_INTERVAL": "45"}, "interval", 45, id="integer"),
        pytest.param({"RECONCILER_RETRIES_DELAY": "0.25"}, "retry_delay", 0.25, id="float"),
        pytest.param({"RECONCILER_STATUS_PUSH": "false"}, "status_push", False, id="bool"),
        pytest.param({"RECONCILER_TARGETS": "a, b,c"}, "targets", ("a", "b", "c"),
                     id="comma-separated-list"),
        pytest.param({"RECONCILER_TARGETS": "[x, y]"}, "targets", ("x", "y"), id="yaml-list"),
        pytest.param({"RECONCILER_TARGETS": ""}, "targets", (), id="empty-list"),
        pytest.param({"RECONCILER_SITE": "lab/demo"}, "site", "lab/demo", id="site"),
        pytest.param({"RECONCILER_STATEDIR": "/srv/state"}, "state_dir", Path("/srv/state"),
                     id="camel-case-key-upper-cased"),
        pytest.param({"RECONCILER_LOG_LEVEL": "error"}, "log_level", "error", id="log-level"),
        pytest.param({"RECONCILER_STATUS_LAYOUT": "shared"}, "status_layout",
                     StatusLayout.SHARED, id="enum"),
        pytest.param({"RECONCILER_LISTEN_PORT": "0"}, "listen_port", 0, id="port-zero"),
        pytest.param({"RECONCILER_CONFIG": "/elsewhere.yaml"}, "ref", "main",
                     id="config-path-variable-is-not-a-setting"),
        pytest.param({"RECONCILER_TEST_KUBECONFIG": "x"}, "ref", "main",
                     id="test-variables-ignored"),
        pytest.param({"OTHER_INTERVAL": "1"}, "interval", None, id="other-prefix-ignored"),
    ],
)
def test_environment_overrides(tmp_path: Path, env: dict[str, str], attribute: str,
                               expected: Any) -> None:
    assert getattr(load(tmp_path, MINIMAL, env), attribute) == expected


def test_policy_overrides_from_the_environment(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, {
        "RECONCILER_POLICY_ALLOWSCRIPTS": "true",
        "RECONCILER_POLICY_ALLOWEDPROVIDERS": "file,helm",
        "RECONCILER_POLICY_FILEROOTS": "/srv/a,b",
        "RECONCILER_STATEDIR": "/state",
    })
    assert cfg.policy.allow_scripts is True
    assert cfg.policy.allowed_providers == frozenset({"file", "helm"})
    assert cfg.policy.file_roots == (Path("/srv/a"), Path("/state/b"))


def test_environment_alone_is_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, None, {"RECONCILER_REPO_URL": "repo", "RECONCILER_SITE": "lab"})
    # a relative local path resolves against the working directory when there is no file
    assert cfg.repo_url == str(tmp_path / "repo")
    assert cfg.is_local_repo and cfg.local_repo_path == tmp_path / "repo"
    assert cfg.source_file is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("../fleet", "{tmp}/fleet", id="relative-path-to-config-dir"),
        pytest.param("/srv/fleet", "/srv/fleet", id="absolute-path"),
        pytest.param("file:///srv/fleet", "file:///srv/fleet", id="file-url"),
        pytest.param("ssh://git@host/fleet.git", "ssh://git@host/fleet.git", id="ssh-url"),
        pytest.param("git@host:fleet.git", "git@host:fleet.git", id="scp-like"),
    ],
)
def test_repo_url_forms(tmp_path: Path, url: str, expected: str) -> None:
    cfg = load(tmp_path, MINIMAL.replace("https://git.example.net/fleet.git", url))
    assert cfg.repo_url == expected.format(tmp=tmp_path)


def test_local_repo_path_of_a_file_url(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL.replace("https://git.example.net/fleet.git",
                                         "file:///srv/fleet"))
    assert cfg.is_local_repo and cfg.local_repo_path == Path("/srv/fleet")


def test_relative_paths_resolve_against_their_base(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(tmp_path, MINIMAL + "stateDir: state\nsecretsDir: ~/secrets\n"
               "policy: {fileRoots: [out, /abs]}\n")
    assert cfg.state_dir == tmp_path / "etc/state"
    assert cfg.secrets_dir == tmp_path / "home/secrets"
    assert cfg.policy.file_roots == (tmp_path / "etc/state/out", Path("/abs"))


@pytest.mark.parametrize(
    ("text", "env", "problem"),
    [
        pytest.param("site: x\n", {}, "config.yaml:1: repo: required field", id="missing-repo"),
        pytest.param(MINIMAL + "interval: 0\n", {}, "config.yaml:4: interval: min value is 1",
                     id="below-min-names-line"),
        pytest.param(MINIMAL + "policy:\n  allowScripts: yes-please\n", {},
                     "config.yaml:5: policy.allowScripts: must be of boolean type",
                     id="nested-wrong-type-names-line"),
        pytest.param(MINIMAL + "colour: blue\n", {}, "config.yaml:4: colour: unknown field",
                     id="unknown-key"),
        pytest.param(MINIMAL + "status: {layout: sideways}\n", {},
                     "status.layout: unallowed value sideways", id="unallowed-value"),
        pytest.param(MINIMAL, {"RECONCILER_INTERVALL": "5"},
                     "RECONCILER_INTERVALL: unknown setting", id="unknown-variable"),
        pytest.param(MINIMAL, {"RECONCILER_LISTEN_PORT": "eighty"},
                     "listen.port: must be of integer type", id="bad-variable-value"),
        pytest.param(MINIMAL + "site: [a]\n", {}, "site: must be of string type",
                     id="site-not-a-string"),
        pytest.param("a: [1\n", {}, "config.yaml:2: invalid YAML", id="invalid-yaml"),
        pytest.param("- 1\n- 2\n", {}, "the config must be a mapping", id="not-a-mapping"),
        pytest.param(MINIMAL + "---\n" + MINIMAL, {}, "expected one YAML document, found 2",
                     id="two-documents"),
        pytest.param(MINIMAL.replace("site: eu/berlin", "site: ''"), {},
                     "site: empty values not allowed", id="empty-site"),
    ],
)
def test_invalid_configs_raise_config_error(tmp_path: Path, text: str, env: dict[str, str],
                                            problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    assert any(problem in p for p in info.value.problems) or problem in info.value.message, (
        info.value.problems, info.value.message)
    assert info.value.reason == "InvalidConfig"


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + "interval: 0\njitter: -1\n", {"RECONCILER_NOPE": "1"})
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "(and 2 more)" in info.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("eu/berlin/line-1", "eu_berlin_line-1", id="three-levels"),
        pytest.param("/eu/berlin/", "eu_berlin", id="slashes-trimmed"),
        pytest.param("lab", "lab", id="root"),
    ],
)
def test_site_id(path: str, expected: str) -> None:
    assert site_id(path) == expected


def test_site_ids_of_a_site_and_its_child_do_not_nest() -> None:
    assert not site_id("eu/berlin/line-1").startswith(site_id("eu/berlin") + "/")
