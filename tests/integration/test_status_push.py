"""StatusPublisher against real git repositories: a bare remote over file:// and, for the
network behaviour, a real ``git daemon`` on 127.0.0.1 started by the tests."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.errors import StatusPushError
from reconciler.gitops.status_push import Layout, Outcome, StatusPublisher, site_id_for

SITE = "eu/berlin/line-1"
PREFIX = f"status/{SITE}/"
BRANCH = "reconciler-status/eu_berlin_line-1"


# ---------------------------------------------------------------- helpers (used by both files)

def git(git_dir: Path, *args: str, input: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_DIR=str(git_dir), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    done = subprocess.run(["git", *args], env=env, input=input, capture_output=True,
                          check=True, timeout=30)
    return done.stdout.decode().strip()


def rev(git_dir: Path, ref: str) -> str | None:
    try:
        return git(git_dir, "rev-parse", "--verify", "--quiet", ref)
    except subprocess.CalledProcessError:
        return None


def files_on(git_dir: Path, ref: str) -> dict[str, bytes]:
    names = git(git_dir, "ls-tree", "-r", "--name-only", ref).splitlines()
    return {n: git(git_dir, "cat-file", "blob", f"{ref}:{n}").encode() + b"\n" for n in names}


def make_remote(path: Path) -> Path:
    """A bare remote holding a tracked branch ``main`` that publishing must never touch."""
    subprocess.run(["git", "init", "--bare", "--quiet", str(path)], check=True)
    tree = git(path, "mktree", input=b"")
    main = git(path, "commit-tree", tree, "-m", "fleet config")
    git(path, "update-ref", "refs/heads/main", main)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GitDaemon:
    """``git daemon`` serving every repository under ``base`` read-write, with a request log."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.log = base / f"git-daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["git", "daemon", "--reuseaddr", f"--base-path={self.base}", "--export-all",
                 "--enable=receive-pack", f"--port={self.port}", "--listen=127.0.0.1",
                 "--verbose", "--informative-errors", str(self.base)],
                stderr=log, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.proc is not None:
            # its own session: the daemon and the children serving connections go together
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None

    def requests(self, service: str) -> int:
        return self.log.read_text().count(f"Request {service} for")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    d = GitDaemon(tmp_path)
    d.start()
    yield d
    d.stop()


def status_file(target: str, phase: str = "Ready", site: str = SITE) -> bytes:
    return (f"apiVersion: reconciler/v1\nkind: TargetStatus\nmetadata: {{name: {target}}}\n"
            f"site: {site}\ntarget: {target}\nphase: {phase}\n").encode()


