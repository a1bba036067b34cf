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

Going back to a state deployed before (the engine rolling an instance back to its last good
revision, a hand-made upgrade being repaired) is ``helm rollback`` to the revision that
deployed it, when the record knows one helm still has: no chart download (a chart repository
may be unreachable from an edge site), no render (``helm_history``). A failed rollback falls
back to the upgrade.

Processes (interruptible queries; upgrades, rollbacks, uninstalls that must finish) run in
``helm_cli``; pure helpers live in ``helm_commands`` and ``helm_history``, tested without a
binary; ``HelmProvider`` decides what to run. The names tests use are re-exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
)

from .helm_cli import HelmCli, resolve_binary
from .helm_commands import (
    DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT,
    PROCESS_MARGIN_S,
    RELEASE_RE,
    SECRETISH_KEY,
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
from .helm_history import (
    DeployedState,
    RollbackPlan,
    content_of,
    deployed_state,
    next_history,
    plan_rollback,
    recorded_states,
    rollback_argv,
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


class HelmProvider:
    """Helm releases through the helm 3 or 4 CLI: upgrade --install or rollback, values
    diff, uninstall (see the module docstring)."""

    name: ClassVar[str] = "helm"
    untemplated: ClassVar[frozenset[str]] = frozenset()
    # a chart directory is repository data (validation checks it stays inside the repository;
    # the loader does not read its templates as manifests); URLs and oci:// are skipped there
    path_properties: ClassVar[frozenset[str]] = frozenset({"chart"})
    # what the record says of when, not of what: left out when the engine tells drift
    volatile_record_keys: ClassVar[frozenset[str]] = frozenset({"revision", "history"})

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
        self._cli = HelmCli(context, self._conn, resolve_binary(config.get("helm"), "helm"),
                            resolve_binary(config.get("kubectl"), "kubectl"))
        self._helm_bin = self._cli.helm_bin
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
        state = self._cli.release_state(spec.release, spec.namespace)
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
        changed = values_diff(spec.values, self._cli.live_values(spec))
        if changed:
            shown = ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else "")
            reasons.append(f"values differ at {shown}")
        in_sync = not reasons
        diff = ""
        if not in_sync:
            live = self._cli.query(get_manifest_argv(self._helm_bin, spec.release,
                                                     spec.namespace, self._conn),
                                   spec.release, "get manifest")
            diff = self._manifest_diff(spec, live, secrets)
        log.info("release_observed", exists=True, in_sync=in_sync, status=state.status,
                 chart=state.chart, revision=state.revision)
        return Observation(exists=True, in_sync=in_sync, diff=diff,
                           message="in sync" if in_sync else "; ".join(reasons))

    def apply(self, component: Component, record: Record | None) -> Record:
        spec = self._spec(component)
        # Checked only before starting: killing helm mid-upgrade would leave the release
        # pending-upgrade, which blocks the next run far longer than finishing this one. Once
        # started, the upgrade (or rollback) must finish (see HelmCli.run).
        self._check_not_stopping(spec, "upgrade")
        helm = self._cli.version()
        secrets = _secrets(component)
        recorded = recorded_states(record.data, spec) if record is not None else []
        rollback = self._roll_back(helm, spec, recorded, secrets)
        if rollback is None:
            self._upgrade(helm, spec, component, secrets)
        newest = self._cli.newest(spec.release, spec.namespace)
        revision = newest.revision if newest is not None else None
        if rollback is not None:
            self._log.info("release_rolled_back", release=spec.release,
                           namespace=spec.namespace, from_revision=rollback.current,
                           to_revision=rollback.to, revision=revision,
                           chart=spec.chart.display, version=spec.chart.version, helm=str(helm))
        deployed = deployed_state(spec, newest) if newest is not None else None
        new = Record(provider=self.name, binding=self._context.binding, data={
            "release": spec.release,
            "namespace": spec.namespace,
            "chart": spec.chart.display,
            "chart_name": spec.chart.name,
            "version": spec.chart.version,
            "chart_digest": spec.chart.digest or None,
            "values_digest": values_digest(spec.values),
            "helm": str(helm),
            # the release revision this apply deployed, and the states of the latest ones
            # (newest first): what a later apply may roll back to
            "revision": revision,
            "history": next_history(recorded, deployed),
        })
        # A renamed release or a moved namespace leaves the old release behind: remove it
        # only now that the new one is up.
        if record is not None and (record.data.get("release"), record.data.get("namespace")) \
                not in ((spec.release, spec.namespace), (None, None)):
            self.delete(record)
        return new

    def _check_not_stopping(self, spec: ReleaseSpec, action: str) -> None:
        if self._context.stopping() or self._context.cancelled():
            why = ("the daemon is shutting down" if self._context.stopping() else
                   "a newer revision arrived")
            raise TransientError(f"{action} of release {spec.release!r} not started: {why}",
                                 reason="Cancelled")

    def _upgrade(self, helm: HelmVersion, spec: ReleaseSpec, component: Component,
                 secrets: Sequence[str]) -> None:
        description = f"reconciler {component.key} at {component.revision[:12]}"
        with self._cli.values_file(spec.values) as values_file:
            argv = upgrade_argv(helm, self._helm_bin, spec, self._conn, values_file,
                                description=description)
            result = self._cli.run(argv, release=spec.release, action="upgrade",
                                   timeout=duration_seconds(spec.timeout) + PROCESS_MARGIN_S,
                                   interruption=Interruption.MUST_FINISH)
        if result.returncode != 0:
            raise classify_failure(spec.release, "upgrade", result.returncode, result.stderr,
                                   secrets)
        self._log.info("release_applied", release=spec.release, namespace=spec.namespace,
                       chart=spec.chart.display, version=spec.chart.version, helm=str(helm))

    def _roll_back(self, helm: HelmVersion, spec: ReleaseSpec,
                   recorded: Sequence[DeployedState],
                   secrets: Sequence[str]) -> RollbackPlan | None:
        """Roll the release back to the revision that deployed exactly ``spec``, when the
        record knows one helm still has (see helm_history). None to upgrade instead: no
        such revision, or the rollback failed (the upgrade then repairs what it left)."""
        if not any(s.content == content_of(spec) for s in recorded):
            return None  # a state never deployed before: not even a history query
        plan = plan_rollback(spec, recorded, self._cli.history(spec.release, spec.namespace))
        if plan is None:
            return None
        argv = rollback_argv(helm, self._helm_bin, spec.release, plan.to, spec.namespace,
                             self._conn, spec.timeout)
        result = self._cli.run(argv, release=spec.release, action="rollback",
                               timeout=duration_seconds(spec.timeout) + PROCESS_MARGIN_S,
                               interruption=Interruption.MUST_FINISH)
        if result.returncode == 0:
            return plan
        self._log.warning("release_rollback_failed", release=spec.release,
                          namespace=spec.namespace, from_revision=plan.current,
                          to_revision=plan.to, returncode=result.returncode,
                          error=trim_stderr(result.stderr, secrets))
        self._check_not_stopping(spec, "upgrade after a failed rollback")
        return None

    def delete(self, record: Record) -> None:
        release = str(record.data.get("release", ""))
        namespace = str(record.data.get("namespace") or self._conn.namespace)
        if not release:
            raise PermanentError("helm record without a release name cannot be deleted: "
                                 f"{record.to_dict()}")
        helm = self._cli.version()
        argv = uninstall_argv(helm, self._helm_bin, release, namespace, self._conn)
        result = self._cli.run(argv, timeout=duration_seconds(DEFAULT_TIMEOUT) + PROCESS_MARGIN_S,
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
        state = self._cli.release_state(release, namespace)
        if state is None:
            return HealthReport(Health.DEGRADED, f"release {release!r} is not installed")
        if state.status.startswith("pending-") or state.status == "uninstalling":
            return HealthReport(Health.PROGRESSING,
                                f"release {release!r} is {state.status} (revision "
                                f"{state.revision})")
        if state.status != "deployed":
            return HealthReport(Health.DEGRADED, f"release {release!r} is {state.status} "
                                                 f"(revision {state.revision})")
        manifest = self._cli.query(get_manifest_argv(self._helm_bin, release, namespace,
                                                     self._conn), release, "get manifest")
        return self._cli.objects_health(release, namespace, state, manifest)

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

    def _manifest_diff(self, spec: ReleaseSpec, live: str, secrets: Sequence[str]) -> str:
        with self._cli.values_file(spec.values) as values_file:
            desired = self._cli.query(template_argv(self._helm_bin, spec, self._conn,
                                                    values_file),
                                      spec.release, "template", secrets=secrets)
        return manifest_diff(live, desired, release=spec.release, secrets=secrets)

    def helm_version(self) -> HelmVersion:
        """The major.minor.patch of the configured helm binary (detected once, cached)."""
        return self._cli.version()

    def render(self, component: Component) -> str:
        """The manifest ``helm template`` renders for a component (no cluster needed)."""
        spec = self._spec(component)
        self._cli.version()
        with self._cli.values_file(spec.values) as values_file:
            return self._cli.query(template_argv(self._helm_bin, spec, self._conn, values_file),
                                   spec.release, "template", secrets=_secrets(component))


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
