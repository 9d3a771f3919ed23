"""What every bench-ctl command shares: the consoles, the `--db`/`--json` options, and turning a
BenchError into one line and an exit code."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from controller.errors import BenchError, Terminated
from controller.launchers.base import LauncherChoice

# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns.
# emoji=False: a message such as `core.cpp:100:` must not print as an emoji.
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else 160)

DbOpt = Annotated[
    Path | None, typer.Option("--db", help="result database (default: results.duckdb, or $BENCH_DB)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON instead of a table")]
LauncherOpt = Annotated[
    str,
    typer.Option("--launcher", help=f"{' | '.join(LauncherChoice)} (auto: docker when the image is built)"),
]


def launcher_choice(text: str) -> LauncherChoice:
    try:
        return LauncherChoice(text)
    except ValueError:
        raise BenchError(f"unknown launcher {text!r}", f"valid: {', '.join(LauncherChoice)}") from None


F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Turn BenchError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BenchError as e:
            err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
            err.print(f"[red]interrupted[/] ({signal.Signals(signum).name})")
            raise typer.Exit(128 + signum) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a bug of ours: one line for the user, the traceback on demand
            if os.environ.get("BENCH_DEBUG"):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            err.print(
                f"[red]error:[/] internal error: {escape(type(e).__name__)}: {escape(first)}"
                " (hint: rerun with BENCH_DEBUG=1 for the traceback, and report it)",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def info(msg: str) -> None:
    err.print(f"[cyan]{escape(msg)}[/]", soft_wrap=True)


def runner_line(line: str) -> None:
    """Progress of a runner or exporter: its own tagged lines. Everything else it prints
    (framework warnings, tracebacks) stays in the run's log file."""
    if line.startswith(("[runner]", "[export]")):
        err.print(f"[dim]  {escape(line)}[/]", soft_wrap=True)


def build_line(line: str) -> None:
    err.print(f"[dim]  {escape(line)}[/]", soft_wrap=True)
