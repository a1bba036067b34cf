"""Benchmark of the site-side tenancy check: 1,000 new signed commits in <= 2 s.

Run from the repository root with the project's virtualenv::

    .venv/bin/python bench/bench_tenancy.py [--commits 1000] [--runs 5] [--json] [--keep DIR]

Writes a fleet repository of four projects (the platform and three teams) and then
``--commits`` new commits on top of it, made as people make them: every tenth commit is an
unsigned ``--no-ff`` merge of a two-commit branch, every fiftieth a platform change of the
hierarchy, the others a team member's change of one to three files of the team's directory.
Teams ``line-ops`` and ``quality`` sign with Ed25519 SSH keys; ``energy`` signs with an
OpenPGP key (in the site's keyring). A second history of the same shape signs with ECDSA SSH
keys instead of Ed25519 ones. The history is written unsigned with ``git fast-import`` and
then signed commit by commit with ``git commit-tree -S`` (the slow part of the set-up;
``--keep DIR`` keeps what was written).

Measured, median of ``--runs`` (after one warm-up run), wall time and CPU time (this process
and the git, gpg and ssh-keygen processes it waited for) of
``reconciler.gitops.tenancy.check_commits(repo, base, head)``; and, for the breakdown, of
``read_history`` and ``read_signers`` alone, and of ``read_signers`` with every SSH signature
left to ``ssh-keygen`` (one process each, as ``git verify-commit`` would run; median of half
the runs): what checking in-process saves. Goal: each history's check <= 2 s.
Exit status 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchkit import cpu_model  # noqa: E402

from reconciler.gitops.commit_history import read_history  # noqa: E402
from reconciler.gitops.commit_signers import read_signers  # noqa: E402
from reconciler.gitops.gitrun import Git  # noqa: E402
from reconciler.gitops.tenancy import check_commits  # noqa: E402

GOAL_SECONDS = 2.0
TEAMS = {"line-ops": "ssh", "quality": "ssh", "energy": "gpg"}
ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org",
       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def sh(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
       stdin: bytes | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env={**os.environ, **ENV, **(env or {})},
                          input=stdin, capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


class Keys:
    def __init__(self, root: Path, key_type: str) -> None:
        self.root = root
        self.ssh: dict[str, str] = {}
        for name in ("pat", "alice", "bob"):
            sh(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", name, "-f",
                str(root / name)])
            self.ssh[name] = (root / f"{name}.pub").read_text().strip()
        self.gnupg = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        self.gnupg.chmod(0o700)
        gpg = {"GNUPGHOME": str(self.gnupg)}
        sh(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key",
            "Erin <erin@example.org>", "ed25519", "sign", "never"], env=gpg)
        listing = sh(["gpg", "--batch", "--with-colons", "--fingerprint", "erin@example.org"],
                     env=gpg)
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                                if line.startswith("fpr:"))

    def signing(self, who: str) -> tuple[list[str], dict[str, str]]:
        if who == "erin":
            return (["-c", "gpg.format=openpgp", "-c", "user.signingkey=erin@example.org"],
                    {"GNUPGHOME": str(self.gnupg)})
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.root / who}"], {}

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True,
                       env={**os.environ, "GNUPGHOME": str(self.gnupg)})
        shutil.rmtree(self.gnupg, ignore_errors=True)


def declarations(keys: Keys) -> dict[str, str]:
    def member(name: str) -> str:
        if name == "erin":
            return f"    - {{name: erin, openpgp: {keys.fingerprint}}}\n"
        return f"    - {{name: {name}, ssh: \"{keys.ssh[name]}\"}}\n"

    files = {"projects/platform.yaml": "apiVersion: reconciler/v1\nkind: Project\n"
             "metadata: {name: platform}\nspec:\n  platform: true\n  paths: [sites/**]\n"
             "  members:\n" + member("pat")}
    for team, who in zip(TEAMS, ("alice", "bob", "erin"), strict=True):
        files[f"projects/{team}.yaml"] = (
            f"apiVersion: reconciler/v1\nkind: Project\nmetadata: {{name: {team}}}\nspec:\n"
            f"  paths: [teams/{team}/**]\n  members:\n" + member(who))
    return files


def signer_of(path: str) -> str:
    if path.startswith("teams/line-ops/"):
        return "alice"
    if path.startswith("teams/quality/"):
        return "bob"
    return "erin" if path.startswith("teams/energy/") else "pat"


def build(repo: Path, keys: Keys, commits: int) -> tuple[str, str]:
    """The repository and (base, head): ``commits`` new commits over a signed base."""
    sh(["git", "init", "-q", "-b", "main", str(repo)])
    files = {**declarations(keys), "sites/eu.yaml": "# the hierarchy\n",
             **{f"teams/{t}/file{i}.yaml": f"# {t} {i}\n" for t in TEAMS for i in range(20)}}
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    sh(["git", "add", "-A"], repo)
    options, env = keys.signing("pat")
    sh(["git", *options, "commit", "-q", "-S", "-m", "the fleet"], repo, env)
    base = sh(["git", "rev-parse", "HEAD"], repo)
    # the shape, written unsigned by fast-import: (mark, parents, {path: text}, signer)
    plan: list[tuple[int, list[int], dict[str, str], str | None]] = []
    teams = list(TEAMS)
    mark, head = 0, 0  # mark 0 stands for the base
    while len(plan) < commits:
        n = len(plan)
        team = teams[n % 3]
        if n % 10 == 9 and n + 3 <= commits:
            first = {f"teams/{team}/file{n % 20}.yaml": f"# change {n}\n"}
            second = {f"teams/{team}/file{(n + 1) % 20}.yaml": f"# change {n + 1}\n"}
            who = signer_of(f"teams/{team}/")
            plan.append((mark + 1, [head], first, who))
            plan.append((mark + 2, [mark + 1], second, who))
            # an unsigned merge: the side's files as the side wrote them
            plan.append((mark + 3, [head, mark + 2], {**first, **second}, None))
            mark += 3
        elif n % 50 == 49:
            mark += 1
            plan.append((mark, [head], {"sites/eu.yaml": f"# change {n}\n"}, "pat"))
        else:
            mark += 1
            paths = [f"teams/{team}/file{(n + k) % 20}.yaml" for k in range(1 + n % 3)]
            plan.append((mark, [head], {p: f"# change {n}\n" for p in paths},
                         signer_of(paths[0])))
        head = mark
    stream: list[bytes] = []
    for number, (m, parents, changes, _) in enumerate(plan):
        stream.append(f"commit refs/heads/plan\nmark :{m}\ncommitter bench "
                      f"<bench@example.org> {1_700_000_000 + number} +0000\n"
                      f"data 7\ncommit\n".encode())
        first_parent = f":{parents[0]}" if parents[0] else base
        stream.append(f"from {first_parent}\n".encode())
        for other in parents[1:]:
            stream.append(f"merge :{other}\n".encode())
        for path, text in changes.items():
            data = text.encode()
            stream.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
    sh(["git", "fast-import", "--quiet", "--export-marks=marks"], repo, stdin=b"".join(stream))
    marks = dict(line.split() for line in (repo / "marks").read_text().splitlines())
    signed: dict[int, str] = {0: base}
    for m, parents, _, who in plan:
        tree = sh(["git", "rev-parse", f"{marks[f':{m}']}^{{tree}}"], repo)
        options, env = keys.signing(who) if who else ([], {})
        parent_args = [a for p in parents for a in ("-p", signed[p])]
        signed[m] = sh(["git", *options, "commit-tree", "-S" if who else "--no-gpg-sign",
                        *parent_args, "-m", f"commit {m}", tree], repo, env)
    sh(["git", "update-ref", "refs/heads/main", signed[plan[-1][0]]], repo)
    return base, signed[plan[-1][0]]


def measure(call: Callable[[], Any], runs: int) -> dict[str, float]:
    call()  # warm-up: imports, libcrypto, the page cache
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_SELF), \
            resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        call()
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_SELF), \
            resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                        for a, b in zip(after, before, strict=True)))
    return {"wall_median": statistics.median(walls), "wall_min": min(walls),
            "cpu_median": statistics.median(cpus)}


def scenario(root: Path, key_type: str, commits: int, runs: int) -> dict[str, Any]:
    (root / f"keys-{key_type}").mkdir(parents=True, exist_ok=True)
    keys = Keys(root / f"keys-{key_type}", key_type)
    try:
        repo = root / f"repo-{key_type}"
        started = time.perf_counter()
        base, head = build(repo, keys, commits)
        setup = time.perf_counter() - started
        keyring = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        keyring.chmod(0o700)
        exported = sh(["gpg", "--batch", "--armor", "--export", "erin@example.org"],
                      env={"GNUPGHOME": str(keys.gnupg)})
        sh(["gpg", "--batch", "--quiet", "--import"], env={"GNUPGHOME": str(keyring)},
           stdin=exported.encode())
        result = check_commits(repo, base, head, gpg_keyring=keyring)
        git = Git(repo, working_copy=True)
        oids = [c.oid for c in read_history(git, base, head).commits]
        figures = {
            "commits": result.commits, "violations": len(result.violations),
            "setup_seconds": round(setup, 1),
            "check": measure(lambda: check_commits(repo, base, head, gpg_keyring=keyring),
                             runs),
            "history": measure(lambda: read_history(git, base, head), runs),
            "signers": measure(lambda: read_signers(git, oids, gpg_keyring=keyring), runs),
            "signers_ssh_keygen": measure(lambda: read_signers(
                git, oids, gpg_keyring=keyring, in_process=False), max(1, runs // 2)),
        }
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True,
                       env={**os.environ, "GNUPGHOME": str(keyring)})
        shutil.rmtree(keyring, ignore_errors=True)
        return figures
    finally:
        keys.close()


def machine() -> dict[str, Any]:
    versions = {tool: sh([tool, "--version"]).splitlines()[0] for tool in ("git", "gpg")}
    versions["ssh"] = subprocess.run(["ssh", "-V"], capture_output=True, text=True,
                                     check=False).stderr.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()], **versions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="write the repositories here and keep them")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-tenancy-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        figures = {"machine": machine(),
                   "mixed": scenario(root, "ed25519", args.commits, args.runs),
                   "ecdsa": scenario(root, "ecdsa", args.commits, args.runs)}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    ok = all(figures[k]["check"]["wall_median"] <= GOAL_SECONDS for k in ("mixed", "ecdsa"))
    figures["goal"] = {"seconds": GOAL_SECONDS, "met": ok}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        m = figures["machine"]
        print(f"machine: {m['cpus']} CPUs, {m['cpu']}, Python {m['python']}, {m['git']}, "
              f"{m['gpg']}, {m['ssh']}; load average {m['load_average']} before, "
              f"{m['load_average_after']} after")
        for name, title in (("mixed", "Ed25519 SSH + OpenPGP"), ("ecdsa", "ECDSA SSH + OpenPGP")):
            f = figures[name]
            print(f"\n{title}: {f['commits']} new commits, {f['violations']} violations "
                  f"(set-up {f['setup_seconds']} s)")
            for part in ("check", "history", "signers", "signers_ssh_keygen"):
                p = f[part]
                print(f"  {part:18} median {p['wall_median']:.3f} s wall "
                      f"(min {p['wall_min']:.3f}), {p['cpu_median']:.3f} s CPU")
        print(f"\ngoal: check_commits of each history <= {GOAL_SECONDS} s: "
              f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
