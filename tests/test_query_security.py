"""`bench-ctl query` is a way into the store only: it reads, writes no file, reaches no file.

Each case is one a hostile user tried: statements hidden behind EXPLAIN, comments or CALL, file
readers, a store on a read-only mount, a mistyped --db, many readers at once.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.errors import BenchError
from controller.paths import REPO_ROOT
from controller.store import db as store
from controller.store import file as storefile
from tests.conftest import Bench, Cli, MakeResult


def _fill(db: Path, make_result: MakeResult) -> None:
    with store.connect(db) as con:
        store.ingest(con, make_result(), None)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


ESCAPES = [
    "EXPLAIN (ANALYZE) COPY (SELECT 'echo pwned' AS line) TO '{out}' (HEADER false, QUOTE '')",
    "EXPLAIN /* */ ANALYZE COPY (SELECT 1) TO '{out}'",
    "/* c */ EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
    "EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 1) TO '{out}'",
    "EXPLAIN ANALYZE SELECT * FROM read_text('/etc/hostname')",
    "CALL enable_logging(storage='file', storage_path='{out}')",
    "SELECT substr(content, 1, 5) FROM read_text('/etc/hostname')",
    "SELECT * FROM read_csv('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM '/etc/hostname'",
    "PRAGMA enable_profiling='json'",
    "SELECT * FROM read_parquet('{out}')",
    "CALL pragma_database_size()",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_query_reaches_no_file(bench: Bench, make_result: MakeResult, sql: str, tmp_path: Path) -> None:
    _fill(bench.db, make_result)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = outside / "x.sh"
    before = _digest(bench.db)
    try:
        _, rows = store.query(bench.db, sql.format(out=out))
    except BenchError as e:
        assert e.exit_code == 2
    else:  # harmless statements may answer, but never with a file's content
        assert not any("root:" in str(r) or os.uname().nodename in str(r) for r in rows), rows
    assert not list(outside.iterdir()), "a query wrote a file"
    assert _digest(bench.db) == before, "a query changed the store"


def test_select_leaves_the_store_file_untouched(bench: Bench, make_result: MakeResult) -> None:
    _fill(bench.db, make_result)
    listing = _tree(bench.db.parent)
    before = (_digest(bench.db), bench.db.stat().st_mtime_ns)
    for sql in ("SELECT count(*) FROM results", "FROM runs", "DESCRIBE results"):
        store.query(bench.db, sql)
    assert (_digest(bench.db), bench.db.stat().st_mtime_ns) == before
    assert _tree(bench.db.parent) == listing


def test_mistyped_db_creates_nothing(tmp_path: Path, cli: Cli) -> None:
    missing = tmp_path / "no" / "such" / "results.duckdb"
    result = cli("query", "SELECT 1", "--db", str(missing))
    assert result.exit_code == 2
    assert "no result database" in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "no").exists()


def _freeze(path: Path, on: bool) -> bool:
    """Make a file or folder unwritable even for root (immutable), or writable again."""
    if os.geteuid() != 0:
        path.chmod((0o555 if path.is_dir() else 0o444) if on else (0o755 if path.is_dir() else 0o644))
        return True
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return done.returncode == 0


def test_immutable_store_answers(bench: Bench, make_result: MakeResult, cli: Cli) -> None:
    """A store on a read-only mount (or immutable) can be queried, and nothing appears beside it."""
    _fill(bench.db, make_result)
    if not (_freeze(bench.db, True) and _freeze(bench.db.parent, True)):
        _freeze(bench.db, False)
        pytest.skip("cannot make a file immutable here (chattr)")
    try:
        listing = _tree(bench.db.parent)
        result = cli("query", "SELECT count(*) AS n FROM results", "-f", "csv")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.split() == ["n", "2"]
        assert _tree(bench.db.parent) == listing
    finally:
        _freeze(bench.db.parent, False)
        _freeze(bench.db, False)


def test_queries_wait_for_a_writer(bench: Bench, make_result: MakeResult) -> None:
    """A reader retries while another process holds the write lock, as writers do."""
    _fill(bench.db, make_result)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(1.5); c.close()",
            str(bench.db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    _, rows = store.query(bench.db, "SELECT count(*) FROM results")
    holder.wait()
    assert rows == [(2,)]


def test_concurrent_queries_all_answer(bench: Bench, make_result: MakeResult) -> None:
    _fill(bench.db, make_result)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "query",
                "SELECT count(*) AS n FROM results",
                "-f",
                "csv",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "BENCH_DB": str(bench.db)},
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1] for o in outs]
    assert all(o[0].split() == ["n", "2"] for o in outs)


@pytest.mark.parametrize("sql", [";", " ; ; ", "/* only a comment */"])
def test_no_statement_is_one_line(bench: Bench, make_result: MakeResult, cli: Cli, sql: str) -> None:
    _fill(bench.db, make_result)
    result = cli("query", sql)
    assert result.exit_code == 2
    assert "internal error" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_that_is_not_a_store(tmp_path: Path, cli: Cli) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database at all" * 100)
    result = cli("query", "SELECT 1", "--db", str(junk))
    assert result.exit_code != 0 and "internal error" not in result.stderr
    folder = tmp_path / "folder.duckdb"
    folder.mkdir()
    result = cli("query", "SELECT 1", "--db", str(folder))
    assert result.exit_code == 2 and "folder" in result.stderr


def test_query_row_cap(bench: Bench, make_result: MakeResult, cli: Cli) -> None:
    _fill(bench.db, make_result)
    result = cli("query", "SELECT * FROM range(5000) t(i)", "--limit", "10")
    assert result.exit_code == 0
    assert "more rows than the 10 shown" in result.stderr
    result = cli("query", "SELECT * FROM range(5000) t(i)", "-f", "csv", "--limit", "0")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 5001
    result = cli("query", "SELECT 1", "--limit", "-3")
    assert result.exit_code == 2


def test_one_statement_per_query(bench: Bench, make_result: MakeResult, cli: Cli) -> None:
    """A statement before the last would run whole (here: minutes, gigabytes) for nothing shown."""
    _fill(bench.db, make_result)
    result = cli("query", "SELECT * FROM range(2000000000) t(i) ORDER BY i DESC; SELECT 1")
    assert result.exit_code == 2 and "refused: 2 statements" in result.stderr


def test_markup_and_emoji_codes_print_verbatim(bench: Bench, make_result: MakeResult, cli: Cli) -> None:
    _fill(bench.db, make_result)
    result = cli("query", "SELECT 'core.cpp:100: [red]x[/] :x:' AS msg")
    assert result.exit_code == 0
    assert "core.cpp:100: [red]x[/] :x:" in result.stdout


# --------------------------------------------------------------------------- long queries

LONG = "SELECT sum(hash(i)) FROM range(1000000000000) t(i)"  # hours, if nothing stops it
HUGE = "SELECT * FROM range(200000000) t(i)"  # all its rows: minutes and about 15 GB


def _foreground() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a foreground command gets it


def _start_query(
    db: Path, tmp_path: Path, *args: str, command: str = "query"
) -> tuple[subprocess.Popen[str], Path]:
    """bench-ctl query in a process of its own, with its own TMPDIR (where its snapshot goes)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "BENCH_DB": str(db), "TMPDIR": str(tmp)},
        preexec_fn=_foreground,
    )
    return proc, tmp


