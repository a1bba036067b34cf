"""The ``script`` provider running real shell scripts in temporary directories."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psutil
import pytest
from reconciler_providers.script import ScriptProvider

from reconciler.core.errors import PermanentError, PolicyError, TransientError
from reconciler.core.provider_api import (
    Component,
    Health,
    LocalPolicy,
    Provider,
    ProviderContext,
    Record,
)

ALLOW = LocalPolicy(allow_scripts=True)

TRICKY = {
    "subshell": "$(rm -rf /; touch pwned)",
    "semicolon": "a; touch pwned; echo b",
    "backticks": "`touch pwned`",
    "quotes": "it's \"quoted\" \\ back'slash",
    "newlines": "line one\nline two\n\n",
    "unicode": "Grüße, 工場, 🏭",
    "dashes": "--force -rf",
    "glob": "* ?[a]",
    "spaces": "  leading and trailing  ",
    "empty": "",
}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    solution = tmp_path / "repo" / "solutions" / "app"
    solution.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return {"repo": tmp_path / "repo", "solution": solution, "work": tmp_path / "work",
            "state": tmp_path / "state", "outside": tmp_path / "outside"}


def script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return f"./{name}"


def provider(site: dict[str, Path], *, policy: LocalPolicy = ALLOW,
             **config: Any) -> ScriptProvider:
    context = ProviderContext(target="line-1", binding="host", policy=policy,
                              state_dir=site["state"])
    return ScriptProvider({"workdir": str(site["work"]), **config}, context)


def component(site: dict[str, Path], properties: Mapping[str, Any], *,
              params: Mapping[str, Any] | None = None,
              secret: frozenset[str] = frozenset()) -> Component:
    return Component(
        name="agent", type="host", properties=properties,
        params=dict(params if params is not None else {"version": "1.2"}),
        instance="app-eu", solution="app", target="line-1", site="eu/berlin",
        revision="c0ffee" * 6 + "abcd", base_dir=site["solution"], repo_root=site["repo"],
        secret_params=secret,
    )


def reconcile(prov: ScriptProvider, comp: Component,
              record: Record | None) -> tuple[Record | None, bool]:
    """What the core does for one component: observe, apply only when not in sync."""
    assert not prov.check_properties(comp.properties)
    if prov.observe(comp, record).in_sync:
        return record, False
    return prov.apply(comp, record), True


# ---- config, properties, policy --------------------------------------------------------------


def test_registered_and_conforms_to_the_provider_protocol(site: dict[str, Path]) -> None:
    (entry,) = [e for e in entry_points(group="reconciler.providers") if e.name == "script"]
    assert entry.load() is ScriptProvider
    assert isinstance(provider(site), Provider)
    assert ScriptProvider.untemplated == {"apply", "get", "delete", "health"}


def test_policy_without_scripts_is_enforced(site: dict[str, Path]) -> None:
    denied = LocalPolicy(allow_scripts=False)
    problems = ScriptProvider.check_config({"workdir": str(site["work"])}, denied)
    assert [p.message for p in problems if "the local policy does not allow scripts" in p.message]
    with pytest.raises(PolicyError, match="the local policy does not allow scripts"):
        provider(site, policy=denied)
    assert ScriptProvider.check_config({"workdir": str(site["work"])}, ALLOW) == []


@pytest.mark.parametrize(("config", "field"), [
    ({}, "workdir"),
    ({"workdir": "../relative/dir"}, "workdir"),
    ({"workdir": ""}, "workdir"),
    ({"workdir": "/w", "env": {"RECONCILER_TARGET": "x"}}, "env.RECONCILER_TARGET"),
    ({"workdir": "/w", "env": {"A": 1}}, "env.A"),
    ({"workdir": "/w", "env": {"BAD NAME": "x"}}, "env.BAD NAME"),
    ({"workdir": "/w", "timeout": 0}, "timeout"),
    ({"workdir": "/w", "outputLimit": "1M"}, "outputLimit"),
    ({"workdir": "/w", "shell": "/bin/sh"}, "shell"),
])
def test_check_config_rejects(config: dict[str, Any], field: str) -> None:
    assert field in [p.field for p in ScriptProvider.check_config(config, ALLOW)]


@pytest.mark.parametrize(("properties", "field", "words"), [
    ({"get": ["true"]}, "apply", "required"),
    ({"apply": "./deploy.sh --fast"}, "apply", "not a shell string"),
    ({"apply": []}, "apply", "non-empty list"),
    ({"apply": ["./deploy.sh", 3]}, "apply", "must be a string"),
    ({"apply": ["/bin/rm", "-rf"]}, "apply", "absolute commands are not allowed"),
    ({"apply": ["x"], "delete": ["a\0b"]}, "delete", "NUL"),
    ({"apply": ["x"], "timeout": -1}, "timeout", "positive"),
    ({"apply": ["x"], "run": ["y"]}, "run", "unknown"),
])
def test_check_properties_rejects(properties: dict[str, Any], field: str, words: str) -> None:
    problems = ScriptProvider.check_properties(properties)
    assert any(p.field == field and words in p.message for p in problems), problems


# ---- what a command receives -----------------------------------------------------------------


def test_parameters_reach_the_command_byte_for_byte(site: dict[str, Path]) -> None:
    apply = script(site["solution"], "capture.sh",
                   'env -0 > env.bin\ncat > stdin.json\nprintf "%s\\0" "$@" > argv.bin\n'
                   'pwd > pwd.txt\n')
    params: dict[str, Any] = {**TRICKY, "replicas": 3, "flags": {"a": [1, True, None]},
                              "with-dash.and.dot": "x"}
    prov = provider(site, env={"HTTP_PROXY": "http://proxy:3128"})
    comp = component(site, {"apply": [apply, "--literal", "two words", "$HOME"]}, params=params)
    prov.apply(comp, None)

    work = site["work"]
    assert not list(work.rglob("pwned")) and not list(site["solution"].rglob("pwned"))
    env = dict(item.split(b"=", 1) for item in (work / "env.bin").read_bytes().split(b"\0")
               if item)
    for name, value in TRICKY.items():
        assert env[f"RECONCILER_PARAM_{name.upper()}".encode()] == value.encode("utf-8"), name
    assert env[b"RECONCILER_PARAM_REPLICAS"] == b"3"
    assert json.loads(env[b"RECONCILER_PARAM_FLAGS"]) == {"a": [1, True, None]}
    assert env[b"RECONCILER_PARAM_WITH_DASH_AND_DOT"] == b"x"
    assert env[b"RECONCILER_ACTION"] == b"apply"
    assert env[b"RECONCILER_TARGET"] == b"line-1"
    assert env[b"RECONCILER_INSTANCE"] == b"app-eu"
    assert env[b"RECONCILER_COMPONENT"] == b"agent"
    assert env[b"RECONCILER_SOLUTION"] == b"app"
    assert env[b"RECONCILER_SITE"] == b"eu/berlin"
    assert env[b"RECONCILER_REVISION"] == comp.revision.encode()
    assert env[b"HOME"] == str(work).encode() and env[b"LANG"] == b"C.UTF-8"
    assert env[b"HTTP_PROXY"] == b"http://proxy:3128"
    assert not {b"USER", b"PYTEST_CURRENT_TEST"} & set(env)  # the daemon's env does not leak

    document = json.loads((work / "stdin.json").read_text("utf-8"))
    assert document["params"] == params
    assert document["properties"] == {"apply": [apply, "--literal", "two words", "$HOME"]}
    assert {k: document[k] for k in ("action", "target", "instance", "component", "solution",
                                     "site", "revision")} == {
        "action": "apply", "target": "line-1", "instance": "app-eu", "component": "agent",
        "solution": "app", "site": "eu/berlin", "revision": comp.revision}
    assert (work / "argv.bin").read_bytes() == b"--literal\0two words\0$HOME\0"
    assert (work / "pwd.txt").read_text().strip() == str(work)


def test_a_nul_byte_in_a_parameter_is_refused_before_anything_runs(
        site: dict[str, Path]) -> None:
    apply = script(site["solution"], "apply.sh", "touch ran\n")
    comp = component(site, {"apply": [apply]}, params={"banner": "a\0b"})
    with pytest.raises(PermanentError, match="parameter 'banner' contains a NUL byte"):
        provider(site).apply(comp, None)
    assert not (site["work"] / "ran").exists()


def test_commands_are_found_in_the_solution_or_on_path_and_never_outside(
        site: dict[str, Path]) -> None:
    prov = provider(site)
    assert prov.observe(component(site, {"apply": ["true"], "get": ["true"]}), None).in_sync
    script(site["solution"], "true", "exit 3\n")  # a file in the solution wins over PATH
    assert not prov.observe(component(site, {"apply": ["true"], "get": ["true"]}), None).in_sync
    with pytest.raises(PermanentError, match="neither in the solution directory nor on PATH"):
        prov.apply(component(site, {"apply": ["no-such-command-here"]}), None)
    script(site["outside"], "evil.sh", "touch pwned\n")
    with pytest.raises(PolicyError, match="outside"):
        prov.apply(component(site, {"apply": ["../../../outside/evil.sh"]}), None)
    (site["solution"] / "linked.sh").symlink_to(site["outside"] / "evil.sh")
    with pytest.raises(PolicyError, match="outside"):
        prov.apply(component(site, {"apply": ["./linked.sh"]}), None)
    assert not list(site["work"].glob("pwned"))


# ---- observe -----------------------------------------------------------------------------


def test_get_exit_codes(site: dict[str, Path]) -> None:
    get = script(site["solution"], "get.sh",
                 'case "$(cat want)" in\n'
                 '  same) echo "version 1.2"; exit 0;;\n'
                 '  absent) exit 3;;\n'
                 '  differs) echo "-version 1.1"; echo "+version 1.2"; exit 3;;\n'
                 '  busy) echo "lock held" >&2; exit 75;;\n'
                 '  *) echo "first" >&2; echo "cannot parse state" >&2; exit 5;;\n'
                 'esac\n')
    prov = provider(site)
    comp = component(site, {"apply": ["true"], "get": [get]})
    site["work"].mkdir()
    want = site["work"] / "want"

    want.write_text("same")
    observation = prov.observe(comp, None)
    assert (observation.exists, observation.in_sync, observation.message) == (
        True, True, "version 1.2")
    want.write_text("absent")
    observation = prov.observe(comp, None)
    assert (observation.exists, observation.in_sync) == (False, False)
    want.write_text("differs")
    observation = prov.observe(comp, None)
    assert (observation.exists, observation.in_sync) == (True, False)
    assert observation.diff == "-version 1.1\n+version 1.2"
    want.write_text("busy")
    with pytest.raises(TransientError, match="lock held"):
        prov.observe(comp, None)
    want.write_text("broken")
    with pytest.raises(TransientError) as info:  # an unknown failure: retried with backoff
        prov.observe(comp, None)
    assert "exit code 5: first | cannot parse state" in str(info.value)
    assert "app-eu/agent" in str(info.value) and "get.sh" in str(info.value)


def test_without_get_the_digest_decides_and_nothing_reruns_needlessly(
        site: dict[str, Path]) -> None:
    apply = script(site["solution"], "apply.sh", "echo run >> runs\n")
    prov = provider(site)
    runs = site["work"] / "runs"
    comp = component(site, {"apply": [apply]})
    assert prov.observe(comp, None).exists is False
    record, applied = reconcile(prov, comp, None)
    assert applied and runs.read_text() == "run\n"
    record, applied = reconcile(prov, comp, record)
    assert not applied and runs.read_text() == "run\n"

    changed = component(site, {"apply": [apply]}, params={"version": "1.3"})
    observation = prov.observe(changed, record)
    assert not observation.in_sync and "parameters" in observation.diff
    record, applied = reconcile(prov, changed, record)
    assert applied and runs.read_text() == "run\nrun\n"

    script(site["solution"], "apply.sh", "echo run >> runs\necho v2 >/dev/null\n")
    observation = prov.observe(changed, record)
    assert not observation.in_sync
    assert "apply script solutions/app/apply.sh" in observation.diff
    record, applied = reconcile(prov, changed, record)
    assert applied and runs.read_text().count("run") == 3
    assert not reconcile(prov, changed, record)[1]


# ---- failures, timeouts, output --------------------------------------------------------------


def test_exit_codes_map_to_error_kinds(site: dict[str, Path]) -> None:
    prov = provider(site)
    failing = script(site["solution"], "fail.sh",
                     'echo "password is $RECONCILER_PARAM_PASSWORD" >&2\n'
                     'echo "disk /dev/sdz not found" >&2\nexit 2\n')
    comp = component(site, {"apply": [failing]}, params={"password": "s3cr3t"},
                     secret=frozenset({"password"}))
    # an ordinary failure is retried by the executor
    with pytest.raises(TransientError) as info:
        prov.apply(comp, None)
    message = str(info.value)
    assert info.value.reason == "ScriptFailed"
    assert "exit code 2" in message and "disk /dev/sdz not found" in message
    assert "app-eu/agent" in message and "s3cr3t" not in message and "***" in message
    # sysexits' "retrying cannot help" codes are permanent
    config_error = script(site["solution"], "config.sh", "echo 'bad config' >&2\nexit 78\n")
    with pytest.raises(PermanentError) as permanent:
        prov.apply(component(site, {"apply": [config_error]}), None)
    assert permanent.value.reason == "ScriptFailed"
    assert not isinstance(permanent.value, TransientError)

    retry = script(site["solution"], "retry.sh", "echo 'apt lock busy' >&2\nexit 75\n")
    with pytest.raises(TransientError, match="apt lock busy"):
        prov.apply(component(site, {"apply": [retry]}), None)
    killed = script(site["solution"], "killed.sh", "kill -KILL $$\n")
    with pytest.raises(TransientError, match="SIGKILL"):
        prov.apply(component(site, {"apply": [killed]}), None)
    not_executable = site["solution"] / "plain.sh"
    not_executable.write_text("#!/bin/sh\ntrue\n")
    with pytest.raises(PermanentError, match="not executable"):
        prov.apply(component(site, {"apply": ["./plain.sh"]}), None)


def test_timeout_kills_the_whole_process_group(site: dict[str, Path]) -> None:
    hang = script(site["solution"], "hang.sh", "sleep 60 &\necho $! > child.pid\nwait\n")
    prov = provider(site, timeout=30)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"app-eu/agent.*timed out after 1s") as info:
        prov.apply(component(site, {"apply": [hang], "timeout": 1}), None)
    assert time.monotonic() - started < 5
    assert info.value.reason == "CommandTimedOut"
    child = int((site["work"] / "child.pid").read_text())
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or dead and not yet reaped
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_output_is_capped_without_slowing_down(site: dict[str, Path]) -> None:
    loud = script(site["solution"], "loud.sh",
                  "yes 'stdout line' | head -c 50000000\n"
                  "yes 'stderr line' | head -c 20000000 >&2\n"
                  "echo 'the real reason' >&2\nexit 0\n")
    prov = provider(site, outputLimit=65536)
    started = time.monotonic()
    observation = prov.observe(component(site, {"apply": ["true"], "get": [loud]}), None)
    assert time.monotonic() - started < 10
    assert observation.in_sync
    assert observation.message.startswith("stdout line\nstdout line\n")
    assert len(observation.message) < 65536 + 200
    assert "output truncated: 49934464 more bytes" in observation.message

    failing = script(site["solution"], "loud-fail.sh",
                     "yes 'noise' | head -c 5000000 >&2\necho 'the real reason' >&2\nexit 1\n")
    with pytest.raises(TransientError, match="the real reason"):
        prov.apply(component(site, {"apply": [failing]}), None)


# ---- delete and health -------------------------------------------------------------------


def test_delete_runs_the_command_recorded_at_apply_even_after_the_repo_changed(
        site: dict[str, Path]) -> None:
    apply = script(site["solution"], "apply.sh", "touch installed\n")
    remove = script(site["solution"], "remove.sh",
                    'rm installed\nenv -0 > delete-env.bin\ncat > delete-stdin.json\n')
    prov = provider(site)
    comp = component(site, {"apply": [apply], "delete": [remove, "--purge"]},
                     params={"version": "1.2", "token": "t0ken"}, secret=frozenset({"token"}))
    record = prov.apply(comp, None)
    assert (site["work"] / "installed").exists()
    assert "t0ken" not in json.dumps(record.to_dict())
    assert record.data["baseDir"] == "solutions/app"

    shutil.rmtree(site["repo"])  # the component and its scripts left the repository
    restored = Record.from_dict(json.loads(json.dumps(record.to_dict())))
    prov.delete(restored)
    assert not (site["work"] / "installed").exists()
    env = dict(item.split(b"=", 1)
               for item in (site["work"] / "delete-env.bin").read_bytes().split(b"\0") if item)
    assert env[b"RECONCILER_ACTION"] == b"delete"
    assert env[b"RECONCILER_COMPONENT"] == b"agent"
    assert env[b"RECONCILER_PARAM_VERSION"] == b"1.2"
    assert b"RECONCILER_PARAM_TOKEN" not in env
    document = json.loads((site["work"] / "delete-stdin.json").read_text())
    assert document["action"] == "delete" and document["params"] == {"version": "1.2"}
    assert not any((site["state"] / "script-delete").iterdir())  # the kept copy is gone

    without = provider(site).apply(component(site | {"repo": site["outside"],
                                                     "solution": site["outside"]},
                                             {"apply": ["true"]}), None)
    provider(site).delete(without)  # no delete command: nothing to run


def test_delete_failure_is_reported(site: dict[str, Path]) -> None:
    remove = script(site["solution"], "remove.sh", "echo 'still in use' >&2\nexit 1\n")
    prov = provider(site)
    record = prov.apply(component(site, {"apply": ["true"], "delete": [remove]}), None)
    with pytest.raises(TransientError, match="still in use"):
        prov.delete(record)


def test_health_exit_codes(site: dict[str, Path]) -> None:
    health = script(site["solution"], "health.sh",
                    'case "$(cat want)" in\n'
                    '  ok) exit 0;;\n'
                    '  starting) echo "warming up" >&2; exit 75;;\n'
                    '  *) echo "noise" >&2; echo "port 8080 refused" >&2; exit 1;;\n'
                    'esac\n')
    prov = provider(site)
    comp = component(site, {"apply": ["true"], "health": [health]})
    record = prov.apply(comp, None)
    want = site["work"] / "want"
    want.write_text("ok")
    assert prov.health(comp, record).state is Health.HEALTHY
    want.write_text("starting")
    report = prov.health(comp, record)
    assert (report.state, report.message) == (Health.PROGRESSING, "warming up")
    want.write_text("down")
    report = prov.health(comp, record)
    assert (report.state, report.message) == (Health.DEGRADED, "port 8080 refused")
    no_check = component(site, {"apply": ["true"]})
    assert prov.health(no_check, record).state is Health.HEALTHY


def test_a_path_command_is_recorded_for_delete_too(site: dict[str, Path]) -> None:
    prov = provider(site)
    comp = component(site, {"apply": ["touch", "installed"], "delete": ["rm", "installed"]})
    record = prov.apply(comp, None)
    assert (site["work"] / "installed").exists()
    prov.delete(record)
    assert not (site["work"] / "installed").exists()


def test_cancellation_stops_a_running_command(site: dict[str, Path]) -> None:
    hang = script(site["solution"], "hang.sh", "sleep 60\n")
    flag = site["outside"] / "newer-revision"
    context = ProviderContext(target="line-1", binding="host", policy=ALLOW,
                              state_dir=site["state"], cancelled=flag.exists)
    prov = ScriptProvider({"workdir": str(site["work"])}, context)
    flag.touch()
    started = time.monotonic()
    with pytest.raises(TransientError, match="cancelled") as info:
        prov.apply(component(site, {"apply": [hang]}), None)
    assert info.value.reason == "Cancelled" and time.monotonic() - started < 5
