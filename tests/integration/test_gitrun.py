"""The one git runner: credentials never shown, deadlines, cancellation, errors that name the
repository; and the source mirror's fetch, which a hung server must not hold past a stop.

Real git processes against real servers on 127.0.0.1: a TCP listener that accepts and never
answers (a hung server or a black-holed link, as git sees it), a refused port, and an HTTP
server that records what git sent.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.core.errors import SourceError, StatusPushError, VerificationError
from reconciler.gitops.gitrun import Credentials, Git, GitErrors, complaint, redact
from reconciler.gitops.source import GitSource

pytestmark = pytest.mark.timeout(120)

# far longer than any deadline below: reaching a step within the deadline proves nothing
# waited for a git timeout
LONG = 60.0
PROMPT = 8.0  # "a few seconds" on a loaded 2-core machine


class HungServer:
    """Accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, name: str = "fleet.git") -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._server.close()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=5)


class RecordingHTTP(http.server.ThreadingHTTPServer):
    """Answers every request with 500 and keeps the Authorization headers it was sent."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.authorizations.append(self.headers.get("Authorization", ""))
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = int(self.server_address[1])


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


@pytest.fixture
def recording() -> Iterator[RecordingHTTP]:
    server = RecordingHTTP()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare(path: Path) -> Git:
    git = Git(path)
    git.init_bare()
    return git


def processes_mentioning(text: str) -> list[str]:
    """``pid command`` of every live process whose command line contains ``text``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            out.append(f"{entry.name} {cmdline}")
    return out


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.02)


class Call(threading.Thread):
    """A git call in a thread: what it raised, and when it ended."""

    def __init__(self, target: object) -> None:
        super().__init__(daemon=True)
        self._target_call = target
        self.error: BaseException | None = None
        self.ended: float | None = None

    def run(self) -> None:
        try:
            self._target_call()  # type: ignore[operator]
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()


# ---------------------------------------------------------------- redaction

def test_redact_removes_user_info_of_every_url_and_every_secret() -> None:
    text = ("fatal: unable to access 'https://ops:hunter2@git.example/fleet.git/' and "
            "ssh://deploy@host/x, token s3cr3t-t0ken twice: s3cr3t-t0ken")
    assert redact(text, ["s3cr3t-t0ken"]) == (
        "fatal: unable to access 'https://***@git.example/fleet.git/' and "
        "ssh://***@host/x, token *** twice: ***")


def test_complaint_keeps_gits_errors_and_drops_its_advice() -> None:
    stderr = (b"fatal: '/srv/x' does not appear to be a git repository\n"
              b"fatal: Could not read from remote repository.\n\n"
              b"Please make sure you have the correct access rights\n"
              b"and the repository exists.\n")
    assert complaint(stderr) == ("'/srv/x' does not appear to be a git repository; "
                                 "Could not read from remote repository.")
    assert complaint(b"hint: try this\nsomething odd\n") == "something odd"


def test_credentials_in_a_url_reach_neither_the_error_nor_the_log(tmp_path: Path) -> None:
    url = f"http://ops:hunter2@127.0.0.1:{free_port()}/fleet.git"
    git = bare(tmp_path / "mirror.git")

    with capture_logs() as logs, pytest.raises(SourceError) as caught:
        git.run("ls-remote", url, remote=url)

    message = caught.value.message
    assert "hunter2" not in message, message
    assert message.startswith("git ls-remote from http://***@127.0.0.1:"), message
    assert logs and "hunter2" not in repr(logs), logs


def test_a_token_file_is_sent_as_a_header_and_never_shown(tmp_path: Path,
                                                         recording: RecordingHTTP) -> None:
    token = "tok-0123456789abcdef"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    # the token in the path too: git repeats the URL in its complaint
    url = f"http://127.0.0.1:{recording.port}/{token}/fleet.git"
    git = Git(tmp_path, working_copy=True, credentials=Credentials(token_file=token_file))

    with capture_logs() as logs, pytest.raises(SourceError) as caught:
        git.run("ls-remote", url, remote=url)

    assert recording.authorizations and all(a == f"Bearer {token}"
                                            for a in recording.authorizations)
    assert token not in caught.value.message and "127.0.0.1" in caught.value.message
    assert "***" in caught.value.message, caught.value.message
    assert token not in repr(logs)


