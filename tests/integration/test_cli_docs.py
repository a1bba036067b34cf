"""docs/cli.md is what the command says of itself, and shell completion works as documented.

``scripts/gen_cli_docs.py --check`` fails when the page's generated parts (the exit-code table
and the reference of every command and option) differ from what the ``reconciler`` group
gives now; every command has its exit codes in ``reconciler/cli/exit_codes.py``. Completion
is click's: the installed command prints a script for bash, zsh and fish, and that script,
sourced in a real bash, completes commands, options and option values.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import click
import pytest

from reconciler.cli.exit_codes import EXIT_CODES
from reconciler.cli.main import main
from tests.integration.fleetkit import RECONCILER, REPO_ROOT, clean_env


def leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += leaf_commands(command, f"{prefix}{name} ")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_docs_cli_md_is_what_the_generator_writes() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/gen_cli_docs.py"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_command_has_its_exit_codes() -> None:
    documented = {row.command for row in EXIT_CODES}
    assert set(leaf_commands(main)) | {""} == documented


def complete(shell: str, words: str, cword: int) -> list[str]:
    env = clean_env({"_RECONCILER_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
                     "COMP_CWORD": str(cword)})
    done = subprocess.run([str(RECONCILER)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o nosort -F _reconciler_completion reconciler"),
    ("zsh", "compdef _reconciler_completion reconciler"),
    ("fish", "complete --no-files --command reconciler"),
])
def test_the_command_prints_a_completion_script(shell: str, marker: str) -> None:
    env = clean_env({"_RECONCILER_COMPLETE": f"{shell}_source"})
    done = subprocess.run([str(RECONCILER)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout


def test_completion_offers_commands_options_and_values() -> None:
    assert complete("bash", "reconciler pl", 1) == ["plain,plan"]
    assert "plain,--format" in complete("bash", "reconciler plan --for", 2)
    assert complete("bash", "reconciler plan --format ", 3) == [
        "plain,text", "plain,json", "plain,markdown"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_script_completes_in_a_real_bash() -> None:
    source = subprocess.run([str(RECONCILER)], env=clean_env(
        {"_RECONCILER_COMPLETE": "bash_source"}), capture_output=True, text=True, timeout=60)
    script = (source.stdout + "\nCOMP_WORDS=(reconciler config ch); COMP_CWORD=2\n"
              "_reconciler_completion reconciler\necho \"${COMPREPLY[@]}\"\n")
    env = clean_env({"PATH": f"{RECONCILER.parent}:{clean_env()['PATH']}"})
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "check"
