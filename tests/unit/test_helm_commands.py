"""Pure parts of the helm provider: version parsing, argv construction for helm 3 and helm 4,
validation, values diff, error classification and manifest redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from reconciler_providers.helm import (
    ChartRef,
    ChartSource,
    Connection,
    HelmVersion,
    ReleaseSpec,
    classify_failure,
    config_problems,
    duration_seconds,
    get_values_argv,
    helm_environment,
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
    uninstall_argv,
    upgrade_argv,
    values_diff,
    values_digest,
)

from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.provider_api import Health, LocalPolicy

HELM3 = HelmVersion(3, 17, 2)
HELM4 = HelmVersion(4, 1, 4)
CONN = Connection(kubeconfig="/etc/k.yaml", context="edge", namespace="lines")
DIR_CHART = ChartRef(ChartSource.DIRECTORY, "/repo/solutions/d/chart", "line-dashboard",
                     "0.1.0", "solutions/d/chart", "sha256:x")
SPEC = ReleaseSpec(release="dash-l1", namespace="lines", chart=DIR_CHART,
                   values={"lineId": "L1"}, timeout="90s", create_namespace=True)


def _flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---------------------------------------------------------------- version detection

@pytest.mark.parametrize(("text", "expected"), [
    ("v4.1.4", HelmVersion(4, 1, 4)),
    ("v3.17.2+gcc0bbbd\n", HelmVersion(3, 17, 2, "+gcc0bbbd")),
    ("v4.0.0-rc.1", HelmVersion(4, 0, 0, "-rc.1")),
    ('version.BuildInfo{Version:"v3.14.4", GitCommit:"81c902a"}', HelmVersion(3, 14, 4)),
    ("3.12.0", HelmVersion(3, 12, 0)),
])
def test_parse_helm_version(text: str, expected: HelmVersion) -> None:
    assert parse_helm_version(text) == expected


@pytest.mark.parametrize("text", ["", "garbage", "Client: &version.Version{SemVer:\"v2.17.0\"}"])
def test_parse_helm_version_rejects_unknown_and_helm2(text: str) -> None:
    with pytest.raises(PermanentError):
        parse_helm_version(text)


def test_version_string_round_trips() -> None:
    assert str(HelmVersion(3, 17, 2, "+gcc0bbbd")) == "v3.17.2+gcc0bbbd"


# ---------------------------------------------------------------- argv: helm 3 vs helm 4

def test_upgrade_helm3_uses_atomic_and_boolean_wait() -> None:
    argv = upgrade_argv(HELM3, "helm", SPEC, CONN, "/tmp/v.json")
    assert argv[:4] == ["helm", "upgrade", "dash-l1", "/repo/solutions/d/chart"]
    assert "--atomic" in argv and "--rollback-on-failure" not in argv
    assert "--wait" in argv and not any(a.startswith("--wait=") for a in argv)


def test_upgrade_helm4_uses_rollback_on_failure_and_watcher_wait() -> None:
    argv = upgrade_argv(HELM4, "helm", SPEC, CONN, "/tmp/v.json")
    assert "--rollback-on-failure" in argv and "--atomic" not in argv
    assert "--wait=watcher" in argv and "--wait" not in argv


@pytest.mark.parametrize("helm", [HELM3, HELM4])
def test_upgrade_common_flags(helm: HelmVersion) -> None:
    argv = upgrade_argv(helm, "/opt/helm", SPEC, CONN, "/tmp/v.json", description="rev abc")
    assert "--install" in argv and "--reset-values" in argv and "--create-namespace" in argv
    assert _flag_value(argv, "--values") == "/tmp/v.json"
    assert _flag_value(argv, "--timeout") == "90s"
    assert _flag_value(argv, "--namespace") == "lines"
    assert _flag_value(argv, "--kube-context") == "edge"
    assert _flag_value(argv, "--description") == "rev abc"
    # values travel in the file only, never as --set
    assert not any(a.startswith("--set") for a in argv)
    assert all("L1" not in a for a in argv)


def test_upgrade_without_create_namespace_or_context() -> None:
    spec = ReleaseSpec("r", "ns", DIR_CHART, {}, "300s", create_namespace=False)
    argv = upgrade_argv(HELM4, "helm", spec, Connection(), "/v")
    assert "--create-namespace" not in argv and "--kube-context" not in argv


def test_repository_and_oci_chart_arguments() -> None:
    repo = ChartRef(ChartSource.REPOSITORY, "https://charts.example.com", "nginx", "15.0.2",
                    "https://charts.example.com nginx")
    argv = upgrade_argv(HELM4, "helm", ReleaseSpec("web", "ns", repo, {}), Connection(), "/v")
    assert argv[3:8] == ["nginx", "--repo", "https://charts.example.com", "--version", "15.0.2"]
    oci = ChartRef(ChartSource.OCI, "oci://registry.example.com/charts/app", "app", "1.2.3",
                   "oci://registry.example.com/charts/app")
    argv = template_argv("helm", ReleaseSpec("web", "ns", oci, {}), Connection(), "/v")
    assert argv[3:6] == ["oci://registry.example.com/charts/app", "--version", "1.2.3"]


def test_list_argv_helm3_needs_all_helm4_has_no_such_flag() -> None:
    v3 = list_argv(HELM3, "helm", "dash.l1", "lines", CONN)
    v4 = list_argv(HELM4, "helm", "dash.l1", "lines", CONN)
    assert "--all" in v3 and "--all" not in v4
    assert _flag_value(v4, "--filter") == r"^dash\.l1$"
    assert _flag_value(v4, "--output") == "json"


def test_get_values_is_user_supplied_only() -> None:
    argv = get_values_argv("helm", "dash", "lines", CONN)
    assert argv[:4] == ["helm", "get", "values", "dash"]
    assert "--all" not in argv and "-a" not in argv


@pytest.mark.parametrize(("helm", "wait"), [(HELM3, "--wait"), (HELM4, "--wait=watcher")])
def test_uninstall_argv(helm: HelmVersion, wait: str) -> None:
    argv = uninstall_argv(helm, "helm", "dash", "lines", CONN)
    assert argv[:3] == ["helm", "uninstall", "dash"] and wait in argv


def test_template_argv_skips_hooks_like_get_manifest() -> None:
    argv = template_argv("helm", SPEC, CONN, "/v")
    assert argv[:4] == ["helm", "template", "dash-l1", "/repo/solutions/d/chart"]
    assert "--no-hooks" in argv


def test_kubectl_get_argv() -> None:
    argv = kubectl_get_argv("kubectl", "/tmp/m.yaml", "lines", CONN)
    assert argv[:4] == ["kubectl", "get", "--filename", "/tmp/m.yaml"]
    assert _flag_value(argv, "--context") == "edge" and "--ignore-not-found" in argv


# ---------------------------------------------------------------- environment

def test_environment_is_clean_and_points_into_state_dir(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x",
            "HTTPS_PROXY": "http://proxy:3128", "KUBECONFIG": "/root/.kube/config"}
    env = helm_environment(tmp_path, "/etc/k.yaml", base)
    assert env["KUBECONFIG"] == "/etc/k.yaml"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                "HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME", "TMPDIR"):
        assert Path(env[key]).is_relative_to(tmp_path), key
    # without a binding kubeconfig the daemon's own one is used
    assert helm_environment(tmp_path, None, base)["KUBECONFIG"] == "/root/.kube/config"


# ---------------------------------------------------------------- timeouts

@pytest.mark.parametrize(("value", "expected"), [
    (90, "90s"), (2.5, "2.5s"), ("5m", "5m"), ("1h30m", "1h30m"), (" 300s ", "300s")])
def test_normalize_timeout(value: object, expected: str) -> None:
    assert normalize_timeout(value) == expected


@pytest.mark.parametrize("value", [0, -5, True, "five minutes", "5", "0s", [1]])
def test_normalize_timeout_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        normalize_timeout(value)


def test_duration_seconds() -> None:
    assert duration_seconds("1h30m") == 5400 and duration_seconds("1m30.5s") == 90.5


# ---------------------------------------------------------------- validation

def _fields(problems: list) -> set[str]:  # type: ignore[type-arg]
    return {p.field for p in problems}


def test_valid_properties_have_no_problems() -> None:
    assert property_problems({"chart": "chart", "release": "dash-l1", "namespace": "lines",
                              "values": {"a": 1}, "timeout": "5m",
                              "createNamespace": True}) == []
    assert property_problems({"chart": "https://charts.example.com", "name": "nginx",
                              "version": "1.2.3"}) == []
    assert property_problems({"chart": "oci://r.example.com/c/app", "version": "1.0.0"}) == []


@pytest.mark.parametrize(("props", "field"), [
    ({}, "chart"),
    ({"chart": "c", "colour": "red"}, "colour"),
    ({"chart": "/abs/chart"}, "chart"),
    ({"chart": "../other/chart"}, "chart"),
    ({"chart": "sub/../../x"}, "chart"),
    ({"chart": "c", "version": "1.0.0"}, "version"),
    ({"chart": "https://charts.example.com", "version": "1"}, "name"),
    ({"chart": "https://charts.example.com", "name": "n"}, "version"),
    ({"chart": "oci://r/c/app"}, "version"),
    ({"chart": "oci://r/c/app", "version": "1", "name": "x"}, "name"),
    ({"chart": "ftp://x/y"}, "chart"),
    ({"chart": "https://c", "name": "n", "version": 1.2}, "version"),
    ({"chart": "c", "release": "Bad_Name"}, "release"),
    ({"chart": "c", "release": "x" * 54}, "release"),
    ({"chart": "c", "namespace": "Lines"}, "namespace"),
    ({"chart": "c", "values": ["a"]}, "values"),
    ({"chart": "c", "timeout": "soon"}, "timeout"),
    ({"chart": "c", "createNamespace": "yes"}, "createNamespace"),
])
def test_property_problems(props: dict, field: str) -> None:  # type: ignore[type-arg]
    assert field in _fields(property_problems(props))


def test_number_version_hint_says_quote_it() -> None:
    problems = property_problems({"chart": "https://c", "name": "n", "version": 1.10})
    assert any("quote" in p.message for p in problems)


def test_unrendered_templates_are_not_type_checked() -> None:
    props = {"chart": "chart", "values": "${{ params.values }}",
             "timeout": "${{ params.timeout }}", "namespace": "${{ params.ns }}"}
    assert property_problems(props, rendered=False) == []
    assert {"values", "timeout", "namespace"} <= _fields(property_problems(props))


def test_config_problems() -> None:
    policy = LocalPolicy(namespaces=frozenset({"lines"}))
    assert config_problems({"kubeconfig": "/etc/k", "context": "c", "namespace": "lines",
                            "helm": "/opt/helm"}, policy) == []
    problems = config_problems({"kubeconfig": "rel/k", "context": 3, "namespace": "other",
                                "helmet": "x"}, policy)
    assert _fields(problems) == {"kubeconfig", "context", "namespace", "helmet"}
    assert "policy" in next(p.message for p in problems if p.field == "namespace")
    assert config_problems({"namespace": "other"}, LocalPolicy()) == []


# ---------------------------------------------------------------- chart paths

def _chart(root: Path, rel: str) -> Path:
    chart = root / rel
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    return chart


def test_resolve_chart_dir_inside_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    chart = _chart(repo, "solutions/s/chart")
    assert resolve_chart_dir("chart", repo / "solutions/s", repo) == chart.resolve()


def test_resolve_chart_dir_rejects_symlink_escape(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = _chart(tmp_path, "outside")
    (repo / "solutions/s").mkdir(parents=True)
    (repo / "solutions/s/chart").symlink_to(outside)
    with pytest.raises(PermanentError, match="outside the repository"):
        resolve_chart_dir("chart", repo / "solutions/s", repo)


def test_resolve_chart_dir_rejects_symlinked_file_leaving_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    chart = _chart(repo, "s/chart")
    (tmp_path / "secret.txt").write_text("site secret")
    (chart / "templates" / "leak.yaml").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PermanentError, match="symlink leaving"):
        resolve_chart_dir("chart", repo / "s", repo)


@pytest.mark.parametrize("chart", ["../chart", "/etc", "a/../../chart"])
def test_resolve_chart_dir_rejects_dotdot_and_absolute(tmp_path: Path, chart: str) -> None:
    with pytest.raises(PermanentError):
        resolve_chart_dir(chart, tmp_path / "s", tmp_path)


def test_resolve_chart_dir_needs_chart_yaml(tmp_path: Path) -> None:
    (tmp_path / "s/chart").mkdir(parents=True)
    with pytest.raises(PermanentError, match=r"no Chart\.yaml"):
        resolve_chart_dir("chart", tmp_path / "s", tmp_path)


# ---------------------------------------------------------------- values diff

def test_values_diff_names_paths_not_values() -> None:
    desired = {"image": {"tag": "2.0", "repo": "r"}, "replicas": 2, "password": "hunter22"}
    live = {"image": {"tag": "1.0", "repo": "r"}, "replicas": 2, "password": "old-secret",
            "extra": True}
    assert values_diff(desired, live) == ["extra", "image.tag", "password"]


def test_values_diff_equal_after_json_normalisation() -> None:
    import datetime
    assert values_diff({"n": 1.0, "d": datetime.date(2024, 1, 2), 3: "x"},
                       {"n": 1, "d": "2024-01-02", "3": "x"}) == []
    assert values_diff({}, None) == []
    assert values_diff({"a": [1, 2]}, {"a": [2, 1]}) == ["a"]
    assert values_diff({"a": {"b": 1}}, {"a": 5}) == ["a"]


def test_values_digest_is_order_independent() -> None:
    assert values_digest({"a": 1, "b": {"c": 2}}) == values_digest({"b": {"c": 2}, "a": 1})
    assert values_digest({"a": 1}) != values_digest({"a": 2})
    assert values_digest({}).startswith("sha256:")


# ---------------------------------------------------------------- release list

def test_parse_release_list() -> None:
    text = ('[{"name":"dash","namespace":"lines","revision":"3","updated":"x",'
            '"status":"pending-upgrade","chart":"line-dashboard-0.1.0","app_version":"1"}]')
    state = parse_release_list(text, "dash")
    assert state is not None and state.status == "pending-upgrade"
    assert state.chart == "line-dashboard-0.1.0" and state.revision == "3"
    assert parse_release_list("[]", "dash") is None
    assert parse_release_list(text, "other") is None
    with pytest.raises(PermanentError):
        parse_release_list("{not json", "dash")


# ---------------------------------------------------------------- error classification

@pytest.mark.parametrize(("stderr", "kind", "reason"), [
    ('Error: kubernetes cluster unreachable: Get "https://127.0.0.1:1/version": dial tcp '
     "127.0.0.1:1: connect: connection refused", TransientError, "HelmClusterUnreachable"),
    ("Error: Kubernetes cluster unreachable: the server has asked for the client to provide "
     "credentials", TransientError, "HelmClusterUnreachable"),
    ("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress",
     TransientError, "HelmBusy"),
    ("Error: UPGRADE FAILED: context deadline exceeded", TransientError, "HelmTimeout"),
    ("Error: the server responded with the status code 503 but did not return more "
     "information", TransientError, "HelmServerError"),
    ("Error: Too Many Requests", TransientError, "HelmThrottled"),
    ("Error: values don't meet the specifications of the schema(s)", PermanentError,
     "HelmInvalidValues"),
    ('Error: template: c/templates/d.yaml:3:7: executing "x" at <.Values.a.b>: nil pointer',
     PermanentError, "HelmRenderFailed"),
    ('Error: failed to download "nginx" at version "99.0.0"', PermanentError,
     "HelmChartNotFound"),
    ("Error: chart \"nginx\" version \"99\" not found in https://c repository",
     PermanentError, "HelmChartNotFound"),
    ('Error: secrets is forbidden: User "edge" cannot list resource', PermanentError,
     "HelmForbidden"),
    ("Error: something nobody has seen", PermanentError, "HelmFailed"),
])
def test_classify_failure(stderr: str, kind: type, reason: str) -> None:
    error = classify_failure("dash", "upgrade", 1, stderr)
    assert type(error) is kind and error.reason == reason
    assert "'dash'" in str(error) and "upgrade" in str(error)


def test_classify_failure_redacts_secrets_and_trims() -> None:
    stderr = ("WARNING: Kubernetes configuration file is group-readable. This is insecure.\n"
              + "x" * 5000 + " token s3cr3t-value")
    error = classify_failure("dash", "upgrade", 1, stderr, ["s3cr3t-value"])
    assert "s3cr3t-value" not in str(error) and "***" in str(error)
    assert "group-readable" not in str(error)
    assert len(str(error)) < 1700


# ---------------------------------------------------------------- manifest diff

SECRET_DOC = """---
# Source: c/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: {pw}
"""
CM_DOC = """---
# Source: c/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  title: {title}
"""


def test_manifest_diff_shows_changes_and_hides_secret_data() -> None:
    live = SECRET_DOC.format(pw="old-password") + CM_DOC.format(title="Line 1")
    desired = SECRET_DOC.format(pw="new-password") + CM_DOC.format(title="Line 2")
    diff = manifest_diff(live, desired, release="dash")
    assert diff.startswith("--- live/dash\n+++ desired/dash\n")
    assert "-  title: Line 1" in diff and "+  title: Line 2" in diff
    assert "password" in diff  # the key shows, and that it changed ...
    assert "old-password" not in diff and "new-password" not in diff  # ... its value never
    assert "<redacted " in diff


def test_manifest_diff_redacts_secret_params_anywhere() -> None:
    diff = manifest_diff("", CM_DOC.format(title="tok-123456"), release="d",
                         secrets=["tok-123456"])
    assert "tok-123456" not in diff and "***" in diff


def test_manifest_diff_empty_when_equal() -> None:
    text = CM_DOC.format(title="x")
    assert manifest_diff(text, text, release="d") == ""


# ---------------------------------------------------------------- object health

def test_manifest_objects_and_health_fold() -> None:
    manifest = CM_DOC.format(title="x") + """---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
"""
    expected = manifest_objects(manifest)
    assert expected == [("ConfigMap", "", "cfg"), ("Deployment", "", "web")]
    ready = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": "lines", "generation": 1},
             "spec": {"replicas": 1},
             "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                        "availableReplicas": 1, "readyReplicas": 1}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "cfg", "namespace": "lines"}}
    import json
    healthy = release_objects_health(expected, json.dumps({"kind": "List", "items": [cm, ready]}),
                                     "lines")
    assert healthy.state is Health.HEALTHY
    missing = release_objects_health(expected, json.dumps({"kind": "List", "items": [cm]}),
                                     "lines")
    assert missing.state is Health.DEGRADED and "Deployment/web" in missing.message
