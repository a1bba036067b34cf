"""Pure helpers of the ``helm`` provider: version detection, command lines for helm 3 and
helm 4, property and config checks, chart references, values and manifest diffs, release
parsing, error classification and object health from a release manifest.

No process is started here: ``reconciler_providers.helm`` runs the commands these functions
build, so everything in this module is tested table-driven.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from reconciler.provider_api import (
    SHUTDOWN_GRACE,
    Health,
    HealthReport,
    LocalPolicy,
    PermanentError,
    Problem,
    ProviderError,
    TransientError,
)

from . import kube_health

# Where scripts/install-tools.sh puts the binaries, used when nothing is on PATH.
TOOLS_BIN = Path(__file__).resolve().parent.parent / ".tools" / "bin"

CONFIG_KEYS = frozenset({"kubeconfig", "context", "namespace", "helm", "kubectl"})
PROPERTY_KEYS = frozenset(
    {"chart", "name", "version", "release", "namespace", "values", "timeout", "createNamespace"}
)
DEFAULT_NAMESPACE = "default"
DEFAULT_TIMEOUT = "300s"
# Our own deadline for a helm process is its --timeout plus this, so helm normally gives up
# (and rolls back) first and we never kill it half-way through an upgrade.
PROCESS_MARGIN_S = 60.0
QUERY_TIMEOUT_S = 60.0
# On shutdown a running upgrade or uninstall gets the context's shutdown_grace to finish; then
# SIGTERM, on which helm cancels, rolls back (the rollback flag) and records the release as
# failed instead of leaving it pending-upgrade. This is how long it gets for that before
# SIGKILL. The unit's TimeoutStopSec exceeds SHUTDOWN_BOUND_S (docs/operations.md).
TERM_GRACE_S = 30.0
SHUTDOWN_BOUND_S = SHUTDOWN_GRACE + TERM_GRACE_S
STDOUT_CAP = 32 * 1024 * 1024  # rendered manifests of big charts stay well below this
STDERR_CAP = 256 * 1024
MESSAGE_STDERR_CHARS = 1500
DIFF_CAP = 256 * 1024

RELEASE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]*)?")
SECRETISH_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, order=True)
class HelmVersion:
    major: int
    minor: int
    patch: int
    suffix: str = ""

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}{self.suffix}"

    @property
    def rollback_flag(self) -> str:
        return "--atomic" if self.major == 3 else "--rollback-on-failure"

    @property
    def wait_flag(self) -> str:
        return "--wait" if self.major == 3 else "--wait=watcher"


def version_argv(binary: str, *, short: bool = False) -> list[str]:
    if short:
        return [binary, "version", "--short"]
    return [binary, "version", "--template", "{{.Version}}"]


def parse_helm_version(text: str) -> HelmVersion:
    """Parse ``v3.17.2``, ``v4.1.4+g05fa379`` or a ``version.BuildInfo{...}`` line."""
    match = _VERSION_RE.search(text.strip())
    if match is None:
        raise PermanentError(f"helm version output {text.strip()[:200]!r} holds no version")
    version = HelmVersion(int(match.group(1)), int(match.group(2)), int(match.group(3)),
                          match.group(4) or "")
    if version.major not in (3, 4):
        raise PermanentError(f"helm {version} is not supported: helm 3 or helm 4 is needed")
    return version


# --------------------------------------------------------------------------- values


def _canonical(value: Any) -> Any:
    # What helm gives back is JSON; putting the desired side through JSON too makes YAML-only
    # types (dates, int keys) compare the way helm stored them.
    return json.loads(json.dumps(value, default=str))


def values_digest(values: Mapping[str, Any]) -> str:
    text = json.dumps(_canonical(dict(values)), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def values_diff(desired: Any, live: Any) -> list[str]:
    """Dotted paths where the values differ; never the values (they may be secrets)."""
    return _diff_paths(_canonical(desired or {}), _canonical(live or {}), "")


def _diff_paths(desired: Any, live: Any, prefix: str) -> list[str]:
    if isinstance(desired, dict) and isinstance(live, dict):
        paths: list[str] = []
        for key in sorted(set(desired) | set(live)):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in desired or key not in live:
                paths.append(sub)
            else:
                paths.extend(_diff_paths(desired[key], live[key], sub))
        return paths
    return [] if desired == live else [prefix or "(all values)"]


# --------------------------------------------------------------------------- validation


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("${{" in value or "${%" in value)


def normalize_timeout(value: Any) -> str:
    """Seconds (int/float) or a helm duration (``90s``, ``5m``, ``1h30m``) as a duration."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be seconds (a number) or a duration such as 90s or 5m")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("must be positive")
        return f"{int(value)}s" if float(value).is_integer() else f"{value}s"
    text = value.strip()
    if not _DURATION_RE.match(text) or duration_seconds(text) <= 0:
        raise ValueError(f"{value!r} is not a positive duration such as 90s, 5m or 1h30m")
    return text