def _wait_reading(proc: subprocess.Popen[str], tmp: Path, timeout: float = 90) -> None:
    """Until the query has its snapshot, and a moment more: its statement is running."""
    deadline = time.monotonic() + timeout
    while not any(tmp.glob("bench-query-*/results.duckdb")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the query never started reading"
        time.sleep(0.05)
    time.sleep(1.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_running_query(
    bench: Bench, make_result: MakeResult, tmp_path: Path, sig: signal.Signals
) -> None:
    _fill(bench.db, make_result)
    proc, tmp = _start_query(bench.db, tmp_path, LONG)
    try:
        _wait_reading(proc, tmp)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + sig
    assert stderr.strip() == f"interrupted ({sig.name})"
    assert took < 3, f"{took:.1f} s from {sig.name} to the end"  # within a second, plus exiting
    assert not list(tmp.iterdir()), "the snapshot was left behind"


def test_a_long_where_condition_stops_on_ctrl_c(
    bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    """A --where condition is a user's SQL as well: it reads a snapshot and Ctrl-C stops it."""
    _fill(bench.db, make_result)
    where = f"({LONG}) > 0"
    proc, tmp = _start_query(
        bench.db, tmp_path, "--out", str(tmp_path / "e"), "--where", where, command="export"
    )
    try:
        _wait_reading(proc, tmp)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130 and stderr.strip() == "interrupted (SIGINT)"
    assert not (tmp_path / "e").exists()


def test_a_long_query_keeps_no_writer_waiting(
    bench: Bench, make_result: MakeResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer waits for the store at most LOCK_WAIT_S (5 s here): a query reading for longer
    must not hold the store meanwhile."""
    _fill(bench.db, make_result)
    monkeypatch.setattr(storefile, "LOCK_WAIT_S", 5.0)
    proc, tmp = _start_query(bench.db, tmp_path, LONG)
    try:
        _wait_reading(proc, tmp)
        started = time.monotonic()
        with store.connect(bench.db) as con:
            store.ingest(con, make_result())
        waited = time.monotonic() - started
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.kill()
        proc.communicate()
    assert waited < 5, f"the writer waited {waited:.1f} s"
    assert store.read(bench.db, "SELECT count(*) FROM runs")[1] == [(2,)]


def test_timeout_stops_a_query(bench: Bench, make_result: MakeResult, cli: Cli) -> None:
    _fill(bench.db, make_result)
    started = time.monotonic()
    result = cli("query", LONG, "--timeout", "1")
    assert time.monotonic() - started < 20
    assert result.exit_code == 1, result.output
    assert "ran past --timeout 1 s" in result.stderr and "hint:" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e308"])
def test_timeout_out_of_range_is_refused(bench: Bench, make_result: MakeResult, cli: Cli, value: str) -> None:
    _fill(bench.db, make_result)
    result = cli("query", "SELECT 1", "--timeout", value)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.stderr and "must be more than 0" in result.stderr


def test_limit_is_applied_in_the_database(bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    """Fetching every row of this query takes minutes and about 15 GB: with --limit 5 the rest
    are never made."""
    _fill(bench.db, make_result)
    out = tmp_path / "out.csv"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "query", HUGE, "--limit", "5", "-f", "csv"],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, "BENCH_DB": str(bench.db)},
        )
    deadline = time.monotonic() + 60
    while (done := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail("query --limit 5 ran for more than 60 s")
        time.sleep(0.1)
    _, status, usage = done
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    assert out.read_text().split() == ["i", "0", "1", "2", "3", "4"]
    assert usage.ru_maxrss < 1024 * 1024, f"{usage.ru_maxrss / 1024:.0f} MiB"  # KiB on Linux
