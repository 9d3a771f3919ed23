"""Every `bench-ctl ...` command line quoted in the README and docs/ parses with today's CLI.

Each line is parsed by the real command tree (options, types, choices, arguments) without running
anything, so a renamed flag or a removed command fails here instead of in a reader's terminal.
Table cells written as templates (`[--cpu | --gpu N]`, `A,B`, `...`) are syntax summaries, not
command lines, and are left out; code blocks and plain inline commands are all checked.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import typer.core
from typer import _click as click  # typer 0.29 vendors click

from controller.cli.app import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEMPLATE = re.compile(r"\[|\\\||\.\.\.|\bN\b|\bRUN_ID\b|\bPLAN\b|\bIMAGE\b|\bMODEL\b|\bSQL\b|\bDIR\b")


def _code_block_commands(text: str) -> Iterator[str]:
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            yield from _commands_in(line)


def _inline_commands(text: str) -> Iterator[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`(bench-ctl [^`]+)`", prose):
        if not TEMPLATE.search(span):
            yield from _commands_in(span)


def _commands_in(line: str) -> Iterator[str]:
    """The bench-ctl invocations of one shell line (`a && b`, comments, pipes)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unterminated quote: a multi-line SQL string, checked by its first line
        words = shlex.split(line + '"', comments=True)
    current: list[str] = []
    for w in [*words, "&&"]:
        if w in ("&&", "||", ";", "|"):
            if current and current[0] == "bench-ctl":
                yield shlex.join(current)
            current = []
        else:
            current.append(w)


def documented_commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text()
        for cmd in [*_code_block_commands(text), *_inline_commands(text)]:
            found.append((doc.relative_to(REPO).as_posix(), cmd))
    return sorted(set(found))


def parse(argv: list[str]) -> None:
    """Parse argv down to the leaf command, as click would before calling it; raise on bad input.

    A bare command path (`bench-ctl fleet sync` named in prose) only has to exist."""
    command: click.Command = typer.main.get_command(app)
    bare = all(re.fullmatch(r"[a-z][a-z-]*", w) for w in argv)
    ctx = command.make_context("bench-ctl", list(argv), resilient_parsing=bare)
    while isinstance(command, typer.core.TyperGroup):
        args = [*ctx._protected_args, *ctx.args]
        if not args:
            return
        name, sub, rest = command.resolve_command(ctx, args)
        if sub is None:
            raise click.exceptions.UsageError(f"no such command {name!r}")
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=bare)
        command = sub


COMMANDS = documented_commands()


def test_the_docs_quote_commands() -> None:
    assert len(COMMANDS) >= 40, COMMANDS
    assert {doc for doc, _ in COMMANDS} >= {"README.md", "docs/cli.md", "docs/scenarios.md"}


@pytest.mark.parametrize(("doc", "command"), COMMANDS)
def test_documented_command_parses(doc: str, command: str) -> None:
    try:
        parse(shlex.split(command)[1:])
    except typer.Exit:  # --help
        pass
    except click.ClickException as e:
        pytest.fail(f"{doc}: `{command}` does not parse: {e.format_message()}")


def test_a_wrong_flag_is_caught() -> None:
    with pytest.raises(click.ClickException):
        parse(["run", "--image", "ort", "--model", "resnet50", "--batch-size", "8"])
    with pytest.raises(click.ClickException):
        parse(["no-such-command"])
    with pytest.raises(click.ClickException):
        parse(["run", "--image", "ort", "--model", "resnet50", "--repeat", "five"])
