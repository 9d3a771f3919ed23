"""`bench-ctl export` / `import`: the same rows come back, importing twice changes nothing, and
anything that is not an export is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import Result

from controller.paths import REPO_ROOT
from controller.store import db as store
from controller.store import transfer
from tests.conftest import Bench, Cli, MakeResult

FINGERPRINT_SQL = {
    "runs": "SELECT count(*), sum(hash(r)) FROM (SELECT * EXCLUDE (ingested_at) FROM runs) r",
    "measurements": "SELECT count(*), sum(hash(m)) FROM (SELECT * FROM measurements) m",
}


def fill(db: Path, make_result: MakeResult) -> None:
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


def test_export_import_gives_the_same_rows(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
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


def test_export_where_chooses_runs(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    fill(bench.db, make_result)
    result = cli("export", "--out", tmp_path / "e", "--where", "image = 'null'", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"] == 4  # three ok runs and the error run
    csv = cli("export", "--out", tmp_path / "c", "--format", "csv", "--where", "host = 'host0'")
    assert csv.exit_code == 0, csv.output
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM read_csv('{tmp_path / 'c' / 'runs.csv'}')").fetchone()
    assert rows == (2,)


def one_line_error(result: Result, code: int = 2) -> str:
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
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path, where: str, message: str
) -> None:
    fill(bench.db, make_result)
    before = bench.db.read_bytes()
    line = one_line_error(cli("export", "--out", tmp_path / "e", "--where", where))
    assert message in line
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e.*"))
    assert bench.db.read_bytes() == before


def test_export_refuses_a_used_folder_and_an_unknown_format(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    fill(bench.db, make_result)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("mine")
    assert "not an empty folder" in one_line_error(cli("export", "--out", used))
    assert (used / "x").read_text() == "mine"
    assert "unknown --format" in one_line_error(cli("export", "--out", tmp_path / "f", "--format", "xlsx"))


def test_import_refuses_what_is_not_an_export(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
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


# --------------------------------------------------------------------------- hostile exports


def _export(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> Path:
    fill(bench.db, make_result)
    out = tmp_path / "export"
    assert cli("export", "--out", out).exit_code == 0
    return out


def _rewrite(export: Path, table: str, select: str) -> None:
    """Replace one table's file of an export with the rows of `select` over it ({t})."""
    path = export / f"{table}.parquet"
    new = path.with_suffix(".new")
    con = duckdb.connect()
    con.execute(f"COPY ({select.format(t=f'read_parquet({str(path)!r})')}) TO '{new}' (FORMAT parquet)")
    con.close()
    new.replace(path)


