"""The ``helm`` provider: Helm releases driven through the helm 3 or helm 4 CLI.

The executor constructs one :class:`HelmProvider` per target binding whose provider is
``helm`` and calls it in the order described in ``reconciler.provider_api``. Each component is
one release: ``helm upgrade --install --wait`` with the rollback-on-failure flag of the detected
helm major version, values handed over in a private temp file (never on the command line: they
may hold secrets and shell metacharacters), argv lists only, never a shell.

What differs between helm 3 and helm 4 (checked against both binaries' ``--help`` and helm's
changelog, and covered by the unit tests):

* rollback on failure: ``--atomic`` (3) was renamed ``--rollback-on-failure`` (4); helm 4 keeps
  ``--atomic`` only as a deprecated alias on ``upgrade`` and dropped it from ``install``;
* ``--wait`` is a boolean in 3 and a strategy in 4 (``--wait=watcher``; a bare ``--wait`` means
  the same today, we spell the strategy out so a changed default cannot weaken it);
* ``helm list`` shows only deployed and failed releases in 3 unless ``--all`` is given; helm 4
  removed ``--all`` and lists every state by default (pending releases must be visible to us).

Drift (``observe``) compares the release's status, its chart name-version, the user-supplied
values (``helm get values`` without ``--all``: exactly what we set, not chart defaults) and, for
chart directories kept in the repository, a digest of the chart's files recorded at apply time
(a template edit without a version bump is still a change). The rendered manifest diff
(``helm template`` vs ``helm get manifest``) is shown for plans, with Secret data redacted.

Every helm and kubectl process runs through the shared runner (``run_process`` of the
provider contract): its own process group, a deadline, capped output. Queries (list, get,
template, version, kubectl get) are interruptible: a newer revision or a shutdown stops them
at once. An upgrade or uninstall must finish, since one killed half-way leaves the release
pending and helm refuses the next operation on it: a newer revision waits for it and its
result is used; a shutdown gives it the context's ``shutdown_grace`` (90 s), then SIGTERM
(helm cancels, rolls back and records the release as failed) and ``TERM_GRACE_S`` (30 s)
before SIGKILL. docs/operations.md states that
bound; the systemd unit's TimeoutStopSec exceeds it.

The pure helpers (version parsing, argv builders, validation, values diff, error
classification) live in ``helm_commands`` and are tested without a binary; ``HelmProvider``
here does the I/O. The names tests use are re-exported.
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
    Component,
    Health,
    HealthReport,
    Interruption,
    LocalPolicy,
    Observation,
    PermanentError,
    PolicyError,
    Problem,
    ProviderContext,
    Record,
    TransientError,
    run_process,
)

from .helm_commands import (
    DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT,
    PROCESS_MARGIN_S,
    QUERY_TIMEOUT_S,
    RELEASE_RE,
    SECRETISH_KEY,
    STDERR_CAP,
    STDOUT_CAP,
    TERM_GRACE_S,
    TOOLS_BIN,
    ChartRef,
    ChartSource,
    Connection,
    HelmVersion,
    ReleaseSpec,
    ReleaseState,
    allowed_namespaces_text,
    chart_args,
    chart_dir_ref,
    classify_failure,
    config_problems,
    duration_seconds,
    get_manifest_argv,
    get_values_argv,
    helm_environment,
    is_chart_url,
    kubectl_get_argv,
    list_argv,
    manifest_diff,
    manifest_objects,
    normalize_timeout,
    parse_helm_version,
    parse_release_list,
    property_problems,
    release_objects_health,
    resolve_chart_dir,
    template_argv,
    trim_stderr,
    uninstall_argv,
    upgrade_argv,
    values_diff,
    values_digest,
    version_argv,
)

__all__ = [
    "ChartRef",
    "ChartSource",
    "Connection",
    "HelmProvider",
    "HelmVersion",
    "ReleaseSpec",
    "ReleaseState",
    "chart_args",
    "classify_failure",
    "config_problems",
    "duration_seconds",
    "get_manifest_argv",
    "get_values_argv",
    "helm_environment",
    "kubectl_get_argv",
    "list_argv",
    "manifest_diff",
    "manifest_objects",
    "normalize_timeout",
    "parse_helm_version",
    "parse_release_list",
    "property_problems",
    "release_objects_health",
    "resolve_chart_dir",
    "template_argv",
    "uninstall_argv",
    "upgrade_argv",
    "values_diff",
    "values_digest",
    "version_argv",
]

_log = structlog.get_logger(__name__)



# --------------------------------------------------------------------------- the provider


@dataclass(frozen=True)
class _Completed:
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


class HelmProvider:
    """Helm releases through the helm 3 or 4 CLI: upgrade --install, values diff, uninstall.

    Helm releases through the helm CLI (see the module docstring).
    """

    name: ClassVar[str] = "helm"
    untemplated: ClassVar[frozenset[str]] = frozenset()
    # a chart directory is repository data (validation checks it stays inside the repository;
    # the loader does not read its templates as manifests); URLs and oci:// are skipped there
    path_properties: ClassVar[frozenset[str]] = frozenset({"chart"})
    # detected versions by (binary, mtime, size): one `helm version` per binary per process
    _versions: ClassVar[dict[tuple[str, int, int], HelmVersion]] = {}

    def __init__(self, config: Mapping[str, Any], context: ProviderContext) -> None:
        problems = config_problems(config, context.policy)
        if problems:
            raise PermanentError(f"helm binding {context.binding!r} on target "
                                 f"{context.target!r}: " + "; ".join(
                                     f"{p.field}: {p.message}" for p in problems))
        self._context = context
        self._conn = Connection(kubeconfig=config.get("kubeconfig"),
                                context=config.get("context"),
                                namespace=config.get("namespace", DEFAULT_NAMESPACE))
        self._helm_bin = resolve_binary(config.get("helm"), "helm")
        self._kubectl_bin = resolve_binary(config.get("kubectl"), "kubectl")
        self._state_dir = context.state_dir
        self._env = helm_environment(self._state_dir, self._conn.kubeconfig, os.environ)
        self._env_bytes = {k: os.fsencode(v) for k, v in self._env.items()}
        self._log = _log.bind(provider="helm", target=context.target, binding=context.binding)

    # ------------------------------------------------------------------ contract: checks

    @classmethod
    def check_config(cls, config: Mapping[str, Any], policy: LocalPolicy) -> Sequence[Problem]:
        return config_problems(config, policy)

    @classmethod
    def check_properties(cls, properties: Mapping[str, Any]) -> Sequence[Problem]:
        return property_problems(properties, rendered=False)

    # ------------------------------------------------------------------ contract: operations

    def observe(self, component: Component, record: Record | None) -> Observation:
        spec = self._spec(component)
        secrets = _secrets(component)
        state = self._release_state(spec.release, spec.namespace)
        log = self._log.bind(release=spec.release, namespace=spec.namespace)
        if state is None:
            diff = self._manifest_diff(spec, "", secrets)
            log.info("release_observed", exists=False, in_sync=False)
            return Observation(exists=False, in_sync=False, diff=diff,
                               message=f"release {spec.release!r} is not installed in "
                                       f"namespace {spec.namespace!r}")
        reasons: list[str] = []
        if state.status != "deployed":
            reasons.append(f"release status is {state.status}")
        wanted = f"{spec.chart.name}-{spec.chart.version}"
        if state.chart != wanted:
            reasons.append(f"chart is {state.chart}, desired {wanted}")
        # A chart directory edited without a version bump is still a change: its content
        # digest was recorded at the last apply. Without a record (adopting an existing
        # release) the chart version and values decide.
        if (spec.chart.source is ChartSource.DIRECTORY and record is not None
                and record.data.get("chart_digest") not in (None, spec.chart.digest)):
            reasons.append("chart files changed since the last apply")
        changed = values_diff(spec.values, self._live_values(spec))
        if changed:
            shown = ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else "")
            reasons.append(f"values differ at {shown}")
        in_sync = not reasons
        diff = ""
        if not in_sync:
            live = self._query(get_manifest_argv(self._helm_bin, spec.release, spec.namespace,
                                                 self._conn), spec.release, "get manifest")
            diff = self._manifest_diff(spec, live, secrets)
        log.info("release_observed", exists=True, in_sync=in_sync, status=state.status,
                 chart=state.chart, revision=state.revision)
        return Observation(exists=True, in_sync=in_sync, diff=diff,
                           message="in sync" if in_sync else "; ".join(reasons))

    def apply(self, component: Component, record: Record | None) -> Record:
        spec = self._spec(component)
        # Checked only before starting: killing helm mid-upgrade would leave the release
        # pending-upgrade, which blocks the next run far longer than finishing this one. Once
        # started, the upgrade must finish (see _run).
        if self._context.stopping() or self._context.cancelled():
            why = ("the daemon is shutting down" if self._context.stopping() else
                   "a newer revision arrived")
            raise TransientError(f"upgrade of release {spec.release!r} not started: {why}",
                                 reason="Cancelled")
        helm = self._helm()
        description = f"reconciler {component.key} at {component.revision[:12]}"
        with self._values_file(spec.values) as values_file:
            argv = upgrade_argv(helm, self._helm_bin, spec, self._conn, values_file,
                                description=description)
            result = self._run(argv, timeout=duration_seconds(spec.timeout) + PROCESS_MARGIN_S,
                               release=spec.release, action="upgrade",
                               interruption=Interruption.MUST_FINISH)
        if result.returncode != 0:
            raise classify_failure(spec.release, "upgrade", result.returncode, result.stderr,
                                   _secrets(component))
        self._log.info("release_applied", release=spec.release, namespace=spec.namespace,
                       chart=spec.chart.display, version=spec.chart.version, helm=str(helm))
        new = Record(provider=self.name, binding=self._context.binding, data={
            "release": spec.release,
            "namespace": spec.namespace,
            "chart": spec.chart.display,
            "chart_name": spec.chart.name,
            "version": spec.chart.version,
            "chart_digest": spec.chart.digest or None,
            "values_digest": values_digest(spec.values),
            "helm": str(helm),
        })
        # A renamed release or a moved namespace leaves the old release behind: remove it
        # only now that the new one is up.
        if record is not None and (record.data.get("release"), record.data.get("namespace")) \
                not in ((spec.release, spec.namespace), (None, None)):
            self.delete(record)
        return new

    def delete(self, record: Record) -> None:
        release = str(record.data.get("release", ""))
        namespace = str(record.data.get("namespace") or self._conn.namespace)
        if not release:
            raise PermanentError("helm record without a release name cannot be deleted: "
                                 f"{record.to_dict()}")
        helm = self._helm()
        argv = uninstall_argv(helm, self._helm_bin, release, namespace, self._conn)
        result = self._run(argv, timeout=duration_seconds(DEFAULT_TIMEOUT) + PROCESS_MARGIN_S,
                           release=release, action="uninstall",
                           interruption=Interruption.MUST_FINISH)
        if result.returncode != 0:
            if "release: not found" in result.stderr.lower():
                self._log.info("release_already_absent", release=release, namespace=namespace)
                return
            raise classify_failure(release, "uninstall", result.returncode, result.stderr)
        self._log.info("release_deleted", release=release, namespace=namespace)

    def health(self, component: Component, record: Record) -> HealthReport:
        release = str(record.data.get("release") or self._spec(component).release)
        namespace = str(record.data.get("namespace") or self._conn.namespace)
        state = self._release_state(release, namespace)
        if state is None:
            return HealthReport(Health.DEGRADED, f"release {release!r} is not installed")
        if state.status.startswith("pending-") or state.status == "uninstalling":
            return HealthReport(Health.PROGRESSING,
                                f"release {release!r} is {state.status} (revision "
                                f"{state.revision})")
        if state.status != "deployed":
            return HealthReport(Health.DEGRADED, f"release {release!r} is {state.status} "
                                                 f"(revision {state.revision})")
        manifest = self._query(get_manifest_argv(self._helm_bin, release, namespace,
                                                 self._conn), release, "get manifest")
        return self._objects_health(release, namespace, state, manifest)

    def _objects_health(self, release: str, namespace: str, state: ReleaseState,
                        manifest: str) -> HealthReport:
        expected = manifest_objects(manifest)
        if not expected:
            return HealthReport(Health.HEALTHY, f"release {release!r} deployed (no objects)")
        if not os.access(self._kubectl_bin, os.X_OK):
            # helm itself waited for readiness (--wait) before marking the release deployed
            return HealthReport(Health.HEALTHY, f"release {release!r} deployed (revision "
                                                f"{state.revision}); objects not checked: "
                                                f"kubectl not found at {self._kubectl_bin}")
        tmp = self._dirs()
        fd, path = tempfile.mkstemp(prefix="manifest-", suffix=".yaml", dir=tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(manifest)
            argv = kubectl_get_argv(self._kubectl_bin, path, namespace, self._conn)
            result = self._run(argv, timeout=QUERY_TIMEOUT_S, release=release,
                               action="kubectl get")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if result.returncode != 0:
            raise classify_failure(release, "kubectl get", result.returncode, result.stderr)
        return release_objects_health(expected, result.stdout, namespace)

    # ------------------------------------------------------------------ helpers

    def _spec(self, component: Component) -> ReleaseSpec:
        props = component.properties
        problems = property_problems(props, rendered=True)
        where = f"component {component.key!r} (solution {component.solution!r})"
        if problems:
            raise PermanentError(f"{where}: " + "; ".join(
                f"properties.{p.field}: {p.message}" for p in problems), reason="InvalidProperties")
        namespace = str(props.get("namespace") or self._conn.namespace)
        policy = self._context.policy
        if policy.namespaces is not None and namespace not in policy.namespaces:
            raise PolicyError(f"{where}: namespace {namespace!r} is not allowed by the local "
                              f"policy (allowed: {allowed_namespaces_text(policy)})")
        release = str(props.get("release") or component.name)
        if len(release) > 53 or not RELEASE_RE.match(release):
            raise PermanentError(f"{where}: release name {release!r} is invalid; set "
                                 "properties.release", reason="InvalidProperties")
        chart = str(props["chart"])
        ref: ChartRef
        try:
            if is_chart_url(chart):
                ref = ChartRef(ChartSource.REPOSITORY, chart, str(props["name"]),
                               str(props["version"]), f"{chart} {props['name']}")
            elif chart.startswith("oci://"):
                name = chart.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
                ref = ChartRef(ChartSource.OCI, chart, name, str(props["version"]), chart)
            else:
                ref = chart_dir_ref(chart, component.base_dir, component.repo_root)
        except PermanentError as exc:
            raise PermanentError(f"{where}: properties.{exc.message}",
                                 reason="InvalidProperties") from None
        return ReleaseSpec(release=release, namespace=namespace, chart=ref,
                           values=dict(props.get("values") or {}),
                           timeout=normalize_timeout(props.get("timeout", DEFAULT_TIMEOUT)),
                           create_namespace=bool(props.get("createNamespace", False)))

    def _helm(self) -> HelmVersion:
        try:
            st = os.stat(self._helm_bin)
        except OSError:
            raise PermanentError(f"helm binary {self._helm_bin!r} not found: run "
                                 "scripts/install-tools.sh or set the binding's 'helm'") from None
        key = (self._helm_bin, st.st_mtime_ns, st.st_size)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        result = self._run(version_argv(self._helm_bin), timeout=QUERY_TIMEOUT_S,
                           release="-", action="version")
        if result.returncode != 0 or not result.stdout.strip():
            result = self._run(version_argv(self._helm_bin, short=True),
                               timeout=QUERY_TIMEOUT_S, release="-", action="version")
        if result.returncode != 0:
            raise PermanentError(f"helm binary {self._helm_bin!r} does not run: "
                                 f"{trim_stderr(result.stderr)}")
        version = parse_helm_version(result.stdout)
        self._versions[key] = version
        self._log.info("helm_detected", binary=self._helm_bin, version=str(version))
        return version

    def _release_state(self, release: str, namespace: str) -> ReleaseState | None:
        argv = list_argv(self._helm(), self._helm_bin, release, namespace, self._conn)
        return parse_release_list(self._query(argv, release, "list"), release)

    def _live_values(self, spec: ReleaseSpec) -> Any:
        text = self._query(get_values_argv(self._helm_bin, spec.release, spec.namespace,
                                           self._conn), spec.release, "get values")
        try:
            return json.loads(text or "null")
        except json.JSONDecodeError as exc:
            raise PermanentError(f"release {spec.release!r}: helm get values printed invalid "
                                 f"JSON: {exc}") from None

    def _manifest_diff(self, spec: ReleaseSpec, live: str, secrets: Sequence[str]) -> str:
        with self._values_file(spec.values) as values_file:
            desired = self._query(template_argv(self._helm_bin, spec, self._conn, values_file),
                                  spec.release, "template", secrets=secrets)
        return manifest_diff(live, desired, release=spec.release, secrets=secrets)

    def helm_version(self) -> HelmVersion:
        """The major.minor.patch of the configured helm binary (detected once, cached)."""
        return self._helm()

    def render(self, component: Component) -> str:
        """The manifest ``helm template`` renders for a component (no cluster needed)."""
        spec = self._spec(component)
        self._helm()
        with self._values_file(spec.values) as values_file:
            return self._query(template_argv(self._helm_bin, spec, self._conn, values_file),
                               spec.release, "template", secrets=_secrets(component))

    def _query(self, argv: list[str], release: str, action: str,
               secrets: Sequence[str] = ()) -> str:
        result = self._run(argv, timeout=QUERY_TIMEOUT_S, release=release, action=action)
        if result.returncode != 0:
            raise classify_failure(release, action, result.returncode, result.stderr, secrets)
        return result.stdout

    @contextlib.contextmanager
    def _values_file(self, values: Mapping[str, Any]) -> Iterator[str]:
        tmp = self._dirs()
        fd, path = tempfile.mkstemp(prefix="values-", suffix=".json", dir=tmp)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(dict(values), handle, default=str)  # JSON is YAML: helm reads it
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _dirs(self) -> Path:
        for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME", "TMPDIR"):
            Path(self._env[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(self._env["TMPDIR"])

    def _run(self, argv: list[str], *, timeout: float, release: str, action: str,
             interruption: Interruption = Interruption.INTERRUPTIBLE) -> _Completed:
        """One helm (or kubectl) process through the shared runner.

        Queries are interruptible: a newer revision or a shutdown stops them at once. An
        upgrade or uninstall must finish (killed half-way, it leaves the release pending):
        a newer revision waits for it, a shutdown gives it the context's shutdown_grace and
        then SIGTERM, on which helm cancels and records the release, and TERM_GRACE_S more.
        """
        tmp = self._dirs()
        must_finish = interruption is Interruption.MUST_FINISH
        tool = action if action.startswith("kubectl") else f"helm {action}"
        result = run_process(argv, cwd=tmp, env=self._env_bytes, stdin=b"", timeout=timeout,
                             output_limit=STDOUT_CAP,
                             grace=TERM_GRACE_S if must_finish else 5.0,
                             what=f"{tool} of release {release!r}",
                             cancelled=self._context.cancelled,
                             stopping=self._context.stopping, interruption=interruption,
                             shutdown_grace=self._context.shutdown_grace)
        if result.stdout_dropped:
            raise PermanentError(f"helm {action} of release {release!r} printed more than "
                                 f"{STDOUT_CAP // (1024 * 1024)} MiB", reason="HelmOutputTooLarge")
        stderr = result.stderr[:STDERR_CAP]
        if result.stderr_dropped or len(result.stderr) > STDERR_CAP:
            # the head is cut; helm's own error is its last line: keep the tail too
            stderr += b"\n...\n" + result.stderr_tail
        return _Completed(result.returncode, result.stdout.decode("utf-8", "replace"),
                          stderr.decode("utf-8", "replace"))


def _secrets(component: Component) -> list[str]:
    """Strings that must not appear in messages or diffs."""
    found = [str(component.params[n]) for n in component.secret_params if n in component.params]
    values = component.properties.get("values")
    if isinstance(values, Mapping):
        found.extend(_secretish_leaves(values))
    return found


def _secretish_leaves(values: Mapping[str, Any], secretish: bool = False) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        hit = secretish or bool(SECRETISH_KEY.search(str(key)))
        if isinstance(value, Mapping):
            out.extend(_secretish_leaves(value, hit))
        elif hit and isinstance(value, str | int | float) and not isinstance(value, bool):
            out.append(str(value))
    return out
