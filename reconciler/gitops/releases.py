"""Solution releases: annotated tags ``<solution>/v<semver>``, what they contain, and the
changes of a working copy that make and use them.

An Instance with ``version: 1.4.0`` takes its Solution (and the files the solution's
components name) as they are at the tag ``<solution>/v1.4.0``; without a version, as at the
tracked ref. :class:`ReleaseResolver` finds the tag, exports its commit, loads and validates
that tree once, and hands the Solution to validation, which renders the instance from the
release's checkout.

For ``reconciler release`` and ``rollback``: :func:`tag_release` tags a valid, committed
solution; :func:`roll_back` pins an instance to an earlier release on a new branch, editing
the instance's file with :func:`pin_version`, which changes the version and leaves every other
byte of the file as it was (comments, key order, quoting, flow style, line endings, the other
documents). Also used by ``history`` (:func:`list_releases`) and the offline ``plan``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import semver

from reconciler.core.errors import ManifestError, ReconcilerError
from reconciler.core.model import Instance, Solution
from reconciler.core.validation import Report, validate_repository
from reconciler.gitops.gitrun import Git
from reconciler.gitops.source import export

__all__ = [
    "ReleaseResolver",
    "Tagged",
    "git_dir_of",
    "list_releases",
    "local_exporter",
    "push_tag",
    "release_tag",
    "resolve_commit",
    "roll_back",
    "tag_release",
    "validate_checkout",
]


def release_tag(solution: str, version: str) -> str:
    return f"{solution}/v{version}"


def _work(repo: Path, *args: str, check: bool = True) -> str:
    """Output of a git command in the working copy ``repo`` (stripped); :class:`SourceError`
    when it fails and ``check`` is set. The person at the terminal may be asked for a
    password (a push) or a passphrase (a signed tag)."""
    return Git(repo, working_copy=True, interactive=True).run(*args, check=check).text


def git_dir_of(path: Path) -> Path | None:
    """The git directory of a working copy (or bare repository) at ``path``, if any."""
    if not path.is_dir():
        return None
    found = _work(path, "rev-parse", "--absolute-git-dir", check=False)
    return Path(found) if found else None


def resolve_commit(repo: Path, rev: str) -> str | None:
    """The commit that ``rev`` names in the repository at ``repo``, if it names one."""
    return _work(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
                 check=False) or None


def validate_checkout(path: Path) -> Report:
    """Validate a repository checkout; instance versions resolve from its tags when it is
    a git repository."""
    git_dir = git_dir_of(path)
    releases = ReleaseResolver(git_dir, local_exporter(git_dir)) if git_dir else None
    return validate_repository(path, releases=releases)


def list_releases(git_dir: Path, solution: str | None = None) -> list[tuple[str, str, str]]:
    """(solution, version, tag date) of every release tag, newest version first."""
    listing = Git(git_dir).run("for-each-ref",
                               "--format=%(refname:short)\t%(creatordate:iso-strict)",
                               "refs/tags", check=False)
    found: list[tuple[str, semver.Version, str]] = []
    for line in listing.text.splitlines() if listing.ok else []:
        name, _, date = line.partition("\t")
        sol, sep, ver = name.rpartition("/v")
        if not sep or (solution is not None and sol != solution):
            continue
        try:
            found.append((sol, semver.Version.parse(ver), date))
        except ValueError:
            continue
    found.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [(s, str(v), d) for s, v, d in found]


def local_exporter(git_dir: Path) -> Callable[[str], Path]:
    """Export commits of a local repository into temporary directories (removed at exit)."""
    cache: dict[str, Path] = {}
    git = Git(git_dir)

    def exporter(commit: str) -> Path:
        if commit in cache:
            return cache[commit]
        dest = Path(tempfile.mkdtemp(prefix=f"reconciler-release-{commit[:12]}-"))
        atexit.register(shutil.rmtree, dest, True)
        export(git, commit, dest)
        cache[commit] = dest
        return dest

    return exporter


class ReleaseResolver:
    """``resolver(solution, version)`` -> the released Solution, or a message saying why not."""

    def __init__(self, git_dir: Path, export: Callable[[str], Path]) -> None:
        self.git_dir = git_dir
        self.export = export
        self._cache: dict[tuple[str, str], Solution | str] = {}
        self.commits: set[str] = set()  # checkouts in use (the daemon keeps them)

    def __call__(self, solution: str, version: str) -> Solution | str:
        key = (solution, version)
        if key not in self._cache:
            self._cache[key] = self._load(solution, version)
        return self._cache[key]

    def _load(self, solution: str, version: str) -> Solution | str:
        tag = release_tag(solution, version)
        tagged = Git(self.git_dir).run("rev-parse", "--verify", "--quiet",
                                       f"refs/tags/{tag}^{{commit}}", check=False)
        commit = tagged.text
        if not tagged.ok or not commit:
            known = [v for _, v, _ in list_releases(self.git_dir, solution)]
            return (f"no release {version} of solution '{solution}' (tag {tag}); released: "
                    + (", ".join(known[:10]) or "none"))
        self.commits.add(commit)
        root = self.export(commit)
        report = validate_repository(root)
        found = report.fleet.solutions.get(solution)
        if found is None:
            return f"release {tag} ({commit[:12]}) has no valid Solution/{solution}"
        errors = [d for d in report.errors if d.path == found.source.path]
        if errors:
            return f"release {tag} ({commit[:12]}) is invalid: {errors[0].format()}"
        return replace(found, root=root, release=tag)


# ---------------------------------------------------------------- reconciler release

@dataclass(frozen=True)
class Tagged:
    """A release just tagged: the tag, the commit it names, and the newest release of the
    solution when that one is newer than this."""

    tag: str
    commit: str
    newer: str | None = None


def tag_release(repo: Path, report: Report, solution: Solution, version: str, *,
                message: str | None = None, sign: bool = False) -> Tagged:
    """Tag HEAD of the working copy ``repo`` as ``version`` of ``solution`` (as validated in
    ``report``). :class:`ManifestError` when the solution is invalid; :class:`ReconcilerError`
    when its directory has uncommitted changes, the release exists, or git fails."""
    errors = [d for d in report.errors if d.path == solution.source.path]
    if errors:
        raise ManifestError(errors)
    directory = solution.directory or "."
    if _work(repo, "status", "--porcelain", "--", directory):
        raise ReconcilerError(f"{directory} has uncommitted changes; commit them first",
                              reason="UncommittedChanges")
    tag = release_tag(solution.name, version)
    existing = list_releases(Path(_work(repo, "rev-parse", "--absolute-git-dir")),
                             solution.name)
    if any(v == version for _, v, _ in existing):
        raise ReconcilerError(f"{tag} already exists", reason="ReleaseExists")
    head = _work(repo, "rev-parse", "HEAD")
    text = message or f"Release {version} of solution {solution.name}"
    _work(repo, "tag", "-s" if sign else "-a", tag, "-m", text, head)
    newest = existing[0][1] if existing else None
    newer = newest if newest and semver.Version.parse(newest) > semver.Version.parse(version) \
        else None
    return Tagged(tag=tag, commit=head, newer=newer)


def push_tag(repo: Path, remote: str, tag: str) -> None:
    """Push ``tag`` to ``remote`` (a remote's name or a URL) of the working copy ``repo``."""
    Git(repo, working_copy=True, interactive=True).run("push", remote, f"refs/tags/{tag}",
                                                       remote=remote)


# ---------------------------------------------------------------- reconciler rollback

def roll_back(repo: Path, git_dir: Path, instance: Instance, version: str,
              branch: str | None = None) -> str:
    """Pin ``instance`` to release ``version`` of its solution, as a commit on a new branch of
    the working copy ``repo``; returns the branch.

    :class:`ReconcilerError` when there is no such release or the working copy has
    uncommitted changes; :class:`ManifestError` (the working copy back as it was) when the
    result would not validate.
    """
    found = ReleaseResolver(git_dir, local_exporter(git_dir))(instance.solution, version)
    if isinstance(found, str):
        raise ReconcilerError(found, reason="NoSuchRelease")
    if _work(repo, "status", "--porcelain"):
        raise ReconcilerError("the working copy has uncommitted changes; commit or stash "
                              "them first", reason="UncommittedChanges")
    path = repo / instance.source.path
    # edited before the branch exists: a file that cannot be edited leaves nothing behind
    from reconciler.gitops.version_pin import pinned  # the round-trip parser: only here

    edited = pinned(path.read_bytes().decode("utf-8"), instance.name, version, path.name)
    name = branch or f"rollback/{instance.name}-v{version}"
    _work(repo, "checkout", "-q", "-b", name)
    path.write_bytes(edited.encode("utf-8"))
    check = validate_checkout(repo)
    if check.errors:
        _work(repo, "checkout", "-q", "--", instance.source.path)
        _work(repo, "checkout", "-q", "-")
        _work(repo, "branch", "-q", "-D", name)
        raise ManifestError(check.errors)
    _work(repo, "commit", "-q", "-m", f"Roll {instance.name} back to {instance.solution} "
          f"{version}", "--", instance.source.path)
    return name
