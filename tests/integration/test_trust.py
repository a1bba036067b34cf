"""How far a site daemon trusts the fleet repository, end to end with the installed command.

Three gates stand between a commit on the server and a change at a site, all configured in the
site's local config and none of them in the repository: signature verification (``verify:``,
SSH allowed signers or a GPG keyring; an unverified revision is ``Blocked`` and the targets
stay on their last good revision), the local policy (``policy:``; what the repository asks
for beyond it makes that target ``Invalid``), and site-local secrets (``secretsDir``; values
reach the files and scripts that use them and nothing else: no status branch, log line, plan,
explanation or error message).

Keys are made once per module (ssh-keygen, ``gpg --quick-gen-key``) in private temporary
directories; every test builds its own fleet repository on a bare remote and runs
``reconciler sync --once`` / ``plan`` / ``explain`` / ``validate`` as child processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.fleetkit import (
    CliResult,
    FleetRepo,
    Site,
    branches,
    clean_env,
    component,
    file_binding,
    file_component,
    instance,
    make_site,
    reconciler,
    script_binding,
    settings,
    site,
    solution,
    status_of,
    sync,
    target,
)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("git", "gpg", "ssh-keygen", "gpgconf")),
    reason="git, gpg and ssh-keygen are needed to make and check signatures")

LINE = "hq/line-1"


# ---------------------------------------------------------------- keys and signed commits

@dataclass(frozen=True)
class Keys:
    """Signing material made once per module."""

    root: Path
    allowed_signers: Path  # trusts alice's SSH key only
    keyring: Path  # GnuPG home holding only the release key's public half
    signer_home: Path  # GnuPG home holding the private keys of release and intruder

    def signing(self, who: str) -> tuple[list[str], dict[str, str]]:
        """git ``-c`` options and environment that make ``git commit -S`` / ``git tag -s``
        sign as ``who``: ``alice`` or ``mallory`` (SSH), ``release`` or ``intruder``
        (OpenPGP; only release is in the site's keyring)."""
        if who in ("release", "intruder"):
            return (["-c", "gpg.format=openpgp", "-c", f"user.signingkey={who}@example.org"],
                    {"GNUPGHOME": str(self.signer_home)})
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.root / who}"], {}


def _run(args: Sequence[str], cwd: Path | None = None,
         env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=clean_env(env), capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _gpg_home() -> Path:
    # gpg-agent's socket lives in the home; pytest's tmp paths can exceed the socket path limit
    home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    home.chmod(0o700)
    return home


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    root = tmp_path_factory.mktemp("keys")
    for name in ("alice", "mallory"):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
              str(root / name)])
    allowed = root / "allowed_signers"
    allowed.write_text(f"alice@example.org {(root / 'alice.pub').read_text()}")
    signer, keyring = _gpg_home(), _gpg_home()
    try:
        for uid in ("Release Key <release@example.org>", "Intruder <intruder@example.org>"):
            _run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid,
                  "ed25519", "sign", "never"], env={"GNUPGHOME": str(signer)})
        exported = root / "release.asc"
        exported.write_text(_run(["gpg", "--batch", "--armor", "--export",
                                  "release@example.org"], env={"GNUPGHOME": str(signer)}))
        _run(["gpg", "--batch", "--quiet", "--import", str(exported)],
             env={"GNUPGHOME": str(keyring)})
        yield Keys(root, allowed, keyring, signer)
    finally:
        for home in (signer, keyring):
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=clean_env(
                {"GNUPGHOME": str(home)}), check=False, capture_output=True, timeout=30)
            shutil.rmtree(home, ignore_errors=True)


def commit_as(repo: FleetRepo, keys: Keys, who: str | None, message: str) -> str:
    """Commit the work tree (signed by ``who``, unsigned when None) and push main."""
    options, env = keys.signing(who) if who else ([], {})
    sign = ["-S"] if who else ["--no-gpg-sign"]
    _run(["git", "add", "-A"], repo.work)
    _run(["git", *options, "commit", "--quiet", "--allow-empty", *sign, "-m", message],
         repo.work, env)
    if not repo.remote.exists():
        _run(["git", "init", "--quiet", "--bare", str(repo.remote)], repo.root)
    _run(["git", "push", "--quiet", str(repo.remote), "main:main"], repo.work)
    return repo.head()


