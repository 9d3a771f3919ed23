"""`bench-ctl export` / `import`: the same rows come back, importing twice changes nothing, and
anything that is not an export is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from controller import store

FINGERPRINT_SQL = {
    "runs": "SELECT count(*), sum(hash(r)) FROM (SELECT * EXCLUDE (ingested_at) FROM runs) r",
    "measurements": "SELECT count(*), sum(hash(m)) FROM (SELECT * FROM measurements) m",
}


def fill(db: Path, make_result: Any) -> None:
    with store.connect(db) as con:
        for i in range(6):
            r = make_result(image="null" if i % 2 else "ort", repetition=i + 1, host=f"host{i % 3}")
            store.ingest(con, r, Path("/runs") / r.run_id / "result.json")
        store.ingest(con, make_result(status="error"))


def fingerprints(db: Path) -> dict[str, tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: tuple(con.execute(sql).fetchone() or ()) for t, sql in FINGERPRINT_SQL.items()}
    finally:
        con.close()


def test_export_import_gives_the_same_rows(cli: Any, bench: Any, make_result: Any, tmp_path: Path) -> None:
    fill(bench.db, make_result)
    out = tmp_path / "export"
    result = cli("export", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["runs"] == 7 and manifest["store_version"] == store.STORE_VERSION
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "measurements.parquet", "runs.parquet"]
    other = tmp_path / "other.duckdb"
    imported = cli("import", out, "--db", other)
    assert imported.exit_code == 0, imported.output
    assert fingerprints(other) == fingerprints(bench.db)
    # Idempotent on run_id: a second import replaces, adds nothing.
    again = cli("import", out / "runs.parquet", "--db", other, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["replaced"] == 7
    assert fingerprints(other) == fingerprints(bench.db)


def test_export_where_chooses_runs(cli: Any, bench: Any, make_result: Any, tmp_path: Path) -> None:
    fill(bench.db, make_result)
    result = cli("export", "--out", tmp_path / "e", "--where", "image = 'null'", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"] == 4  # three ok runs and the error run
    csv = cli("export", "--out", tmp_path / "c", "--format", "csv", "--where", "host = 'host0'")
    assert csv.exit_code == 0, csv.output
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM read_csv('{tmp_path / 'c' / 'runs.csv'}')").fetchone()
    assert rows == (2,)


def one_line_error(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "hint:" in lines[0], result.output
    return str(lines[0])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("nonsense (((", "is not a condition"),
        ("1=1; DROP TABLE runs", "is not a condition"),
        ("(SELECT count(*) FROM read_text('/etc/hostname')) > 0", "is not a condition"),
        ("image = 'nope'", "no runs to export"),
        ("", "--where is empty"),
    ],
)
def test_bad_where_writes_nothing(
    cli: Any, bench: Any, make_result: Any, tmp_path: Path, where: str, message: str
) -> None:
    fill(bench.db, make_result)
    before = bench.db.read_bytes()
    line = one_line_error(cli("export", "--out", tmp_path / "e", "--where", where))
    assert message in line
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e.*"))
    assert bench.db.read_bytes() == before


def test_export_refuses_a_used_folder_and_an_unknown_format(
    cli: Any, bench: Any, make_result: Any, tmp_path: Path
) -> None:
    fill(bench.db, make_result)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("mine")
    assert "not an empty folder" in one_line_error(cli("export", "--out", used))
    assert (used / "x").read_text() == "mine"
    assert "unknown --format" in one_line_error(cli("export", "--out", tmp_path / "f", "--format", "xlsx"))


def test_import_refuses_what_is_not_an_export(cli: Any, bench: Any, make_result: Any, tmp_path: Path) -> None:
    fill(bench.db, make_result)
    stray = tmp_path / "stray"
    stray.mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a) TO '{stray / 'runs.parquet'}' (FORMAT parquet)")
    assert "not a result export (no export.json)" in one_line_error(cli("import", stray / "runs.parquet"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a result export" in one_line_error(cli("import", text))
    assert "no such file" in one_line_error(cli("import", tmp_path / "missing"))
    # An export.json beside files that are not the store's tables.
    good = tmp_path / "good"
    assert cli("export", "--out", good).exit_code == 0
    con.execute(f"COPY (SELECT 1 AS a) TO '{good / 'runs.parquet'}' (FORMAT parquet)")
    other = tmp_path / "other.duckdb"
    assert "unknown columns a" in one_line_error(cli("import", good, "--db", other))
    csv = tmp_path / "csv"
    assert cli("export", "--out", csv, "--format", "csv").exit_code == 0
    assert "csv export" in one_line_error(cli("import", csv, "--db", other))
