"""The helm and kubectl processes of one ``helm`` binding.

:class:`HelmCli` is what :class:`reconciler_providers.helm.HelmProvider` runs its commands
through: the binaries it was configured with, a clean environment whose caches live under the
provider's state directory, the helm version (detected once per binary), values handed over
in private temp files, and one :meth:`HelmCli.run` over the shared process runner
(``run_process`` of the provider contract): its own process group, a deadline, capped output.

Queries (list, get, history, template, version, kubectl get) are interruptible: a newer
revision or a shutdown stops them at once. An upgrade, rollback or uninstall must finish,
since one killed half-way leaves the release pending and helm refuses the next operation on
it: a newer revision waits for it and its result is used; a shutdown gives it the context's
``shutdown_grace`` (90 s), then SIGTERM (helm cancels and records the release as failed) and
``TERM_GRACE_S`` (30 s) before SIGKILL. docs/operations.md states that bound; the systemd
unit's TimeoutStopSec exceeds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog

from reconciler.provider_api import (
    Health,
    HealthReport,
    Interruption,
    PermanentError,
    ProviderContext,
    ProviderError,
    run_process,
)

from .helm_commands import (
    QUERY_TIMEOUT_S,
    STDERR_CAP,
    STDOUT_CAP,
    TERM_GRACE_S,
    TOOLS_BIN,
    Connection,
    HelmVersion,
    ReleaseSpec,
    ReleaseState,
    classify_failure,
    get_values_argv,
    helm_environment,
    kubectl_get_argv,
    list_argv,
    manifest_objects,
    parse_helm_version,
    parse_release_list,
    release_objects_health,
    trim_stderr,
    version_argv,
)
from .helm_history import HistoryEntry, history_argv, parse_history

__all__ = ["Completed", "HelmCli", "resolve_binary"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Completed:
    """A finished helm or kubectl process, its output decoded."""

    returncode: int
    stdout: str
    stderr: str


def resolve_binary(configured: str | None, name: str) -> str:
    """The configured binary, else ``name`` on PATH, else the one in ``.tools/bin``."""
    if configured:
        if "/" in configured:
            return configured
        return shutil.which(configured) or configured
    return shutil.which(name) or str(TOOLS_BIN / name)


class HelmCli:
    """Runs helm (and kubectl) for one binding; see the module docstring."""

    # detected versions by (binary, mtime, size): one `helm version` per binary per process
    _versions: ClassVar[dict[tuple[str, int, int], HelmVersion]] = {}

    def __init__(self, context: ProviderContext, conn: Connection, helm_bin: str,
                 kubectl_bin: str) -> None:
        self.context = context
        self.conn = conn
        self.helm_bin = helm_bin
        self.kubectl_bin = kubectl_bin
        self.env = helm_environment(context.state_dir, conn.kubeconfig, os.environ)
        self._env_bytes = {k: os.fsencode(v) for k, v in self.env.items()}
        self._log = _log.bind(provider="helm", target=context.target, binding=context.binding)

    def version(self) -> HelmVersion:
        """The major.minor.patch of the configured helm binary (detected once, cached)."""
        try:
            st = os.stat(self.helm_bin)
        except OSError:
            raise PermanentError(f"helm binary {self.helm_bin!r} not found: run "
                                 "scripts/install-tools.sh or set the binding's 'helm'") from None
        key = (self.helm_bin, st.st_mtime_ns, st.st_size)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        result = self.run(version_argv(self.helm_bin), timeout=QUERY_TIMEOUT_S,
                          release="-", action="version")
        if result.returncode != 0 or not result.stdout.strip():
            result = self.run(version_argv(self.helm_bin, short=True),
                              timeout=QUERY_TIMEOUT_S, release="-", action="version")
        if result.returncode != 0:
            raise PermanentError(f"helm binary {self.helm_bin!r} does not run: "
                                 f"{trim_stderr(result.stderr)}")
        version = parse_helm_version(result.stdout)
        self._versions[key] = version
        self._log.info("helm_detected", binary=self.helm_bin, version=str(version))
        return version

    # ------------------------------------------------------------------ queries

    def query(self, argv: list[str], release: str, action: str,
              secrets: Sequence[str] = ()) -> str:
        """stdout of an interruptible helm command; a failure is classified and raised."""
        result = self.run(argv, timeout=QUERY_TIMEOUT_S, release=release, action=action)
        if result.returncode != 0:
            raise classify_failure(release, action, result.returncode, result.stderr, secrets)
        return result.stdout

    def release_state(self, release: str, namespace: str) -> ReleaseState | None:
        argv = list_argv(self.version(), self.helm_bin, release, namespace, self.conn)
        return parse_release_list(self.query(argv, release, "list"), release)

    def live_values(self, spec: ReleaseSpec) -> Any:
        text = self.query(get_values_argv(self.helm_bin, spec.release, spec.namespace,
                                          self.conn), spec.release, "get values")
        try:
            return json.loads(text or "null")
        except json.JSONDecodeError as exc:
            raise PermanentError(f"release {spec.release!r}: helm get values printed invalid "
                                 f"JSON: {exc}") from None

    def history(self, release: str, namespace: str,
                last: int | None = None) -> list[HistoryEntry]:
        """The release's revisions, oldest first; none when the release does not exist."""
        argv = history_argv(self.helm_bin, release, namespace, self.conn, last=last)
        result = self.run(argv, timeout=QUERY_TIMEOUT_S, release=release, action="history")
        if result.returncode != 0:
            if "release: not found" in result.stderr.lower():
                return []
            raise classify_failure(release, "history", result.returncode, result.stderr)
        return parse_history(result.stdout, release)

    def newest(self, release: str, namespace: str) -> HistoryEntry | None:
        """The revision an operation that just succeeded wrote, if it can be read: this
        runs after the change is made, so it neither fails the apply nor delays a shutdown
        or a newer revision (None then: the record keeps no revision for it)."""
        if self.context.stopping() or self.context.cancelled():
            return None
        try:
            entries = self.history(release, namespace, last=1)
        except ProviderError as exc:
            self._log.warning("release_revision_unknown", release=release,
                              namespace=namespace, error=exc.message)
            return None
        return entries[-1] if entries and entries[-1].status == "deployed" else None

    def objects_health(self, release: str, namespace: str, state: ReleaseState,
                       manifest: str) -> HealthReport:
        """The health of the objects of a deployed release's manifest (kubectl get)."""
        expected = manifest_objects(manifest)
        if not expected:
            return HealthReport(Health.HEALTHY, f"release {release!r} deployed (no objects)")
        if not os.access(self.kubectl_bin, os.X_OK):
            # helm itself waited for readiness (--wait) before marking the release deployed
            return HealthReport(Health.HEALTHY, f"release {release!r} deployed (revision "
                                                f"{state.revision}); objects not checked: "
                                                f"kubectl not found at {self.kubectl_bin}")
        tmp = self.dirs()
        fd, path = tempfile.mkstemp(prefix="manifest-", suffix=".yaml", dir=tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(manifest)
            argv = kubectl_get_argv(self.kubectl_bin, path, namespace, self.conn)
            result = self.run(argv, timeout=QUERY_TIMEOUT_S, release=release,
                              action="kubectl get")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if result.returncode != 0:
            raise classify_failure(release, "kubectl get", result.returncode, result.stderr)
        return release_objects_health(expected, result.stdout, namespace)

    # ------------------------------------------------------------------ files and processes

    @contextlib.contextmanager
    def values_file(self, values: Mapping[str, Any]) -> Iterator[str]:
        tmp = self.dirs()
        fd, path = tempfile.mkstemp(prefix="values-", suffix=".json", dir=tmp)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(dict(values), handle, default=str)  # JSON is YAML: helm reads it
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def dirs(self) -> Path:
        for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME", "TMPDIR"):
            Path(self.env[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(self.env["TMPDIR"])

    def run(self, argv: list[str], *, timeout: float, release: str, action: str,
            interruption: Interruption = Interruption.INTERRUPTIBLE) -> Completed:
        """One helm (or kubectl) process through the shared runner.

        Queries are interruptible: a newer revision or a shutdown stops them at once. An
        upgrade, rollback or uninstall must finish (killed half-way, it leaves the release
        pending): a newer revision waits for it, a shutdown gives it the context's
        shutdown_grace and then SIGTERM, on which helm cancels and records the release, and
        TERM_GRACE_S more.
        """
        tmp = self.dirs()
        must_finish = interruption is Interruption.MUST_FINISH
        tool = action if action.startswith("kubectl") else f"helm {action}"
        context = self.context
        result = run_process(argv, cwd=tmp, env=self._env_bytes, stdin=b"", timeout=timeout,
                             output_limit=STDOUT_CAP,
                             grace=TERM_GRACE_S if must_finish else 5.0,
                             what=f"{tool} of release {release!r}",
                             cancelled=context.cancelled, stopping=context.stopping,
                             interruption=interruption, shutdown_grace=context.shutdown_grace)
        if result.stdout_dropped:
            raise PermanentError(f"helm {action} of release {release!r} printed more than "
                                 f"{STDOUT_CAP // (1024 * 1024)} MiB", reason="HelmOutputTooLarge")
        stderr = result.stderr[:STDERR_CAP]
        if result.stderr_dropped or len(result.stderr) > STDERR_CAP:
            # the head is cut; helm's own error is its last line: keep the tail too
            stderr += b"\n...\n" + result.stderr_tail
        return Completed(result.returncode, result.stdout.decode("utf-8", "replace"),
                         stderr.decode("utf-8", "replace"))
