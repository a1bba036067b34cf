"""`make demo`: a site daemon for the demo line of example-repo/, on this machine.

Creates demo-state/remote.git (a bare "remote" holding example-repo/), demo-state/work (a
clone to edit), a daemon config for the demo site (lab/lab-hq/demo: file and script targets,
no cluster), starts `reconciler run` in the background, waits for its first status commit
and prints the status table, the status commit and the files the daemon wrote.
`make demo-stop` (this script with --stop) stops the daemon.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def prepare() -> int:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    git("init", "--quiet", "--bare", "--initial-branch=main", str(REMOTE))
    git("clone", "--quiet", str(REMOTE), str(WORK))
    shutil.copytree(ROOT / "example-repo", WORK, dirs_exist_ok=True, symlinks=True)
    git("checkout", "--quiet", "-b", "main", cwd=WORK)
    git("add", "-A", cwd=WORK)
    git("commit", "--quiet", "-m", "The example fleet", cwd=WORK)
    git("push", "--quiet", "origin", "main", cwd=WORK)
    port = free_port()
    CONFIG.write_text(f"""\
# Site daemon for the demo line (written by `make demo`).
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
    return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop the demo daemon")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.stop:
        if not stop():
            print("no demo daemon is running")
        return 0
    stop()
    port = prepare()
    print(f"fleet repository: {REMOTE} (edit it through the clone {WORK})")
    with LOG.open("wb") as log:
        proc = subprocess.Popen([RECONCILER, "run", "--config", str(CONFIG)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=DEMO)
    PIDFILE.write_text(str(proc.pid))
    print(f"started the site daemon for {SITE} (pid {proc.pid}, log {LOG}, "
          f"metrics http://127.0.0.1:{port}/metrics)")
    deadline = time.monotonic() + args.timeout
    commit = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(LOG.read_text()[-3000:], file=sys.stderr)
            print(f"the daemon exited with {proc.returncode}", file=sys.stderr)
            return 1
        out = subprocess.run(["git", "ls-remote", str(REMOTE), f"refs/heads/{BRANCH}"],
                             capture_output=True, text=True).stdout.split()
        if out:
            commit = out[0]
            break
        time.sleep(0.5)
    if not commit:
        print(f"no status commit after {args.timeout:.0f}s; see {LOG}", file=sys.stderr)
        return 1
    print()
    table = subprocess.run([RECONCILER, "status", "--repo", str(REMOTE)], text=True,
                           capture_output=True)
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
Try a change: edit a parameter in the fleet repository and push it; within {INTERVAL} s the
daemon applies it and pushes a new status commit:

  cd {WORK.relative_to(ROOT)}
  sed -i 's/sampleRate: 2/sampleRate: 7/' targets/demo.yaml
  git commit -qam 'demo-gateway samples every 7 s' && git push -q
  sleep {INTERVAL}; cat {(STATE / 'files/demo-gateway/telemetry/agent.conf').relative_to(ROOT)}

Stop the daemon with: make demo-stop""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
