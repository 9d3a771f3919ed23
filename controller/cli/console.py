"""What every bench-ctl command shares: the consoles, the `--db`/`--json` options, and turning a
BenchError into one line and an exit code."""

from __future__ import annotations

import contextlib
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
from controller.launch.choice import LauncherChoice


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed pipe ends the command as it does a `print`, in `handles_errors`: quietly, with
        the same exit code (rich would exit 1 itself)."""
        self.quiet = True
        raise BrokenPipeError


# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns.
# emoji=False: a message such as `core.cpp:100:` must not print as an emoji.
out = _Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
err = _Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else 160)

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
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
            return result
        except BrokenPipeError:  # the reader went away (`| head -1`): stop quietly, as Unix tools do
            _quiet_stdout()
            raise typer.Exit(128 + signal.SIGPIPE) from None
        except BenchError as e:
            err.print(f"[red]error:[/] {safe(str(e))}", soft_wrap=True)
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
                f"[red]error:[/] internal error: {safe(type(e).__name__)}: {safe(first)}"
                " (hint: rerun with BENCH_DEBUG=1 for the traceback, and report it)",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail on the closed pipe again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def info(msg: str) -> None:
    err.print(f"[cyan]{safe(msg)}[/]", soft_wrap=True)


def runner_line(line: str) -> None:
    """Progress of a runner or exporter: its own tagged lines. Everything else it prints
    (framework warnings, tracebacks) stays in the run's log file."""
    if line.startswith(("[runner]", "[export]")):
        err.print(f"[dim]  {safe(line)}[/]", soft_wrap=True)


def build_line(line: str) -> None:
    err.print(f"[dim]  {safe(line)}[/]", soft_wrap=True)


# Characters a terminal obeys rather than shows: C0 (ESC starts a sequence that can clear the
# screen or retitle the window, CR overwrites the line, BS erases), DEL, C1 (U+009B is CSI on some
# terminals), and the bidi overrides and isolates that reorder what follows them on screen.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL |= {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_CONTROL_BUT_LINES = {c: e for c, e in _CONTROL.items() if c not in (0x09, 0x0A)}


def printable(value: object, lines: bool = False) -> str:
    """`value` as text with every terminal control character shown escaped (ESC as `\\x1b`):
    stored text (a host name, an error message, a column name) is shown, never obeyed.
    `lines`: keep newlines and tabs (a multi-line message), escape the rest."""
    return str(value).translate(_CONTROL_BUT_LINES if lines else _CONTROL)


def safe(value: object, lines: bool = False) -> str:
    """`printable(value)` with rich markup escaped too: what every table cell, title and message
    that holds stored text goes through, so that `[/]` or `[link=...]` is shown as typed."""
    return escape(printable(value, lines))
