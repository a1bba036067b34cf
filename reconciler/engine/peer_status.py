"""The statuses of other targets of a rollout, read from the status branches they push.

A target waiting in a rollout wave needs the status of the targets of the earlier waves. A
daemon reads only the branches it waits on, only while it waits, and in the same fetch as the
tracked ref: :class:`PeerStatuses` adds the branches of the sites it needs to the mirror's
fetch (``GitSource.extra_specs``) and drops them when nothing waits any more. The first time
a run needs a branch it does not have yet, it fetches the missing ones at once (a second
fetch in that run; after that, none). So a site waiting in a rollout makes at most two
fetches per interval and a site that waits for nothing makes one, as before.

With per-site status branches, a target's status is on the branch of the daemon serving its
subtree: the branch of its own site or of a site above it (``reconciler-status/<site id>``
for each). Each is fetched with a pattern, so a site that does not exist yet is no error; the
newest status file found wins. Once a target's status was found on a branch, later runs fetch
that branch alone (an ancestor's pattern matches every branch of its subtree). With the
shared layout there is one branch. A site's sign of life is the newer of its status file's
``lastChange`` and its branch's last commit (status commits and heartbeats both move it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import structlog

from reconciler.core.errors import ReconcilerError
from reconciler.engine.failures import describe
from reconciler.engine.rollout_gate import PeerStatus
from reconciler.gitops.source import GitSource
from reconciler.gitops.status_branches import PER_SITE_BRANCH_PREFIX, Layout, site_id_for
from reconciler.gitops.status_files import parse_time
from reconciler.gitops.status_parse import load_status

__all__ = ["PEER_REFS", "PeerStatuses"]

_log = structlog.get_logger(__name__)

PEER_REFS = "refs/reconciler/peers/"


def _ancestors(site_path: str) -> list[str]:
    parts = site_path.strip("/").split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class PeerStatuses:
    """Reads other targets' statuses for one daemon (see the module docstring)."""

    def __init__(self, source: GitSource, *, layout: Callable[[], Layout],
                 shared_branch: Callable[[], str]) -> None:
        self.source = source
        self.layout = layout
        self.shared_branch = shared_branch
        self._wanted: set[str] = set()  # branches asked for in this run
        self._refs: dict[str, tuple[str, datetime | None]] | None = None
        self._fetched: set[str] = set()  # branches fetched in this run
        # target -> the branch its status was found on: later runs fetch that one alone,
        # not every ancestor site's branch (whose pattern matches its whole subtree)
        self._home: dict[str, str] = {}

    def begin_run(self) -> None:
        """A run starts (after its fetch): forget what the last run read."""
        self._wanted = set()
        self._refs = None
        self._fetched = set()

    def end_run(self) -> None:
        """Fetch along next time only the branches this run needed."""
        self.source.extra_specs = tuple(sorted(self._spec(b) for b in self._wanted))

    def _spec(self, branch: str) -> str:
        return f"+refs/heads/{branch}*:{PEER_REFS}{branch}*"

    def _branches(self, site_path: str) -> list[str]:
        if self.layout() is Layout.SHARED:
            return [self.shared_branch()]
        return [PER_SITE_BRANCH_PREFIX + site_id_for(p) for p in _ancestors(site_path)]

    def statuses(self, targets: Mapping[str, str], instance: str) -> dict[str, PeerStatus | None]:
        """``target -> site path`` of the targets asked for; what each reports of
        ``instance`` (None: nothing found)."""
        branches = {t: [self._home[t]] if t in self._home else self._branches(site)
                    for t, site in targets.items()}
        wanted = {b for bs in branches.values() for b in bs}
        self._wanted |= wanted
        present = {spec.split(":", 1)[0][len("+refs/heads/"):-1]
                   for spec in self.source.extra_specs}
        missing = sorted(wanted - present - self._fetched)
        if missing:
            self._fetch(missing)
        refs = self._read_refs()
        names: dict[str, list[tuple[str, str]]] = {}
        for target, site in targets.items():
            for branch in branches[target]:
                ref = PEER_REFS + branch
                if ref in refs:
                    names.setdefault(target, []).append(
                        (ref, f"{refs[ref][0]}:status/{site.strip('/')}/{target}.yaml"))
        blobs = self._read([n for pairs in names.values() for _, n in pairs])
        out: dict[str, PeerStatus | None] = {}
        for target in targets:
            found: PeerStatus | None = None
            home = ""
            for ref, name in names.get(target, ()):
                peer = _parse(target, instance, blobs.get(name), refs[ref][1])
                if peer is not None and (found is None or (peer.last_change or _EPOCH)
                                         > (found.last_change or _EPOCH)):
                    found, home = peer, ref
            if home:
                self._remember(target, home)
            elif target in self._home:  # moved to another daemon: look everywhere again
                del self._home[target]
            out[target] = found
        return out

    def _remember(self, target: str, ref: str) -> None:
        if len(self._home) > 100_000:
            self._home.clear()
        self._home[target] = ref[len(PEER_REFS):]

    def _fetch(self, branches: Iterable[str]) -> None:
        specs = [self._spec(b) for b in branches]
        try:
            self.source.fetch_specs(specs)
        except ReconcilerError as exc:  # the rollout waits; the next run tries again
            _log.warning("peer_status_fetch_failed", error=exc.message)
        self._fetched |= set(branches)
        self._refs = None

    def _read_refs(self) -> dict[str, tuple[str, datetime | None]]:
        if self._refs is None:
            out = self.source.git.run(
                "for-each-ref", "--format=%(refname) %(objectname) %(committerdate:unix)",
                PEER_REFS, check=False).text
            refs: dict[str, tuple[str, datetime | None]] = {}
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 3:
                    stamp = datetime.fromtimestamp(int(parts[2]), UTC) \
                        if parts[2].isdigit() else None
                    refs[parts[0]] = (parts[1], stamp)
            self._refs = refs
        return self._refs

    def _read(self, names: list[str]) -> dict[str, bytes]:
        """``<commit>:<path>`` -> content, through one ``cat-file --batch``; missing ones
        are left out."""
        if not names:
            return {}
        try:
            return self.source.git.read_blobs(names, context="reading peer statuses",
                                              missing_ok=True)
        except ReconcilerError as exc:
            _log.warning("peer_status_read_failed", error=describe(exc))
            return {}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse(target: str, instance: str, data: bytes | None,
           commit_time: datetime | None) -> PeerStatus | None:
    if data is None:
        return None
    try:
        doc = load_status(data.decode())
    except Exception:  # an unreadable file is no report
        return None
    if not isinstance(doc, dict):
        return None
    inst = (doc.get("instances") or {}).get(instance) if isinstance(
        doc.get("instances"), dict) else None
    last_change = parse_time(doc.get("lastChange"))
    seen = max((t for t in (last_change, commit_time) if t is not None), default=None)
    if not isinstance(inst, dict):
        return PeerStatus(target, "", "", last_change, seen)
    rolled = inst.get("rolledBack")
    failed = str(rolled.get("failedRelease", "")) if isinstance(rolled, dict) else ""
    return PeerStatus(target, str(inst.get("phase", "")), str(inst.get("release", "")),
                      last_change, seen, failed)
