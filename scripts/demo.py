"""`make demo`: a site daemon for the demo line of example-repo/, on this machine.

The first run creates demo-state/remote.git (a bare "remote" holding example-repo/),
demo-state/work (a clone to edit, with a repository-local git identity when git has none),
a daemon config for the demo site (lab/lab-hq/demo: file and script targets, no cluster),
starts `reconciler run` in the background, waits for its first run and prints the status
table, the status commit and the files the daemon wrote. A later run keeps demo-state/ as
it is, the user's commits and edited config included, and restarts the daemon on it.
`make demo-stop` (--stop) stops the daemon; `make demo-reset` (--reset) stops it and deletes
demo-state/, so the next run starts afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-state"
REMOTE = DEMO / "remote.git"
WORK = DEMO / "work"
STATE = DEMO / "site"
CONFIG = DEMO / "config.yaml"
PIDFILE = DEMO / "daemon.pid"
LOG = DEMO / "daemon.log"
SITE = "lab/lab-hq/demo"
BRANCH = "reconciler-status/lab_lab-hq_demo"
INTERVAL = 15
RECONCILER = str(Path(sys.executable).parent / "reconciler")
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "Demo"),
           "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "demo@localhost"),
           "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "Demo"),
           "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "demo@localhost")}


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, text=True,
                          capture_output=True).stdout.strip()


def stop() -> bool:
    try:
        pid = int(PIDFILE.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        PIDFILE.unlink(missing_ok=True)
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    PIDFILE.unlink(missing_ok=True)
    print(f"stopped the demo daemon (pid {pid})")
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_identity() -> None:
    """A repository-local git identity in the work clone, where git has none.

    The walkthrough commits there; on a machine where git knows no user that commit would
    fail. An identity the user has configured is left to apply."""
    for key, value in (("user.name", "Demo User"), ("user.email", "demo@localhost")):
        known = subprocess.run(["git", "config", key], cwd=WORK, capture_output=True, text=True)
        if known.returncode != 0 or not known.stdout.strip():
            git("config", "--local", key, value, cwd=WORK)


def prepare() -> int:
    """A new demo-state/: remote, work clone and config (written last: it marks completion)."""
    DEMO.mkdir()
    try:
        git("init", "--quiet", "--bare", "--initial-branch=main", str(REMOTE))
        git("clone", "--quiet", str(REMOTE), str(WORK))
        set_identity()
        shutil.copytree(ROOT / "example-repo", WORK, dirs_exist_ok=True, symlinks=True)
        git("checkout", "--quiet", "-b", "main", cwd=WORK)
        git("add", "-A", cwd=WORK)
        git("commit", "--quiet", "-m", "The example fleet", cwd=WORK)
        git("push", "--quiet", "--set-upstream", "origin", "main", cwd=WORK)
        port = free_port()
        CONFIG.write_text(f"""\
# Site daemon for the demo line (written by the first `make demo`; later runs keep it).
repo:
  url: {REMOTE}
  ref: main
site: {SITE}
stateDir: {STATE}
interval: {INTERVAL}
jitter: 0
retries: {{count: 2, delay: 1}}
healthTimeout: 30
status: {{layout: per-site, push: true}}
policy:
  fileRoots: [files]       # relative to stateDir: {STATE}/files
  allowScripts: true
listen: {{address: 127.0.0.1, port: {port}}}
log: {{format: json, level: info}}
""")
    except BaseException:
        # nothing of the user's is in a half-made demo-state/ yet: leave none behind
        shutil.rmtree(DEMO, ignore_errors=True)
        raise
    return port


def reuse() -> int | None:
    """The port of the kept demo-state/'s config, or None (said why) when it cannot serve."""
    if not (CONFIG.is_file() and REMOTE.is_dir() and (WORK / ".git").is_dir()):
        print(f"{DEMO.relative_to(ROOT)}/ is incomplete (an earlier `make demo` did not "
              "finish); `make demo-reset` deletes it so that `make demo` starts afresh",
              file=sys.stderr)
        return None
    set_identity()
    try:
        listen = yaml.safe_load(CONFIG.read_text()).get("listen") or {}
        port = int(listen.get("port", 9420))
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        print(f"cannot read {CONFIG.relative_to(ROOT)}: {exc}; fix it, or `make demo-reset` "
              "to start afresh", file=sys.stderr)
        return None
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            print(f"port {port} of {CONFIG.relative_to(ROOT)} is in use: change listen.port "
                  "there, or `make demo-reset` to start afresh", file=sys.stderr)
            return None
    return port


