"""The engine's settings, as values: what one site's reconciles need to know.

The engine (the pipeline and the modules it runs) takes one frozen :class:`EngineSettings`
and never reads the daemon's configuration: the daemon and the CLI build it from their
``DaemonConfig`` (``DaemonConfig.engine_settings()``), tests build it directly. Every field is
defaulted for a small site, so a test names only what it is about. ``None`` means "what the
repository's ``Settings`` say" wherever the repository has a say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.model import StatusLayout
from reconciler.core.provider_api import SHUTDOWN_GRACE, LocalPolicy
from reconciler.gitops.verification import VerifyMode

__all__ = ["EngineSettings"]


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine is told by the site (see the module docstring)."""

    # -- the source --------------------------------------------------------------------
    #: URL or local path of the fleet repository.
    repo_url: str = ""
    #: The tracked ref: a branch, a tag, or a semver range of tags.
    ref: str = "main"
    #: SSH private key for the server (None: ssh's own configuration).
    ssh_key: Path | None = None
    #: File holding a bearer token sent as an HTTP header (None: no token).
    token_file: Path | None = None
    #: Seconds one git network operation may take.
    git_timeout: int = 120

    # -- what this daemon serves --------------------------------------------------------
    #: Site path or name: the subtree of the hierarchy this daemon serves.
    site: str = ""
    #: Only these targets of the subtree (empty: every target in it).
    targets: tuple[str, ...] = ()
    #: Where the mirror, checkouts, inventories and ``state.json`` live.
    state_dir: Path = Path("/var/lib/reconciler")

    # -- one target's reconcile ---------------------------------------------------------
    #: Retries of a provider call failing transiently (None: the repository's default).
    retries: int | None = None
    #: First delay between those retries, doubled each time (None: repository default).
    retry_delay: float | None = None
    #: Longest delay between two retries of a provider call.
    retry_max_delay: float = 300.0
    #: Seconds a component may take to become healthy (None: repository default).
    health_timeout: int | None = None
    #: Seconds between two health checks while waiting.
    health_poll_interval: float = 2.0
    #: Components of one instance that do not depend on each other are applied and waited
    #: for at the same time, at most this many at once (1: one after the other).
    apply_concurrency: int = 4
    #: On shutdown, seconds a running provider operation (a helm upgrade) may go on.
    shutdown_grace: float = SHUTDOWN_GRACE
    #: What the site allows the repository to ask for. Its ``base_dir`` is set by the engine
    #: to ``state_dir`` (relative binding paths resolve there).
    policy: LocalPolicy = field(default_factory=LocalPolicy)
    #: Directory of the site's secret values (None: no secrets).
    secrets_dir: Path | None = None

    # -- trust ---------------------------------------------------------------------------
    #: Which signatures a revision needs before anything of it is applied.
    verify_mode: VerifyMode = VerifyMode.NONE
    #: ssh ``allowed_signers`` file for signature checks.
    verify_allowed_signers: Path | None = None
    #: GnuPG keyring for signature checks.
    verify_gpg_keyring: Path | None = None
    #: Tenancy: every merge commit must itself be signed by a member (docs/tenancy.md).
    verify_signed_merges: bool = False

    # -- status --------------------------------------------------------------------------
    #: Status branch layout (None: the repository's ``Settings``).
    status_layout: StatusLayout | None = None
    #: Status branch name (None: the layout's default).
    status_branch: str | None = None
    #: Push status commits (False: commit them locally only).
    status_push: bool = True

    # -- the server ----------------------------------------------------------------------
    #: Seconds to wait after a failed fetch before the next one, doubled per failure.
    fetch_backoff: float = 10.0
    #: Longest wait between two fetches while the server is unreachable.
    fetch_backoff_cap: float = 900.0
    #: Seconds between two looks at the server for a newer revision during a run.
    remote_check_interval: float = 30.0
    #: Seconds between two heartbeats of an idle site's status (0: no heartbeat file).
    status_heartbeat: float = 3600.0

    # -- failure handling and windows (docs/failure-handling.md) ---------------------------
    #: Repair drift and run rollbacks outside maintenance windows (they restore the approved
    #: state); False: outside every window nothing is applied at all.
    repair_outside_windows: bool = True
    #: The local channel of ``hold``, ``unhold`` and ``sync --retry``, served by the daemon
    #: (None: ``<state dir>/control.sock``); the engine itself never reads it.
    control_socket: Path | None = None
