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
from pathlib import Path

import duckdb
import pytest
from typer.testing import Result

from controller.paths import REPO_ROOT
from controller.store import db as store
from schemas import RunResult
from tests.conftest import Bench, Cli, MakeResult, write_fake_model

EVIL_HOST = "evil\x1b[2J\x1b]0;PWNED\x07"
SHOWN_HOST = "evil\\x1b[2J\\x1b]0;PWNED\\x07"
RAW_CONTROLS = ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e")


def assert_no_raw_controls(text: str) -> None:
    for c in RAW_CONTROLS:
        assert c not in text, f"raw {c!r} printed:\n{text!r}"


def one_error(result: Result, *needles: str) -> str:
    """Exit 2, one `error: ... (hint: ...)` line on stderr and nothing else, no internal error."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], result.stderr
    assert "internal error" not in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in: {lines[0]}"
    return lines[0]


def bench_ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """bench-ctl as a user runs it (a process of its own: what may hang hangs there, not here)."""
    cmd = [sys.executable, "-m", "controller.cli", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def ingest(cli: Cli, tmp_path: Path, *results: RunResult) -> None:
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
    cli: Cli, make_result: MakeResult, tmp_path: Path
) -> None:
    ingest(cli, tmp_path, make_result(host=EVIL_HOST), make_result(host="testhost"))
    for args in (["--across-hosts"], ["--host", EVIL_HOST], ["--hosts", f"testhost,{EVIL_HOST}"]):
        done = cli("compare", "--model", "fake", *args)
        assert done.exit_code == 0, done.output
        assert_no_raw_controls(done.stdout + done.stderr)
        assert SHOWN_HOST in done.stdout.replace("\n", "").replace(" ", ""), done.stdout


def test_ingested_host_with_escape_sequences_in_query(
    cli: Cli, make_result: MakeResult, tmp_path: Path
) -> None:
    ingest(cli, tmp_path, make_result(host=EVIL_HOST))
    done = cli("query", "SELECT DISTINCT host FROM runs")
    assert done.exit_code == 0 and SHOWN_HOST in done.stdout, done.output
    assert_no_raw_controls(done.stdout)
    assert json.loads(cli("query", "SELECT host FROM runs", "-f", "json").stdout) == [{"host": EVIL_HOST}]


def test_query_select_chr_27(cli: Cli, bench: Bench) -> None:
    store.ensure_store(bench.db)
    sql = "SELECT chr(27) || '[2J' AS esc, chr(7) AS bel, chr(13) AS cr, chr(155) AS csi, chr(8238) AS rlo"
    done = cli("query", sql)
    assert done.exit_code == 0, done.output
    assert_no_raw_controls(done.stdout)
    for shown in ("\\x1b[2J", "\\x07", "\\x0d", "\\x9b", "\\u202e"):
        assert shown in done.stdout, done.stdout
    assert_no_raw_controls(cli("query", sql, "-f", "json").stdout)  # JSON escapes by itself


def test_query_csv_to_a_terminal(bench: Bench) -> None:
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


def test_query_column_named_closing_markup_tag(cli: Cli, bench: Bench) -> None:
    store.ensure_store(bench.db)
    done = cli("query", """SELECT 1 AS "[/]", '[bold]x[/bold]' AS "[red]", 'a\\' AS "b\\" """)
    assert done.exit_code == 0, done.output
    for shown in ("[/]", "[red]", "[bold]x[/bold]", "a\\", "b\\"):
        assert shown in done.stdout, done.stdout


def test_models_list_with_escape_sequences_in_a_manifest(cli: Cli, bench: Bench) -> None:
    folder = write_fake_model(bench.models / "fake")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["reference"] = "tf\x1b[2J\x1b]0;PWNED\x07"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    done = cli("models", "list")
    assert done.exit_code == 0, done.output
    assert_no_raw_controls(done.stdout)
    assert "tf\\x1b[2J" in done.stdout


def test_run_summary_with_escape_sequences_in_a_result(make_result: MakeResult, tmp_path: Path) -> None:
    from rich.console import Console

    from controller.cli import render

    r = make_result(status="error", message="boom\x1b[2J\r\x08forged", framework_version="1\x1b]0;x\x07")
    ok = make_result(host=EVIL_HOST, framework_version="\u202eevil")
    screen = io.StringIO()
    console = Console(file=screen, width=200)
    render.run_summary(console, r, tmp_path)
    render.run_summary(console, ok, tmp_path)
    render.run_lines(console, [r, ok])
    assert_no_raw_controls(screen.getvalue())
    assert "boom\\x1b[2J\\x0d\\x08forged" in screen.getvalue()


def test_sweep_listing_of_a_stored_failure_with_escape_sequences(
    cli: Cli, bench: Bench, fake_model: Path, null_env: Path, tmp_path: Path
) -> None:
    """`sweep --dry-run` names why a cell failed here: the stored message, shown escaped."""
    plan = write_plan(tmp_path / "p.toml", RUNS + 'set = {fault = "raise"}\n')
    assert cli("sweep", str(plan), "--launcher", "local").exit_code == 1
    con = duckdb.connect(str(bench.db))
    try:
        con.execute("UPDATE runs SET message = ?", ["boom\x1b[2J\x1b]0;PWNED\x07"])
    finally:
        con.close()
    done = cli("sweep", str(plan), "--dry-run")
    assert done.exit_code == 0, done.output
    assert_no_raw_controls(done.stdout + done.stderr)
    assert "boom\\x1b[2J" in done.stdout, done.stdout


# --------------------------------------------------------------------------- pipes and files


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_query_into_a_closed_pipe(bench: Bench, fmt: str) -> None:
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


def test_bench_home_that_is_a_file(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    for sub in (home, home / "below"):
        for args in (["run", "-i", "null", "-m", "fake", "-b", "1"], ["models", "list"]):
            done = cli(*args, env={"BENCH_HOME": str(sub)})
            one_error(done, "BENCH_HOME", "is a file, not a folder")
    assert home.read_text() == "not a folder"


def test_plan_nested_100000_deep(cli: Cli, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_error(cli("sweep", str(plan), "--dry-run"), "nests arrays or tables too deeply")
    plan = write_plan(tmp_path / "deep-policy.toml", "policy = {a = " + "[" * 900 + "]" * 900 + "}\n" + RUNS)
    one_error(cli("sweep", str(plan), "--dry-run"), "too deeply")
    plan = write_plan(tmp_path / "array.toml", "policy = {min_time_s = [1]}\n" + RUNS)
    one_error(cli("sweep", str(plan), "--dry-run"), "policy.min_time_s", "not an array")


def test_plan_with_a_million_runs_tables(cli: Cli, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "huge.toml", RUNS * 1_000_000)
    start = time.monotonic()
    one_error(cli("sweep", str(plan), "--dry-run"), "larger than 1,024 KiB", "split it")
    plan = write_plan(tmp_path / "many.toml", RUNS * 5001)
    one_error(cli("sweep", str(plan), "--dry-run"), "more than 5,000 [[runs]] tables")
    assert time.monotonic() - start < 20


def test_fifo_as_plan_file(bench: Bench, tmp_path: Path) -> None:
    fifo = tmp_path / "plan.toml"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        done = bench_ctl("sweep", str(target), "--dry-run", timeout=30)
        assert done.returncode == 2 and "is not a regular file" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("policy = {min_time_s = nan}\n" + RUNS, "policy.min_time_s: nan is not a finite number"),
        ("policy = {max_time_s = inf}\n" + RUNS, "policy.max_time_s: inf is not a finite number"),
        (RUNS + "set = {work_us = -nan}\n", "runs.0.set.work_us: nan is not a finite number"),
        (RUNS + 'sweep = {"policy.tolerance" = [0.1, inf]}\n', "runs.0.sweep.policy.tolerance.1: inf is not"),
        (RUNS + "timeout_s = 1e308\n", "runs.0.timeout_s: Input should be less than or equal to 604800"),
        (
            "policy = {max_time_s = 1e300}\n" + RUNS,
            "policy.max_time_s='1e+300': Input should be less than or equal to 86400",
        ),
    ],
)
def test_plan_policy_min_time_s_nan(cli: Cli, fake_model: Path, tmp_path: Path, body: str, says: str) -> None:
    one_error(cli("sweep", str(write_plan(tmp_path / "p.toml", body)), "--dry-run"), says)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--scenario", "server", "--set", "server.target_qps=1e-300"], "more than 86,400 s (a day)"),
        (
            [
                "--scenario",
                "multi-stream",
                "-b",
                "8",
                "--set",
                "multi-stream.min_queries=1000000",
                "--set",
                "multi-stream.interval_ms=60000",
            ],
            "more than 86,400 s",
        ),
        (["--timeout", "1e308"], "at most 604,800"),
        (["--set", "policy.max_time_s=1e300"], "less than or equal to 86400"),
        (["--set", "policy.max_iterations=" + "9" * 40], "less than or equal to 1000000000"),
        (
            ["--launcher", "slurm", "--time-limit", "10000000000"],
            "--time-limit 10000000000: Input should be less",
        ),
    ],
)
def test_server_target_qps_1e_300_and_timeout_1e308(
    cli: Cli, bench: Bench, fake_model: Path, args: list[str], says: str
) -> None:
    one_error(cli("run", "-i", "null", "-m", "fake", "--launcher", "local", *args), says)
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_slurm_time_of_the_longest_valid_run_is_short() -> None:
    """A run that asks for every limit at once still gets a timeout of at most a week, and Slurm a
    time limit of a few digits."""
    from controller.launch.slurm import time_limit_min
    from controller.run.planning import default_timeout
    from schemas import RunSpec
    from schemas.plan import SlurmOptions

    spec = RunSpec.model_validate(
        {
            "run_id": "r",
            "image": "null",
            "model": "fake",
            "model_dir": "/m",
            "cache_dir": "/c",
            "batch_sizes": list(range(1, 4097)),
            "policy": {"max_time_s": 86_400, "warmup_min_s": 3600},
            "options": {"framework": "null"},
            "scenario": {"name": "server", "target_qps": 1 / 86.4, "min_queries": 1000},
        }
    )
    assert default_timeout(spec) == 7 * 86_400
    assert len(str(time_limit_min(default_timeout(spec), SlurmOptions()))) <= 5


# --------------------------------------------------------------------------- rerun


def test_rerun_of_an_imported_run_whose_spec_no_longer_validates(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    r = make_result()
    ingest(cli, tmp_path, r)
    spec = json.loads(r.spec.model_dump_json())
    spec["options"]["retired_option"] = 1
    con = duckdb.connect(str(bench.db))
    try:
        con.execute("UPDATE runs SET spec = ? WHERE run_id = ?", [json.dumps(spec), r.run_id])
    finally:
        con.close()
    one_error(cli("rerun", r.run_id), f"run {r.run_id}: its stored spec is not valid here", "retired_option")


@pytest.mark.parametrize("args", [[""], ["  "], ["--group", ""]])
def test_rerun_of_an_empty_run_id(cli: Cli, bench: Bench, args: list[str]) -> None:
    store.ensure_store(bench.db)
    one_error(cli("rerun", *args), "an empty")


# --------------------------------------------------------------------------- workers

# bench-ctl's worker pool on a system without Linux's death signal: the workers poll for their parent.
POLLING_POOL = """
import multiprocessing, os, signal, time
from controller import workers
workers._death_signal = lambda: False
with workers.pool(2) as pool:
    pool.submit(time.sleep, 600)
    pool.submit(time.sleep, 600)
    time.sleep(0.5)
    print(*(p.pid for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_of_report_where_workers_poll_for_their_parent() -> None:
    """(The fault suite kills `report` and `ingest` themselves; this is the fallback's case.)"""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-c", POLLING_POOL], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert proc.wait(timeout=60) == -9 and len(pids) == 2
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
    for p in alive:
        os.kill(p, 9)
    assert alive == [], "workers outlived their parent"


# --------------------------------------------------------------------------- report --out


def test_report_out_folder_with_an_earlier_index_and_a_thesis(
    cli: Cli, make_result: MakeResult, tmp_path: Path
) -> None:
    """An earlier report (written before reports listed their files) with a user's thesis.txt
    and data/ beside it: the report is replaced, the rest is kept."""
    ingest(cli, tmp_path, make_result(), make_result())
    out = tmp_path / "report"
    assert cli("report", "--out", str(out)).exit_code == 0
    (out / "bench-report.json").unlink()
    (out / "thesis.txt").write_text("three years of work")
    (out / "data").mkdir()
    (out / "data" / "raw.csv").write_text("1,2\n")
    done = cli("report", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert (out / "thesis.txt").read_text() == "three years of work"
    assert (out / "data" / "raw.csv").read_text() == "1,2\n"
    listed = set(json.loads((out / "bench-report.json").read_text())["files"])
    assert "index.html" in listed and "thesis.txt" not in listed and "data" not in listed


def test_report_out_folder_whose_manifest_names_a_users_file(
    cli: Cli, make_result: MakeResult, tmp_path: Path
) -> None:
    """A manifest is trusted only for the names a report writes: an edited one that lists the
    user's file does not get it deleted; a user's file where a figure would go is refused."""
    ingest(cli, tmp_path, make_result(), make_result())
    out = tmp_path / "report"
    assert cli("report", "--out", str(out)).exit_code == 0
    manifest = out / "bench-report.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "files": [*doc["files"], "thesis.txt", "../outside.txt"]}))
    (out / "thesis.txt").write_text("mine")
    (tmp_path / "outside.txt").write_text("mine too")
    assert cli("report", "--out", str(out)).exit_code == 0
    assert (out / "thesis.txt").read_text() == "mine" and (tmp_path / "outside.txt").exists()
    (out / "c_energy.png").write_bytes(b"my own figure")  # not drawn by this report, not listed
    one_error(cli("report", "--out", str(out)), "c_energy.png is not a file of an earlier report")
    assert (out / "c_energy.png").read_bytes() == b"my own figure"
