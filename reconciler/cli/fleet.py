"""The commands about the whole fleet and its releases: ``status``, ``history``, ``release``
and ``rollback``.

``status`` gives exit code 2 an answer of its own (some target is not Ready); the group in
:mod:`reconciler.cli.main` turns its usage errors into exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from reconciler.cli.common import FORMAT, fail
from reconciler.core import tables

__all__ = ["history", "release", "rollback", "status"]


@click.command()
@click.option("--repo", "repo", required=True,
              help="Fleet repository URL or path (status branches are read from it).")
@click.option("--branch", "shared_branch", default="reconciler-fleet-status",
              show_default=True, help="The shared status branch, if the fleet uses one.")
@FORMAT
def status(repo: str, shared_branch: str, fmt: str) -> None:
    """Table of the fleet's targets from the status branches (one fetch).

    Exit 0 when every target shown is Ready, 2 when some are not (or none reports at all),
    1 when the status cannot be read.
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.gitops.fleet_status import format_table, read_fleet_status

    url = repo
    if "://" not in repo and Path(repo).exists():
        url = str(Path(repo).resolve())
    try:
        fleet = read_fleet_status(url, shared_branch=shared_branch)
    except ReconcilerError as exc:
        fail(exc.message)
    if fmt == "json":
        click.echo(json.dumps(fleet.to_dict(), indent=2, default=str))
    else:
        click.echo(format_table(fleet))
    # no status at all is not "all Ready": a gate waiting for a rollout must not pass on it
    ready = bool(fleet.entries) and all(e.phase == "Ready" and not e.error for e in fleet)
    sys.exit(0 if ready else 2)


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