def duration_seconds(text: str) -> float:
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def is_chart_url(chart: str) -> bool:
    return chart.startswith(("https://", "http://"))


def property_problems(properties: Mapping[str, Any], *, rendered: bool = True) -> list[Problem]:
    """Problems with a component's properties; unrendered template strings are skipped."""
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(key, message))

    def literal(key: str) -> bool:
        return key in properties and (rendered or not _templated(properties[key]))

    for key in sorted(set(properties) - PROPERTY_KEYS, key=str):
        bad(str(key), f"unknown property (known: {', '.join(sorted(PROPERTY_KEYS))})")
    chart = properties.get("chart")
    if "chart" not in properties:
        bad("chart", "required: a chart directory, a repository URL or an oci:// reference")
    elif literal("chart") and (not isinstance(chart, str) or not chart.strip()):
        bad("chart", "must be a non-empty string")
        chart = None
    for key in ("name", "version", "release", "namespace"):
        if literal(key) and not isinstance(properties[key], str):
            hint = " (quote it in YAML)" if isinstance(properties[key], int | float) else ""
            bad(key, f"must be a string{hint}")
    if isinstance(chart, str) and not _templated(chart):
        _chart_problems(chart, properties, bad)
    release = properties.get("release")
    if isinstance(release, str) and literal("release") and (
            len(release) > 53 or not RELEASE_RE.match(release)):
        bad("release", f"{release!r} is not a valid release name (lower-case letters, digits, "
                       "'-' and '.', at most 53 characters)")
    namespace = properties.get("namespace")
    if isinstance(namespace, str) and literal("namespace") and not _valid_namespace(namespace):
        bad("namespace", f"{namespace!r} is not a valid namespace name")
    if literal("values") and not isinstance(properties["values"], Mapping):
        bad("values", "must be a mapping")
    if literal("timeout"):
        try:
            normalize_timeout(properties["timeout"])
        except ValueError as exc:
            bad("timeout", str(exc))
    if literal("createNamespace") and not isinstance(properties["createNamespace"], bool):
        bad("createNamespace", "must be true or false")
    return problems


def _chart_problems(chart: str, properties: Mapping[str, Any], bad: Any) -> None:
    has_name, has_version = "name" in properties, "version" in properties
    if is_chart_url(chart):
        if not has_name:
            bad("name", "required with a repository URL chart: the chart's name in the repo")
        if not has_version:
            bad("version", "required with a repository URL chart (pin what gets deployed)")
    elif chart.startswith("oci://"):
        if has_name:
            bad("name", "not used with an oci:// chart: the reference names the chart")
        if not has_version:
            bad("version", "required with an oci:// chart (pin what gets deployed)")
    elif "://" in chart:
        bad("chart", f"{chart!r}: only https://, http:// and oci:// references are supported")
    else:
        path = PurePosixPath(chart)
        if path.is_absolute():
            bad("chart", f"{chart!r} is absolute: chart paths are relative to the solution file")
        elif ".." in path.parts:
            bad("chart", f"{chart!r} uses '..': chart paths must stay inside the repository")
        for key in ("name", "version"):
            if key in properties:
                bad(key, "not used with a chart directory: its Chart.yaml gives name and version")


