"""The fleet repository as the daemon sees it: a bare mirror, a resolved commit, an export.

``GitSource`` keeps a bare repository in the state directory, fetches only the tracked branch
and the tags (never the status branches, so the daemon's own status pushes never look like new
work), resolves the tracked ref — a branch, a tag, or the newest tag in a semver range — to a
commit, and exports that commit's tree into ``checkouts/<sha>/``. Manifests are always read
from such an export, never from a tree a human edits. ``LocalWatcher`` turns file changes in a
local repository (development) into triggers.

Called by the reconcile pipeline (``reconciler.engine.pipeline``) and the daemon.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import semver
import structlog

from reconciler.core.errors import ConfigError, SourceError
from reconciler.gitops.gitrun import Credentials, Git, redact

__all__ = ["GitSource", "LocalWatcher", "RefSpec", "Revision", "export", "parse_ref"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RefSpec:
    kind: str  # "branch", "tag", "semver", "auto"
    value: str

    def describe(self) -> str:
        return f"{self.kind} {self.value}"


def parse_ref(ref: str) -> RefSpec:
    """``main``, ``branch:main``, ``tag:v1.2.0``, ``semver:>=1.2.0 <2.0.0`` (or ``^1.2``)."""
    kind, sep, value = ref.partition(":")
    if sep and kind in ("branch", "tag", "semver"):
        if kind == "semver":
            _semver_predicates(value)  # raises ConfigError when malformed
        return RefSpec(kind, value.strip())
    if ref.startswith("refs/heads/"):
        return RefSpec("branch", ref.removeprefix("refs/heads/"))
    if ref.startswith("refs/tags/"):
        return RefSpec("tag", ref.removeprefix("refs/tags/"))
    return RefSpec("auto", ref)


def _semver_predicates(expr: str) -> list[str]:
    """Normalise ``^1.2``, ``~1.2``, ``1.2.x`` and comparison lists into comparisons."""
    out: list[str] = []
    for raw in expr.replace(",", " ").split():
        token = raw.strip()
        try:
            if token.startswith("^"):
                v = _loose(token[1:])
                upper = v.bump_major() if v.major else (v.bump_minor() if v.minor
                                                        else v.bump_patch())
                out += [f">={v}", f"<{upper}"]
            elif token.startswith("~"):
                v = _loose(token[1:])
                out += [f">={v}", f"<{v.bump_minor()}"]
            elif token.endswith((".x", ".*")):
                parts = token[:-2].split(".")
                v = _loose(token[:-2])
                upper = v.bump_major() if len(parts) == 1 else v.bump_minor()
                out += [f">={v}", f"<{upper}"]
            elif token[0] in "<>=!":
                op = "".join(ch for ch in token[:2] if ch in "<>=!")
                version = _loose(token[len(op):])
                out.append(f"{'==' if op == '=' else op}{version}")
            else:
                out.append(f"=={_loose(token)}")
        except ValueError as exc:
            raise ConfigError(f"repo.ref: invalid semver range '{expr}': {exc}") from None
    if not out:
        raise ConfigError(f"repo.ref: empty semver range '{expr}'")
    return out


def _loose(text: str) -> semver.Version:
    text = text.strip().lstrip("v")
    parts = text.split("-", 1)[0].split("+", 1)[0].split(".")
    while len(parts) < 3:
        parts.append("0")
    rest = text[len(text.split("-", 1)[0].split("+", 1)[0]):]
    return semver.Version.parse(".".join(parts[:3]) + rest)


@dataclass(frozen=True)
class Revision:
    commit: str
    ref: str  # the full ref it was resolved from
    subject: str = ""

    @property
    def short(self) -> str:
        return self.commit[:12]


class GitSource:
    """A bare mirror of the fleet repository in the daemon's state directory.

    Every git call runs through the project's git runner (``reconciler.gitops.gitrun``). The fetch
    and the look at the server (:meth:`remote_commit`) watch ``stop`` (the daemon's stop
    event): a hung server holds a shutdown up for a short grace, not for ``timeout``.
    """

    def __init__(self, url: str, ref: str, state_dir: Path, *, ssh_key: Path | None = None,
                 token_file: Path | None = None, timeout: int = 120,
                 stop: threading.Event | Callable[[], bool] | None = None) -> None:
        self.url = url
        self.ref = parse_ref(ref)
        self.git_dir = state_dir / "repo.git"
        self.checkouts = state_dir / "checkouts"
        self.ssh_key = ssh_key
        self.token_file = token_file
        self.timeout = timeout
        self.credentials = Credentials(ssh_key=ssh_key, token_file=token_file)
        self._git = Git(self.git_dir, credentials=self.credentials,
                        network_timeout=float(timeout), stop=stop)
        self._lock = threading.Lock()
        self._ready = False
        # more refspecs fetched along with the tracked ref (status branches a rollout waits
        # on: reconciler.engine.peer_status); set between runs
        self.extra_specs: tuple[str, ...] = ()

    # -- git plumbing ------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The variables a git process started elsewhere needs to reach the server: no
        prompt, and the credentials (the token read now)."""
        try:
            token = self.credentials.token()
        except OSError as exc:
            raise SourceError(f"repo.tokenFile {self.token_file}: {exc.strerror}") from None
        return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C",
                **self.credentials.environment(token)}

    @property
    def git(self) -> Git:
        """The mirror's git runner (the mirror is created on first use)."""
        if not self._ready:
            self._git.init_bare()
            self._ready = True
        return self._git

    # -- fetch and resolve -------------------------------------------------------------
    def fetch(self) -> None:
        """Fetch the tracked branch and the tags; raises SourceError when unreachable (or
        stopped)."""
        with self._lock:
            specs = ["+refs/tags/*:refs/tags/*", *self.extra_specs]
            if self.ref.kind in ("branch", "auto"):
                specs.insert(0, f"+refs/heads/{self.ref.value}:refs/heads/{self.ref.value}")
            started = time.monotonic()
            self.git.run("fetch", "--prune", "--no-write-fetch-head", "--quiet", self.url,
                         *specs, remote=self.url)
            _log.debug("source_fetched", ref=self.ref.describe(),
                       seconds=round(time.monotonic() - started, 3))

    def fetch_specs(self, specs: Sequence[str]) -> None:
        """Fetch ``specs`` alone (patterns: a ref that does not exist is no error); raises
        SourceError when unreachable."""
        with self._lock:
            self.git.run("fetch", "--no-write-fetch-head", "--quiet", self.url, *specs,
                         remote=self.url)

    def _ref_commit(self, full: str) -> str | None:
        found = self.git.run("rev-parse", "--verify", "--quiet", f"{full}^{{commit}}",
                             check=False)
        return found.text if found.ok else None

    def resolve(self) -> Revision:
        """The commit the tracked ref points at in the local mirror."""
        kind, value = self.ref.kind, self.ref.value
        candidates: list[str] = []
        if kind in ("branch", "auto"):
            candidates.append(f"refs/heads/{value}")
        if kind in ("tag", "auto"):
            candidates.append(f"refs/tags/{value}")
        if kind == "semver":
            full = self._newest_tag(value)
            if full is None:
                raise SourceError(f"no tag matches the semver range '{value}'")
            candidates.append(full)
        for full in candidates:
            commit = self._ref_commit(full)
            if commit:
                subject = self.git.run("log", "-1", "--format=%s", commit).text
                return Revision(commit, full, subject)
        raise SourceError(f"ref {self.ref.describe()} not found in {self.url_for_humans()}")

    def _newest_tag(self, expr: str) -> str | None:
        predicates = _semver_predicates(expr)
        best: tuple[semver.Version, str] | None = None
        listing = self.git.run("for-each-ref", "--format=%(refname)", "refs/tags").text
        for full in listing.splitlines():
            name = full.removeprefix("refs/tags/")
            if "/" in name:  # solution releases (<solution>/v1.2.3) are not fleet releases
                continue
            try:
                version = _loose(name)
            except ValueError:
                continue
            if all(version.match(p) for p in predicates) and (best is None or version > best[0]):
                best = (version, full)
        return best[1] if best else None

    def tags_at(self, commit: str) -> list[str]:
        out = self.git.run("tag", "--points-at", commit).text
        return [t for t in out.splitlines() if t]

    def remote_commit(self) -> str | None:
        """The tracked ref's commit on the server (one round trip), or None when unknown.

        A look, not work: the stop ends it at once (no grace).
        """
        if self.ref.kind == "semver":
            return None
        refs = ([f"refs/heads/{self.ref.value}"] if self.ref.kind in ("branch", "auto")
                else [])
        if self.ref.kind in ("tag", "auto"):
            # an annotated tag lists its tag object; "^{}" lists the commit it points at
            refs += [f"refs/tags/{self.ref.value}", f"refs/tags/{self.ref.value}^{{}}"]
        try:
            out = self.git.run("ls-remote", self.url, *refs, remote=self.url, grace=0.0).text
        except SourceError:
            return None
        found: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name:
                found[name] = sha
        for ref in (refs[0] if self.ref.kind in ("branch", "auto") else None,
                    f"refs/tags/{self.ref.value}^{{}}", f"refs/tags/{self.ref.value}"):
            if ref is not None and ref in found:
                return found[ref]
        return None

    def url_for_humans(self) -> str:
        """The URL without credentials (``https://***@host/...``)."""
        return redact(self.url)

    # -- checkouts ---------------------------------------------------------------------
    def checkout(self, commit: str) -> Path:
        """Export ``commit``'s tree to ``checkouts/<commit>`` (once) and return the path."""
        dest = self.checkouts / commit
        if dest.is_dir():
            return dest
        self.checkouts.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=self.checkouts))
        try:
            export(self.git, commit, tmp)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def prune_checkouts(self, keep: set[str]) -> None:
        if not self.checkouts.is_dir():
            return
        for entry in self.checkouts.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


