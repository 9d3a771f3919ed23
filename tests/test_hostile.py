"""Hostile input, one regression test per case, each named after it: stored text that would drive
the terminal, files that are not what they claim (a FIFO, a file as a folder, a plan nested or
repeated without end), numbers no run can mean, and pipes closed under bench-ctl. Each must end in
one clear line (or quietly), never a traceback, a hang or an internal error. `make test` runs them;
`make faults` counts them beside the fault suite."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from controller import store
from controller.paths import REPO_ROOT
from tests.conftest import write_fake_model

EVIL_HOST = "evil\x1b[2J\x1b]0;PWNED\x07"
SHOWN_HOST = "evil\\x1b[2J\\x1b]0;PWNED\\x07"
RAW_CONTROLS = ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e")


def assert_no_raw_controls(text: str) -> None:
    for c in RAW_CONTROLS:
        assert c not in text, f"raw {c!r} printed:\n{text!r}"


def one_error(result: Any, *needles: str) -> str:
    """Exit 2, one `error: ... (hint: ...)` line on stderr and nothing else, no internal error."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], result.stderr
    assert "internal error" not in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in: {lines[0]}"
    return lines[0]


def bench_ctl(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """bench-ctl as a user runs it (a process of its own: what may hang hangs there, not here)."""
    cmd = [sys.executable, "-m", "controller.cli", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def ingest(cli: Callable[..., Any], tmp_path: Path, *results: Any) -> None:
    for r in results:
        (tmp_path / "in" / r.run_id).mkdir(parents=True)
        (tmp_path / "in" / r.run_id / "result.json").write_text(r.model_dump_json())
    done = cli("ingest", str(tmp_path / "in"))
    assert done.exit_code == 0, done.output


def write_plan(path: Path, body: str) -> Path:
    path.write_text('name = "hostile"\n' + body)
    return path


RUNS = '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'


# --------------------------------------------------------------------------- stored text


def test_ingested_host_with_escape_sequences_in_compare(
    cli: Callable[..., Any], make_result: Any, tmp_path: Path
) -> None:
    ingest(cli, tmp_path, make_result(host=EVIL_HOST), make_result(host="testhost"))
    for args in (["--across-hosts"], ["--host", EVIL_HOST], ["--hosts", f"testhost,{EVIL_HOST}"]):
        done = cli("compare", "--model", "fake", *args)
        assert done.exit_code == 0, done.output
        assert_no_raw_controls(done.stdout + done.stderr)
        assert SHOWN_HOST in done.stdout.replace("\n", "").replace(" ", ""), done.stdout


def test_ingested_host_with_escape_sequences_in_query(
    cli: Callable[..., Any], make_result: Any, tmp_path: Path
) -> None:
    ingest(cli, tmp_path, make_result(host=EVIL_HOST))
    done = cli("query", "SELECT DISTINCT host FROM runs")
    assert done.exit_code == 0 and SHOWN_HOST in done.stdout, done.output
    assert_no_raw_controls(done.stdout)
    assert json.loads(cli("query", "SELECT host FROM runs", "-f", "json").stdout) == [{"host": EVIL_HOST}]


def test_query_select_chr_27(cli: Callable[..., Any], bench: Any) -> None:
    store.ensure_store(bench.db)
    sql = "SELECT chr(27) || '[2J' AS esc, chr(7) AS bel, chr(13) AS cr, chr(155) AS csi, chr(8238) AS rlo"
    done = cli("query", sql)
    assert done.exit_code == 0, done.output
    assert_no_raw_controls(done.stdout)
    for shown in ("\\x1b[2J", "\\x07", "\\x0d", "\\x9b", "\\u202e"):
        assert shown in done.stdout, done.stdout
    assert_no_raw_controls(cli("query", sql, "-f", "json").stdout)  # JSON escapes by itself


def test_query_csv_to_a_terminal(bench: Any) -> None:
    """CSV into a pipe is the stored data, byte for byte; on a terminal it is shown escaped."""
    store.ensure_store(bench.db)
    sql = "SELECT chr(27) || '[2J' AS x"
    piped = bench_ctl("query", sql, "-f", "csv")
    assert piped.returncode == 0 and piped.stdout.splitlines() == ["x", "\x1b[2J"], piped
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "controller.cli", "query", sql, "-f", "csv"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    assert b"\x1b" not in shown and b"\\x1b[2J" in shown, shown


def test_query_column_named_closing_markup_tag(cli: Callable[..., Any], bench: Any) -> None:
    store.ensure_store(bench.db)
    done = cli("query", """SELECT 1 AS "[/]", '[bold]x[/bold]' AS "[red]", 'a\\' AS "b\\" """)
    assert done.exit_code == 0, done.output
    for shown in ("[/]", "[red]", "[bold]x[/bold]", "a\\", "b\\"):
        assert shown in done.stdout, done.stdout


def test_models_list_with_escape_sequences_in_a_manifest(cli: Callable[..., Any], bench: Any) -> None:
    folder = write_fake_model(bench.models / "fake")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["reference"] = "tf\x1b[2J\x1b]0;PWNED\x07"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    done = cli("models", "list")
    assert done.exit_code == 0, done.output
    assert_no_raw_controls(done.stdout)
    assert "tf\\x1b[2J" in done.stdout


def test_run_summary_with_escape_sequences_in_a_result(make_result: Any, tmp_path: Path) -> None:
    from rich.console import Console

    from controller import render

    r = make_result(status="error", message="boom\x1b[2J\r\x08forged", framework_version="1\x1b]0;x\x07")
    ok = make_result(host=EVIL_HOST, framework_version="\u202eevil")
    screen = io.StringIO()
    console = Console(file=screen, width=200)
    render.run_summary(console, r, tmp_path)
    render.run_summary(console, ok, tmp_path)
    render.run_lines(console, [r, ok])
    assert_no_raw_controls(screen.getvalue())
    assert "boom\\x1b[2J\\x0d\\x08forged" in screen.getvalue()


# --------------------------------------------------------------------------- pipes and files


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_query_into_a_closed_pipe(bench: Any, fmt: str) -> None:
    """`bench-ctl query ... | head -1`: the reader goes away; bench-ctl stops quietly."""
    store.ensure_store(bench.db)
    rows = 10_000 if fmt == "table" else 50_000  # more than a pipe holds, in each format
    cmd = [sys.executable, "-m", "controller.cli", "query", f"SELECT * FROM range({rows})", "-f", fmt]
    cmd += ["--limit", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a tool killed by the closed pipe
    assert err == "", err


