"""The one way the project runs git: timeouts, credentials, redaction, errors, cancellation.

Every git process the project starts goes through :class:`Git` (the fleet repository's mirror
in ``reconciler.gitops.source``, releases and rollbacks, signature verification, the status branches
read by ``fleet_status`` and ``status_history`` and written by ``status_push``). Each call runs
through the project's process runner (``reconciler.core.processes``): argv only, a process group of
its own, a deadline, capped output, and nothing left running when the caller stops waiting.

What a call gets:

* **An environment of its own**: the caller's environment without ``GIT_*`` variables (a
  hook or a shell must not redirect our git to another repository or index, nor trace it),
  except the transport settings an operator may give the daemon (``GIT_SSH_COMMAND``,
  ``GIT_SSH``, ``GIT_ASKPASS``, ``GIT_SSL_CAINFO``), a person's identity (``GIT_AUTHOR_*``,
  ``GIT_COMMITTER_*``) and where config is read (``GIT_CONFIG_GLOBAL``/``SYSTEM``/
  ``NOSYSTEM``); never a prompt (``GIT_TERMINAL_PROMPT=0``, ``GIT_ASKPASS=/bin/false`` unless
  the operator set one); the C locale, since git's output is parsed.
* **Credentials** (:class:`Credentials`): an SSH key through ``GIT_SSH_COMMAND``, a token file
  read at each call (so a rotated token is used at once) and sent as an ``Authorization:
  Bearer`` header through ``GIT_CONFIG_*`` variables, so it never appears in a process list.
* **Redaction** (:func:`redact`): the user info of every URL (``https://user:token@host``
  becomes ``https://***@host``) and the token's value are removed from every error message
  and log line this module writes.
* **A deadline**: ``timeout`` seconds for local plumbing, ``network_timeout`` for a call that
  talks to a server (``remote=``); then the process group is killed.
* **Errors from the project's tree**: a failure raises the runner's error type
  (:class:`GitErrors`; :class:`SourceError` by default) with a message that says what was being
  done, which git command, the repository or the server (credentials removed), and git's own
  complaint in one line. ``check=False`` returns the result of a non-zero exit instead.
* **Cancellation**: a call to a server watches the runner's ``stop`` (an event or a callable).
  Once it is set, the call gets ``stop_grace`` seconds — counted once from the moment the stop
  was first seen, shared by every later call of the runner — to finish (enough to deliver a
  last status to a server that answers), then its process group gets SIGTERM (git removes its
  lock files) and SIGKILL if it lingers; a call started after the grace is spent does not
  start. Local plumbing is never stopped half-way (it is quick, and killing it could leave a
  lock file in our own repository); only its timeout bounds it.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.core.errors import PermanentError, ReconcilerError, SourceError, TransientError
from reconciler.core.processes import Interruption, ProcessResult
from reconciler.core.processes import run as run_process

__all__ = [
    "LOCAL_TIMEOUT",
    "NETWORK_TIMEOUT",
    "STOP_GRACE",
    "Credentials",
    "Git",
    "GitErrors",
    "GitResult",
    "complaint",
    "redact",
]

# seconds one local git command may take (an archive of a large tree on a slow edge box)
LOCAL_TIMEOUT = 120.0
# seconds one call to a server may take, unless the caller says (``repo.timeout``)
NETWORK_TIMEOUT = 120.0
# seconds calls to a server may go on once the stop was seen: enough for a server that
# answers to take a last status, short enough that a hung one holds nothing up
STOP_GRACE = 2.0
# seconds between SIGTERM and SIGKILL for a git process group being ended
_TERM_GRACE = 2.0
# git's output is read into memory: a bound, far above any fleet's status files or tag list
_OUTPUT_LIMIT = 256 << 20
_DETAIL_LIMIT = 500
# the GIT_* variables a caller's environment may pass on: transport settings an operator
# gives the daemon, the identity a person commits and tags with, where git's config is read
_KEPT_ENV = frozenset({
    "GIT_SSH_COMMAND", "GIT_SSH", "GIT_ASKPASS", "GIT_SSL_CAINFO",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
    "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
})
_USER_INFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_MASK = "***"

_log = structlog.get_logger(__name__)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: the user info of every URL becomes ``***`` and every
    value of ``secrets`` (a token read from a file) becomes ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return _USER_INFO.sub(rf"\g<scheme>{_MASK}@", text)


def complaint(stderr: bytes) -> str:
    """git's complaint in one line: its ``fatal:``/``error:`` lines when it printed any (the
    generic advice after them, "Please make sure you have the correct access rights", and
    hints dropped), else every line it printed."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("hint:")]
    said = [line.split(":", 1)[1].strip() for line in lines
            if line.startswith(("fatal:", "error:"))]
    return "; ".join(said or lines)


