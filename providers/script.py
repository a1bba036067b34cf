"""The built-in ``script`` provider: argv commands for get/apply/delete/health.

Registered as the ``script`` entry point of ``reconciler.providers``; the core constructs one
instance per Target binding and calls it per component in the order described in
``reconciler.provider_api``. It only runs when the site's local policy sets ``allow_scripts``.

Binding config::

    workdir: /var/lib/app       # absolute; the commands' cwd and HOME, created if missing
    env: {HTTP_PROXY: ...}      # extra fixed environment (strings; no RECONCILER_ names)
    timeout: 300                # seconds per call
    outputLimit: 1048576        # bytes of stdout and of stderr kept per call

Component properties::

    apply: [./deploy.sh, --fast]   # required
    get: [./state.sh]              # optional; delete and health likewise
    timeout: 60                    # overrides the binding's

``argv[0]`` names a file of the checked-out revision (relative to the Solution's directory)
when it contains a ``/`` or exists there, and must stay inside the repository; otherwise it is
looked up on ``PATH``. Absolute paths are refused: a system command is named by its bare name.
These properties are ``untemplated``, so parameters never reach a command line.

What a command gets: no shell; its own session (a timeout kills the whole process group);
cwd = workdir; an environment of ``PATH``, ``HOME=workdir``, ``LANG=C.UTF-8``, the binding's
``env``, ``RECONCILER_ACTION``/``TARGET``/``INSTANCE``/``COMPONENT``/``SOLUTION``/``SITE``/
``REVISION``, and ``RECONCILER_PARAM_<NAME>`` per parameter (upper-cased, non-alphanumerics
as ``_``; strings verbatim, other values as JSON); and the same data as one JSON document on
stdin: ``{"action", "target", "instance", "component", "solution", "site", "revision",
"params", "properties"}``.

Exit codes:

* ``0`` success (for ``get``: in sync, stdout is the observed state);
* ``3`` from ``get`` only: not in sync; stdout is the difference, or empty when absent;
* ``75`` (``EX_TEMPFAIL``): try again later -> ``TransientError``, retried with backoff
  (from ``health``: Progressing);
* killed by a signal we did not send (e.g. the OOM killer) -> ``TransientError``;
* ``64``, ``65``, ``66``, ``77``, ``78`` (sysexits usage, data, no input, permission and
  config errors): ``PermanentError``, not retried — retrying cannot help;
* anything else -> ``TransientError`` carrying the last lines of stderr: retried with
  backoff (``retries`` in the local config), then the target is Failed (from ``health``:
  Degraded with stderr's last line).

Without ``get``, a component is in sync when the digest recorded at its last apply equals the
digest of its properties, its resolved parameters, the binding's workdir and env, and the
content of the repository scripts named by ``apply`` and ``delete``: editing a parameter or
the script re-runs ``apply``; nothing else does.

Delete: the core calls ``delete`` with only the inventory record, possibly long after the
component (and its script) left the repository. So at apply time the ``delete`` script is
copied into the provider's state directory (content-addressed, one per component) and the
record keeps its argv, the invocation data and the non-secret parameters. ``delete`` runs that
copy, from the workdir like every call; a delete script that needs sibling files of the
repository must not rely on its own location. Secret parameters are never stored, so a
delete command does not receive them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog

from reconciler.provider_api import (
    DEFAULT_OUTPUT_LIMIT,
    Component,
    Health,
    HealthReport,
    LocalPolicy,
    Observation,
    PermanentError,
    PolicyError,
    Problem,
    ProcessResult,
    ProviderContext,
    ProviderError,
    Record,
    TransientError,
    run_process,
)

from ._paths import map_os_error, relative_path_problem, repo_file, sha256_file

__all__ = ["EXIT_DIFFERS", "EXIT_PERMANENT", "EXIT_TEMPFAIL", "ScriptProvider"]

EXIT_DIFFERS = 3
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL
# sysexits.h codes that say retrying cannot help (usage, data, config, permission errors):
# EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOPERM, EX_CONFIG
EXIT_PERMANENT = frozenset({64, 65, 66, 77, 78})
DEFAULT_TIMEOUT = 300.0
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a timed-out command
_COMMANDS = ("apply", "get", "delete", "health")
_CONFIG_KEYS = frozenset({"workdir", "env", "timeout", "outputLimit"})
_PROPERTY_KEYS = frozenset({*_COMMANDS, "timeout"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_LINES = 5

_log = structlog.get_logger(__name__)


class _Action(enum.Enum):
    GET = "get"
    APPLY = "apply"
    DELETE = "delete"
    HEALTH = "health"


@dataclass(frozen=True)
class _Program:
    """A command ready to run: argv[0] resolved, and where it came from."""

    argv: tuple[str, ...]
    label: str  # how messages name it: the repository path or the bare command
    repo_path: str | None  # posix path inside the repository, for repository scripts
    sha256: str | None  # content of a repository script


@dataclass(frozen=True)
class _Invocation:
    """What a command is told about the component (environment and stdin)."""

    key: str
    target: str
    instance: str
    component: str
    solution: str
    site: str
    revision: str
    params: Mapping[str, Any]
    properties: Mapping[str, Any]
    secrets: tuple[str, ...] = ()  # values to mask in messages

    @classmethod
    def of(cls, component: Component) -> _Invocation:
        secrets = []
        for name in component.secret_params:
            value = component.params.get(name)
            if value is not None:
                text = value if isinstance(value, str) else _json(value)
                if text:
                    secrets.append(text)
        return cls(component.key, component.target, component.instance, component.name,
                   component.solution, component.site, component.revision,
                   dict(component.params), dict(component.properties), tuple(secrets))

    def to_record(self, secret_names: frozenset[str]) -> dict[str, Any]:
        return {"target": self.target, "instance": self.instance, "component": self.component,
                "solution": self.solution, "site": self.site, "revision": self.revision,
                "params": {k: v for k, v in self.params.items() if k not in secret_names},
                "properties": dict(self.properties)}

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> _Invocation:
        def text(name: str) -> str:
            return str(raw.get(name, ""))

        return cls(key=f"{text('instance')}/{text('component')}", target=text("target"),
                   instance=text("instance"), component=text("component"),
                   solution=text("solution"), site=text("site"), revision=text("revision"),
                   params=dict(raw.get("params") or {}),
                   properties=dict(raw.get("properties") or {}))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _digest(value: Any) -> str:
    return hashlib.sha256(_json(value).encode("utf-8")).hexdigest()


def _argv_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of strings (an argv, not a shell string)"
    if not all(isinstance(arg, str) for arg in value):
        return "every argument must be a string"
    if not value[0]:
        return "the command (first item) must not be empty"
    if any("\0" in arg for arg in value):
        return "arguments must not contain a NUL byte"
    if value[0].startswith("/"):
        return (f"{value[0]!r}: absolute commands are not allowed; name a script in the "
                "repository (relative to the solution) or a command on PATH by its bare name")
    return None


def _timeout_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return "must be a positive number of seconds"
    return None


class ScriptProvider:
    """Commands for apply/get/delete/health; parameters as environment and JSON on stdin.

    See the module docstring for the whole contract.
    """

    name: ClassVar[str] = "script"
    untemplated: ClassVar[frozenset[str]] = frozenset(_COMMANDS)
    # argv[0] of each command, when it names a repository file (the validator checks those)
    path_properties: ClassVar[frozenset[str]] = frozenset(_COMMANDS)

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        problems = self.check_config(config, context.policy)
        if problems:
            text = "; ".join(f"{p.field}: {p.message}" for p in problems)
            message = f"script provider of binding {context.binding!r} on {context.target}: {text}"
            if not context.policy.allow_scripts:
                raise PolicyError(message)
            raise PermanentError(message, reason="InvalidConfig")
        self._context = context
        workdir = context.policy.resolve(config["workdir"])
        if workdir is None:
            raise PermanentError(f"script provider of binding {context.binding!r} on "
                                 f"{context.target}: workdir: relative workdir without a site "
                                 "state directory", reason="InvalidConfig")
        self._workdir = workdir
        self._env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}
        self._timeout = float(config.get("timeout", DEFAULT_TIMEOUT))
        self._output_limit = int(config.get("outputLimit", DEFAULT_OUTPUT_LIMIT))
        self._path = self._env.get("PATH") or os.environ.get("PATH") or os.defpath
        self._store = context.state_dir / "script-delete"
        self._log = _log.bind(provider=self.name, target=context.target, binding=context.binding)

    # ---- validation (pure) ----------------------------------------------------------------

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        problems = []
        if not policy.allow_scripts:
            problems.append(Problem("provider", "the local policy does not allow scripts "
                                                "(allow_scripts is false on this site)"))
        problems += [Problem(key, "unknown setting of the script provider (known: env, "
                                  "outputLimit, timeout, workdir)")
                     for key in sorted(set(config) - _CONFIG_KEYS)]
        workdir = config.get("workdir")
        if workdir is None:
            problems.append(Problem("workdir", "is required: the commands' working directory"))
        elif not isinstance(workdir, str) or "\0" in workdir or not workdir:
            problems.append(Problem("workdir", f"{workdir!r} must be a non-empty path"))
        elif not Path(workdir).is_absolute() and ".." in Path(workdir).parts:
            problems.append(Problem("workdir", f"{workdir!r}: a relative workdir (resolved "
                                               "under the site's state directory) must not "
                                               "contain '..'"))
        env = config.get("env", {})
        if not isinstance(env, Mapping):
            problems.append(Problem("env", "must be a mapping of names to strings"))
        else:
            for name, value in env.items():
                if not isinstance(name, str) or not _ENV_NAME.match(name):
                    problems.append(Problem(f"env.{name}", "is not a valid variable name"))
                elif name.startswith("RECONCILER_"):
                    problems.append(Problem(f"env.{name}", "RECONCILER_ names are set by the "
                                                           "provider itself"))
                elif not isinstance(value, str) or "\0" in value:
                    problems.append(Problem(f"env.{name}", "must be a string without NUL"))
        if "timeout" in config and (problem := _timeout_problem(config["timeout"])):
            problems.append(Problem("timeout", problem))
        limit = config.get("outputLimit", DEFAULT_OUTPUT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            problems.append(Problem("outputLimit", "must be a positive number of bytes"))
        return problems

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        problems = [Problem(key, "unknown property of a script component (known: apply, "
                                 "delete, get, health, timeout)")
                    for key in sorted(set(properties) - _PROPERTY_KEYS)]
        if "apply" not in properties:
            problems.append(Problem("apply", "is required: the command that applies"))
        for field in _COMMANDS:
            if field in properties and (problem := _argv_problem(properties[field])):
                problems.append(Problem(field, problem))
        if "timeout" in properties and (problem := _timeout_problem(properties["timeout"])):
            problems.append(Problem("timeout", problem))
        return problems

    # ---- the provider calls --------------------------------------------------------------

    def observe(self, component: Component, record: Record | None) -> Observation:
        call = _Invocation.of(component)
        if "get" not in component.properties:
            digest, inputs = self._digest(component)
            if record is None:
                return Observation(exists=False, in_sync=False, message="never applied")
            if record.data.get("digest") == digest:
                return Observation(exists=True, in_sync=True)
            changed = self._changed(record.data.get("inputs") or {}, inputs)
            return Observation(exists=True, in_sync=False, diff=changed,
                               message="inputs changed since the last apply")
        program = self._program(component, "get")
        result = self._run(_Action.GET, program, call, self._timeout_of(component))
        stdout = call.redact(result.stdout_text.strip())
        if result.returncode == 0:
            return Observation(exists=True, in_sync=True, message=stdout)
        if result.returncode == EXIT_DIFFERS:
            if not stdout:
                return Observation(exists=False, in_sync=False, message="absent")
            return Observation(exists=True, in_sync=False, diff=stdout, message="differs")
        raise self._failure(_Action.GET, program, call, result)

    def apply(self, component: Component, record: Record | None) -> Record:
        call = _Invocation.of(component)
        program = self._program(component, "apply")
        digest, inputs = self._digest(component)
        delete = self._keep_delete_command(component) if "delete" in component.properties else None
        result = self._run(_Action.APPLY, program, call, self._timeout_of(component))
        if result.returncode != 0:
            raise self._failure(_Action.APPLY, program, call, result)
        self._forget_delete_commands(component.key, keep=delete)
        self._log.info("script_applied", component=component.key, command=program.label,
                       duration=round(result.duration, 3),
                       stdout_tail=call.redact(result.stdout_text[-500:]))
        base = component.base_dir.resolve()
        root = component.repo_root.resolve()
        return Record(provider=self.name, binding=self._context.binding, data={
            "digest": digest, "inputs": inputs, "delete": delete,
            "baseDir": base.relative_to(root).as_posix() if base.is_relative_to(root) else "",
            "invocation": call.to_record(component.secret_params),
        })

    def delete(self, record: Record) -> None:
        delete = record.data.get("delete")
        call = _Invocation.from_record(record.data.get("invocation") or {})
        if not delete:
            self._log.info("script_delete_skipped", component=call.key, why="no delete command")
            return
        program = self._stored_program(delete, call.key)
        timeout = float(call.properties.get("timeout", self._timeout))
        result = self._run(_Action.DELETE, program, call, timeout)
        if result.returncode != 0:
            raise self._failure(_Action.DELETE, program, call, result)
        self._forget_delete_commands(call.key, keep=None)
        self._log.info("script_deleted", component=call.key, command=program.label,
                       duration=round(result.duration, 3))

    def health(self, component: Component, record: Record) -> HealthReport:
        if "health" not in component.properties:
            return HealthReport(Health.HEALTHY)
        call = _Invocation.of(component)
        program = self._program(component, "health")
        result = self._run(_Action.HEALTH, program, call, self._timeout_of(component))
        last = call.redact((result.stderr_last_lines(1) or [""])[-1])
        if result.returncode == 0:
            return HealthReport(Health.HEALTHY)
        if result.returncode == EXIT_TEMPFAIL:
            out = call.redact((result.stdout_text.strip().splitlines() or [""])[-1])
            return HealthReport(Health.PROGRESSING, last or out)
        return HealthReport(Health.DEGRADED, last or f"{program.label} exited with "
                                                     f"{result.returncode}")

    # ---- programs ------------------------------------------------------------------------

    def _program(self, component: Component, field: str) -> _Program:
        argv = component.properties[field]
        what = f"component {component.key}: {field}"
        problem = _argv_problem(argv)
        if problem is not None:
            raise PermanentError(f"{what}: {problem}")
        command = argv[0]
        if "/" in command or os.path.lexists(component.base_dir / command):
            path = repo_file(component.base_dir, component.repo_root, command, what=what)
            rel = path.relative_to(component.repo_root.resolve()).as_posix()
            try:
                sha = sha256_file(path)
            except OSError as exc:
                raise map_os_error(exc, what) from None
            return _Program((str(path), *argv[1:]), rel, rel, sha)
        found = shutil.which(command, path=self._path)
        if found is None:
            raise PermanentError(f"{what}: command {command!r} is neither in the solution "
                                 f"directory nor on PATH ({self._path})",
                                 reason="CommandNotFound")
        return _Program((found, *argv[1:]), command, None, None)

    def _component_store(self, key: str) -> Path:
        scope = f"{self._context.target}\0{self._context.binding}\0{key}"
        return self._store / hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]

    def _keep_delete_command(self, component: Component) -> dict[str, Any]:
        """Copy a repository delete script to the state dir, so delete outlives the repo."""
        program = self._program(component, "delete")
        argv = list(component.properties["delete"])
        if program.repo_path is None or program.sha256 is None:
            return {"argv": argv, "repoPath": None, "sha256": None}
        stored = self._component_store(component.key) / program.sha256 / Path(program.argv[0]).name
        what = f"component {component.key}: keeping the delete script {program.label}"
        try:
            if not stored.is_file() or sha256_file(stored) != program.sha256:
                stored.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                temp = stored.with_name(stored.name + ".tmp")
                shutil.copyfile(program.argv[0], temp)
                os.chmod(temp, 0o700)
                os.replace(temp, stored)
        except OSError as exc:
            raise map_os_error(exc, what) from None
        return {"argv": argv, "repoPath": program.repo_path, "sha256": program.sha256}

    def _forget_delete_commands(self, key: str, *, keep: Mapping[str, Any] | None) -> None:
        """Drop the stored delete scripts of a component, except the one ``keep`` names."""
        store = self._component_store(key)
        if not store.is_dir():
            return
        for entry in store.iterdir():
            if keep is None or entry.name != keep.get("sha256"):
                shutil.rmtree(entry, ignore_errors=True)
        if keep is None or keep.get("sha256") is None:
            shutil.rmtree(store, ignore_errors=True)

    def _stored_program(self, delete: Mapping[str, Any], key: str) -> _Program:
        argv = [str(arg) for arg in delete.get("argv") or ()]
        what = f"component {key}: delete"
        if not argv or relative_path_problem(argv[0], allow_parent=True) is not None:
            raise PermanentError(f"{what}: the inventory record holds no usable command")
        repo_path, sha = delete.get("repoPath"), delete.get("sha256")
        if repo_path is None:
            found = shutil.which(argv[0], path=self._path)
            if found is None:
                raise PermanentError(f"{what}: command {argv[0]!r} is not on PATH "
                                     f"({self._path})", reason="CommandNotFound")
            return _Program((found, *argv[1:]), argv[0], None, None)
        stored = self._component_store(key) / str(sha) / Path(str(repo_path)).name
        try:
            intact = stored.is_file() and sha256_file(stored) == sha
        except OSError:
            intact = False
        if not intact:
            raise PermanentError(f"{what}: the copy of {repo_path} kept at apply time is "
                                 f"missing or altered ({stored}); run the delete by hand",
                                 reason="DeleteScriptLost")
        return _Program((str(stored), *argv[1:]), str(repo_path), str(repo_path), str(sha))

    # ---- running -------------------------------------------------------------------------

    def _timeout_of(self, component: Component) -> float:
        return float(component.properties.get("timeout", self._timeout))

    def _digest(self, component: Component) -> tuple[str, dict[str, Any]]:
        scripts = {}
        for field in ("apply", "delete"):
            if field in component.properties:
                program = self._program(component, field)
                scripts[field] = {"path": program.repo_path, "sha256": program.sha256}
        inputs = {
            "properties": _digest(component.properties),
            "params": _digest(component.params),
            "binding": _digest({"workdir": str(self._workdir), "env": self._env}),
            "scripts": scripts,
        }
        return _digest(inputs), inputs

    @staticmethod
    def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
        names = {"properties": "properties", "params": "parameters",
                 "binding": "binding workdir/env"}
        changed = [label for key, label in names.items() if old.get(key) != new.get(key)]
        old_scripts, new_scripts = old.get("scripts") or {}, new.get("scripts") or {}
        for field in sorted(set(old_scripts) | set(new_scripts)):
            if old_scripts.get(field) != new_scripts.get(field):
                path = (new_scripts.get(field) or old_scripts.get(field) or {}).get("path")
                changed.append(f"{field} script" + (f" {path}" if path else ""))
        return "changed: " + (", ".join(changed) or "the recorded digest")

    def _environment(self, action: _Action, call: _Invocation) -> dict[str, bytes]:
        env: dict[str, str] = {"PATH": self._path, "HOME": str(self._workdir),
                               "LANG": "C.UTF-8"}
        env.update(self._env)
        env.update({
            "RECONCILER_ACTION": action.value, "RECONCILER_TARGET": call.target,
            "RECONCILER_INSTANCE": call.instance, "RECONCILER_COMPONENT": call.component,
            "RECONCILER_SOLUTION": call.solution, "RECONCILER_SITE": call.site,
            "RECONCILER_REVISION": call.revision,
        })
        origin: dict[str, str] = {}
        for name, value in call.params.items():
            var = "RECONCILER_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", str(name)).upper()
            if var in origin:
                raise PermanentError(f"component {call.key}: parameters {origin[var]!r} and "
                                     f"{name!r} both map to the variable {var}")
            origin[var] = str(name)
            text = value if isinstance(value, str) else _json(value)
            if "\0" in text:
                raise PermanentError(f"component {call.key}: parameter {name!r} contains a NUL "
                                     "byte, which cannot be passed in the environment",
                                     reason="InvalidParameter")
            env[var] = text
        for var, text in env.items():
            if "\0" in text:
                raise PermanentError(f"component {call.key}: {var} contains a NUL byte")
        return {k: v.encode("utf-8", errors="surrogateescape") for k, v in env.items()}

    def _run(self, action: _Action, program: _Program, call: _Invocation,
             timeout: float) -> ProcessResult:
        env = self._environment(action, call)
        document = {"action": action.value, "target": call.target, "instance": call.instance,
                    "component": call.component, "solution": call.solution, "site": call.site,
                    "revision": call.revision, "params": dict(call.params),
                    "properties": dict(call.properties)}
        stdin = (_json(document) + "\n").encode("utf-8", errors="surrogateescape")
        what = f"component {call.key}: {action.value} command {program.label}"
        try:
            self._workdir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise map_os_error(exc, f"{what}: creating workdir") from None
        result = run_process(program.argv, cwd=self._workdir, env=env, stdin=stdin,
                             timeout=timeout, output_limit=self._output_limit, grace=KILL_GRACE,
                             what=what, cancelled=self._context.cancelled,
                             stopping=self._context.stopping)
        self._log.debug("script_ran", component=call.key, action=action.value,
                        command=program.label, exit_code=result.returncode,
                        duration=round(result.duration, 3),
                        stdout_dropped=result.stdout_dropped, stderr_dropped=result.stderr_dropped)
        return result

    def _failure(self, action: _Action, program: _Program, call: _Invocation,
                 result: ProcessResult) -> ProviderError:
        what = f"component {call.key}: {action.value} command {program.label}"
        lines = result.stderr_last_lines(_ERROR_LINES)
        tail = call.redact(" | ".join(lines)) if lines else "(no output on stderr)"
        code = result.returncode
        if code == EXIT_TEMPFAIL:
            return TransientError(f"{what} asked to retry later (exit 75): {tail}",
                                  reason="ScriptTempFail")
        if code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
            return TransientError(f"{what} was killed by {signame}: {tail}",
                                  reason="ScriptKilled")
        if code in EXIT_PERMANENT:
            return PermanentError(f"{what} failed with exit code {code}: {tail}",
                                  reason="ScriptFailed")
        # a script failing for an unknown reason (a network blip, a busy device) is retried
        # with backoff like any provider failure; after the retries the target is Failed
        return TransientError(f"{what} failed with exit code {code}: {tail}",
                              reason="ScriptFailed")
