"""A `--db` that is not our store is refused in one line and left as it is, before DuckDB reads
it; no connection installs or loads an extension; a first write that fails leaves no half store.

Each case is one a hostile probe tried: an SQLite file as --db (DuckDB downloaded its scanner
into ~/.duckdb), another program's DuckDB file, /dev/null (a 30 s wait), a FIFO (a hang).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import Result

from controller.errors import BenchError
from controller.paths import REPO_ROOT
from controller.store import db as store
from controller.store import file as storefile
from controller.store import transfer
from tests.conftest import Bench, Cli, MakeResult


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME for this test: where DuckDB would put extensions it downloads."""
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def deadline() -> Iterator[None]:
    """A command that blocks (on a FIFO) fails the test instead of hanging it."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError("blocked for 30 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _digest(*paths: Path) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


def _one_line(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "hint:" in lines[0] and "internal error" not in lines[0], result.output
    return str(lines[0])


def _sqlite(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.execute("INSERT INTO notes VALUES ('mine')")
    con.commit()
    con.close()
    return path


def _foreign_duckdb(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE accounts (id INTEGER, owner VARCHAR)")
    con.execute("INSERT INTO accounts VALUES (1, 'someone else')")
    con.close()
    return path


@pytest.fixture
def commands(
    cli: Cli, bench: Bench, make_result: MakeResult, fake_model: Path, tmp_path: Path
) -> Callable[[str, Path], Result]:
    """Run one of the commands that open a store, with the given --db."""
    result = make_result()
    run_dir = tmp_path / "results" / result.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(result.model_dump_json())
    source = tmp_path / "source.duckdb"
    with store.connect(source) as con:
        store.ingest(con, make_result())
    export = tmp_path / "export"
    assert cli("export", "--out", export, "--db", source).exit_code == 0
    args: dict[str, list[str | Path]] = {
        "ingest": ["ingest", run_dir],
        "run": ["run", "--image", "null", "--model", "fake", "--launcher", "local", "--batch-sizes", "1"],
        "import": ["import", export],
        "query": ["query", "SELECT 1"],
        "export": ["export", "--out", tmp_path / "out"],
    }

    def invoke(command: str, db: Path) -> Result:
        return cli(*args[command], "--db", db)

    return invoke


@pytest.mark.parametrize("command", ["ingest", "run", "import", "query", "export"])
def test_an_sqlite_db_is_refused_and_nothing_is_downloaded(
    commands: Callable[[str, Path], Result], bench: Bench, user_home: Path, tmp_path: Path, command: str
) -> None:
    db = _sqlite(tmp_path / "notes.db")
    before = _digest(db)
    line = _one_line(commands(command, db))
    assert "SQLite database" in line and "not a result store" in line
    assert _digest(db) == before
    assert not (user_home / ".duckdb").exists(), "DuckDB fetched an extension"
    assert sorted(p.name for p in db.parent.glob(".notes.db*")) == []
    assert bench.run_dirs() == [], "the run measured before finding the store unusable"


@pytest.mark.parametrize("command", ["ingest", "run", "import", "query", "export"])
def test_a_duckdb_file_without_store_meta_is_left_unchanged(
    commands: Callable[[str, Path], Result], bench: Bench, tmp_path: Path, command: str
) -> None:
    db = _foreign_duckdb(tmp_path / "theirs.duckdb")
    before = (_digest(db), db.stat().st_mtime_ns)
    line = _one_line(commands(command, db))
    assert "not a result store (no store_meta table)" in line
    assert (_digest(db), db.stat().st_mtime_ns) == before
    assert not Path(f"{db}.wal").exists()


def test_a_foreign_duckdb_file_with_a_write_ahead_log_is_not_replayed(tmp_path: Path) -> None:
    """A writable connection would fold the log into the file: the check reads it read-only."""
    db = tmp_path / "crashed.duckdb"
    killed = (
        "import duckdb, os, sys; c = duckdb.connect(sys.argv[1]); c.execute('CREATE TABLE t (a INT)');"
        "c.execute('CHECKPOINT'); c.execute('INSERT INTO t VALUES (1)'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", killed, str(db)], check=True)
    wal = Path(f"{db}.wal")
    assert wal.exists()
    before = _digest(db, wal)
    with pytest.raises(BenchError, match="not a result store") as refused:
        store.ensure_store(db)
    assert refused.value.exit_code == 2
    assert _digest(db, wal) == before


@pytest.mark.parametrize("kind", ["empty", "text", "truncated-header"])
def test_files_that_are_not_duckdb_are_refused(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "results.duckdb"
    db.write_bytes({"empty": b"", "text": b"my notes\n" * 100, "truncated-header": b"\0" * 8 + b"DUC"}[kind])
    before = _digest(db)
    for attempt in (store.ensure_store, lambda p: store.read(p, "SELECT 1")):
        with pytest.raises(BenchError, match="not a result store") as refused:
            attempt(db)
        assert refused.value.exit_code == 2
    assert _digest(db) == before


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "folder"])
@pytest.mark.parametrize("command", ["query", "ingest", "run"])
def test_a_db_that_is_not_a_regular_file_is_refused_at_once(
    commands: Callable[[str, Path], Result], tmp_path: Path, deadline: None, kind: str, command: str
) -> None:
    db = Path("/dev/null") if kind == "/dev/null" else tmp_path / "store.duckdb"
    if kind == "fifo":
        _fifo(db)
    elif kind == "folder":
        db.mkdir()
    started = time.monotonic()
    line = _one_line(commands(command, db))
    assert time.monotonic() - started < 10, "the command waited before refusing"
    assert ("folder" if kind == "folder" else "not a result store") in line


def test_a_failed_first_write_leaves_no_store(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating the schema fails midway (a full disk): no file is left that the next command
    would take for an empty store, and the next command creates the store."""
    real = store.build

    def half(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        raise duckdb.IOException("IO Error: No space left on device")

    monkeypatch.setattr(store, "build", half)
    with pytest.raises(BenchError, match="No space left"):
        store.ensure_store(bench.db)
    assert sorted(p.name for p in bench.db.parent.iterdir() if "duckdb" in p.name) == []
    monkeypatch.setattr(store, "build", real)
    store.ensure_store(bench.db)
    assert store.read(bench.db, "SELECT count(*) FROM runs")[1] == [(0,)]


def test_a_store_deleted_meanwhile_is_made_anew(bench: Bench, make_result: MakeResult) -> None:
    """A process that used the store before (it remembers the file as checked) creates a whole
    store again, not a bare DuckDB file that every later command would refuse."""
    store.ensure_store(bench.db)
    bench.db.unlink()
    with store.connect(bench.db) as con:
        store.ingest(con, make_result())
    assert store.read(bench.db, "SELECT count(*) FROM runs")[1] == [(1,)]


def test_a_killed_first_write_is_cleaned_up(bench: Bench) -> None:
    """A half-built store of a killed bench-ctl is a hidden file: never taken for the store, and
    removed by the next creation once it is old."""
    folder = bench.db.parent
    old = folder / f".{bench.db.name}.0123456789ab.new"
    recent = folder / f".{bench.db.name}.ba9876543210.new"
    for leftover in (old, recent, Path(f"{old}.wal")):
        leftover.write_bytes(b"half")
    stale = time.time() - 2 * storefile.LEFTOVER_AGE_S
    os.utime(old, (stale, stale))
    os.utime(f"{old}.wal", (stale, stale))
    store.ensure_store(bench.db)
    assert not old.exists() and not Path(f"{old}.wal").exists()
    assert recent.exists()  # maybe another bench-ctl creating the store right now


def _settings(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    row = con.execute(
        "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions')"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_every_connection_refuses_extensions(
    bench: Bench, make_result: MakeResult, user_home: Path, tmp_path: Path
) -> None:
    with store.connect(bench.db) as con:
        store.ingest(con, make_result())
        assert _settings(con) == (False, False)
    with store.reader(bench.db) as con:
        assert _settings(con) == (False, False)
    with store.reader(bench.db, snapshot=True) as con:
        assert _settings(con) == (False, False)
    export = tmp_path / "export"
    transfer.export(bench.db, export, "parquet", None)
    files = {t: export / f"{t}.parquet" for t in transfer.TABLES}
    with transfer._export_reader(files) as con:
        assert _settings(con) == (False, False)
        # A function of an extension that is not loaded: DuckDB would fetch it, here it refuses.
        with pytest.raises(duckdb.Error, match="sqlite"):
            con.execute(f"SELECT * FROM sqlite_scan('{tmp_path / 'x.db'}', 'notes')")
    assert not (user_home / ".duckdb").exists()


def test_every_duckdb_connection_is_opened_by_one_helper() -> None:
    """No module opens a DuckDB connection of its own, so none can forget NO_EXTENSIONS."""
    pattern = re.compile(r"duckdb\s*\.\s*connect\s*\(")
    found = [
        str(p.relative_to(REPO_ROOT))
        for folder in ("controller", "runners", "schemas")
        for p in (REPO_ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert found == ["controller/store/file.py"], found