# the empty tree in SHA-1 and SHA-256 repositories
_EMPTY_TREES = ("4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321")


def export(git: Git, commit: str, dest: Path) -> None:
    """Extract ``commit``'s tree into the empty directory ``dest``.

    ``git archive`` writes a tar file into a temporary directory next to ``dest`` (a file,
    not a pipe: the runner's deadline and process group cover it like any other git call).
    The "tar" filter keeps symlinks as they are (validation reports escaping ones) but
    refuses member names that would land outside ``dest``. SourceError when git or the
    extraction fails.
    """
    try:
        with tempfile.TemporaryDirectory(prefix=f".{commit[:12]}-tar-",
                                         dir=dest.parent) as tmp:
            tree = git.run("rev-parse", f"{commit}^{{tree}}", check=False).text
            if tree in _EMPTY_TREES:
                return  # nothing to extract (and tarfile refuses a header-only archive)
            archive = Path(tmp) / "tree.tar"
            git.archive(commit, archive)
            with tarfile.open(archive, mode="r:") as tar:
                tar.extractall(dest, filter="tar")
    except (OSError, tarfile.TarError) as exc:
        raise SourceError(f"cannot export {commit[:12]}: {exc}") from None


class LocalWatcher:
    """Calls ``trigger`` when the tracked ref of a local repository moves (debounced).

    Only the refs that can change the tracked revision count: ``refs/heads/<branch>``, the
    tags and ``packed-refs`` of the repository's git directory (a bare repository or the
    ``.git`` of a working one). Status branches, objects, reads and working-tree edits do not:
    the daemon applies commits, never a tree a human is editing, and its own status pushes to
    a local repository must not trigger it.
    """

    def __init__(self, path: Path, trigger: Callable[[str], None], *, branch: str | None,
                 debounce: float = 0.3) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        git_dir = path / ".git" if (path / ".git").is_dir() else path
        self.path = path
        self.debounce = debounce
        real = str(git_dir.resolve())
        self._exact = {f"{real}/packed-refs"}
        if branch:
            self._exact.add(f"{real}/refs/heads/{branch}")
        self._tags = f"{real}/refs/tags/"
        self._trigger = trigger
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    text = raw if isinstance(raw, str) else raw.decode(errors="replace")
                    if text:
                        watcher.on_change(text)

        self._observer = Observer()
        self._observer.schedule(Handler(), real, recursive=True)

    def relevant(self, path: str) -> bool:
        return path in self._exact or (path.startswith(self._tags)
                                       and not path.endswith(".lock"))

    def on_change(self, path: str) -> None:
        if not self.relevant(path):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce, self._trigger, args=("ref-change",))
            self._timer.daemon = True
            self._timer.start()

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
