"""Results leave the machine: `bench-ctl export` writes the store's tables as Parquet (or CSV), and
`bench-ctl import` brings a Parquet export into another store, idempotent on run_id, so results of
many hosts meet in one DuckDB.

An export is a folder: `runs.parquet`, `measurements.parquet` (the store's two tables, every
column) and `export.json` (what it is: format, store version, row counts, the condition used)."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, ValidationError

from controller.errors import BenchError
from controller.store import db as store
from controller.store import file as storefile
from schemas import PHASES, Measurement, RunResult
from schemas.atomic import write_folder_atomic

FORMAT: Literal["inference-bench-export"] = "inference-bench-export"
TABLES = ("runs", "measurements")
Format = Literal["parquet", "csv"]
IMPORT_HINT = "import reads folders written by `bench-ctl export --format parquet`"
MANIFEST_MAX_BYTES = 2**20


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
    con = storefile.open_duckdb()  # reads the store and writes files: our own SQL only
    try:
        try:
            con.execute(f"ATTACH {_sql_path(db)} AS src (READ_ONLY)")
        except duckdb.Error as e:
            raise storefile.open_error(db, e, write=False) from None
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
    raise BenchError(f"{source} is not a result export", IMPORT_HINT)


def _regular(path: Path, limit: int | None = None) -> bool:
    """Whether `path` is a regular file (of at most `limit` bytes); a FIFO or device is refused,
    never opened (reading one would block or never end)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise BenchError(f"cannot read {path}: {e.strerror or e}", IMPORT_HINT) from None
    if not stat.S_ISREG(st.st_mode):
        raise BenchError(f"{path} is not a regular file", IMPORT_HINT)
    if limit is not None and st.st_size > limit:
        raise BenchError(f"{path} is {st.st_size} bytes: not a result export's manifest", IMPORT_HINT)
    return True


def read_manifest(folder: Path) -> ExportManifest:
    path = folder / "export.json"
    if not _regular(path, MANIFEST_MAX_BYTES):
        raise BenchError(f"{folder} is not a result export (no export.json)", IMPORT_HINT)
    try:
        manifest = ExportManifest.model_validate_json(path.read_bytes())
    except (ValidationError, OSError):
        raise BenchError(f"{path} is not a result export's manifest", IMPORT_HINT) from None
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
    replaced by the imported copy (importing twice changes nothing).

    Every run is rebuilt into the result its rows were made from and validated as `ingest`
    validates a result file, and the rows stored are the ones `ingest` would store for it. The
    whole export is checked, against its manifest's counts too, before the store is opened: a
    refused export changes nothing and creates no store."""
    folder = _export_folder(source)
    manifest = read_manifest(folder)
    files = {t: folder / f"{t}.parquet" for t in TABLES}
    for f in files.values():
        if not _regular(f):
            raise BenchError(f"{folder} lacks {f.name}", "export it again: bench-ctl export --out DIR")
    storefile.check_file(db)  # a --db that is not a store is refused before the export is read
    with _export_reader(files) as rd:
        runs, measurements = _check_export(rd, folder, manifest)
        with (
            store.connect(db) as con,
            store.transaction(con, f"cannot import {folder}", "the store is unchanged; check the export"),
        ):
            replaced = 0
            for chunk in _stored_rows(rd, folder):
                ids = [r.run_id for r in chunk]
                replaced += _count(con, "SELECT count(*) FROM runs WHERE list_contains(?, run_id)", ids)
                store.replace_rows(con, chunk)
                stored = _count(con, "SELECT count(*) FROM measurements WHERE list_contains(?, run_id)", ids)
                if stored != sum(len(r.measurements) for r in chunk):
                    raise BenchError(
                        f"cannot import {folder}: measurements were lost on the way in",
                        "the store is unchanged; report this with the export",
                        exit_code=1,
                    )
    return ImportReport(source=str(folder), runs=runs, measurements=measurements, replaced=replaced)


def _count(con: duckdb.DuckDBPyConnection, sql: str, ids: list[str]) -> int:
    return int(con.execute(sql, [ids]).fetchall()[0][0])  # fetchall: no result left open


@contextmanager
def _export_reader(files: dict[str, Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A private in-memory connection that reads the export's Parquet files (as views `x_runs`
    and `x_measurements`); it spills to a temporary folder of its own, not the current one."""
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        con = storefile.open_duckdb(config={"temp_directory": tmp})
        try:
            for t, f in files.items():
                try:
                    con.execute(f"CREATE VIEW x_{t} AS SELECT * FROM read_parquet({_sql_path(f)})")
                    con.execute(f"DESCRIBE x_{t}").fetchall()
                except duckdb.Error as e:
                    raise BenchError(
                        f"{f} is not a readable Parquet file ({storefile.first_line(e)})", IMPORT_HINT
                    ) from None
            yield con
        finally:
            con.close()


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [str(r[0]) for r in con.execute(f"DESCRIBE {relation}").fetchall()]