def test_an_unreadable_token_file_is_the_runners_error(tmp_path: Path) -> None:
    git = Git(tmp_path, working_copy=True,
              credentials=Credentials(token_file=tmp_path / "missing"))
    with pytest.raises(SourceError, match=r"cannot read the token file .*missing"):
        git.run("ls-remote", "http://127.0.0.1:1/x.git", remote="http://127.0.0.1:1/x.git")
    # local plumbing needs no token: it runs
    assert git.run("--version").text.startswith("git version")


# ---------------------------------------------------------------- errors

def test_a_failure_names_the_command_the_repository_and_gits_complaint(tmp_path: Path) -> None:
    git = bare(tmp_path / "repo.git")

    with pytest.raises(SourceError) as caught:
        git.run("rev-parse", "--verify", "no-such-ref^{commit}", context="resolving main")

    assert caught.value.message == (f"resolving main: git rev-parse in {tmp_path / 'repo.git'} "
                                    "failed: Needed a single revision")
    assert caught.value.reason == "SourceUnavailable"
    unchecked = git.run("rev-parse", "--verify", "--quiet", "no-such-ref", check=False)
    assert unchecked.returncode != 0 and not unchecked.ok


def test_git_errors_choose_the_error_type_and_reasons(tmp_path: Path, hung: HungServer) -> None:
    verifying = Git(bare(tmp_path / "repo.git").path, errors=GitErrors(VerificationError))
    with pytest.raises(VerificationError) as caught:
        verifying.run("cat-file", "commit", "0" * 40, context="commit 000000000000")
    assert caught.value.reason == "Blocked"
    assert caught.value.message.startswith("commit 000000000000: git cat-file in ")

    pushing = Git(bare(tmp_path / "status.git").path, network_timeout=1,
                  env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"},
                  errors=GitErrors(StatusPushError, timeout_reason="StatusPushTimeout"))
    tree = pushing.run("mktree", input=b"").text
    commit = pushing.run("commit-tree", tree, input=b"status\n").text
    with pytest.raises(StatusPushError) as timed_out:
        pushing.run("push", hung.url(), f"{commit}:refs/heads/x", remote=hung.url(),
                    context="status branch x")
    assert timed_out.value.reason == "StatusPushTimeout"
    assert timed_out.value.message == (f"status branch x: git push to {hung.url()} timed out "
                                       "after 1s")


def test_a_repository_that_is_not_there_is_named(tmp_path: Path) -> None:
    git = Git(tmp_path / "gone.git", name="the mirror")
    with pytest.raises(SourceError, match="git rev-parse: the mirror is not a directory"):
        git.run("rev-parse", "HEAD")


# ---------------------------------------------------------------- deadlines and stop

def test_a_hung_server_is_left_at_the_timeout(tmp_path: Path, hung: HungServer) -> None:
    git = Git(tmp_path, working_copy=True, network_timeout=2)
    started = time.monotonic()

    with pytest.raises(SourceError) as caught:
        git.run("ls-remote", hung.url(), remote=hung.url())

    assert time.monotonic() - started < PROMPT
    assert caught.value.message == f"git ls-remote from {hung.url()} timed out after 2s"
    assert processes_mentioning(hung.url()) == []


