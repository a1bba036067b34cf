"""The commands about the whole fleet and its releases: ``status``, ``report``, ``history``,
``release`` and ``rollback``.

``status`` and ``report`` read the status branches and the fleet model at the tracked ref
together (one fetch; the model validated once per revision, in a child process, and kept in
the cache with what was fetched). ``status`` gives exit code 2 an answer of its own (some
target is not Ready); the group in :mod:`reconciler.cli.main` turns its usage errors into
exit 1.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from reconciler.cli.common import FORMAT, fail
from reconciler.core import tables

__all__ = ["history", "release", "report", "rollback", "status"]


def _duration(text: str) -> float:
    """``3h``, ``90m``, ``1h30m``, ``2d``, ``45s`` or plain seconds, in seconds."""
    from reconciler.core.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration such as 3h, 90m or 3600") \
            from None


def _stale_after(ctx: click.Context, param: click.Parameter, value: str) -> float:
    return _duration(value)


def _url(repo: str) -> str:
    if "://" not in repo and Path(repo).exists():
        return str(Path(repo).resolve())
    return repo


REPO = click.option("--repo", "repo", required=True,
                    help="Fleet repository URL or path (status branches are read from it).")
SHARED = click.option("--branch", "shared_branch", default="reconciler-fleet-status",
                      show_default=True, help="The shared status branch, if the fleet uses one.")
REF = click.option("--ref", "ref", default="main", show_default=True,
                   help="The ref the daemons track (a branch, tag:NAME or semver:RANGE): the "
                        "fleet model is read at it.")
STALE = click.option("--stale-after", "stale_after", default="3h", show_default=True,
                     callback=_stale_after,
                     help="A site not heard from for longer is Stale (3h, 90m, 3600). Keep "
                          "it above the daemons' status.heartbeat plus their interval.")
CACHE = click.option("--cache-dir", "cache_dir", default=None,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Where fetched status is kept between calls [default: "
                          "$XDG_CACHE_HOME/reconciler/status/<hash of the URL>].")


@click.command()
@REPO
@SHARED
@REF
@STALE
@click.option("--site", default=None, help="Only this site's subtree (a path or a name).")
@click.option("--instance", default=None, help="Only the targets of this instance.")
@click.option("--phase", "phases", multiple=True, metavar="STATE",
              help="Only targets in this state (Ready, Failed, Stale, Unknown, ...); "
                   "repeatable.")
@click.option("--wide", is_flag=True, help="Full messages, and the observed revision.")
@CACHE
@FORMAT
def status(repo: str, shared_branch: str, ref: str, stale_after: float, site: str | None,
           instance: str | None, phases: tuple[str, ...], wide: bool, cache_dir: Path | None,
           fmt: str) -> None:
    """Every target of the fleet at the tracked ref, with what it reports (one fetch).

    Targets that never reported are Unknown; sites not heard from for longer than
    --stale-after are Stale. Exit 0 when every target shown is Ready, 2 when some are not
    (or none is shown), 1 when the status cannot be read.
    """
    from reconciler.cli.status_output import colour_wanted, write_json, write_text
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.fleet_view import STATES

    known = {s.lower() for s in STATES}
    for phase in phases:
        if phase.lower() not in known:
            raise click.BadParameter(f"{phase!r} is not one of {', '.join(STATES)}",
                                     param_hint="--phase")
    url = _url(repo)
    try:
        with _FleetRead(url, shared_branch, ref, cache_dir, stale_after,
                        documents=fmt == "json") as read:
            view = read.view
            if site:
                _check_site(read, site)
            if instance and read.index is not None and instance not in read.index.instances:
                fail(f"no instance {instance!r} in the fleet at {view.revision[:12]}")
            view = view.filtered(site=site, instance=instance, states=phases)
            if read.model_error:
                click.echo(f"warning: {read.model_error}; showing the reported targets only",
                           err=True)
            stream = sys.stdout
            if fmt == "json":
                write_json(view, read.reader, stream, source=read.status.source, ref=ref,
                           branches=read.status.branches, model_error=read.model_error)
            else:
                write_text(view, stream, source=read.status.source, ref=ref, wide=wide,
                           colour=colour_wanted(stream), reported=bool(read.status.entries))
            stream.flush()
    except ReconcilerError as exc:
        fail(exc.message)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    # no status at all is not "all Ready": a gate waiting for a rollout must not pass on it
    sys.exit(0 if view.ready else 2)


@click.command()
@REPO
@SHARED
@REF
@STALE
@click.option("--html", "html", required=True,
              type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the page to this file.")
@click.option("--site", default=None,
              help="Only this site's subtree (a path or a name): a plant's own page.")
@click.option("--history", "history", default=200, show_default=True,
              type=click.IntRange(0, 100_000), help="Recent status changes shown.")
@CACHE
def report(repo: str, shared_branch: str, ref: str, stale_after: float, html: Path,
           site: str | None, history: int, cache_dir: Path | None) -> None:
    """Write one self-contained HTML page of the fleet (no network needed to view it).

    The site hierarchy as a tree coloured by health, every target with its state,
    revision, instances, message and validation errors, the roll-up per instance, rollouts
    in progress and the recent status changes. Exit 0 when written, 1 when the fleet
    cannot be read or the file cannot be written.
    """
    import os
    import tempfile

    from reconciler.cli.progress import Progress
    from reconciler.cli.report_html import render_report
    from reconciler.cli.rollout_progress import unfinished
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.fleet_history import recent_changes
    from reconciler.gitops.fleet_status import STATUS_REFS

    url = _url(repo)
    with Progress() as progress:
        try:
            with _FleetRead(url, shared_branch, ref, cache_dir, stale_after,
                            progress=lambda stage: progress.report(stage)) as read:
                view = read.view
                if site:
                    _check_site(read, site)
                    view = view.filtered(site=site)
                progress.report("reading the history")
                changes = recent_changes(read.reader.git, STATUS_REFS, limit=history,
                                         sites=view.site_paths(site) if site else None)
                rollouts = unfinished(read.index, read.status, read.reader.cache.git_dir)
                progress.report("writing the page")
                page = render_report(view, source=read.status.source, ref=ref,
                                     history=changes, rollouts=rollouts,
                                     model_error=read.model_error)
        except ReconcilerError as exc:
            progress.close()
            fail(exc.message)
    data = page.encode()
    tmp: str | None = None
    try:  # written whole or not at all: a reader never sees half a page
        html.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{html.name}-", dir=html.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as any file the user writes, not mkstemp's 0600
        os.replace(tmp, html)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        fail(f"cannot write {html}: {exc.strerror}")
    if read.model_error:
        click.echo(f"warning: {read.model_error}; the page shows the reported targets only",
                   err=True)
    click.echo(f"wrote {html}: {len(view)} targets, {len(data) // 1024 + 1} KiB")


def _check_site(read: _FleetRead, site: str) -> None:
    """Exit 1 when the model has no site ``site`` names (a path or a name)."""
    if read.index is None:
        return
    paths = read.view.site_paths(site)
    if not any(s.path == p or s.path.startswith(p + "/")
               for s in read.index.sites for p in paths):
        fail(f"no site {site!r} in the fleet at {read.view.revision[:12]}")


def _quiet(stage: str) -> None:
    """No progress shown."""


class _FleetRead:
    """The status branches and the fleet model read together, for status and report: one
    fetch, the model validated (or taken from the cache) while the status files are read.

    While it is open the cyclic garbage collector is paused: reading a fleet makes hundreds
    of thousands of objects that hold no cycles, and the collector's passes over them cost
    a tenth of the command's time."""

    def __init__(self, url: str, shared_branch: str, ref: str, cache_dir: Path | None,
                 stale_after: float, progress: Callable[[str], None] | None = None,
                 documents: bool = False) -> None:
        from reconciler.gitops.fleet_status import StatusReader
        from reconciler.gitops.status_cache import default_cache_dir

        self.reader = StatusReader(url, cache_dir=cache_dir or default_cache_dir(url),
                                   shared_branch=shared_branch, ref=ref, documents=documents)
        self.stale_after = stale_after
        self.progress: Callable[[str], None] = progress or _quiet
        self.model_error: str | None = None

    def __enter__(self) -> _FleetRead:
        import datetime as dt

        from reconciler.core.errors import SourceError
        from reconciler.gitops.fleet_model import IndexJob
        from reconciler.gitops.fleet_view import join

        self._collecting = gc.isenabled()
        gc.disable()
        try:
            reader = self.reader.__enter__()
        except BaseException:
            self._resume()
            raise
        try:
            self.progress("fetching")
            reader.fetch()
            job = None
            try:
                job = IndexJob(reader.cache, reader.tracked())
            except SourceError as exc:
                self.model_error = f"no fleet model: {exc.message}"
            self.progress("reading status")
            self.status = reader.collect()
            self.index = None
            if job is not None:
                if not job.cached:
                    self.progress("validating the fleet")
                try:
                    self.index = job.result()
                except SourceError as exc:
                    self.model_error = exc.message
            self.view = join(self.index, self.status, now=dt.datetime.now(dt.UTC),
                             stale_after=self.stale_after)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.reader.__exit__(None, None, None)
        finally:
            self._resume()

    def _resume(self) -> None:
        if self._collecting:
            gc.enable()