def _valid_namespace(namespace: str) -> bool:
    return len(namespace) <= 63 and bool(_NAMESPACE_RE.match(namespace))


def config_problems(config: Mapping[str, Any], policy: LocalPolicy) -> list[Problem]:
    problems: list[Problem] = []
    for key in sorted(set(config) - CONFIG_KEYS, key=str):
        problems.append(Problem(str(key), "unknown key (known: "
                                          f"{', '.join(sorted(CONFIG_KEYS))})"))
    for key in sorted(CONFIG_KEYS & set(config)):
        value = config[key]
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(key, "must be a non-empty string"))
        elif key == "kubeconfig" and not Path(value).is_absolute():
            problems.append(Problem(key, f"{value!r} must be an absolute path on the site"))
        elif key == "namespace":
            if not _valid_namespace(value):
                problems.append(Problem(key, f"{value!r} is not a valid namespace name"))
            elif policy.namespaces is not None and value not in policy.namespaces:
                allowed = allowed_namespaces_text(policy)
                problems.append(Problem(key, f"namespace {value!r} is not allowed by the local "
                                             f"policy (allowed: {allowed})"))
    return problems


def allowed_namespaces_text(policy: LocalPolicy) -> str:
    return ", ".join(sorted(policy.namespaces or ())) or "none"


# --------------------------------------------------------------------------- charts


class ChartSource(enum.Enum):
    DIRECTORY = "directory"
    REPOSITORY = "repository"
    OCI = "oci"


@dataclass(frozen=True)
class ChartRef:
    source: ChartSource
    ref: str  # absolute directory, repository URL, or oci:// reference
    name: str
    version: str
    display: str  # what records and messages show (repo-relative path for directories)
    digest: str = ""  # content digest of a chart directory


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster; from the binding config."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True)
class ReleaseSpec:
    """A validated, rendered component: everything needed to build helm commands."""

    release: str
    namespace: str
    chart: ChartRef
    values: Mapping[str, Any]
    timeout: str = DEFAULT_TIMEOUT
    create_namespace: bool = False


def resolve_chart_dir(chart: str, base_dir: Path, repo_root: Path) -> Path:
    """The chart directory for ``chart``; raises PermanentError when it escapes the repo."""
    path = PurePosixPath(chart)
    if path.is_absolute() or ".." in path.parts:
        raise PermanentError(f"chart {chart!r}: must be a relative path without '..'")
    root = repo_root.resolve()
    resolved = (base_dir / chart).resolve()
    if not resolved.is_relative_to(root):
        raise PermanentError(f"chart {chart!r}: resolves to {resolved}, outside the repository "
                             "(a symlink leaves the tree)")
    if not (resolved / "Chart.yaml").is_file():
        raise PermanentError(f"chart {chart!r}: {resolved} is not a chart directory "
                             "(no Chart.yaml)")
    # helm follows symlinks inside a chart, so one pointing out of the tree would put a site's
    # files into the rendered manifest.
    for dirpath, dirnames, filenames in os.walk(resolved):
        for entry in (*dirnames, *filenames):
            full = Path(dirpath, entry)
            if full.is_symlink() and not full.resolve().is_relative_to(root):
                raise PermanentError(f"chart {chart!r}: {full.relative_to(resolved)} is a "
                                     "symlink leaving the repository")
    return resolved


