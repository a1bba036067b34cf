"""Write the generated parts of docs/cli.md from the ``reconciler`` command itself.

Walks the click group of :mod:`reconciler.cli.main`: every command and subcommand with its
usage line, its help text and each option as ``--help`` shows it (type, default, environment
variable), and the exit codes of :mod:`reconciler.cli.exit_codes`, as one table and under
each command. Only the parts between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->`` are written; the prose around them is edited by hand.

    .venv/bin/python scripts/gen_cli_docs.py          # rewrite docs/cli.md
    .venv/bin/python scripts/gen_cli_docs.py --check  # exit 1, with a diff, when it is stale

``tests/unit/test_cli_docs.py`` runs ``--check``, so the page cannot drift from the command.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.cli.exit_codes import EXIT_CODES, ExitCodes  # noqa: E402
from reconciler.cli.main import main  # noqa: E402

DOC = ROOT / "docs" / "cli.md"
PROG = "reconciler"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n).*?"
                    r"(<!-- END GENERATED: (?P=name) -->)", re.S)


def commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command,
                                                                      click.Context]]:
    """(path after ``reconciler``, command, its context) of every command, depth first."""
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        path = f"{ctx.command_path.removeprefix(PROG).strip()} {name}".strip()
        if isinstance(command, click.Group):
            yield from commands(command, sub)
        else:
            yield path, command, sub


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option):  # arguments: in the usage line
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        opts, help_text = record
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            help_text += f" [env: `{envvar}`]"
        rows.append(f"| `{_cell(opts)}` | {_cell(help_text)} |")
    if not rows:
        return []
    return ["| option | meaning |", "|---|---|", *rows, ""]


def _help(command: click.Command) -> list[str]:
    text = inspect.cleandoc(command.help or "").replace("\b\n", "")
    return [text, ""] if text else []


def _exit_codes(rows: list[ExitCodes]) -> list[str]:
    out = ["Exit codes:", ""]
    for row in rows:
        lead = f"- {row.how}: " if len(rows) > 1 else "- "
        parts = [f"**0** {row.ok}", f"**1** {row.error}", f"**2** {row.two}"]
        if row.other:
            parts.append(row.other)
        out.append(lead + "; ".join(parts))
    return [*out, ""]


def exit_code_table() -> str:
    lines = ["| command | 0 | 1 | 2 | other |", "|---|---|---|---|---|"]
    lines += [f"| {r.how} | {r.ok} | {r.error} | {r.two} | {r.other} |".replace("|  |", "| |")
              for r in EXIT_CODES]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """The command reference: the program's own options, then every command."""
    root = main.make_context(PROG, [], resilient_parsing=True)
    lines = [f"### `{PROG}`", "", f"Usage: `{main.get_usage(root).removeprefix('Usage: ')}`",
             "", *_help(main), *_options(main, root)]
    lines += _exit_codes([r for r in EXIT_CODES if r.command == ""])
    for path, command, ctx in commands(main, root):
        usage = command.get_usage(ctx).removeprefix("Usage: ")
        lines += [f"### `{PROG} {path}`", "", f"Usage: `{usage}`", "", *_help(command),
                  *_options(command, ctx)]
        rows = [r for r in EXIT_CODES if r.command == path]
        lines += _exit_codes(rows)
    return "\n".join(lines)


def generate(text: str) -> str:
    """``text`` (docs/cli.md) with its generated blocks written afresh."""
    blocks = {"exit-codes": exit_code_table(), "commands": reference()}
    seen: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in blocks:
            raise SystemExit(f"{DOC}: unknown generated block '{name}'")
        seen.add(name)
        return match[1] + blocks[name].rstrip("\n") + "\n" + match[3]

    out = _BLOCK.sub(fill, text)
    missing = set(blocks) - seen
    if missing:
        raise SystemExit(f"{DOC}: no generated block for {', '.join(sorted(missing))}")
    return out


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 with a diff when docs/cli.md is stale")
    args = parser.parse_args()
    current = DOC.read_text()
    fresh = generate(current)
    if args.check:
        if fresh != current:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), fresh.splitlines(keepends=True),
                "docs/cli.md", "docs/cli.md (generated)"))
            print("docs/cli.md is stale: run .venv/bin/python scripts/gen_cli_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main_())