def tag_as(repo: FleetRepo, keys: Keys, who: str | None, name: str) -> None:
    """An annotated tag at HEAD (signed by ``who``, unsigned when None), pushed; an existing
    tag of that name is moved."""
    options, env = keys.signing(who) if who else ([], {})
    _run(["git", *options, "tag", "--force", "-s" if who else "-a", "-m", f"release {name}",
          name], repo.work, env)
    _run(["git", "push", "--quiet", "--force", str(repo.remote), f"refs/tags/{name}"],
         repo.work)


# ---------------------------------------------------------------- a one-line fleet

def line_repo(root: Path, files: Mapping[str, Any], *,
              site_params: Mapping[str, Any] | None = None) -> FleetRepo:
    """Plant ``hq`` with line ``line-1`` (``site_params`` on the plant) plus ``files``,
    written but not committed."""
    repo = FleetRepo(root)
    repo.write("reconciler.yaml", settings(("plant", "line")))
    repo.write("sites.yaml", [site("hq", labels={"plant": "hq"}, params=site_params),
                              site("line-1", "hq")])
    for rel, content in files.items():
        repo.write(rel, content, executable=rel.endswith(".sh"))
    return repo


def panel_files(text: str) -> dict[str, Any]:
    """One target ``panel`` with one file component whose content is ``text``."""
    return {
        "targets.yaml": [target("panel", "line-1"), instance("screen", "screen",
                                                             names=["panel"])],
        "solutions/screen.yaml": solution("screen", [
            file_component("screen", "screen.txt", text)]),
    }


def run_cli(s: Site, *args: str, log_level: str = "info") -> CliResult:
    return reconciler(*args, "--config", str(s.config), log_level=log_level, env=s.env())


# ---------------------------------------------------------------- 1. signed revisions

def verify_site(tmp_path: Path, repo: FleetRepo, method: str, keys: Keys, *,
                mode: str = "commit", ref: str = "main") -> Site:
    """A site daemon config trusting alice's SSH key or the release GPG key."""
    trust = ({"allowedSigners": str(keys.allowed_signers)} if method == "ssh"
             else {"gpgKeyring": str(keys.keyring)})
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE,
                  verify={"mode": mode, **trust})
    if ref != "main":
        config = yaml.safe_load(s.config.read_text())
        config["repo"]["ref"] = ref
        s.config.write_text(yaml.safe_dump(config, sort_keys=False))
    return s


def screen(s: Site) -> Path:
    return s.file("panel", "screen.txt")


def set_screen(repo: FleetRepo, text: str) -> None:
    repo.write("solutions/screen.yaml", solution("screen", [
        file_component("screen", "screen.txt", text)]))