def publisher(tmp_path: Path, url: str, name: str = "state.git", **kw: object) -> StatusPublisher:
    site = str(kw.pop("site_path", SITE))
    return StatusPublisher(tmp_path / name, url, site_id=site_id_for(site), site_path=site,
                           **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- per-site basics (file://)

def test_first_publish_creates_the_branch_and_touches_nothing_else(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    main = rev(remote, "refs/heads/main")
    pub = publisher(tmp_path, f"file://{remote}")
    files = {PREFIX + "press-01.yaml": status_file("press-01")}

    result = pub.publish(files, "status: eu/berlin/line-1")

    assert result.outcome is Outcome.COMMITTED and result.pushed and result.attempts == 1
    assert result.branch == BRANCH
    assert rev(remote, f"refs/heads/{BRANCH}") == result.commit
    assert files_on(remote, BRANCH) == files
    assert rev(remote, "refs/heads/main") == main
    local_refs = git(tmp_path / "state.git", "for-each-ref", "--format=%(refname)").split()
    assert local_refs and all(r.startswith("refs/reconciler/") for r in local_refs)
    assert not pub.pending()


def test_unchanged_content_makes_no_commit_and_changed_content_one(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, f"file://{remote}")
    files = {PREFIX + "press-01.yaml": status_file("press-01")}
    first = pub.publish(files, "status")

    again = pub.publish(dict(files), "status")
    assert again.outcome is Outcome.UNCHANGED and not again.changed
    assert again.commit == first.commit and again.attempts == 0 and again.pushed
    assert git(remote, "rev-list", "--count", BRANCH) == "1"

    changed = pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "s")
    assert changed.outcome is Outcome.COMMITTED and changed.attempts == 1
    assert git(remote, "rev-list", "--count", BRANCH) == "2"
    assert git(remote, "rev-parse", f"{BRANCH}^") == first.commit
    assert b"phase: Failed" in files_on(remote, BRANCH)[PREFIX + "press-01.yaml"]


def test_a_target_that_left_the_site_loses_its_file(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, f"file://{remote}")
    pub.publish({PREFIX + "press-01.yaml": status_file("press-01"),
                 PREFIX + "press-02.yaml": status_file("press-02")}, "two targets")

    pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "one left")

    assert sorted(files_on(remote, BRANCH)) == [PREFIX + "press-01.yaml"]


@pytest.mark.parametrize("path", [
    "status/eu/berlin/other.yaml",  # a parent site's directory
    "status/eu/berlin/line-1/sub/press.yaml",  # a child site's directory
    "elsewhere/press.yaml",
    PREFIX,
])
def test_paths_outside_the_site_directory_are_refused(tmp_path: Path, path: str) -> None:
    pub = publisher(tmp_path, f"file://{make_remote(tmp_path / 'remote.git')}")
    with pytest.raises(StatusPushError) as caught:
        pub.publish({path: b"x"}, "bad")
    assert caught.value.reason == "InvalidStatusPath" and path in caught.value.message


def test_push_disabled_commits_locally_only(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, f"file://{remote}", push=False)

    result = pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "local")

    assert result.outcome is Outcome.COMMITTED and not result.pushed and result.attempts == 0
    assert rev(remote, f"refs/heads/{BRANCH}") is None
    assert rev(tmp_path / "state.git", f"refs/reconciler/status/{BRANCH}") == result.commit
    assert not pub.pending()


def test_a_restarted_daemon_continues_its_branch(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    files = {PREFIX + "press-01.yaml": status_file("press-01")}
    first = publisher(tmp_path, f"file://{remote}", name="old.git").publish(files, "s")

    fresh = publisher(tmp_path, f"file://{remote}", name="new.git")  # state dir was wiped
    same = fresh.publish(files, "s")
    assert same.outcome is Outcome.UNCHANGED and same.commit == first.commit

    moved = fresh.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "s")
    assert moved.attempts == 1 and git(remote, "rev-parse", f"{BRANCH}^") == first.commit


def test_someone_else_moved_the_branch_our_files_go_on_top(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, f"file://{remote}")
    pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "s")
    # an operator adds a note to the branch by hand
    tip = rev(remote, BRANCH)
    assert tip is not None
    note = git(remote, "hash-object", "-w", "--stdin", input=b"hello\n")
    tree = git(remote, "mktree", input=f"100644 blob {note}\tNOTE.txt\n"
               f"040000 tree {git(remote, 'rev-parse', f'{tip}:status')}\tstatus\n".encode())
    foreign = git(remote, "commit-tree", tree, "-p", tip, "-m", "note")
    git(remote, "update-ref", f"refs/heads/{BRANCH}", foreign)

    result = pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "s")

    assert result.attempts == 2 and result.pushed
    assert git(remote, "rev-parse", f"{BRANCH}^") == foreign
    on_remote = files_on(remote, BRANCH)
    assert on_remote["NOTE.txt"] == b"hello\n"
    assert b"phase: Failed" in on_remote[PREFIX + "press-01.yaml"]


def test_a_deleted_branch_is_recreated(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, f"file://{remote}")
    pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "s")
    git(remote, "update-ref", "-d", f"refs/heads/{BRANCH}")

    result = pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "s")

    assert result.pushed and rev(remote, BRANCH) == result.commit


