"""Publish a run's status files, and skip the work when nothing changed since the last run.

After every run the pipeline hands over the statuses of the targets it served; this module
renders them (``status/<site path>/<target>.yaml``) and gives them to the
:class:`~reconciler.gitops.status_push.StatusPublisher` of the site, made on first use from the
settings and the repository's status settings. An idle run has the file set of the run before;
when that set is already on the remote (or pushing is off), publishing is skipped, since the
publisher would write every file as a blob only to find the same tree. While the fetcher backs
off from an unreachable server, status is committed locally only; the first run after the
server answers pushes the queued commit. A failure to publish is logged and reported, never
raised: the run's other work is done. Used by the pipeline, one per daemon.

What the last publish was made from is kept in memory and in the state directory
(``published_status``): when the statuses, their ``lastChange`` times and the heartbeat are
those of the last publish and that is on the remote, the files are not even rendered, in a
daemon's run as in a new process (``sync --once``).

Next to the status files goes the site's heartbeat file (``status/<site path>/.heartbeat``,
``reconciler.gitops.status_files``): the time this daemon last said it is alive. It is
refreshed only once ``heartbeat`` seconds have passed (default an hour; the settings'
``status_heartbeat`` when they have one; 0 turns it off), so an idle site makes one small
commit and push per period and none in between, and ``reconciler status`` can tell a silent
site (Stale) from an idle one. The time in it survives restarts: the first publish reads it
back from the daemon's last status commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from reconciler.core.errors import ReconcilerError, StatusPushError
from reconciler.core.model import Fleet, StatusLayout
from reconciler.engine.engine_settings import EngineSettings
from reconciler.engine.failures import describe
from reconciler.engine.published_status import Published, inputs_digest
from reconciler.engine.state_store import StateStore
from reconciler.engine.status import StatusRenderer, TargetStatus, status_path
from reconciler.gitops.status_branches import Layout, site_id_for
from reconciler.gitops.status_files import HEARTBEAT_FILE, heartbeat_file, heartbeat_of
from reconciler.gitops.status_push import StatusPublisher

__all__ = ["DEFAULT_HEARTBEAT", "StatusPublishing", "site_paths"]

DEFAULT_HEARTBEAT = 3600.0  # seconds between two heartbeats of an idle site

_log = structlog.get_logger(__name__)


def site_paths(fleet: Fleet | None, site: str) -> tuple[str, list[str]]:
    """The path of the site a daemon serves (``site``: a path or a name) and the paths of
    every site at or below it, whose status directories it owns."""
    if fleet is None:
        return site, [site]
    found = fleet.find_site(site)
    path = fleet.site_path(found.name) if found else site
    below = sorted({p for p in (fleet.site_path(s) for s in fleet.sites)
                    if p == path or p.startswith(path + "/")})
    return path, below


class StatusPublishing:
    """The status side of every run of one daemon (see the module docstring)."""

    def __init__(self, settings: EngineSettings, git_dir: Path, *, stop: threading.Event,
                 renderer: StatusRenderer, heartbeat: float | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.settings = settings
        self.git_dir = git_dir
        self.stop = stop
        self.renderer = renderer
        self.heartbeat = float(heartbeat if heartbeat is not None
                               else settings.status_heartbeat)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._beat: dt.datetime | None = None  # the time in the heartbeat file last written
        self._publisher: StatusPublisher | None = None
        self._published: Published | None = None  # the last publish (see _last)
        self._loaded = False  # whether the record on disk was looked at
        self._saved: Published | None = None  # what the record on disk says

    def publisher(self, site_path: str, fleet: Fleet | None) -> StatusPublisher:
        """The site's publisher, made on first use (the repository's status settings are
        read then: a change of layout needs a restart, as a change of branch would)."""
        if self._publisher is None:
            s = self.settings
            layout = s.status_layout or (fleet.settings.status_layout if fleet
                                         else StatusLayout.PER_SITE)
            branch = s.status_branch
            if layout is StatusLayout.SHARED and branch is None and fleet is not None:
                branch = fleet.settings.status_branch
            self._publisher = StatusPublisher(
                self.git_dir, s.repo_url, site_id=site_id_for(site_path), site_path=site_path,
                layout=Layout.SHARED if layout is StatusLayout.SHARED else Layout.PER_SITE,
                branch=branch, push=s.status_push, stop=self.stop)
        return self._publisher

    def publish(self, statuses: Sequence[TargetStatus], store: StateStore,
                fleet: Fleet | None, commit: str, *, offline: bool) -> tuple[str | None, bool]:
        """Publish the statuses of a run at ``commit``; returns the status commit (None when
        there is none) and whether the remote holds it."""
        site_path, owned = site_paths(fleet, self.settings.site)
        publisher: StatusPublisher | None = None
        try:
            publisher = self.publisher(site_path, fleet)
            last, self._published = self._last(publisher), None
            beat = self._heartbeat(publisher) if self.heartbeat > 0 else None
            paths = [status_path(status.site or site_path, status.target)
                     for status in statuses]
            inputs = inputs_digest(
                branch=publisher.branch, owned=owned, beat=beat,
                files=((path, self.renderer.canonical(status),
                        store.get(status.target).last_change)
                       for path, status in zip(paths, statuses, strict=True)))
            if last is not None and inputs and last.inputs == inputs and self._settled(last):
                self._published = last
                return last.commit, last.pushed
            files = {path: self.renderer.render(status, store.get(status.target).last_change)
                     for path, status in zip(paths, statuses, strict=True)}
            if beat is not None:
                files[f"status/{site_path}/{HEARTBEAT_FILE}"] = heartbeat_file(site_path, beat)
            key = _files_digest(files, owned)
            if last is not None and last.files == key and self._settled(last):
                self._remember(replace(last, inputs=inputs))
                return last.commit, last.pushed
            publisher.set_sites(owned)
            result = publisher.publish(files, f"status: {self.settings.site} at {commit[:12]}",
                                       push=not offline)
        except StatusPushError as exc:
            _log.warning("status_push_failed", error=exc.message)
            # the commit is queued locally: report it
            return (publisher.head() if publisher is not None else None), False
        except ReconcilerError as exc:
            _log.error("status_failed", error=exc.message)
            return None, False
        except Exception as exc:  # e.g. no space left for the temporary files of git
            _log.error("status_failed", error=describe(exc))
            return None, False
        if result.error:
            _log.warning("status_push_failed", error=result.error)
        elif offline and publisher.pending():
            _log.info("status_queued", commit=(result.commit or "")[:12])
        if result.commit is not None:
            self._remember(Published(inputs, key, result.commit, result.pushed,
                                     beat.isoformat() if beat else "", publisher.branch))
        return result.commit, result.pushed

    def _settled(self, last: Published) -> bool:
        """Whether nothing is left to do for the last publish (its commit is pushed)."""
        return last.pushed or not self.settings.status_push

    def _last(self, publisher: StatusPublisher) -> Published | None:
        """The last publish: the one of this process, else the one on disk while our status
        ref still names its commit (read once)."""
        if self._published is not None or self._loaded:
            return self._published
        self._loaded = True
        found = Published.load(self.settings.state_dir)
        if found is None or found.branch != publisher.branch \
                or found.commit != publisher.head():
            return None
        self._saved = found
        if self._beat is None:
            self._beat = found.heartbeat()
        return found

    def _remember(self, published: Published) -> None:
        if published != self._saved:  # an idle daemon writes nothing
            published.save(self.settings.state_dir)
            self._saved = published
        self._published = published

    def _heartbeat(self, publisher: StatusPublisher) -> dt.datetime:
        """The time for the heartbeat file: the last one written until ``heartbeat`` seconds
        have passed, then now. The first call takes the last one from the record of the last
        publish, or else from our last commit."""
        now = self.clock()
        if self._beat is None:
            written = publisher.read_file(f"status/{publisher.site_path}/{HEARTBEAT_FILE}")
            self._beat = heartbeat_of(written) if written is not None else None
        if self._beat is None or (now - self._beat).total_seconds() >= self.heartbeat:
            self._beat = now.replace(microsecond=0)
        return self._beat


def _files_digest(files: dict[str, bytes], site_paths: list[str]) -> str:
    digest = hashlib.sha256("\0".join(sorted(site_paths)).encode() + b"\0\0")
    for path in sorted(files):
        data = files[path]
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()
