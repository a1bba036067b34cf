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
import tempfile
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
    from reconciler.core.loading import load_fleet
    from reconciler.core.rendering import select_targets
    from reconciler.core.rollouts import LAST_WAVE, Rollout, Wave, assign_waves, release_id
    from reconciler.engine.rollout_gate import PeerStatus, rollout_gate, wave_progress
    from reconciler.gitops.fleet_status import StatusReader
    from reconciler.gitops.source import export
    from reconciler.gitops.status_cache import default_cache_dir

    now = dt.datetime.now(dt.UTC)
    with StatusReader(url, cache_dir=cache_dir or default_cache_dir(url),
                      shared_branch=shared_branch, ref=ref) as reader, \
            tempfile.TemporaryDirectory(prefix="reconciler-rollout-") as scratch:
        reader.fetch()
        commit = reader.tracked()
        export(reader.git, commit, Path(scratch))
        fleet = load_fleet(Path(scratch)).fleet
        inst = fleet.instances.get(name)
        if inst is None:
            fail(f"no instance {name!r} in the fleet at {commit[:12]} "
                 f"(instances: {', '.join(sorted(fleet.instances)) or 'none'})")
        solution = fleet.solutions.get(inst.solution)
        if solution is None:
            fail(f"instance {name!r}: its solution {inst.solution!r} is not in the fleet")
        release = release_id(inst, solution, Path(scratch))
        plan = inst.rollout or Rollout((Wave("all", sites=("/",)),))
        chosen = select_targets(fleet, inst)
        sites = {t.name: fleet.site_path(t.site) for t in chosen}
        waves = assign_waves(name, plan, [(t.name, sites[t.name], fleet.target_labels(t))
                                          for t in chosen]) if inst.rollout \
            else {t.name: LAST_WAVE for t in chosen}
        entries = {e.key: e for e in reader.collect()}
        approvals = _approvals(reader.cache.git_dir, name, release, inst.rollout, keys)
    peers: dict[str, PeerStatus | None] = {}
    messages: dict[str, str] = {}
    for target, site in sites.items():
        entry = entries.get((site, target))
        if entry is None:
            peers[target] = None
            continue
        found = next((i for i in entry.instances if i.name == name), None)
        peers[target] = PeerStatus(target, found.phase if found else "",
                                   found.release if found else "", entry.last_change,
                                   entry.last_seen, found.failed_release if found else "")
        messages[target] = entry.message
    label = f"{solution.name} {release}"
    waves_out = []
    complete = True
    for wave in wave_progress(plan, release, waves, peers, now):
        rows = []
        for target in wave.targets:
            peer = peers[target]
            on = peer is not None and peer.release == release and peer.phase == "Ready"
            complete = complete and on
            why = ""
            if not on:
                if peer is not None and peer.phase == "Waiting":
                    why = messages.get(target, "")
                else:
                    verdict = rollout_gate(plan, release, label, target, waves, peers,
                                           lambda w: approvals(w), now)
                    why = verdict.reason or ("moving: not yet Ready on the release"
                                             if peer is not None else "never reported")
            rows.append({"target": target, "site": sites[target],
                         "release": peer.release if peer else None,
                         "phase": peer.phase if peer else None, "waitingFor": why or None})
        waves_out.append({"name": wave.name, "targets": rows, "ready": len(wave.ready),
                          "total": len(wave.targets), "pauseSeconds": wave.pause,
                          "approval": wave.approval,
                          "approved": approvals(wave.name)[0] if wave.approval else None,
                          "haltedBy": list(wave.halted_by)})
    return {"instance": name, "solution": solution.name, "release": release,
            "revision": commit, "ref": ref, "hasRollout": inst.rollout is not None,
            "complete": complete, "waves": waves_out}


def _approvals(git_dir: Path, instance: str, release: str, rollout: Any,
               keys: tuple[Path | None, Path | None]) -> Any:
    """wave -> (approved, why not), from the approval tags fetched, their signatures checked
    against ``keys`` (allowed signers, keyring) when given, as the sites check them."""
    from reconciler.gitops.approvals import approvals_for
    from reconciler.gitops.verification import VerifyMode, VerifyPolicy

    approvers = tuple(rollout.approvers) if rollout is not None else ()
    policy = VerifyPolicy(VerifyMode.COMMIT, keys[0], keys[1]) if any(keys) \
        else VerifyPolicy(VerifyMode.NONE)
    cache: dict[str, tuple[bool, str]] = {}

    def approved(wave: str) -> tuple[bool, str]:
        if wave not in cache:
            check = approvals_for(git_dir, instance, wave, release,
                                  policy=policy, approvers=approvers)
            cache[wave] = (check.approved, check.reason)
        return cache[wave]
    return approved


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