def test_a_hook_rejection_is_reported_not_retried(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    hook = remote / "hooks" / "pre-receive"
    calls = tmp_path / "hook-calls"
    hook.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'status pushes are closed' >&2\n"
                    "exit 1\n")
    hook.chmod(0o755)
    pub = publisher(tmp_path, f"file://{remote}", max_attempts=5)

    with pytest.raises(StatusPushError) as caught:
        pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "s")

    assert caught.value.reason == "StatusPushRejected"
    assert "hook declined" in caught.value.message
    assert calls.read_text().count("run") == 1
    assert pub.pending()


def test_giving_up_after_max_attempts_keeps_the_commit_queued(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    url = f"file://{remote}"
    pub = publisher(tmp_path, url, max_attempts=1)
    pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "s")
    # another writer (a second daemon configured with the same site) moves the branch
    publisher(tmp_path, url, name="other.git").publish(
        {PREFIX + "press-09.yaml": status_file("press-09")}, "other")

    with pytest.raises(StatusPushError) as caught:
        pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "s")

    assert caught.value.reason == "StatusPushConflict" and "1 attempts" in caught.value.message
    assert pub.pending()


def test_sites_a_b_and_a_b_c_coexist_in_the_per_site_layout(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    url = f"file://{remote}"
    parent = publisher(tmp_path, url, name="ab.git", site_path="a/b")
    child = publisher(tmp_path, url, name="abc.git", site_path="a/b/c")

    parent.publish({"status/a/b/t1.yaml": status_file("t1", site="a/b")}, "a/b")
    child.publish({"status/a/b/c/t1.yaml": status_file("t1", site="a/b/c")}, "a/b/c")
    parent.publish({"status/a/b/t2.yaml": status_file("t2", site="a/b")}, "a/b")

    assert sorted(files_on(remote, "reconciler-status/a_b")) == ["status/a/b/t2.yaml"]
    assert sorted(files_on(remote, "reconciler-status/a_b_c")) == ["status/a/b/c/t1.yaml"]


# ---------------------------------------------------------------- shared layout (file://)

def test_shared_branch_keeps_every_sites_files(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    url = f"file://{remote}"
    parent = publisher(tmp_path, url, name="ab.git", site_path="a/b", layout=Layout.SHARED)
    child = publisher(tmp_path, url, name="abc.git", site_path="a/b/c", layout=Layout.SHARED)

    first = parent.publish({"status/a/b/t1.yaml": status_file("t1", site="a/b")}, "a/b")
    assert first.branch == "reconciler-fleet-status" and first.attempts == 1
    child.publish({"status/a/b/c/t1.yaml": status_file("t1", site="a/b/c")}, "a/b/c")
    # a/b replaces its own files only: a/b/c's directory is inside a/b's but not a/b's
    moved = parent.publish({"status/a/b/t2.yaml": status_file("t2", site="a/b")}, "a/b")

    assert moved.attempts == 1  # fetched first, so the push fast-forwards
    assert sorted(files_on(remote, "reconciler-fleet-status")) == [
        "status/a/b/c/t1.yaml", "status/a/b/t2.yaml"]
    assert parent.publish({"status/a/b/t2.yaml": status_file("t2", site="a/b")},
                          "a/b").outcome is Outcome.UNCHANGED


def test_shared_branch_deleted_is_recreated_with_our_files(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "remote.git")
    url = f"file://{remote}"
    one = publisher(tmp_path, url, name="one.git", site_path="x", layout=Layout.SHARED)
    two = publisher(tmp_path, url, name="two.git", site_path="y", layout=Layout.SHARED)
    one.publish({"status/x/t.yaml": status_file("t", site="x")}, "x")
    two.publish({"status/y/t.yaml": status_file("t", site="y")}, "y")
    git(remote, "update-ref", "-d", "refs/heads/reconciler-fleet-status")

    one.publish({"status/x/t.yaml": status_file("t", "Failed", site="x")}, "x")

    assert sorted(files_on(remote, "reconciler-fleet-status")) == ["status/x/t.yaml"]


# ---------------------------------------------------------------- offline (git daemon)

def test_offline_push_is_queued_and_lands_when_the_server_is_back(
        tmp_path: Path, daemon: GitDaemon) -> None:
    make_remote(tmp_path / "remote.git")
    pub = publisher(tmp_path, daemon.url("remote.git"), retry_delay=0.01)
    pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "online")

    daemon.stop()
    with pytest.raises(StatusPushError) as caught:
        pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "offline")
    assert caught.value.reason == "StatusPushFailed"
    assert "127.0.0.1" in caught.value.message
    assert pub.pending()
    queued = pub.head()
    # unchanged content retries the queued commit and reports, without raising
    still = pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "off")
    assert still.outcome is Outcome.UNCHANGED and not still.pushed and still.attempts == 1
    assert still.error and "127.0.0.1" in still.error
    assert pub.head() == queued == still.commit and pub.pending()

    daemon.start()
    result = pub.publish({PREFIX + "press-01.yaml": status_file("press-01", "Failed")}, "back")

    assert result.outcome is Outcome.UNCHANGED and result.pushed and result.attempts == 1
    assert result.commit == queued
    assert rev(tmp_path / "remote.git", BRANCH) == queued
    assert not pub.pending()