@dataclass(frozen=True)
class Credentials:
    """How git authenticates to the server: an SSH private key, a file holding a token."""

    ssh_key: Path | None = None
    token_file: Path | None = None

    def token(self) -> str | None:
        """The token, read now; OSError when the file cannot be read."""
        return self.token_file.read_text().strip() if self.token_file is not None else None

    def environment(self, token: str | None) -> dict[str, str]:
        """The variables that hand the credentials to git (``token`` read by :meth:`token`)."""
        env: dict[str, str] = {}
        if self.ssh_key is not None:
            env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(self.ssh_key))} "
                                      "-o IdentitiesOnly=yes -o BatchMode=yes "
                                      "-o StrictHostKeyChecking=accept-new")
        if token:
            # through the environment, so the token never appears in a process list
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"})
        return env


@dataclass(frozen=True)
class GitErrors:
    """How a runner reports what went wrong: the error type it raises, and the reasons of a
    timeout and of a call ended by the stop (None: the error type's own reason)."""

    error: type[ReconcilerError] = SourceError
    timeout_reason: str | None = None
    stopped_reason: str | None = "Stopped"


@dataclass(frozen=True)
class GitResult:
    """What a finished git command produced."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """stdout as text, without surrounding blanks."""
        return self.stdout.decode("utf-8", "replace").strip()


class Git:
    """Runs git against one repository (see the module docstring).

    ``path`` is a git directory (a bare repository or a clone's ``.git``, given to git as
    ``GIT_DIR``) or, with ``working_copy=True``, a working copy or any directory inside a
    repository (git finds the repository from there). ``name`` is how messages name the
    repository (default: ``path``). ``env`` adds variables (an author, a ``GNUPGHOME``),
    ``config`` adds ``-c name=value`` settings that win over the repository's own config.
    ``interactive`` is for the commands a person runs from a terminal (``reconciler release``
    tagging, signing and pushing): git may then ask for a password or a key's passphrase on
    the terminal, and stays in the person's session so that Ctrl-C reaches it.
    """

    def __init__(
        self,
        path: Path,
        *,
        working_copy: bool = False,
        interactive: bool = False,
        name: str | None = None,
        credentials: Credentials | None = None,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        timeout: float = LOCAL_TIMEOUT,
        network_timeout: float = NETWORK_TIMEOUT,
        stop: threading.Event | Callable[[], bool] | None = None,
        stop_grace: float = STOP_GRACE,
        errors: GitErrors | None = None,
    ) -> None:
        self.path = Path(path)
        self.working_copy = working_copy
        self.interactive = interactive
        self.name = name if name is not None else str(path)
        self.credentials = credentials or Credentials()
        self.env = dict(env or {})
        self.config = dict(config or {})
        self.timeout = timeout
        self.network_timeout = network_timeout
        self.stop_grace = stop_grace
        self.errors = errors or GitErrors()
        self._stop: Callable[[], bool] = (stop.is_set if isinstance(stop, threading.Event)
                                          else stop or (lambda: False))
        self._stop_seen: float | None = None

    # ---------------------------------------------------------------- running

    def run(
        self,
        *args: str,
        remote: str | None = None,
        input: bytes = b"",
        check: bool = True,
        context: str = "",
        env: Mapping[str, str] | None = None,
        grace: float | None = None,
    ) -> GitResult:
        """Run ``git <args>``; raises the runner's error when it fails (unless ``check`` is
        false: then only when it could not run, timed out or was stopped).

        ``remote`` is the server the command talks to (its URL, already among ``args``): the
        call then has the network timeout and watches the stop, with at most ``grace``
        seconds (default ``stop_grace``) once the stop was seen. ``context`` says what was
        being done, for the message.
        """
        where = self._where(args[0], remote)
        prefix = f"{context}: " if context else ""
        network = remote is not None
        timeout = self.network_timeout if network else self.timeout
        shutdown_grace = self.stop_grace if grace is None else grace
        if network and self.stopping():
            assert self._stop_seen is not None
            # the grace counts from the moment the stop was first seen, for every call
            shutdown_grace = min(shutdown_grace,
                                 self.stop_grace - (time.monotonic() - self._stop_seen))
            if shutdown_grace <= 0:
                raise self._error(f"{prefix}git {args[0]}{where} stopped: the daemon is "
                                  "shutting down", self.errors.stopped_reason)
        token = None
        if network:  # local plumbing needs no credentials: no token file is read for it
            try:
                token = self.credentials.token()
            except OSError as exc:
                raise self._error(f"{prefix}cannot read the token file "
                                  f"{self.credentials.token_file}: {exc.strerror}") from None
        secrets = (token,) if token else ()
        if not self.path.is_dir():
            raise self._error(f"{prefix}git {args[0]}: {self.name} is not a directory",
                              secrets=secrets)
        argv = ["git", *(item for key, value in self.config.items()
                         for item in ("-c", f"{key}={value}")), *args]
        try:
            done = run_process(
                argv, cwd=self.path, env=self._environment(network, token, env), stdin=input,
                timeout=timeout, output_limit=_OUTPUT_LIMIT, grace=_TERM_GRACE,
                what=f"git {args[0]}{where}", stopping=self.stopping if network else _never,
                interruption=Interruption.MUST_FINISH, shutdown_grace=shutdown_grace,
                own_session=not self.interactive)
        except TransientError as exc:
            if exc.reason == "CommandTimedOut":
                raise self._error(f"{prefix}git {args[0]}{where} timed out after "
                                  f"{timeout:g}s", self.errors.timeout_reason,
                                  secrets) from None
            if exc.reason == "ShutdownGraceExceeded":
                raise self._error(f"{prefix}git {args[0]}{where} stopped: the daemon is "
                                  "shutting down", self.errors.stopped_reason,
                                  secrets) from None
            raise self._error(f"{prefix}{exc.message}", secrets=secrets) from None
        except PermanentError as exc:  # git is not installed or cannot be started
            raise self._error(f"{prefix}{exc.message}", secrets=secrets) from None
        result = self._result(args, done, prefix, where, secrets)
        _log.debug("git_ran", command=redact(shlex.join(args), secrets), repository=self.name,
                   exit_code=result.returncode, seconds=round(result.duration, 3))
        if check and not result.ok:
            detail = complaint(result.stderr) or f"exit code {result.returncode}"
            if len(detail) > _DETAIL_LIMIT:
                detail = detail[:_DETAIL_LIMIT - 3] + "..."
            raise self._error(f"{prefix}git {args[0]}{where} failed: {detail}", secrets=secrets)
        return result

    def init_bare(self) -> None:
        """Create the bare repository at ``path`` unless it exists."""
        if (self.path / "HEAD").is_file() and (self.path / "objects").is_dir():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.run("init", "--bare", "--quiet", str(self.path))

    def archive(self, commit: str, dest: Path) -> None:
        """Write ``commit``'s tree as a tar file to ``dest`` (a file git creates)."""
        self.run("archive", "--format=tar", f"--output={dest}", commit,
                 context=f"exporting {commit[:12]}")

    def read_blobs(self, blobs: Iterable[str], *, context: str = "",
                   missing_ok: bool = False) -> dict[str, bytes]:
        """Contents of many blobs (ids, or ``<rev>:<path>`` names) through one ``git
        cat-file --batch``; one that is missing is an error, or left out with
        ``missing_ok``."""
        wanted = sorted(blobs)
        if not wanted:
            return {}
        out = self.run("cat-file", "--batch", input=("\n".join(wanted) + "\n").encode(),
                       context=context).stdout
        result: dict[str, bytes] = {}
        pos = 0
        for sha in wanted:
            eol = out.index(b"\n", pos)
            header = out[pos:eol].decode().split()
            if len(header) != 3:  # "<sha> missing"
                if missing_ok:
                    pos = eol + 1
                    continue
                prefix = f"{context}: " if context else ""
                raise self._error(f"{prefix}object {sha} is missing in {self.name}")
            size = int(header[2])
            result[sha] = out[eol + 1:eol + 1 + size]
            pos = eol + 1 + size + 1  # content is followed by a newline
        return result

    def stopping(self) -> bool:
        """True once the stop is set (and notes when it was first seen)."""
        if not self._stop():
            return False
        if self._stop_seen is None:
            self._stop_seen = time.monotonic()
        return True

    # ---------------------------------------------------------------- helpers

    def _where(self, command: str, remote: str | None) -> str:
        if remote is None:
            return f" in {self.name}"
        return f" {'to' if command == 'push' else 'from'} {redact(remote)}"

    def _environment(self, network: bool, token: str | None,
                     extra: Mapping[str, str] | None) -> dict[str, bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEPT_ENV}
        if not self.interactive:
            env.setdefault("GIT_ASKPASS", "/bin/false")
            env["GIT_TERMINAL_PROMPT"] = "0"
        env.update(LC_ALL="C", LANGUAGE="C")
        if not self.working_copy:
            env["GIT_DIR"] = str(self.path)
        if network:
            env.update(self.credentials.environment(token))
        env.update(self.env)
        env.update(extra or {})
        return {k: os.fsencode(v) for k, v in env.items()}

    def _result(self, args: tuple[str, ...], done: ProcessResult, prefix: str, where: str,
                secrets: tuple[str, ...]) -> GitResult:
        if done.stdout_dropped:
            raise self._error(f"{prefix}git {args[0]}{where}: output larger than "
                              f"{_OUTPUT_LIMIT >> 20} MiB", secrets=secrets)
        return GitResult(args=args, returncode=done.returncode, stdout=done.stdout,
                         stderr=done.stderr_tail if done.stderr_dropped else done.stderr,
                         duration=done.duration)

    def _error(self, message: str, reason: str | None = None,
               secrets: Iterable[str] = ()) -> ReconcilerError:
        text = redact(message, secrets)
        if reason is None:
            return self.errors.error(text)
        return self.errors.error(text, reason=reason)


def _never() -> bool:
    return False
