"""A small fleet of three projects in a real repository, and the people who sign its commits.

Keys are made for the test module: Ed25519 SSH keys for ``pat`` (platform), ``alice``
(line-ops), ``bob`` (quality), ``dave`` (line-ops) and ``eve`` (nobody); an ECDSA SSH key for
``carol`` (quality: checked by ssh-keygen, not in-process); OpenPGP keys for ``olga``
(line-ops, in the site's keyring) and ``gus`` (line-ops by fingerprint, but not in the
keyring). :class:`Repo` writes files and commits them signed as one of them (or unsigned).

Used by ``test_tenancy.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.integration.fleetkit import clean_env
from tests.integration.signkit import run

SSH = {"pat": "ed25519", "alice": "ed25519", "bob": "ed25519", "dave": "ed25519",
       "eve": "ed25519", "carol": "ecdsa"}
GPG = {"olga": "Olga <olga@example.org>", "gus": "Gus <gus@example.org>"}
IN_KEYRING = ("olga",)
MEMBERS = {"platform": ("pat",), "line-ops": ("alice", "dave", "olga", "gus"),
           "quality": ("bob", "carol")}
PATHS = {"platform": ["sites/**"], "line-ops": ["teams/line-ops/**"],
         "quality": ["teams/quality/**"]}


@dataclass(frozen=True)
class People:
    root: Path
    ssh: Mapping[str, str]  # name -> public key line
    fingerprints: Mapping[str, str]  # name -> OpenPGP fingerprint
    signer_home: Path  # GnuPG home with the private OpenPGP keys
    keyring: Path  # the site's keyring: public keys of IN_KEYRING only

    def member(self, name: str) -> dict[str, str]:
        if name in self.ssh:
            return {"name": name, "ssh": self.ssh[name]}
        return {"name": name, "openpgp": self.fingerprints[name]}

    def signing(self, who: str) -> tuple[list[str], dict[str, str]]:
        if who in GPG:
            return (["-c", "gpg.format=openpgp", "-c", f"user.signingkey={who}@example.org"],
                    {"GNUPGHOME": str(self.signer_home)})
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.root / who}"], {}


def _home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))  # gpg-agent's socket path limit
    home.chmod(0o700)
    return home


@contextlib.contextmanager
def made_people(root: Path) -> Iterator[People]:
    for name, kind in SSH.items():
        run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(root / name)])
    signer, keyring = _home(), _home()
    try:
        fingerprints = {}
        for name, uid in GPG.items():
            run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid,
                 "ed25519", "sign", "never"], env={"GNUPGHOME": str(signer)})
            listing = run(["gpg", "--batch", "--with-colons", "--fingerprint",
                           f"{name}@example.org"], env={"GNUPGHOME": str(signer)})
            fingerprints[name] = next(line.split(":")[9] for line in listing.splitlines()
                                      if line.startswith("fpr:"))
        for name in IN_KEYRING:
            exported = root / f"{name}.asc"
            exported.write_text(run(["gpg", "--batch", "--armor", "--export",
                                     f"{name}@example.org"], env={"GNUPGHOME": str(signer)}))
            run(["gpg", "--batch", "--quiet", "--import", str(exported)],
                env={"GNUPGHOME": str(keyring)})
        ssh = {name: (root / f"{name}.pub").read_text().strip() for name in SSH}
        yield People(root, ssh, fingerprints, signer, keyring)
    finally:
        for home in (signer, keyring):
            subprocess.run(["gpgconf", "--kill", "gpg-agent"],
                           env=clean_env({"GNUPGHOME": str(home)}), check=False,
                           capture_output=True, timeout=30)
            shutil.rmtree(home, ignore_errors=True)


def project(people: People, name: str, members: Sequence[str] | None = None,
            roles: Mapping[str, object] | None = None) -> str:
    spec: dict[str, object] = {"paths": PATHS[name],
                               "members": [people.member(m) for m in
                                           (MEMBERS[name] if members is None else members)]}
    if roles:
        spec["roles"] = dict(roles)
    if name == "platform":
        spec["platform"] = True
    else:
        spec["sites"] = ["eu"]
        spec["providers"] = ["file"]
    return yaml.safe_dump({"apiVersion": "reconciler/v1", "kind": "Project",
                           "metadata": {"name": name}, "spec": spec}, sort_keys=False)


SETTINGS = """\
apiVersion: reconciler/v1
kind: Settings
metadata: {name: fleet}
spec:
  hierarchy: [region, line]
"""
SITES = """\
apiVersion: reconciler/v1
kind: Site
metadata: {name: eu}
spec: {}
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: l1}
spec: {parent: eu}
---
apiVersion: reconciler/v1
kind: Target
metadata: {name: t1}
spec:
  site: l1
  bindings:
    - {role: config-file, provider: file, config: {root: /srv/t1}}
"""


def team_files(team: str, version: str = "1") -> dict[str, str]:
    return {
        f"teams/{team}/solution.yaml": f"""\
apiVersion: reconciler/v1
kind: Solution
metadata: {{name: {team}-app}}
spec:
  components:
    - name: conf
      type: config-file
      properties: {{path: {team}.conf, content: "version {version}"}}
""",
        f"teams/{team}/instance.yaml": f"""\
apiVersion: reconciler/v1
kind: Instance
metadata: {{name: {team}-app}}
spec:
  solution: {team}-app
  targets: {{names: [t1]}}
""",
    }


def fleet_files(people: People) -> dict[str, str]:
    return {"reconciler.yaml": SETTINGS, "sites/eu.yaml": SITES,
            **{f"projects/{name}.yaml": project(people, name) for name in MEMBERS},
            **team_files("line-ops"), **team_files("quality")}


class Repo:
    """A working repository whose commits are signed by one of :class:`People`."""

    def __init__(self, path: Path, people: People) -> None:
        self.path = path
        self.people = people
        path.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "-q", "-b", "main"], path)

    def git(self, *args: str, who: str | None = None) -> str:
        options, env = self.people.signing(who) if who else ([], {})
        return run(["git", *options, *args], self.path, env)

    def commit(self, who: str | None, files: Mapping[str, str | None] | None = None,
               message: str = "change") -> str:
        """Write ``files`` (None deletes), commit everything signed by ``who`` (None:
        unsigned), and return the commit."""
        for rel, text in (files or {}).items():
            path = self.path / rel
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-S" if who else "--no-gpg-sign",
                 "-m", message, who=who)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()