def test_errors_never_show_credentials(tmp_path: Path) -> None:
    url = f"http://fleet:s3cret-token@127.0.0.1:{free_port()}/remote.git"
    pub = publisher(tmp_path, url)
    with pytest.raises(StatusPushError) as caught:
        pub.publish({PREFIX + "press-01.yaml": status_file("press-01")}, "s")
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert pub.pending()


# ---------------------------------------------------------------- ten sites at once

def _publish_site(url: str, state: str, site: str, layout: str, barrier: object,
                  results: object) -> None:
    pub = StatusPublisher(Path(state), url, site_id=site_id_for(site), site_path=site,
                          layout=Layout(layout), retry_delay=0.02, max_retry_delay=0.5)
    files = {f"status/{site}/t{i}.yaml": status_file(f"t{i}", site=site) for i in range(3)}
    barrier.wait()  # type: ignore[attr-defined]
    try:
        result = pub.publish(files, f"status: {site}")
        results.put((site, result.attempts, result.pushed, ""))  # type: ignore[attr-defined]
    except StatusPushError as exc:
        results.put((site, -1, False, str(exc)))  # type: ignore[attr-defined]


@pytest.mark.parametrize("layout", [Layout.PER_SITE, Layout.SHARED])
def test_ten_sites_publish_at_the_same_moment(tmp_path: Path, daemon: GitDaemon,
                                              layout: Layout) -> None:
    remote = make_remote(tmp_path / "remote.git")
    sites = [f"eu/plant-{i}" for i in range(5)] + [f"eu/plant-{i}/line" for i in range(5)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(sites))
    results = ctx.Queue()
    procs = [ctx.Process(target=_publish_site,
                         args=(daemon.url("remote.git"), str(tmp_path / f"s{i}.git"), site,
                               layout.value, barrier, results))
             for i, site in enumerate(sites)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)

    failures = [g for g in got if not g[2]]
    assert not failures
    attempts = sum(g[1] for g in got)
    print(f"\n{layout.value}: {len(sites)} sites, {attempts} push attempts in total")
    if layout is Layout.PER_SITE:
        assert attempts == len(sites)  # nobody contends for a branch
        for site in sites:
            assert len(files_on(remote, f"reconciler-status/{site_id_for(site)}")) == 3
    else:
        assert attempts >= len(sites)
        landed = files_on(remote, "reconciler-fleet-status")
        assert sorted(landed) == sorted(f"status/{s}/t{i}.yaml" for s in sites for i in range(3))
    assert daemon.requests("receive-pack") == attempts
