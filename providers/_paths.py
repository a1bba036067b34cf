"""Path containment and filesystem error mapping shared by the built-in providers.

The ``file`` provider uses it to keep written files under the root the site allows, and both
``file`` and ``script`` use it to keep repository references (templates, scripts) inside the
checked-out revision. Containment is decided on resolved paths, so a symlink already on disk
that points outside counts as an escape, not only a ``..`` in the text.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from reconciler.provider_api import PermanentError, PolicyError, ProviderError, TransientError

__all__ = [
    "contained",
    "is_regular_file",
    "map_os_error",
    "relative_path_problem",
    "repo_file",
    "sha256_file",
]

# Errors that may clear up without anyone editing the repository or the site config.
_TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR,
    errno.ETXTBSY, errno.ENFILE, errno.EMFILE, errno.ENOMEM, errno.ESTALE,
})


def relative_path_problem(value: object, *, allow_parent: bool) -> str | None:
    """Why ``value`` is not an acceptable relative path, or None when it is.

    ``allow_parent`` permits ``..`` segments: repository references may climb out of the
    solution's directory as long as the resolved path stays in the repository, which only the
    caller holding the checkout can decide.
    """
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if "\0" in value:
        return "must not contain a NUL byte"
    # PurePosixPath's decisions, on the string (validation asks for every component of every
    # target): absolute when it starts with a slash; its parts are the segments between
    # slashes but empty ones and "."; no part at all is the path ".".
    if value[0] == "/":
        return f"{value!r} must be a relative path, not an absolute one"
    if not allow_parent and ".." in value and ".." in value.split("/"):
        return f"{value!r} must not contain '..'"
    if not value.strip("./") and all(part in ("", ".") for part in value.split("/")):
        return f"{value!r} names the directory itself, not a file"
    return None


def contained(root: Path, relative: str, *, what: str) -> Path:
    """``root / relative`` resolved (symlinks on disk followed); PolicyError when it leaves root.

    The returned path is strictly below ``root``: naming the root itself is refused too.
    """
    problem = relative_path_problem(relative, allow_parent=True)
    if problem is not None:
        raise PermanentError(f"{what}: {problem}")
    base = root.resolve()
    try:
        resolved = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise PermanentError(f"{what}: {relative!r} cannot be resolved: {exc}") from None
    if resolved == base or not resolved.is_relative_to(base):
        raise PolicyError(f"{what}: {relative!r} resolves to {resolved}, outside {base}")
    return resolved


def repo_file(base_dir: Path, repo_root: Path, relative: str, *, what: str) -> Path:
    """A regular file of the checked-out revision, named relative to ``base_dir``."""
    root = repo_root.resolve()
    try:
        start = base_dir.resolve().relative_to(root)
    except ValueError:
        raise PolicyError(f"{what}: the solution directory {base_dir} is outside the "
                          f"repository {repo_root}") from None
    path = contained(root, str(PurePosixPath(start.as_posix()) / relative), what=what)
    if not path.is_file():
        raise PermanentError(f"{what}: {relative!r} is not a file in the repository "
                             f"(looked for {path})")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def map_os_error(exc: OSError, what: str) -> ProviderError:
    """A filesystem error as the project's error: full disks retry, bad permissions need a human."""
    detail = exc.strerror or str(exc)
    message = f"{what}: {detail}" + (f" ({exc.filename})" if exc.filename else "")
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientError(message, reason="FilesystemBusy")
    return PermanentError(message, reason="FilesystemError")


def is_regular_file(path: Path) -> bool:
    """True for a regular file, False for a symlink (never followed) or anything else."""
    try:
        return stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