def revisions(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    return doc["observedRevision"], doc["appliedRevision"], doc["lastGoodRevision"]


@pytest.mark.parametrize(("method", "trusted", "untrusted", "unknown"), [
    ("ssh", "alice", "mallory", "not in verify.allowedSigners"),
    ("gpg", "release", "intruder", "not in verify.gpgKeyring"),
])
def test_commit_mode_applies_only_commits_signed_by_a_trusted_key(
        tmp_path: Path, keys: Keys, method: str, trusted: str, untrusted: str,
        unknown: str) -> None:
    repo = line_repo(tmp_path / "fleet", panel_files("A\n"))
    a = commit_as(repo, keys, trusted, "A: signed")
    s = verify_site(tmp_path, repo, method, keys)

    sync(s)
    assert screen(s).read_text() == "A\n"
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Ready" and doc["appliedRevision"] == a

    # B: unsigned, on top of A
    set_screen(repo, "B\n")
    b = commit_as(repo, keys, None, "B: unsigned")
    blocked = sync(s, expect=1)
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Blocked", doc
    assert doc["message"] == f"commit {b[:12]}: unsigned"
    assert revisions(doc) == (b, a, a)
    assert screen(s).read_text() == "A\n"
    assert "Blocked" in blocked.stdout
    assert [e["reason"] for e in blocked.events("revision_blocked", commit=b[:12])] == [
        doc["message"]]

    # drift is still repaired, at A
    screen(s).write_text("edited by hand\n")
    repaired = sync(s, expect=1)
    assert screen(s).read_text() == "A\n"
    assert [(e["target"], e["component"]) for e in repaired.events("component_applied")] == [
        ("panel", "screen")]
    assert status_of(repo.remote, LINE, "panel")["phase"] == "Blocked"

    # C: signed, but by a key the site does not trust
    set_screen(repo, "C\n")
    c = commit_as(repo, keys, untrusted, "C: signed by an unknown key")
    sync(s, expect=1)
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Blocked", doc
    assert doc["message"].startswith(f"commit {c[:12]}: ") and unknown in doc["message"]
    assert revisions(doc) == (c, a, a)
    assert screen(s).read_text() == "A\n"

    # D: signed by the trusted key: applied (the tip is what is verified, not its ancestors)
    set_screen(repo, "D\n")
    d = commit_as(repo, keys, trusted, "D: signed")
    sync(s)
    assert screen(s).read_text() == "D\n"
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Ready", doc
    assert revisions(doc) == (d, d, d)


@pytest.mark.parametrize(("method", "trusted", "ref"), [
    ("ssh", "alice", "semver:^1"),
    ("gpg", "release", "semver:^1"),
    # an annotated tag moved from release to release
    ("ssh", "alice", "tag:v1"),
])
def test_tag_mode_applies_only_revisions_under_a_trusted_signed_tag(
        tmp_path: Path, keys: Keys, method: str, trusted: str, ref: str) -> None:
    """The daemon tracks release tags; the commits themselves are unsigned."""
    repo = line_repo(tmp_path / "fleet", panel_files("A\n"))
    a = commit_as(repo, keys, None, "A")
    first = "v1" if ref == "tag:v1" else "v1.0.0"
    tag_as(repo, keys, trusted, first)
    s = verify_site(tmp_path, repo, method, keys, mode="tag", ref=ref)

    sync(s)
    assert screen(s).read_text() == "A\n"
    assert revisions(status_of(repo.remote, LINE, "panel")) == (a, a, a)

    # the next release is tagged without a signature (moved tag, or a newer one in range)
    set_screen(repo, "B\n")
    b = commit_as(repo, keys, None, "B")
    second = "v1" if ref == "tag:v1" else "v1.1.0"
    tag_as(repo, keys, None, second)
    sync(s, expect=1)
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Blocked", doc
    assert doc["message"] == f"commit {b[:12]}: no signed tag points at it (tag {second}: " \
                             "unsigned)"
    assert revisions(doc) == (b, a, a)
    assert screen(s).read_text() == "A\n"

    # the same release, now signed by the trusted key: applied
    tag_as(repo, keys, trusted, second)
    sync(s)
    assert screen(s).read_text() == "B\n"
    assert revisions(status_of(repo.remote, LINE, "panel")) == (b, b, b)


def test_mode_none_applies_unsigned_and_untrusted_commits(tmp_path: Path, keys: Keys) -> None:
    repo = line_repo(tmp_path / "fleet", panel_files("A\n"))
    a = commit_as(repo, keys, None, "A: unsigned")
    s = verify_site(tmp_path, repo, "ssh", keys, mode="none")

    sync(s)
    assert screen(s).read_text() == "A\n"
    assert revisions(status_of(repo.remote, LINE, "panel")) == (a, a, a)

    set_screen(repo, "B\n")
    b = commit_as(repo, keys, "mallory", "B: signed by a key nobody trusts")
    result = sync(s)
    assert screen(s).read_text() == "B\n"
    doc = status_of(repo.remote, LINE, "panel")
    assert doc["phase"] == "Ready" and revisions(doc) == (b, b, b)
    assert result.events("revision_blocked") == []


# ---------------------------------------------------------------- 2. local policy

RUN_SH = """#!/bin/sh
set -eu
echo ran > ran.txt
"""


def policy_fleet(root: Path) -> FleetRepo:
    """Three targets on line-1: ``panel`` (a file root under files/), ``outside`` (a file
    root under elsewhere/) and ``runner`` (a file binding and a script binding)."""
    repo = line_repo(root, {
        "targets.yaml": [
            target("panel", "line-1"),
            target("outside", "line-1", bindings=[
                {"role": "config-file", "provider": "file",
                 "config": {"root": "elsewhere/outside"}}]),
            target("runner", "line-1", bindings=[file_binding("runner"),
                                                 script_binding("runner")]),
            instance("screen", "screen", names=["panel", "outside", "runner"]),
            instance("job", "job", names=["runner"]),
        ],
        "solutions/screen.yaml": solution("screen", [
            file_component("screen", "screen.txt", "hello\n")]),
        "solutions/job.yaml": solution("job", [
            component("run", "service", {"apply": ["scripts/run.sh"]})]),
        "solutions/scripts/run.sh": RUN_SH,
    })
    repo.commit("three targets")
    return repo


def line_number(repo: FleetRepo, rel: str, text: str, after: str = "") -> int:
    """1-based number of the first line of ``rel`` containing ``text`` (after the first line
    containing ``after``)."""
    lines = repo.read(rel).splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(n for n, line in enumerate(lines[start:], start + 1) if text in line)


@pytest.mark.parametrize(("policy", "invalid", "field", "message"), [
    ({"allowScripts": False, "fileRoots": ["files", "elsewhere"]}, "runner",
     "spec.bindings[1]", "the local policy does not allow scripts"),
    ({"allowScripts": True, "fileRoots": ["files"]}, "outside",
     "spec.bindings[0].config.root", "the local policy does not allow writing under"),
    ({"allowScripts": True, "allowedProviders": ["file"], "fileRoots": ["files", "elsewhere"]},
     "runner", "spec.bindings[1].provider",
     "the local policy does not allow provider 'script' (allowed: file)"),
], ids=["allowScripts", "fileRoots", "allowedProviders"])
def test_local_policy_makes_only_the_offending_target_invalid(
        tmp_path: Path, policy: dict[str, Any], invalid: str, field: str,
        message: str) -> None:
    repo = policy_fleet(tmp_path / "fleet")
    s = make_site(tmp_path, "line-1", repo=repo.url, site=LINE, policy=policy)
    head = repo.head()

    result = sync(s, expect=1)

    doc = status_of(repo.remote, LINE, invalid)
    assert doc["phase"] == "Invalid", doc
    assert revisions(doc) == (head, "", "")
    error = doc["errors"][0]
    assert error["file"] == "targets.yaml" and error["object"] == f"Target/{invalid}"
    assert error["field"].startswith(field) and message in error["message"], error
    # the line is inside the offending binding (the root setting itself for fileRoots)
    if invalid == "outside":
        root_line = line_number(repo, "targets.yaml", "root: elsewhere/outside")
        lines = range(root_line, root_line + 1)
    else:
        lines = range(line_number(repo, "targets.yaml", "role: service", after="name: runner"),
                      line_number(repo, "targets.yaml", "timeout: 20", after="name: runner") + 1)
    assert error["line"] in lines, (error, repo.read("targets.yaml"))
    assert f"targets.yaml:{error['line']}: Target/{invalid}: {field}" in doc["message"]
    assert "local policy" in doc["message"]
    # nothing of the refused target was applied, not even its allowed file binding
    assert not (s.state / "files" / invalid).exists()
    assert not (s.work("runner") / "ran.txt").exists() or invalid != "runner"
    assert not (s.state / "elsewhere").exists() or invalid != "outside"
    # the site's other targets apply
    for name in {"panel", "outside", "runner"} - {invalid}:
        other = status_of(repo.remote, LINE, name)
        assert other["phase"] == "Ready" and revisions(other) == (head, head, head), other
    ready = {t for t, c in ((e["target"], e["component"])
                            for e in result.events("component_applied"))}
    assert ready == {"panel", "outside", "runner"} - {invalid}


# ---------------------------------------------------------------- 3. site-local secrets

SECRET = "S3cr3t-Value-42!"  # the distinctive value hunted for everywhere

# a careless script: it prints what it got, so its output (logged) carries the secret too
INSTALL_SH = """#!/bin/sh
set -eu
printf '%s' "$RECONCILER_PARAM_DBPASSWORD" > received.env
cat > stdin.json
echo "connecting to the database with password $RECONCILER_PARAM_DBPASSWORD"
echo "debug: password is $RECONCILER_PARAM_DBPASSWORD" >&2
"""

DB_CONF = "user=app\npassword=${{ params.dbPassword }}\n"


def db_solution(content: str = DB_CONF, rules: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    return solution("db", [
        file_component("conf", "db.conf", content),
        component("install", "service", {"apply": ["scripts/install.sh"]}, ["conf"]),
    ], {"dbPassword": {"type": "string", "required": True, **(rules or {})},
        "apiToken": {"type": "string"}})


def secret_fleet(root: Path, site_params: Mapping[str, Any]) -> FleetRepo:
    """Target ``db-host`` (file and script bindings) running solution ``db``; the plant
    ``hq`` sets ``site_params``."""
    repo = line_repo(root, {
        "targets.yaml": [
            target("db-host", "line-1", bindings=[file_binding("db-host"),
                                                  script_binding("db-host")]),
            instance("db", "db", names=["db-host"]),
        ],
        "solutions/db.yaml": db_solution(),
        "solutions/scripts/install.sh": INSTALL_SH,
    }, site_params=site_params)
    repo.commit("database host")
    return repo


def secret_site(tmp_path: Path, repo: FleetRepo) -> Site:
    secrets = tmp_path / "line-1" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db-password").write_text(SECRET + "\n")
    return make_site(tmp_path, "line-1", repo=repo.url, site=LINE, secretsDir=str(secrets))


def assert_nowhere_in_git(remote: Path, value: str) -> None:
    """``value`` is in no file of any branch or tag, and in no commit or diff of history."""
    refs = branches(remote)
    assert any(b.startswith("reconciler-status/") for b in refs), refs
    for ref in refs:
        found = subprocess.run(["git", "grep", "-F", "-c", "-e", value, ref], cwd=remote,
                               env=clean_env(), capture_output=True, text=True, timeout=60)
        assert found.returncode == 1, f"{value!r} on {ref}: {found.stdout}{found.stderr}"
    history = _run(["git", "log", "--all", "-p", "--format=%H %B"], remote)
    assert "status: " in history  # the status commits are part of what was searched
    assert value not in history


def test_secret_reaches_its_file_and_script_and_nothing_else(tmp_path: Path) -> None:
    repo = secret_fleet(tmp_path / "fleet",
                        {"dbPassword": {"secretFrom": {"file": "db-password"}}})
    s = secret_site(tmp_path, repo)
    good = repo.head()

    result = run_cli(s, "sync", "--once", log_level="debug")

    assert result.returncode == 0, result.describe()
    # the secret's job: it reaches the file and the script
    assert s.file("db-host", "db.conf").read_text() == f"user=app\npassword={SECRET}\n"
    work = s.work("db-host")
    assert (work / "received.env").read_text() == SECRET
    assert json.loads((work / "stdin.json").read_text())["params"]["dbPassword"] == SECRET
    # and nothing else: not the log (though debug and the script printed it) ...
    assert result.events("script_applied"), result.describe()
    assert "connecting to the database with password ***" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    # ... not the status branch, nor any commit on the server
    doc = status_of(repo.remote, LINE, "db-host")
    assert doc["phase"] == "Ready" and revisions(doc) == (good, good, good)
    assert_nowhere_in_git(repo.remote, SECRET)
    # ... not the daemon's own records (inventory, state): only what the components made
    holders = sorted(p.relative_to(s.state).as_posix() for p in s.state.rglob("*")
                     if p.is_file() and SECRET.encode() in p.read_bytes())
    assert holders == ["files/db-host/db.conf", "work/db-host/received.env",
                       "work/db-host/stdin.json"]

    # a plan of a change to that file: the change is listed, its content withheld
    repo.write("solutions/db.yaml", db_solution(DB_CONF + "port=5432\n"))
    planned = repo.commit("db: port")
    for fmt in ("text", "json"):
        plan = run_cli(s, "plan", "--format", fmt, log_level="debug")
        assert plan.returncode == 2, plan.describe()  # 2: the plan has changes
        assert SECRET not in plan.stdout + plan.stderr, fmt
        if fmt == "json":
            body = json.loads(plan.stdout)
            changes = {c["key"]: c for t in body["targets"] for c in t["changes"]}
            assert body["revision"] == planned
            assert changes["db/conf"]["action"] == "update"
            assert "password=***" in changes["db/conf"]["diff"]  # masked, not shown
        else:
            assert f"Plan at {planned[:12]}" in plan.stdout
            assert "db/conf (file) update" in plan.stdout, plan.describe()
            assert "password=***" in plan.stdout
    assert s.file("db-host", "db.conf").read_text() == f"user=app\npassword={SECRET}\n"

    # explain (repository only, no site): the parameter shows where it is set, not a value
    for fmt in ("text", "json"):
        explained = reconciler("explain", "--repo", str(repo.work), "--target", "db-host",
                               "--format", fmt, log_level="debug")
        assert explained.returncode == 0, explained.describe()
        assert "dbPassword" in explained.stdout and "<secret>" in explained.stdout
        assert SECRET not in explained.stdout + explained.stderr
    params = json.loads(explained.stdout)["instances"][0]["parameters"]
    assert {p["name"]: (p["value"], p["object"], p["field"]) for p in params} == {
        "dbPassword": ("<secret>", "Site/hq", "spec.params.dbPassword")}

    # a value the schema refuses: the error names the parameter, never the value
    repo.write("solutions/db.yaml", db_solution(rules={"regex": "^[a-z]+$"}))
    bad = repo.commit("db: lower-case passwords only")
    refused = run_cli(s, "sync", "--once", log_level="debug")
    assert refused.returncode == 1, refused.describe()
    doc = status_of(repo.remote, LINE, "db-host")
    assert doc["phase"] == "Invalid", doc
    assert revisions(doc) == (bad, good, good)
    error = doc["errors"][0]
    assert (error["file"], error["object"], error["field"]) == (
        "sites.yaml", "Site/hq", "spec.params.dbPassword")
    assert error["line"] == line_number(repo, "sites.yaml", "dbPassword:")
    assert "does not match regex" in error["message"] and "<secret>" in error["message"]
    assert "dbPassword" in doc["message"]
    assert SECRET not in refused.stdout + refused.stderr
    assert s.file("db-host", "db.conf").read_text() == f"user=app\npassword={SECRET}\n"
    plan = run_cli(s, "plan")
    assert plan.returncode == 1 and "spec.params.dbPassword" in plan.stdout, plan.describe()
    assert SECRET not in plan.stdout + plan.stderr
    checked = reconciler("validate", str(repo.work), "--format", "json", log_level="debug")
    assert SECRET not in checked.stdout + checked.stderr

    # a script that fails and quotes the secret on stderr: the status of the rollback quotes
    # it masked
    repo.write("solutions/db.yaml", db_solution())
    repo.write("solutions/scripts/install.sh", INSTALL_SH + (
        'echo "login refused for app/$RECONCILER_PARAM_DBPASSWORD" >&2\nexit 1\n'),
        executable=True)
    repo.commit("db: install script that cannot log in")
    failed = run_cli(s, "sync", "--once", log_level="debug")
    assert failed.returncode == 1, failed.describe()
    doc = status_of(repo.remote, LINE, "db-host")
    assert doc["phase"] == "RolledBack", doc
    assert "login refused for app/***" in doc["message"], doc["message"]
    assert "login refused for app/***" in doc["instances"]["db"]["rolledBack"]["error"]
    assert SECRET not in failed.stdout + failed.stderr
    assert_nowhere_in_git(repo.remote, SECRET)


def test_missing_or_escaping_secret_makes_the_target_invalid(tmp_path: Path) -> None:
    outside = "Outside-The-Secrets-Dir-7"
    repo = secret_fleet(tmp_path / "fleet", {
        "dbPassword": {"secretFrom": {"file": "../config-neighbour"}},
        "apiToken": {"secretFrom": {"file": "api-token"}},
    })
    s = secret_site(tmp_path, repo)
    (s.config.parent / "config-neighbour").write_text(outside + "\n")

    result = sync(s, expect=1)

    doc = status_of(repo.remote, LINE, "db-host")
    assert doc["phase"] == "Invalid", doc
    assert revisions(doc) == (repo.head(), "", "")
    errors = {e["field"]: e for e in doc["errors"]}
    assert set(errors) == {"spec.params.dbPassword", "spec.params.apiToken"}, doc["errors"]
    missing = errors["spec.params.apiToken"]
    assert (missing["file"], missing["object"]) == ("sites.yaml", "Site/hq")
    assert missing["line"] == line_number(repo, "sites.yaml", "apiToken:")
    assert "secret 'api-token'" in missing["message"] and "no such file" in missing["message"]
    escaping = errors["spec.params.dbPassword"]
    assert escaping["line"] == line_number(repo, "sites.yaml", "dbPassword:")
    assert "secret '../config-neighbour'" in escaping["message"]
    assert "inside the secrets directory" in escaping["message"]
    assert "sites.yaml:" in doc["message"] and "Site/hq: spec.params." in doc["message"]
    # nothing applied, and the file next to the secrets directory was never read
    assert not (s.state / "files").exists() and not s.work("db-host").exists()
    assert outside not in result.stdout + result.stderr
    assert_nowhere_in_git(repo.remote, outside)
