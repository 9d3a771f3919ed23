"""Results leave the machine: `bench-ctl export` writes the store's tables as Parquet (or CSV), and
`bench-ctl import` brings a Parquet export into another store, idempotent on run_id, so results of
many hosts meet in one DuckDB.

An export is a folder: `runs.parquet`, `measurements.parquet` (the store's two tables, every
column) and `export.json` (what it is: format, store version, row counts, the condition used)."""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
from pydantic import BaseModel, ValidationError

from controller import store
from controller.errors import BenchError
from schemas.atomic import write_folder_atomic

FORMAT: Literal["inference-bench-export"] = "inference-bench-export"
TABLES = ("runs", "measurements")
Format = Literal["parquet", "csv"]


class ExportManifest(BaseModel):
    format: Literal["inference-bench-export"] = FORMAT
    version: Literal[1] = 1
    store_version: int
    file_format: Format
    exported_at: datetime
    exported_from: str
    where: str | None
    runs: int
    measurements: int


class ImportReport(BaseModel):
    source: str
    runs: int
    measurements: int
    replaced: int  # runs that were in the store already (replaced by the imported copy)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export(db: Path, out: Path, file_format: Format, where: str | None) -> ExportManifest:
    """Write the runs matching `where` (all runs without it) and their measurements to `out`, a new
    folder; it appears complete or not at all."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"--out {out} exists and is not an empty folder", "choose a new folder")
    ids = store.run_ids_where(db, where)  # also checks that db is a result store
    if not ids:
        raise BenchError(
            "no runs to export" + (f" match --where {where!r}" if where else f": {db} holds none"),
            'check the condition with: bench-ctl query "SELECT count(*) FROM results WHERE ..."',
        )
    parent = out.resolve().parent
    if not parent.is_dir():
        raise BenchError(f"--out {out}: {parent} does not exist", "create the parent folder first")
    manifest: ExportManifest | None = None

    def fill(tmp: Path) -> None:
        nonlocal manifest
        counts = _copy_out(db, tmp, file_format, ids)
        manifest = ExportManifest(
            store_version=store.STORE_VERSION,
            file_format=file_format,
            exported_at=datetime.now(UTC),
            exported_from=socket.gethostname(),
            where=where,
            runs=counts["runs"],
            measurements=counts["measurements"],
        )
        (tmp / "export.json").write_text(manifest.model_dump_json(indent=1) + "\n")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())

    write_folder_atomic(out, fill, replaceable=lambda p: p.is_dir() and not any(p.iterdir()))
    assert manifest is not None
    return manifest


def _copy_out(db: Path, folder: Path, file_format: Format, ids: list[str]) -> dict[str, int]:
    """COPY the two tables' rows of the given runs into files, from a private connection that
    attaches the store read-only (no user SQL runs here: the runs were chosen in the sandbox)."""
    con = duckdb.connect(":memory:")
    try:
        try:
            con.execute(f"ATTACH {_sql_path(db)} AS src (READ_ONLY)")
        except duckdb.Error as e:
            raise store.open_error(db, e, write=False) from None
        con.execute("CREATE TEMP TABLE chosen (run_id VARCHAR PRIMARY KEY)")
        con.executemany("INSERT INTO chosen VALUES (?)", [[i] for i in ids])
        options = "FORMAT parquet, COMPRESSION zstd" if file_format == "parquet" else "FORMAT csv, HEADER"
        counts = {}
        for table in TABLES:
            target = folder / f"{table}.{file_format}"
            con.execute(
                f"COPY (SELECT * FROM src.{table} WHERE run_id IN (SELECT run_id FROM chosen) "
                f"ORDER BY ALL) TO {_sql_path(target)} ({options})"
            )
            row = con.execute(f"SELECT count(*) FROM src.{table} WHERE run_id IN (SELECT run_id FROM chosen)")
            counts[table] = int(row.fetchone()[0])  # type: ignore[index]
        return counts
    finally:
        con.close()


def _export_folder(source: Path) -> Path:
    if source.is_file() and source.suffix == ".parquet":
        return source.parent
    if source.is_dir():
        return source
    if not source.exists():
        raise BenchError(
            f"no such file or folder: {source}", "give an export folder (bench-ctl export --out DIR)"
        )
    raise BenchError(
        f"{source} is not a result export",
        "import reads a folder written by `bench-ctl export --format parquet` (or a .parquet file in it)",
    )


def read_manifest(folder: Path) -> ExportManifest:
    hint = "import reads a folder written by `bench-ctl export --format parquet`"
    try:
        manifest = ExportManifest.model_validate_json((folder / "export.json").read_text())
    except FileNotFoundError:
        raise BenchError(f"{folder} is not a result export (no export.json)", hint) from None
    except (ValidationError, OSError, UnicodeDecodeError):
        raise BenchError(f"{folder}/export.json is not a result export's manifest", hint) from None
    if manifest.file_format != "parquet":
        raise BenchError(
            f"{folder} is a {manifest.file_format} export",
            "import reads Parquet: export with --format parquet",
        )
    if manifest.store_version > store.STORE_VERSION:
        raise BenchError(
            f"{folder} comes from a newer store (version {manifest.store_version} > {store.STORE_VERSION})",
            "update bench-ctl to import it",
        )
    return manifest


def import_export(source: Path, db: Path) -> ImportReport:
    """Store an export's runs and measurements in `db`, in one transaction; a run already there is
    replaced by the imported copy (importing twice changes nothing)."""
    folder = _export_folder(source)
    read_manifest(folder)
    files = {t: folder / f"{t}.parquet" for t in TABLES}
    for f in files.values():
        if not f.is_file():
            raise BenchError(f"{folder} lacks {f.name}", "export it again: bench-ctl export --out DIR")
    with store.connect(db) as con:
        columns = {t: _columns(con, t) for t in TABLES}
        given = {t: _parquet_columns(con, f) for t, f in files.items()}
        for t in TABLES:
            unknown = [c for c in given[t] if c not in columns[t]]
            if unknown or "run_id" not in given[t]:
                raise BenchError(
                    f"{files[t]} is not a result export: "
                    + (f"unknown columns {', '.join(unknown[:5])}" if unknown else "no run_id column"),
                    "import reads folders written by `bench-ctl export --format parquet`",
                )
        runs_sql = f"read_parquet({_sql_path(files['runs'])})"
        meas_sql = f"read_parquet({_sql_path(files['measurements'])})"
        con.execute("BEGIN")
        try:
            replaced = con.execute(
                f"SELECT count(*) FROM runs WHERE run_id IN (SELECT run_id FROM {runs_sql})"
            ).fetchone()
            con.execute(f"DELETE FROM measurements WHERE run_id IN (SELECT run_id FROM {runs_sql})")
            con.execute(f"DELETE FROM runs WHERE run_id IN (SELECT run_id FROM {runs_sql})")
            cols = ", ".join(given["runs"])
            con.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM {runs_sql}")
            mcols = ", ".join(given["measurements"])
            con.execute(
                f"INSERT INTO measurements ({mcols}) SELECT {mcols} FROM {meas_sql} "
                f"WHERE run_id IN (SELECT run_id FROM {runs_sql})"
            )
            n_runs = con.execute(f"SELECT count(*) FROM {runs_sql}").fetchone()
            n_meas = con.execute(f"SELECT count(*) FROM {meas_sql}").fetchone()
            store.refresh_variants(con)  # the exporting code may have had other option defaults
            con.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(duckdb.Error, RuntimeError):
                con.execute("ROLLBACK")
            if isinstance(e, duckdb.Error):
                raise BenchError(
                    f"cannot import {folder}: {store.first_line(e)}",
                    "the store is unchanged; check the export (bench-ctl export writes it)",
                    exit_code=1,
                ) from None
            raise
    return ImportReport(
        source=str(folder),
        runs=int(n_runs[0]) if n_runs else 0,
        measurements=int(n_meas[0]) if n_meas else 0,
        replaced=int(replaced[0]) if replaced else 0,
    )


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [str(r[0]) for r in con.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall()]


def _parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    try:
        rel = con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_path(path)})")
        return [str(r[0]) for r in rel.fetchall()]
    except duckdb.Error as e:
        raise BenchError(
            f"{path} is not a readable Parquet file ({store.first_line(e)})",
            "import reads folders written by `bench-ctl export --format parquet`",
        ) from None
