"""Solution releases: annotated tags ``<solution>/v<semver>`` and what they contain.

An Instance with ``version: 1.4.0`` takes its Solution (and the files the solution's
components name) as they are at the tag ``<solution>/v1.4.0``; without a version, as at the
tracked ref. :class:`ReleaseResolver` finds the tag, exports its commit, loads and validates
that tree once, and hands the Solution to validation, which renders the instance from the
release's checkout. Also used by ``reconciler release``, ``rollback`` and ``history``.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import semver

from reconciler.model import Solution

__all__ = ["ReleaseResolver", "git_dir_of", "list_releases", "local_exporter", "release_tag"]


def release_tag(solution: str, version: str) -> str:
    return f"{solution}/v{version}"


def _git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True,
                          text=True, timeout=60)


def git_dir_of(path: Path) -> Path | None:
    """The git directory of a working copy (or bare repository) at ``path``, if any."""
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--absolute-git-dir"],
                          capture_output=True, text=True, timeout=30)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def list_releases(git_dir: Path, solution: str | None = None) -> list[tuple[str, str, str]]:
    """(solution, version, tag date) of every release tag, newest version first."""
    proc = _git(git_dir, "for-each-ref", "--format=%(refname:short)\t%(creatordate:iso-strict)",
                "refs/tags")
    found: list[tuple[str, semver.Version, str]] = []
    for line in proc.stdout.splitlines():
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

    def export(commit: str) -> Path:
        if commit in cache:
            return cache[commit]
        dest = Path(tempfile.mkdtemp(prefix=f"reconciler-release-{commit[:12]}-"))
        atexit.register(shutil.rmtree, dest, True)
        proc = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", "--format=tar",
                                 commit], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            archive.extractall(dest, filter="tar")
        proc.wait()
        cache[commit] = dest
        return dest

    return export


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
        from reconciler.validation import validate_repository  # validation imports us

        tag = release_tag(solution, version)
        proc = _git(self.git_dir, "rev-parse", "--verify", "--quiet",
                    f"refs/tags/{tag}^{{commit}}")
        commit = proc.stdout.strip()
        if proc.returncode != 0 or not commit:
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