def test_the_stop_ends_a_call_to_a_hung_server_after_the_grace(tmp_path: Path,
                                                              hung: HungServer) -> None:
    stop = threading.Event()
    git = Git(tmp_path, working_copy=True, network_timeout=LONG, stop=stop, stop_grace=1.0)
    call = Call(lambda: git.run("ls-remote", hung.url(), remote=hung.url()))
    call.start()
    wait_for(lambda: hung.held, 10, "git to reach the server")

    stop.set()
    asked = time.monotonic()
    call.join(PROMPT)

    assert call.ended is not None, "the call was not ended by the stop"
    assert 0.8 <= call.ended - asked < PROMPT
    assert isinstance(call.error, SourceError) and call.error.reason == "Stopped"
    assert call.error.message == (f"git ls-remote from {hung.url()} stopped: the daemon is "
                                  "shutting down")
    assert processes_mentioning(hung.url()) == []

    # the grace is spent: a later call to a server does not even start
    held = len(hung.held)
    with pytest.raises(SourceError, match="stopped: the daemon is shutting down"):
        git.run("ls-remote", hung.url(), remote=hung.url())
    assert len(hung.held) == held


def test_a_call_with_no_grace_ends_as_soon_as_the_stop_is_set(tmp_path: Path,
                                                              hung: HungServer) -> None:
    stop = threading.Event()
    git = Git(tmp_path, working_copy=True, network_timeout=LONG, stop=stop.is_set)
    call = Call(lambda: git.run("ls-remote", hung.url(), remote=hung.url(), grace=0))
    call.start()
    wait_for(lambda: hung.held, 10, "git to reach the server")

    stop.set()
    asked = time.monotonic()
    call.join(PROMPT)

    assert call.ended is not None and call.ended - asked < PROMPT / 2
    assert isinstance(call.error, SourceError) and call.error.reason == "Stopped"


def test_local_plumbing_runs_to_the_end_after_the_stop(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    git = Git(tmp_path / "repo.git", stop=stop)
    git.init_bare()

    blob = git.run("hash-object", "-w", "--stdin", input=b"kept\n").text

    assert git.run("cat-file", "blob", blob).stdout == b"kept\n"


# ---------------------------------------------------------------- the source mirror

def test_a_fetch_from_a_hung_server_ends_soon_after_the_stop(tmp_path: Path,
                                                            hung: HungServer) -> None:
    stop = threading.Event()
    source = GitSource(hung.url(), "main", tmp_path / "state", timeout=int(LONG), stop=stop)
    call = Call(source.fetch)
    call.start()
    wait_for(lambda: hung.held, 10, "the fetch to reach the server")

    stop.set()
    asked = time.monotonic()
    call.join(PROMPT)

    assert call.ended is not None, "the fetch held the stop up (until the git timeout)"
    assert call.ended - asked < PROMPT
    assert isinstance(call.error, SourceError)
    assert "stopped: the daemon is shutting down" in call.error.message
    assert processes_mentioning(hung.url()) == []


def test_a_fetch_failure_names_the_url_without_credentials(tmp_path: Path) -> None:
    port = free_port()
    source = GitSource(f"https://ops:hunter2@127.0.0.1:{port}/fleet.git", "main",
                       tmp_path / "state", timeout=10)

    with pytest.raises(SourceError) as caught:
        source.fetch()

    assert "hunter2" not in caught.value.message
    assert caught.value.message.startswith(f"git fetch from https://***@127.0.0.1:{port}/")


def test_a_checkout_is_exported_through_the_runner(tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "sites").mkdir()
    (work / "sites" / "a.yaml").write_text("kind: Site\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "one"], check=True)
    source = GitSource(str(work), "main", tmp_path / "state")
    source.fetch()
    revision = source.resolve()

    root = source.checkout(revision.commit)

    assert (root / "sites" / "a.yaml").read_text() == "kind: Site\n"
    assert os.access(root / "run.sh", os.X_OK)
    assert sorted(p.name for p in source.checkouts.iterdir()) == [revision.commit]
    with pytest.raises(SourceError, match="000000000000"):
        source.checkout("0" * 40)
    assert sorted(p.name for p in source.checkouts.iterdir()) == [revision.commit]


def test_a_commit_of_the_empty_tree_exports_to_an_empty_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "nothing yet"], check=True)
    source = GitSource(str(work), "main", tmp_path / "state")
    source.fetch()

    root = source.checkout(source.resolve().commit)

    assert root.is_dir() and list(root.iterdir()) == []