@click.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Working copy of the fleet repository.")
@click.argument("solution")
@click.argument("version")
@click.option("-m", "--message", default=None, help="Tag message (default: a summary).")
@click.option("--sign", is_flag=True, help="Sign the tag (git tag -s), for verify: tag.")
@click.option("--push", "remote", default=None, help="Push the tag to this remote.")
def release(repo: Path, solution: str, version: str, message: str | None, sign: bool,
            remote: str | None) -> None:
    """Release SOLUTION as VERSION: the annotated tag <solution>/v<version> at HEAD.

    Instances with `version: VERSION` then take the solution's files as they are in that
    commit. The repository must be valid and the solution's directory committed.
    """
    import semver

    from reconciler.core.errors import ManifestError, ReconcilerError
    from reconciler.gitops.releases import push_tag, tag_release, validate_checkout

    try:
        semver.Version.parse(version)
    except ValueError:
        raise click.UsageError(f"'{version}' is not a semantic version such as 1.4.0") from None
    report = validate_checkout(repo)
    found = report.fleet.solutions.get(solution)
    if found is None:
        raise click.UsageError(f"no valid Solution/{solution} in {repo}")
    try:
        tagged = tag_release(repo, report, found, version, message=message, sign=sign)
    except ManifestError as exc:
        for d in exc.diagnostics:
            click.echo(d.format(), err=True)
        raise click.ClickException(f"Solution/{solution} is invalid; nothing released") from None
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"tagged {tagged.tag} at {tagged.commit[:12]}")
    if tagged.newer:
        click.echo(f"note: {tagged.newer} is a newer release of {solution}", err=True)
    if remote:
        try:
            push_tag(repo, remote, tagged.tag)
        except ReconcilerError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"pushed {tagged.tag} to {remote}")