def _check_export(rd: duckdb.DuckDBPyConnection, folder: Path, manifest: ExportManifest) -> tuple[int, int]:
    """Check the whole export: its columns, every run rebuilt and validated, no measurement
    without its run, and the counts its manifest gives; (runs, measurements) read."""
    known = store.table_columns()
    for t in TABLES:
        given = _columns(rd, f"x_{t}")
        unknown = [c for c in given if c not in known[t]]
        if unknown or "run_id" not in given:
            raise BenchError(
                f"{folder / f'{t}.parquet'} is not a result export: "
                + (f"unknown columns {', '.join(unknown[:5])}" if unknown else "no run_id column"),
                IMPORT_HINT,
            )
    twice = rd.execute("SELECT run_id FROM x_runs GROUP BY run_id HAVING count(*) > 1 LIMIT 1").fetchone()
    if twice:
        raise BenchError(f"{folder}: run {twice[0]!r} appears twice in runs.parquet", IMPORT_HINT)
    orphans = rd.execute(
        "SELECT count(*) FROM x_measurements m WHERE NOT EXISTS "
        "(SELECT 1 FROM x_runs r WHERE r.run_id = m.run_id)"
    ).fetchone()
    if orphans and orphans[0]:
        raise BenchError(f"{folder}: {orphans[0]} measurement(s) belong to no run of the export", IMPORT_HINT)
    runs = measurements = 0
    for chunk in _stored_rows(rd, folder):
        runs += len(chunk)
        measurements += sum(len(r.measurements) for r in chunk)
    if (runs, measurements) != (manifest.runs, manifest.measurements):
        raise BenchError(
            f"{folder}: export.json promises {manifest.runs} runs and {manifest.measurements} "
            f"measurements, the files hold {runs} and {measurements}",
            "the export is incomplete or was changed: export it again (bench-ctl export --out DIR)",
        )
    return runs, measurements


CHUNK_RUNS = 200


def _stored_rows(rd: duckdb.DuckDBPyConnection, folder: Path) -> Iterator[list[store.Rows]]:
    """The export's runs, CHUNK_RUNS at a time, each rebuilt into its result, validated, and
    turned into the rows `ingest` stores for it."""
    cur = rd.cursor()
    try:
        cur.execute("SELECT * FROM x_runs ORDER BY run_id")
        cols = [d[0] for d in cur.description or []]
        while batch := cur.fetchmany(CHUNK_RUNS):
            runs = [dict(zip(cols, r, strict=True)) for r in batch]
            rel = rd.execute(
                "SELECT * FROM x_measurements WHERE run_id BETWEEN ? AND ? ORDER BY run_id, batch_size",
                [runs[0]["run_id"], runs[-1]["run_id"]],
            )
            mcols = [d[0] for d in rel.description or []]
            by_run: dict[str, list[dict[str, Any]]] = {}
            for m in rel.fetchall():
                row = dict(zip(mcols, m, strict=True))
                by_run.setdefault(row["run_id"], []).append(row)
            yield [_rows_of(run, by_run.get(run["run_id"], []), folder) for run in runs]
    finally:
        cur.close()


def _rows_of(run: dict[str, Any], measurements: list[dict[str, Any]], folder: Path) -> store.Rows:
    try:
        result = result_of(run, measurements)
    except (ValidationError, ValueError) as e:
        raise BenchError(
            f"{folder}: run {run['run_id']!r} is not a valid result: {_why(e)}", IMPORT_HINT
        ) from None
    path = run.get("result_path")
    return store.rows_of(result, Path(path) if path else None)


def _why(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        return f"{where}: {first['msg']} ({e.error_count()} error(s))"
    return storefile.first_line(e)


def result_of(run: dict[str, Any], measurements: list[dict[str, Any]]) -> RunResult:
    """The result a run's stored rows were made from, as far as the rows keep it: the inverse of
    `store.run_row` and `store.measurement_row` (tests/test_transfer.py holds them in step),
    validated by the same model as a result file."""
    if run.get("spec") is None:
        raise ValueError("stored without its spec (by a store older than version 11): ingest its result.json")
    g = run.get
    phases = [
        {
            "name": name,
            "seconds": g(f"{name}_s"),
            "cache_hit": g("compile_cache_hit") if name == "compile" else None,
        }
        for name in PHASES
        if g(f"{name}_s") is not None
    ]
    accuracy = None
    if g("accuracy_reference") is not None:
        # The sample count is not a column: any valid one rebuilds the same rows.
        accuracy = {
            "reference": g("accuracy_reference"),
            "samples": 1,
            **{k: g(k) for k in ACCURACY_COLUMNS},
            "outputs": _json(g("accuracy_outputs")) or [],
            "data": _data_accuracy(run),
        }
    launch = None
    if g("launcher") is not None:
        keys = ("launcher", "host", "image_ref", "image_digest", "lock_hash", "exit_code", "job_id", "node")
        launch = {k: g(k) for k in keys}
    doc = {
        # A result's own fields, stored as they are (a NULL: the field's default).
        **{k: v for k, v in run.items() if k in RunResult.model_fields and v is not None},
        "spec": _json(g("spec")),
        "phases": phases,
        "accuracy": accuracy,
        "measurements": [_measurement_doc(m) for m in measurements],
        "fingerprint": _json(g("fingerprint")),
        "launch": launch,
    }
    return RunResult.model_validate(doc)


_MEASUREMENT_JSON = ("gpu", "members", "batch_histogram")
ACCURACY_COLUMNS = (
    "max_abs_err",
    "rel_err",
    "top1_agreement",
    "top5_agreement",
    "cosine_min",
    "worst_output",
)


def _data_accuracy(run: dict[str, Any]) -> dict[str, Any] | None:
    """The accuracy on the user's labelled data, from its `data_*` columns (None: not measured)."""
    if run.get("data_top1") is None:
        return None
    keys = ("output", "samples", "top1", "top5", "fp32_top1", "fp32_top5")
    return {k: run.get(f"data_{k}") for k in keys}


def _json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else text


def _measurement_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A measurement's fields from its row; the columns flattened from its GPU telemetry are
    left out, and made again from it when stored."""
    doc = {k: v for k, v in row.items() if k in Measurement.model_fields and v is not None}
    for k in _MEASUREMENT_JSON:
        if row.get(k) is not None:
            doc[k] = _json(row[k])
    return doc
