"""``reconciler rollout status``: where an instance's release is in its waves, and why.

One fetch of the status branches, the tracked ref and the approval tags (as ``status``
does), the fleet loaded at the tracked revision, then the same verdicts the site daemons
reach (:mod:`reconciler.engine.rollout_gate`): per wave its targets, each target's release
and phase, and what the rollout waits for (a target's health, a pause, an approval, a
window or hold at the site, a halt). Text or JSON; exit 0 when every target runs the release
and is Ready, 2 while the rollout is under way (or halted), 1 when it cannot be read.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.cli.common import FORMAT, fail
from reconciler.cli.fleet import CACHE, REF, REPO, SHARED, _url

__all__ = ["rollout"]


@click.group()
def rollout() -> None:
    """Progressive rollouts: an instance's release moving through its waves."""


@rollout.command("status")
@click.argument("instance")
@REPO
@SHARED
@REF
@click.option("--allowed-signers", "allowed_signers", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check the approvals' SSH signatures against this allowed_signers file, as "
                   "the sites do (without it or --gpg-keyring every approval tag is shown as "
                   "counting, as at a site with verification off).")
@click.option("--gpg-keyring", "gpg_keyring", default=None,
              type=click.Path(exists=True, path_type=Path),
              help="Check the approvals' OpenPGP signatures against this keyring.")
@CACHE
@FORMAT
def status(instance: str, repo: str, shared_branch: str, ref: str,
           allowed_signers: Path | None, gpg_keyring: Path | None, cache_dir: Path | None,
           fmt: str) -> None:
    """Where INSTANCE's release is in its waves, and what the rollout waits for.

    Per wave: its targets, the release and phase each reports, and for a target that has
    not moved yet why (earlier waves not Ready, a pause, an approval, a window or hold at
    its site, a halt after a failure). Exit 0 when every target runs the release and is
    Ready, 2 while the rollout is under way or halted, 1 when it cannot be read.
    """
    from reconciler.core.errors import ReconcilerError

    try:
        report = _read(_url(repo), instance, shared_branch, ref, cache_dir,
                       (allowed_signers, gpg_keyring))
    except ReconcilerError as exc:
        fail(exc.message)
    if fmt == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _text(report)
    sys.exit(0 if report["complete"] else 2)


def _read(url: str, name: str, shared_branch: str, ref: str, cache_dir: Path | None,
          keys: tuple[Path | None, Path | None]) -> dict[str, Any]:
    from reconciler.cli.fleet import _FleetRead
    from reconciler.cli.rollout_progress import approvals_in, instance_progress

    with _FleetRead(url, shared_branch, ref, cache_dir, stale_after=0.0) as read:
        index = read.index
        if index is None:
            fail(read.model_error or "no fleet model at the tracked ref")
        info = index.instances.get(name)
        if info is None:
            fail(f"no instance {name!r} in the fleet at {index.commit[:12]} "
                 f"(instances: {', '.join(sorted(index.instances)) or 'none'})")
        approved = approvals_in(read.reader.cache.git_dir, name, info.release, info.rollout,
                                keys)
        report = instance_progress(index, read.status, info, approved,
                                   dt.datetime.now(dt.UTC))
    report["ref"] = ref
    return report


def _text(report: dict[str, Any]) -> None:
    click.echo(f"{report['instance']} ({report['solution']}) release {report['release']} "
               f"at {report['revision'][:12]} ({report['ref']})")
    if not report["hasRollout"]:
        click.echo("no rollout: every target moves as soon as its site sees the revision")
    for wave in report["waves"]:
        extra = []
        if wave["pauseSeconds"]:
            extra.append(f"pause {wave['pauseSeconds']}s")
        if wave["approval"]:
            extra.append("approved" if wave["approved"] else "needs approval")
        if wave["haltedBy"]:
            extra.append(f"HALTED by {', '.join(wave['haltedBy'])}")
        click.echo(f"\nwave {wave['name']}: {wave['ready']}/{wave['total']} Ready"
                   + (f" ({'; '.join(extra)})" if extra else ""))
        for row in wave["targets"]:
            click.echo(f"  {row['target']:<24} {row['site']:<24} "
                       f"{row['release'] or '-':<16} {row['phase'] or 'never reported':<12}"
                       + (f" {row['waitingFor']}" if row["waitingFor"] else ""))
    click.echo("\ncomplete" if report["complete"] else "\nin progress")
