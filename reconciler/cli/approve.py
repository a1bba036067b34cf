"""``reconciler approve``: approve a release of an instance for a wave of its rollout.

The approval is a signed annotated tag at HEAD of the working copy
(:mod:`reconciler.gitops.approval_tags`); daemons count it once it is pushed and its signer
is an approver (:mod:`reconciler.gitops.approvals`). The instance and wave are checked
against the fleet as committed at HEAD, and the release defaults to the instance's pinned
``spec.version`` there. Mistakes in what is named (instance, wave, release) are usage errors
(exit 2); an approval that exists, a signing or push failure exit 1.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import click

__all__ = ["approve"]


@click.command()
@click.argument("instance")
@click.option("--wave", required=True, help="The wave of the instance's rollout to approve.")
@click.option("--release", default=None,
              help="The release approved [default: the instance's pinned spec.version at "
                   "HEAD; required when it pins none].")
@click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True, help="Working copy of the fleet repository.")
@click.option("--sign/--no-sign", default=True, show_default=True,
              help="Sign the tag (git tag -s, with your gpg.format and user.signingkey). "
                   "Unsigned approvals count only at sites with verification off.")
@click.option("--as", "who", default=None,
              help="Label for the tag name's last part [default: your git e-mail]. Only a "
                   "label: the signature says who approved.")
@click.option("-m", "--message", "note", default=None,
              help="A note added to the tag message (a change ticket, a reason).")
@click.option("--push", "remote", default=None, help="Push the tag to this remote.")
def approve(instance: str, wave: str, release: str | None, repo: Path, sign: bool,
            who: str | None, note: str | None, remote: str | None) -> None:
    """Approve a release of INSTANCE for a wave: a signed tag at HEAD.

    Tags HEAD as `reconciler-approval/<instance>/<wave>/<release>/<who>`. A wave with
    `approval: true` moves to the release once a site finds an approval signed by a key it
    trusts whose signer is in the instance's spec.rollout.approvers. Push the tag (--push, or
    git push) for daemons to see it.
    """
    from reconciler.core.errors import ReconcilerError
    from reconciler.core.rollouts import LAST_WAVE
    from reconciler.gitops.approval_tags import (
        approver_identity,
        fleet_at_head,
        tag_approval,
    )
    from reconciler.gitops.approvals import approver_label
    from reconciler.gitops.releases import git_dir_of, push_tag

    if git_dir_of(repo) is None:
        raise click.UsageError(f"{repo} is not a git repository")
    try:
        _, loaded = fleet_at_head(repo)
        ident, email = approver_identity(repo)
    except ReconcilerError as exc:
        raise click.UsageError(exc.message) from None
    found = loaded.fleet.instances.get(instance)
    if found is None and ("Instance", instance) in loaded.fleet.broken:
        problems = [d.format() for d in loaded.diagnostics if d.obj == f"Instance/{instance}"]
        raise click.UsageError(f"Instance/{instance} is invalid at HEAD"
                               + (f": {problems[0]}" if problems else ""))
    if found is None:
        near = difflib.get_close_matches(instance, sorted(loaded.fleet.instances), n=3,
                                         cutoff=0.5)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise click.UsageError(f"no Instance/{instance} in the repository at HEAD{hint}")
    if found.rollout is None:
        problems = [d.format() for d in loaded.diagnostics
                    if d.obj == f"Instance/{instance}" and d.field.startswith("spec.rollout")]
        detail = f" ({problems[0]})" if problems else ""
        raise click.UsageError(f"Instance/{instance} has no spec.rollout, so no wave to "
                               f"approve{detail}")
    waves = {w.name: w for w in found.rollout.waves}
    if wave not in waves and wave != LAST_WAVE:
        raise click.UsageError(f"Instance/{instance} has no wave {wave!r} (its waves: "
                               f"{', '.join([*waves, LAST_WAVE])})")
    if release is None:
        if not found.version:
            raise click.UsageError(f"Instance/{instance} pins no spec.version at HEAD: give "
                                   "--release (the release the wave waits for, as its waiting "
                                   "message names it)")
        release = found.version
    try:
        recorded = tag_approval(repo, instance, wave, release,
                                who=who or approver_label(email), approver=ident,
                                sign=sign, note=note)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    if wave not in waves or not waves[wave].approval:
        click.echo(f"note: wave {wave} of {instance} does not require approval at HEAD "
                   "(approval: true is not set); recorded anyway", err=True)
    if not found.rollout.approvers:
        click.echo(f"note: Instance/{instance} lists no spec.rollout.approvers at HEAD: "
                   "sites that verify signatures will not count this approval", err=True)
    if not sign:
        click.echo("note: the approval is unsigned; it counts only at sites with "
                   "verification off", err=True)
    click.echo(f"tagged {recorded.tag} at {recorded.commit[:12]} "
               f"({'signed' if recorded.signed else 'unsigned'})")
    if remote is None:
        click.echo(f"push it for the sites to see it: git push origin refs/tags/{recorded.tag}")
        return
    try:
        push_tag(repo, remote, recorded.tag)
    except ReconcilerError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"pushed {recorded.tag} to {remote}")