@click.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Working copy of the fleet repository.")
@click.argument("instance")
@click.option("--to", "version", required=True, help="The earlier release to go back to.")
@click.option("--branch", default=None,
              help="Branch for the change (default rollback/<instance>-v<version>).")
def rollback(repo: Path, instance: str, version: str, branch: str | None) -> None:
    """Pin INSTANCE to an earlier release, as a commit on a new branch for review.

    Sets the instance's `spec.version`, validates the result, and commits it on a branch;
    push it and open a pull request to roll the fleet back.
    """
    from reconciler.core.errors import ManifestError, ReconcilerError
    from reconciler.gitops.releases import git_dir_of, roll_back, validate_checkout

    report = validate_checkout(repo)
    inst = report.fleet.instances.get(instance)
    if inst is None:
        raise click.UsageError(f"no Instance/{instance} in {repo}")
    git_dir = git_dir_of(repo)
    if git_dir is None:
        raise click.UsageError(f"{repo} is not a git repository")
    try:
        name = roll_back(repo, git_dir, inst, version, branch)
    except ManifestError as exc:
        for d in exc.diagnostics:
            click.echo(d.format(), err=True)
        raise click.ClickException("the rollback would not validate; nothing committed") \
            from None
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"committed on branch {name}: Instance/{instance} pinned to {inst.solution} "
               f"{version} ({inst.source.path})\npush it and open a pull request: "
               f"git push -u origin {name}")


@click.command()
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Clone of the fleet repository.")
@click.option("--solution", default=None, help="Releases of this solution only.")
@click.option("--target", default=None,
              help="Status history of this target (from the status branches in the clone).")
@FORMAT
def history(repo: Path, solution: str | None, target: str | None, fmt: str) -> None:
    """Releases of the fleet's solutions, or the status history of one target.

    Exit 1 when the target has no status on the status branches of the clone.
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.releases import git_dir_of, list_releases
    from reconciler.gitops.status_history import target_history

    git_dir = git_dir_of(repo)
    if git_dir is None:
        raise click.UsageError(f"{repo} is not a git repository")
    if target is None:
        rows = [{"solution": s, "version": v, "date": d} for s, v, d in
                list_releases(git_dir, solution)]
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
        elif rows:
            click.echo(tables.render([(r["solution"], r["version"], r["date"]) for r in rows],
                                     gaps=" ", min_widths=(28, 12)))
        else:
            click.echo("no releases (tags <solution>/v<semver>)")
        return
    try:
        changes = target_history(git_dir, target, clone=str(repo))
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    if fmt == "json":
        click.echo(json.dumps([c.to_dict() for c in changes], indent=2))
    elif changes:
        click.echo(tables.render([(c.date, c.phase, c.revision, c.message) for c in changes],
                                 gaps=("  ", " ", " "), min_widths=(0, 11, 12)))