def run_finished() -> bool:
    """The daemon logged the end of a run (its log starts empty at each start)."""
    try:
        lines = LOG.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        try:
            if json.loads(line).get("event") == "run_finished":
                return True
        except (ValueError, AttributeError):
            continue
    return False


def reset() -> int:
    stop()
    if DEMO.exists():
        shutil.rmtree(DEMO)
        print(f"deleted {DEMO.relative_to(ROOT)}/: the next `make demo` starts afresh")
    else:
        print(f"no {DEMO.relative_to(ROOT)}/ to delete")
    return 0


def walkthrough() -> str:
    """The commands to try a change, written for a shell in demo-state/work (the README
    shows the same lines)."""
    def here(path: Path | str) -> str:
        return os.path.relpath(path, WORK)

    return f"""\
  cd {WORK.relative_to(ROOT)}
  sed -i 's/sampleRate: 2/sampleRate: 7/' targets/demo.yaml
  git commit -qam 'demo-gateway samples every 7 s' && git push -q
  sleep 5; grep sample_rate {here(STATE / "files/demo-gateway/telemetry/agent.conf")}
  {here(RECONCILER)} status --repo {here(REMOTE)} --site {SITE}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="stop the demo daemon")
    parser.add_argument("--reset", action="store_true",
                        help="stop the demo daemon and delete demo-state/")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.reset:
        return reset()
    if args.stop:
        if not stop():
            print("no demo daemon is running")
        return 0
    stop()
    if DEMO.exists():
        kept = reuse()
        if kept is None:
            return 1
        port = kept
        print(f"keeping {DEMO.relative_to(ROOT)}/ from an earlier `make demo`, with your commits "
              f"in {WORK.relative_to(ROOT)} (`make demo-reset` starts afresh)")
    else:
        port = prepare()
    print(f"fleet repository: {REMOTE} (edit it through the clone {WORK})")
    with LOG.open("wb") as log:
        proc = subprocess.Popen([RECONCILER, "run", "--config", str(CONFIG)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=DEMO)
    PIDFILE.write_text(str(proc.pid))
    print(f"started the site daemon for {SITE} (pid {proc.pid}, log {LOG}, "
          f"metrics http://127.0.0.1:{port}/metrics)")
    # The first run's end, not a status commit: a kept state already has one, and a run that
    # changes nothing publishes no new one.
    deadline = time.monotonic() + args.timeout
    while not run_finished():
        if proc.poll() is not None:
            print(LOG.read_text()[-3000:], file=sys.stderr)
            print(f"the daemon exited with {proc.returncode}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"no run finished after {args.timeout:.0f}s; see {LOG}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    out = subprocess.run(["git", "ls-remote", str(REMOTE), f"refs/heads/{BRANCH}"],
                         capture_output=True, text=True).stdout.split()
    if not out:
        print(f"the daemon's first run pushed no status; see {LOG}", file=sys.stderr)
        return 1
    commit = out[0]
    print()
    table = subprocess.run([RECONCILER, "status", "--repo", str(REMOTE), "--site", SITE],
                           text=True, capture_output=True)
    print(table.stdout.rstrip())
    print()
    print(f"status commit {commit[:12]} on {BRANCH}:")
    print("  " + git("--git-dir", str(REMOTE), "log", "-1", "--format=%h %s (%ci)", commit))
    print()
    print(f"files the daemon wrote under {STATE / 'files'}:")
    for path in sorted((STATE / "files").rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(STATE / 'files')}")
    telemetry = STATE / "work" / "demo-gateway" / "service" / "telemetry.env"
    if telemetry.exists():
        print(f"script output {telemetry.relative_to(DEMO)}:")
        print("  " + telemetry.read_text().strip().replace("\n", "\n  "))
    print(f"""
Try a change: edit a parameter in the fleet repository and push it; the daemon watches this
local repository, applies the change at once and pushes a new status commit:

{walkthrough()}

Stop the daemon with: make demo-stop (make demo runs it again on this state; make demo-reset
deletes demo-state/ to start afresh)""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