def chart_dir_ref(chart: str, base_dir: Path, repo_root: Path) -> ChartRef:
    directory = resolve_chart_dir(chart, base_dir, repo_root)
    try:
        meta = yaml.safe_load((directory / "Chart.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PermanentError(f"chart {chart!r}: Chart.yaml is unreadable: {exc}") from None
    if not isinstance(meta, Mapping) or not meta.get("name") or not meta.get("version"):
        raise PermanentError(f"chart {chart!r}: Chart.yaml needs name and version")
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(directory)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    display = str(directory.relative_to(repo_root.resolve()))
    return ChartRef(ChartSource.DIRECTORY, str(directory), str(meta["name"]),
                    str(meta["version"]), display, "sha256:" + digest.hexdigest())


def chart_args(chart: ChartRef) -> list[str]:
    if chart.source is ChartSource.DIRECTORY:
        return [chart.ref]
    if chart.source is ChartSource.REPOSITORY:
        return [chart.name, "--repo", chart.ref, "--version", chart.version]
    return [chart.ref, "--version", chart.version]


# --------------------------------------------------------------------------- argv builders


def conn_args(conn: Connection, namespace: str) -> list[str]:
    args = ["--namespace", namespace]
    if conn.context:
        args += ["--kube-context", conn.context]
    return args


def upgrade_argv(helm: HelmVersion, binary: str, spec: ReleaseSpec, conn: Connection,
                 values_file: str, *, description: str = "") -> list[str]:
    argv = [binary, "upgrade", spec.release, *chart_args(spec.chart),
            "--install", helm.wait_flag, helm.rollback_flag,
            # without --reset-values an empty values file would make helm reuse the old values
            "--reset-values", "--values", values_file, "--timeout", spec.timeout,
            *conn_args(conn, spec.namespace)]
    if spec.create_namespace:
        argv.append("--create-namespace")
    if description:
        argv += ["--description", description]
    return argv


def template_argv(binary: str, spec: ReleaseSpec, conn: Connection,
                  values_file: str) -> list[str]:
    # --no-hooks: `helm get manifest` holds no hooks either, so both sides compare alike
    return [binary, "template", spec.release, *chart_args(spec.chart), "--values", values_file,
            "--no-hooks", *conn_args(conn, spec.namespace)]


def list_argv(helm: HelmVersion, binary: str, release: str, namespace: str,
              conn: Connection) -> list[str]:
    pattern = "^" + release.replace(".", r"\.") + "$"
    argv = [binary, "list", "--filter", pattern, "--output", "json",
            *conn_args(conn, namespace)]
    if helm.major == 3:
        argv.append("--all")  # helm 3 hides pending releases otherwise
    return argv


def get_values_argv(binary: str, release: str, namespace: str, conn: Connection) -> list[str]:
    # no --all: the user-supplied values are exactly what we set, chart defaults are not ours
    return [binary, "get", "values", release, "--output", "json", *conn_args(conn, namespace)]


def get_manifest_argv(binary: str, release: str, namespace: str, conn: Connection) -> list[str]:
    return [binary, "get", "manifest", release, *conn_args(conn, namespace)]


def uninstall_argv(helm: HelmVersion, binary: str, release: str, namespace: str,
                   conn: Connection, timeout: str = DEFAULT_TIMEOUT) -> list[str]:
    return [binary, "uninstall", release, helm.wait_flag, "--timeout", timeout,
            *conn_args(conn, namespace)]


def helm_environment(state_dir: Path, kubeconfig: str | None,
                     base: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: helm's caches and config live under the provider's state dir."""
    home = state_dir / "home"
    env = {
        "PATH": base.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "HELM_CACHE_HOME": str(home / ".cache" / "helm"),
        "HELM_CONFIG_HOME": str(home / ".config" / "helm"),
        "HELM_DATA_HOME": str(home / ".local" / "share" / "helm"),
        "TMPDIR": str(state_dir / "tmp"),
        "LC_ALL": "C",  # stable English messages for classify_failure
    }
    # In-cluster credentials, proxies and CA bundles are the site's, not the repository's.
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HTTPS_PROXY",
                "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
                "SSL_CERT_FILE", "SSL_CERT_DIR"):
        if key in base:
            env[key] = base[key]
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    elif "KUBECONFIG" in base:
        env["KUBECONFIG"] = base["KUBECONFIG"]
    return env


# --------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class ReleaseState:
    name: str
    namespace: str
    revision: str
    status: str  # deployed, failed, pending-install, pending-upgrade, ...
    chart: str  # "<name>-<version>"


def parse_release_list(text: str, release: str) -> ReleaseState | None:
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise PermanentError(f"release {release!r}: helm list printed invalid JSON: {exc}") \
            from None
    for row in rows or ():
        if isinstance(row, Mapping) and row.get("name") == release:
            return ReleaseState(release, str(row.get("namespace", "")),
                                str(row.get("revision", "")), str(row.get("status", "")),
                                str(row.get("chart", "")))
    return None


# --------------------------------------------------------------------------- errors

_BUSY = ("another operation (install/upgrade/rollback) is in progress",
         "another operation is in progress")
_TRANSIENT = (
    ("kubernetes cluster unreachable", "HelmClusterUnreachable"),
    ("connection refused", "HelmClusterUnreachable"),
    ("no route to host", "HelmClusterUnreachable"),
    ("i/o timeout", "HelmTimeout"),
    ("tls handshake timeout", "HelmTimeout"),
    ("context deadline exceeded", "HelmTimeout"),
    ("timed out waiting", "HelmTimeout"),
    ("client rate limiter", "HelmTimeout"),
    ("connection reset by peer", "HelmClusterUnreachable"),
    ("unexpected eof", "HelmClusterUnreachable"),
    ("too many requests", "HelmThrottled"),
    # client-go's wording for 429/5xx answers that carry no Status message
    ("has received too many requests", "HelmThrottled"),
    ("an error on the server", "HelmServerError"),
    ("unable to return a response in the time allotted", "HelmTimeout"),
    ("etcdserver: request timed out", "HelmTimeout"),
    ("the server is currently unable to handle the request", "HelmServerError"),
    ("temporary failure in name resolution", "HelmClusterUnreachable"),
    ("502 bad gateway", "HelmServerError"),
    ("503 service unavailable", "HelmServerError"),
    ("504 gateway timeout", "HelmServerError"),
)
_STATUS_CODE = re.compile(r"(?:status code|code:?|status:?)\s*(429|5\d\d)\b", re.IGNORECASE)
_PERMANENT = (
    ("values don't meet the specifications", "HelmInvalidValues"),
    ("parse error", "HelmRenderFailed"),
    ("execution error", "HelmRenderFailed"),
    ("template:", "HelmRenderFailed"),
    ("yaml:", "HelmRenderFailed"),
    ("error converting yaml", "HelmRenderFailed"),
    ("chart requires kubeversion", "HelmRenderFailed"),
    ("failed to download", "HelmChartNotFound"),
    ("not found", "HelmChartNotFound"),
    ("no chart version found", "HelmChartNotFound"),
    ("is forbidden", "HelmForbidden"),
    ("unauthorized", "HelmForbidden"),
    ("cannot re-use a name", "HelmConflict"),
    ("invalid ownership metadata", "HelmConflict"),
)
_NOISE = re.compile(r"^WARNING: Kubernetes configuration file is (group|world)-readable.*$\n?",
                    re.MULTILINE)


def trim_stderr(stderr: str, secrets: Iterable[str] = ()) -> str:
    text = _NOISE.sub("", stderr)
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > MESSAGE_STDERR_CHARS:
        text = "..." + text[-MESSAGE_STDERR_CHARS:]
    return text or "(no output)"


def classify_failure(release: str, action: str, returncode: int, stderr: str,
                     secrets: Iterable[str] = ()) -> ProviderError:
    """Map a failed helm run to TransientError (retry later) or PermanentError."""
    message = (f"helm {action} of release {release!r} failed (exit {returncode}): "
               f"{trim_stderr(stderr, secrets)}")
    lowered = stderr.lower()
    if any(p in lowered for p in _BUSY):
        return TransientError(message, reason="HelmBusy", delay=30.0)
    for pattern, reason in _TRANSIENT:
        if pattern in lowered:
            return TransientError(message, reason=reason)
    if _STATUS_CODE.search(stderr):
        return TransientError(message, reason="HelmServerError")
    for pattern, reason in _PERMANENT:
        if pattern in lowered:
            return PermanentError(message, reason=reason)
    return PermanentError(message, reason="HelmFailed")


# --------------------------------------------------------------------------- manifest diff

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


def _redact_secret_doc(doc: str) -> str:
    try:
        obj = yaml.safe_load(doc)
    except yaml.YAMLError:
        return doc
    if not isinstance(obj, dict) or obj.get("kind") != "Secret":
        return doc
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            obj[key] = {k: "<redacted " + hashlib.sha256(str(v).encode()).hexdigest()[:12] + ">"
                        for k, v in obj[key].items()}
    comments = "".join(line + "\n" for line in doc.strip("\n").splitlines()
                       if line.startswith("#"))
    return "\n" + comments + yaml.safe_dump(obj, sort_keys=False)


def redact_manifest(text: str, secrets: Iterable[str] = ()) -> str:
    """Secret ``data``/``stringData`` replaced by short digests (a change still shows)."""
    docs = _DOC_SPLIT.split(text)
    out = "---".join(_redact_secret_doc(d) if "Secret" in d else d for d in docs)
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def manifest_diff(live: str, desired: str, *, release: str,
                  secrets: Iterable[str] = ()) -> str:
    secrets = tuple(secrets)
    lines = difflib.unified_diff(
        redact_manifest(live, secrets).splitlines(keepends=True),
        redact_manifest(desired, secrets).splitlines(keepends=True),
        fromfile=f"live/{release}", tofile=f"desired/{release}")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if len(text) > DIFF_CAP:
        text = text[:DIFF_CAP] + "... (diff truncated)\n"
    return text


# --------------------------------------------------------------------------- object health


def manifest_objects(manifest: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in a rendered manifest, in order."""
    out: list[tuple[str, str, str]] = []
    try:
        docs = list(yaml.safe_load_all(manifest))
    except yaml.YAMLError as exc:
        raise PermanentError(f"release manifest is not valid YAML: {exc}") from None
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind"):
            raw = doc.get("metadata")
            meta: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            out.append((str(doc["kind"]), str(meta.get("namespace") or ""),
                        str(meta.get("name") or "")))
    return out


def kubectl_get_argv(binary: str, manifest_file: str, namespace: str,
                     conn: Connection) -> list[str]:
    # --ignore-not-found: a deleted object is reported by release_objects_health, by name,
    # instead of failing the whole query
    argv = [binary, "get", "--filename", manifest_file, "--output", "json",
            "--ignore-not-found", "--namespace", namespace]
    if conn.context:
        argv += ["--context", conn.context]
    return argv


def release_objects_health(expected: Sequence[tuple[str, str, str]], kubectl_json: str,
                           namespace: str) -> HealthReport:
    """Fold the live objects (``kubectl get -o json``) with the kubernetes health rules."""
    try:
        live = json.loads(kubectl_json) if kubectl_json.strip() else {"items": []}
    except json.JSONDecodeError as exc:
        raise PermanentError(f"kubectl get printed invalid JSON: {exc}") from None
    items = live.get("items", []) if live.get("kind", "List") == "List" else [live]
    found: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for obj in items:
        meta = obj.get("metadata") or {}
        found[(str(obj.get("kind")), str(meta.get("namespace") or ""),
               str(meta.get("name")))] = obj
    reports: list[tuple[str, HealthReport]] = []
    for kind, ns, name in expected:
        obj = found.get((kind, ns or namespace, name), found.get((kind, "", name)))
        label = f"{kind}/{name}"
        if obj is None:
            reports.append((label, HealthReport(Health.DEGRADED, "missing from the cluster")))
        else:
            reports.append((label, kube_health.object_health(obj)))
    return kube_health.worst(reports)


