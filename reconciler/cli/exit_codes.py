"""What each command's exit codes mean: the contract scripts rely on, as data.

One :class:`ExitCodes` row per way of running a command (``plan`` live and offline, ``sync``
with and without ``--once``), keyed by the command's name in the ``reconciler`` group.
``scripts/gen_cli_docs.py`` writes them into docs/cli.md, as one table and under each
command, and a test checks that every command of the group has a row; change a command's
exit codes here, in the same commit as the command.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXIT_CODES", "ExitCodes"]

USAGE = "usage"


@dataclass(frozen=True)
class ExitCodes:
    command: str  # as typed after ``reconciler``: "plan", "config check"
    how: str  # the invocation the row is about, as shown in the table
    ok: str  # exit 0
    error: str  # exit 1
    two: str = USAGE  # exit 2: click's usage errors unless the command gives it a meaning
    other: str = ""


EXIT_CODES: tuple[ExitCodes, ...] = (
    ExitCodes(
        "plan", "`plan --config FILE` (live)", "nothing would change",
        "any error: usage (unknown option, bad value), missing or invalid config, repository "
        "unreachable, a revision with validation errors, a component that cannot be planned, "
        "a `site:` that selects no target",
        "something would change (create, update or prune)"),
    ExitCodes(
        "plan", "`plan --repo PATH --base REV [--head REV]` (offline)",
        "no target would get anything different",
        "any error: usage, `--base` missing, a revision or path that does not exist, not a "
        "git repository, new validation errors in `--head` (the targets they concern are "
        "shown held on their current state)",
        "some target would change"),
    ExitCodes(
        "status", "`status --repo URL\\|PATH`", "every target shown is Ready",
        "the status branches cannot be read (unreachable, not a repository), usage errors",
        "some target is not Ready (or has an unreadable status file), or no target reports "
        "a status at all"),
    ExitCodes(
        "report", "`report --repo URL\\|PATH --html FILE`", "the page was written",
        "the fleet cannot be read, an unknown `--site`, or FILE cannot be written",
        "usage: unknown option, `--html` missing"),
    ExitCodes(
        "validate", "`validate [PATH]`",
        "the repository is valid (warnings allowed unless `--strict`)",
        "errors found (or warnings with `--strict`), including a directory that holds no "
        "fleet (no `Settings` in `reconciler.yaml`)",
        "usage: PATH does not exist, unknown option"),
    ExitCodes(
        "explain", "`explain --target T`", "the target renders without errors",
        "the target has validation errors",
        "usage: no such target or instance (with a did-you-mean), unknown option"),
    ExitCodes(
        "sync", "`sync --once --config FILE`", "every served target is Ready",
        "a target is not Ready, no target is served (the reason is printed), no revision "
        "could be fetched, missing or invalid config, another process holds the state "
        "directory"),
    ExitCodes(
        "sync", "`sync --config FILE` (no `--once`)",
        "the running daemon was asked to run now",
        "no daemon is running on the config's state directory (said so; nothing signalled), "
        "missing or invalid config, not allowed to signal it"),
    ExitCodes(
        "sync", "`sync --retry [--target T] --config FILE`",
        "the running daemon took the retry and runs now (with `--once`: as `sync --once`)",
        "no daemon is running (`--once --retry` works without one), a target it does not "
        "serve, permission denied on its control socket (not root, not in its group), missing "
        "or invalid config",
        "usage: `--target` without `--retry`"),
    ExitCodes(
        "hold", "`hold [--target T] --until TIME\\|--for DURATION --reason TEXT`",
        "the hold is set: by the running daemon, or written to the state directory when none "
        "runs",
        "the daemon refused it (a target it does not serve, named with what it serves), "
        "permission denied (not root and not in the daemon's group; without a daemon, not "
        "root), no state directory, missing or invalid config",
        "usage: `--reason` missing or blank, neither or both of `--until` and `--for`, a TIME "
        "or DURATION that cannot be read, a TIME not in the future"),
    ExitCodes(
        "unhold", "`unhold [--target T \\| --all]`",
        "the hold ended, or there was none to end (said so)",
        "a target the daemon does not serve and that has no hold, permission denied, missing "
        "or invalid config",
        "usage: both `--target` and `--all`"),
    ExitCodes(
        "holds", "`holds [--format json]`", "listed (also when there is none)",
        "permission denied (daemon's socket, or the state directory without a daemon), "
        "missing or invalid config"),
    ExitCodes(
        "run", "`run --config FILE`", "stopped by SIGTERM or SIGINT",
        "another daemon holds the state directory", USAGE,
        "78 (`EX_CONFIG`): config missing or invalid, listen address cannot be bound; the "
        "systemd unit does not restart on it"),
    ExitCodes(
        "config check", "`config check --config FILE`",
        "config, the files it names and the tracked revision are all fine",
        "any problem (each on its own line): file missing, a bad key or `RECONCILER_*` value, "
        "a missing file it names, the repository cannot be fetched, `site:` or `targets:` not "
        "in the tracked revision"),
    ExitCodes(
        "providers", "`providers`", "every provider loads", "a provider failed to load"),
    ExitCodes(
        "release", "`release SOLUTION VERSION`", "tag created (and pushed with `--push`)",
        "the solution is invalid, has uncommitted changes, the tag exists, git failed",
        "usage: not a semantic version, no such solution"),
    ExitCodes(
        "rollback", "`rollback INSTANCE --to V`", "committed on a new branch",
        "no such release, uncommitted changes, the result would not validate, git failed",
        "usage: no such instance, not a git repository"),
    ExitCodes(
        "approve", "`approve INSTANCE --wave W [--release R]`",
        "approval tag created at HEAD (and pushed with `--push`)",
        "the approval exists, signing failed, the push failed, git failed",
        "usage: no such instance (with a did-you-mean), an instance without `spec.rollout`, "
        "no such wave, no `--release` for an instance that pins no version, a release that "
        "cannot be part of a tag name, no git identity, not a git repository"),
    ExitCodes(
        "rollout status", "`rollout status INSTANCE --repo URL\\|PATH`",
        "every target of the instance runs its release and is Ready",
        "the repository or its status branches cannot be read, no such instance",
        "the rollout is under way, waiting (pause, approval, window, hold) or halted; or "
        "usage errors"),
    ExitCodes(
        "history", "`history [--solution S \\| --target T]`", "listed",
        "no status branches in the clone, `--target` names a target with no status on them "
        "(with a did-you-mean)",
        "usage: not a git repository"),
    ExitCodes(
        "", "`reconciler` itself", "`--help`, `--version`",
        "unknown command (`reconciler plna`), unknown global option",
        "no command at all (the help is printed)"),
)
