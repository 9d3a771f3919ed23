"""`bench-ctl export` and `bench-ctl import`: results as Parquet (or CSV), between stores and hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from controller import store
from controller.cli.console import DbOpt, JsonOpt, handles_errors, out
from controller.errors import BenchError
from controller.paths import Paths

commands = typer.Typer()


@commands.command("export")
@handles_errors
def export_command(
    out_dir: Annotated[Path, typer.Option("--out", help="new (or empty) folder to write the export into")],
    file_format: Annotated[str, typer.Option("--format", help="parquet (for import) | csv")] = "parquet",
    where: Annotated[
        str | None,
        typer.Option("--where", help="SQL condition over the results view, e.g. \"host = 'gpu-07'\""),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the store's runs and measurements (all, or those matching --where) to a folder:
    runs.parquet, measurements.parquet and export.json. `bench-ctl import` reads it into another
    store; DuckDB, pandas and Spark read the Parquet files directly."""
    if file_format not in ("parquet", "csv"):
        raise BenchError(f"unknown --format {file_format!r}", "valid: parquet, csv")
    manifest = store.export(Paths.from_env(db).db, out_dir, file_format, where)  # type: ignore[arg-type]
    if as_json:
        print(manifest.model_dump_json(indent=1))
        return
    out.print(
        f"exported {manifest.runs} runs ({manifest.measurements} measurements) to {out_dir}/ as {file_format}"
        + ("; import elsewhere with: bench-ctl import " + str(out_dir) if file_format == "parquet" else ""),
        soft_wrap=True,
    )


@commands.command("import")
@handles_errors
def import_command(
    source: Annotated[
        Path, typer.Argument(help="export folder (bench-ctl export --out DIR), or a .parquet in it")
    ],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store an export's runs in this store, in one transaction; a run already here (same run_id)
    is replaced by the imported copy, so importing twice changes nothing."""
    report = store.import_export(source, Paths.from_env(db).db)
    if as_json:
        print(json.dumps(report.model_dump(), indent=1))
        return
    again = f", {report.replaced} of them already here (replaced)" if report.replaced else ""
    out.print(f"imported {report.runs} runs ({report.measurements} measurements) from {report.source}{again}")