def test_import_stores_what_ingest_stores(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    """Imported runs are rebuilt into results and stored as ingest stores them: every column of
    a result with GPU telemetry, a server's batch histogram, the model's named dimensions with
    tokens/s, agreement per output and accuracy on labelled data comes back the same."""
    from schemas import Accuracy, GpuTelemetry
    from schemas.result import DataAccuracy, OutputAgreement

    gpu = GpuTelemetry(
        device_index=0, name="H100", samples=9, duration_s=1.0, peak_process_mem_mb=812.0, energy_j=3.5
    )
    r = make_result(batch_sizes=(1, 8), repetition=2, within_rel=0.01)
    outputs = [
        OutputAgreement(name="logits", max_abs_err=0.01, rel_err=0.001, top1_agreement=1.0, cosine_min=0.999),
        OutputAgreement(name="hidden", max_abs_err=0.02, rel_err=0.002, cosine_min=0.998),
    ]
    data = DataAccuracy(samples=50, output="logits", top1=0.7, top5=0.9, fp32_top1=0.72, fp32_top5=0.91)
    accuracy = Accuracy(
        reference="test-fp32", samples=8, max_abs_err=0.02, rel_err=0.002, top1_agreement=1.0,
        cosine_min=0.998, worst_output="hidden", outputs=outputs, data=data,
    )  # fmt: skip
    rich = r.model_copy(
        update={
            "threads": 4,
            "warnings": ["8 threads on 2 cores"],
            "spec": r.spec.model_copy(update={"dims": {"seq": 32, "heads": 2}, "sequence_dim": "seq"}),
            "accuracy": accuracy,
            "measurements": [
                m.model_copy(
                    update={
                        "gpu": gpu,
                        "batch_histogram": {"1": 3, "8": 1},
                        "tokens_per_s": m.throughput_sps * 32,
                    }
                )
                for m in r.measurements
            ],
        }
    )
    with store.connect(bench.db) as con:
        store.ingest(con, rich, Path("/runs") / rich.run_id / "result.json")
        store.ingest(con, make_result(status="timeout"))
    out = tmp_path / "export"
    assert cli("export", "--out", out).exit_code == 0
    other = tmp_path / "other.duckdb"
    assert cli("import", out, "--db", other).exit_code == 0
    assert fingerprints(other) == fingerprints(bench.db)
    _, rows = store.query(
        other,
        "SELECT DISTINCT dims, sequence_length, worst_output, data_top1, data_fp32_top1 FROM results "
        "WHERE tokens_per_s = throughput_sps * 32",
    )
    assert rows == [({"heads": 2, "seq": 32}, 32, "hidden", 0.7, 0.72)]


ERROR_RUN = "CASE WHEN status = 'error' THEN {new} ELSE {old} END"
FORGED = [
    ("measurements", "SELECT * REPLACE ('nan'::DOUBLE AS throughput_sps) FROM {t}", "throughput_sps"),
    ("measurements", "SELECT * REPLACE ('inf'::DOUBLE AS latency_max_ms) FROM {t}", "latency_max_ms"),
    (
        "measurements",
        "SELECT * REPLACE (list_transform(latencies_ms, lambda x: 'nan'::DOUBLE) AS latencies_ms) FROM {t}",
        "latencies_ms",
    ),
    ("measurements", "SELECT * REPLACE (batch_size + 1000 AS batch_size) FROM {t}", "batch sizes"),
    ("measurements", "SELECT * REPLACE (0 AS iterations) FROM {t}", "iterations"),
    ("runs", "SELECT * REPLACE ('-inf'::DOUBLE AS peak_host_mem_mb) FROM {t}", "peak_host_mem_mb"),
    ("runs", "SELECT * REPLACE ('nan'::DOUBLE AS compile_s) FROM {t}", "phases"),
    ("runs", "SELECT * REPLACE ('pwned' AS status) FROM {t}", "status"),
    (
        "runs",
        "SELECT * REPLACE ("
        + ERROR_RUN.format(new="'../../x'", old="run_id")
        + " AS run_id, "
        + ERROR_RUN.format(new='json_merge_patch(spec, \'{{"run_id": "../../x"}}\')', old="spec")
        + " AS spec) FROM {t}",
        "run_id",
    ),
    (
        "runs",
        "SELECT * REPLACE (json_merge_patch(spec, '{{\"batch_sizes\": [0]}}') AS spec) FROM {t}",
        "batch",
    ),
    ("runs", "SELECT * REPLACE (NULL AS spec) FROM {t}", "without its spec"),
    ("runs", "SELECT * FROM {t} WHERE status = 'ok'", "export.json promises 7 runs"),
    ("runs", "SELECT * FROM {t} UNION ALL SELECT * FROM {t} WHERE status = 'error'", "appears twice"),
    ("runs", "SELECT * FROM {t} WHERE run_id <> (SELECT min(run_id) FROM {t})", "belong to no run"),
]


@pytest.mark.parametrize(("table", "select", "needle"), FORGED)
def test_import_refuses_what_ingest_refuses(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path, table: str, select: str, needle: str
) -> None:
    """Values a result file may not hold (NaN, inf, batch sizes that are not the spec's, a run
    id that is not of our form, an unknown status), and files that do not hold what export.json
    says: refused, exit 2, and no store created or changed."""
    export = _export(cli, bench, make_result, tmp_path)
    _rewrite(export, table, select)
    fresh = tmp_path / "fresh.duckdb"
    line = one_line_error(cli("import", export, "--db", fresh))
    assert needle in line
    assert not fresh.exists() and not list(tmp_path.glob(".fresh.duckdb*"))
    before = bench.db.read_bytes()
    assert needle in one_line_error(cli("import", export))
    assert bench.db.read_bytes() == before


def test_import_holds_the_manifest_counts(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    export = _export(cli, bench, make_result, tmp_path)
    manifest = json.loads((export / "export.json").read_text())
    (export / "export.json").write_text(
        json.dumps({**manifest, "measurements": manifest["measurements"] + 8})
    )
    fresh = tmp_path / "fresh.duckdb"
    assert "the files hold 7 and" in one_line_error(cli("import", export, "--db", fresh))
    assert not fresh.exists()


@pytest.mark.parametrize("name", ["export.json", "runs.parquet", "measurements.parquet"])
def test_import_refuses_a_fifo_at_once(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path, name: str
) -> None:
    export = _export(cli, bench, make_result, tmp_path)
    (export / name).unlink()
    os.mkfifo(export / name)
    fresh = tmp_path / "fresh.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "import", str(export), "--db", str(fresh)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "is not a regular file" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not fresh.exists()


def test_import_refuses_an_oversized_manifest(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    export = _export(cli, bench, make_result, tmp_path)
    with (export / "export.json").open("a") as f:
        f.write(" " * transfer.MANIFEST_MAX_BYTES)
    assert "not a result export's manifest" in one_line_error(
        cli("import", export, "--db", tmp_path / "x.duckdb")
    )
