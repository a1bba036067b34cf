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

Pure helpers (version parsing, argv builders, validation, values diff, error classification)
are module functions so they are tested without a binary; ``HelmProvider`` does the I/O.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import structlog
import yaml

from reconciler.errors import PermanentError, PolicyError, ProviderError, TransientError
from reconciler.provider_api import (
    Component,
    Health,
    HealthReport,
    LocalPolicy,
    Observation,
    Problem,
    ProviderContext,
    Record,
)

from . import kube_health

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
STDOUT_CAP = 32 * 1024 * 1024  # rendered manifests of big charts stay well below this
STDERR_CAP = 256 * 1024
MESSAGE_STDERR_CHARS = 1500
DIFF_CAP = 256 * 1024

_RELEASE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]*)?")
_SECRETISH_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)


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


def _is_url(chart: str) -> bool:
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
            len(release) > 53 or not _RELEASE_RE.match(release)):
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
    if _is_url(chart):
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
                problems.append(Problem(key, f"namespace {value!r} is not allowed by the local "
                                             f"policy (allowed: {_allowed(policy)})"))
    return problems


def _allowed(policy: LocalPolicy) -> str:
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


def _chart_dir_ref(chart: str, base_dir: Path, repo_root: Path) -> ChartRef:
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


def _conn_args(conn: Connection, namespace: str) -> list[str]:
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
            *_conn_args(conn, spec.namespace)]
    if spec.create_namespace:
        argv.append("--create-namespace")
    if description:
        argv += ["--description", description]
    return argv


def template_argv(binary: str, spec: ReleaseSpec, conn: Connection,
                  values_file: str) -> list[str]:
    # --no-hooks: `helm get manifest` holds no hooks either, so both sides compare alike
    return [binary, "template", spec.release, *chart_args(spec.chart), "--values", values_file,
            "--no-hooks", *_conn_args(conn, spec.namespace)]


def list_argv(helm: HelmVersion, binary: str, release: str, namespace: str,
              conn: Connection) -> list[str]:
    pattern = "^" + release.replace(".", r"\.") + "$"
    argv = [binary, "list", "--filter", pattern, "--output", "json",
            *_conn_args(conn, namespace)]
    if helm.major == 3:
        argv.append("--all")  # helm 3 hides pending releases otherwise
    return argv


def get_values_argv(binary: str, release: str, namespace: str, conn: Connection) -> list[str]:
    # no --all: the user-supplied values are exactly what we set, chart defaults are not ours
    return [binary, "get", "values", release, "--output", "json", *_conn_args(conn, namespace)]


def get_manifest_argv(binary: str, release: str, namespace: str, conn: Connection) -> list[str]:
    return [binary, "get", "manifest", release, *_conn_args(conn, namespace)]


def uninstall_argv(helm: HelmVersion, binary: str, release: str, namespace: str,
                   conn: Connection, timeout: str = DEFAULT_TIMEOUT) -> list[str]:
    return [binary, "uninstall", release, helm.wait_flag, "--timeout", timeout,
            *_conn_args(conn, namespace)]


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
    """Helm releases through the helm CLI (see the module docstring)."""

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
        helm = self._helm()
        # Checked only before starting: killing helm mid-upgrade would leave the release
        # pending-upgrade, which blocks the next run far longer than finishing this one.
        if self._context.cancelled():
            raise TransientError(f"upgrade of release {spec.release!r} not started: a newer "
                                 "revision arrived", reason="Cancelled")
        description = f"reconciler {component.key} at {component.revision[:12]}"
        with self._values_file(spec.values) as values_file:
            argv = upgrade_argv(helm, self._helm_bin, spec, self._conn, values_file,
                                description=description)
            result = self._run(argv, timeout=duration_seconds(spec.timeout) + PROCESS_MARGIN_S,
                               release=spec.release, action="upgrade")
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
                           release=release, action="uninstall")
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
                              f"policy (allowed: {_allowed(policy)})")
        release = str(props.get("release") or component.name)
        if len(release) > 53 or not _RELEASE_RE.match(release):
            raise PermanentError(f"{where}: release name {release!r} is invalid; set "
                                 "properties.release", reason="InvalidProperties")
        chart = str(props["chart"])
        ref: ChartRef
        try:
            if _is_url(chart):
                ref = ChartRef(ChartSource.REPOSITORY, chart, str(props["name"]),
                               str(props["version"]), f"{chart} {props['name']}")
            elif chart.startswith("oci://"):
                name = chart.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
                ref = ChartRef(ChartSource.OCI, chart, name, str(props["version"]), chart)
            else:
                ref = _chart_dir_ref(chart, component.base_dir, component.repo_root)
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

    def _run(self, argv: list[str], *, timeout: float, release: str, action: str) -> _Completed:
        tmp = self._dirs()
        with tempfile.TemporaryFile(dir=tmp) as out, tempfile.TemporaryFile(dir=tmp) as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        env=self._env, cwd=tmp, start_new_session=True)
            except OSError as exc:
                raise PermanentError(f"cannot run {argv[0]!r} for release {release!r}: "
                                     f"{exc.strerror or exc}") from None
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                raise TransientError(f"helm {action} of release {release!r} did not finish "
                                     f"within {timeout:.0f}s", reason="HelmTimeout") from None
            out.seek(0)
            err.seek(0)
            stdout = out.read(STDOUT_CAP + 1)
            stderr = err.read(STDERR_CAP)
        if len(stdout) > STDOUT_CAP:
            raise PermanentError(f"helm {action} of release {release!r} printed more than "
                                 f"{STDOUT_CAP // (1024 * 1024)} MiB", reason="HelmOutputTooLarge")
        return _Completed(returncode, stdout.decode("utf-8", "replace"),
                          stderr.decode("utf-8", "replace"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # helm may have started plugins or post-renderers: stop the whole process group, politely
    # first so helm can record the release's state.
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


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
        hit = secretish or bool(_SECRETISH_KEY.search(str(key)))
        if isinstance(value, Mapping):
            out.extend(_secretish_leaves(value, hit))
        elif hit and isinstance(value, str | int | float) and not isinstance(value, bool):
            out.append(str(value))
    return out
