"""The DuckDB store: migrations, idempotent ingest, the `results` view, read-only queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from controller.errors import BenchError
from controller.store import db as store
from schemas import GpuTelemetry, Measurement, RunResult
from tests.conftest import Bench, MakeResult

RESULTS_COLUMNS = [
    "run_id",
    "started_at",
    "host",
    "image",
    "framework",
    "framework_version",
    "model",
    "device",
    "batch_size",
    "throughput_sps",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "load_time_s",
    "peak_host_mem_mb",
    "max_abs_err",
    "top1_agreement",
    "precision",
    "stable",
    "status",
    "dims",
    "sequence_dim",
    "sequence_length",
    "tokens_per_s",
    "cosine_min",
    "worst_output",
    "accuracy_outputs",
    "data_top1",
    "data_fp32_top1",
]


def ingest(db: Path, *results: RunResult) -> None:
    with store.connect(db) as con:
        for r in results:
            store.ingest(con, r, Path("/somewhere") / r.run_id / "result.json")


def count(db: Path, table: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def test_fresh_store_has_schema_and_version(bench: Bench) -> None:
    store.ensure_store(bench.db)
    _, rows = store.query(bench.db, "SELECT value FROM store_meta WHERE key = 'version'")
    assert rows == [(str(store.STORE_VERSION),)]
    # Opening again does not migrate twice.
    store.ensure_store(bench.db)
    assert count(bench.db, "runs") == 0


def test_results_view_has_documented_columns(bench: Bench) -> None:
    store.ensure_store(bench.db)
    cols, rows = store.query(bench.db, "DESCRIBE results")
    names = [r[cols.index("column_name")] for r in rows]
    missing = [c for c in RESULTS_COLUMNS if c not in names]
    assert not missing, f"results view lacks {missing}"


def test_ingest_ok_result(bench: Bench, make_result: MakeResult) -> None:
    r = make_result(batch_sizes=(1, 4))
    ingest(bench.db, r)
    assert count(bench.db, "runs") == 1
    assert count(bench.db, "measurements") == 2
    cols, rows = store.query(bench.db, "SELECT * FROM results ORDER BY batch_size")
    got = store.rows_as_dicts(cols, rows)
    assert [g["batch_size"] for g in got] == [1, 4]
    first = got[0]
    m = r.measurements[0]
    assert first["run_id"] == r.run_id
    assert first["status"] == "ok"
    assert first["image"] == "null" and first["framework"] == "null" and first["model"] == "fake"
    assert first["device"] == "cpu" and first["host"] == "testhost"
    assert first["throughput_sps"] == pytest.approx(m.throughput_sps)
    assert first["latency_p50_ms"] == pytest.approx(m.latency_p50_ms)
    assert first["latency_p99_ms"] == pytest.approx(m.latency_p99_ms)
    assert first["load_time_s"] == pytest.approx(1.0)
    assert first["peak_host_mem_mb"] == pytest.approx(50.0)  # the measurement's, not the run's 60
    assert first["top1_agreement"] == 1.0 and first["max_abs_err"] == 0.0
    assert first["precision"] == "none" and first["stable"] is True
    assert first["compile_cache_hit"] is False
    _, lat = store.query(bench.db, "SELECT len(latencies_ms) FROM measurements WHERE batch_size = 1")
    assert lat == [(20,)]


def test_ingest_twice_is_idempotent(bench: Bench, make_result: MakeResult) -> None:
    r = make_result()
    ingest(bench.db, r)
    before = (count(bench.db, "runs"), count(bench.db, "measurements"), count(bench.db, "results"))
    ingest(bench.db, r)
    ingest(bench.db, r, r)
    assert (count(bench.db, "runs"), count(bench.db, "measurements"), count(bench.db, "results")) == before


def test_reingest_replaces_the_earlier_copy(bench: Bench, make_result: MakeResult) -> None:
    r = make_result(batch_sizes=(1, 2, 8))
    ingest(bench.db, r)
    # Same run_id, fewer batch sizes: the old measurements go.
    r2 = make_result(batch_sizes=(1,), run_id=r.run_id)
    ingest(bench.db, r2)
    assert count(bench.db, "measurements") == 1
    assert count(bench.db, "runs") == 1


def test_error_result_has_one_row_with_null_batch_size(bench: Bench, make_result: MakeResult) -> None:
    ok = make_result()
    bad = make_result(status="error", message="RuntimeError: boom")
    timeout = make_result(status="timeout", message="killed")
    ingest(bench.db, ok, bad, timeout)
    _, rows = store.query(
        bench.db,
        "SELECT run_id, status, batch_size, message, throughput_sps FROM results "
        "WHERE status <> 'ok' ORDER BY status",
    )
    assert rows == [
        (bad.run_id, "error", None, "RuntimeError: boom", None),
        (timeout.run_id, "timeout", None, "killed", None),
    ]
    assert count(bench.db, "results") == 2 + 1 + 1


def test_failed_ingest_rolls_back(
    bench: Bench, make_result: MakeResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_result()
    ingest(bench.db, good)
    r = make_result()
    cols = list(store.MEASUREMENT_COLUMNS)
    monkeypatch.setattr(store, "MEASUREMENT_COLUMNS", [*cols[:-1], "no_such_column"])
    with pytest.raises(Exception), store.connect(bench.db) as con:  # noqa: B017
        store.ingest(con, r)
    monkeypatch.undo()
    _, rows = store.query(bench.db, "SELECT run_id FROM runs")
    assert rows == [(good.run_id,)]


def test_store_newer_than_code_refused(bench: Bench) -> None:
    store.ensure_store(bench.db)
    con = duckdb.connect(str(bench.db))
    con.execute("UPDATE store_meta SET value = '999' WHERE key = 'version'")
    con.close()
    with pytest.raises(BenchError, match="newer") as info:
        store.ensure_store(bench.db)
    assert info.value.hint


# --------------------------------------------------------------------------- query


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs (run_id) VALUES ('x')",
        "DELETE FROM runs",
        "UPDATE runs SET host = 'x'",
        "CREATE TABLE t (a INTEGER)",
        "DROP VIEW results",
        "COPY runs TO 'out.csv'",
        "ATTACH 'other.duckdb' AS o",
        "SELECT 1; DELETE FROM runs",
        "INSTALL httpfs",
    ],
)
def test_query_refuses_writes(bench: Bench, make_result: MakeResult, sql: str) -> None:
    ingest(bench.db, make_result())
    with pytest.raises(BenchError, match="refused") as info:
        store.query(bench.db, sql.replace("out.csv", str(bench.home / "out.csv")))
    assert info.value.exit_code == 2
    assert info.value.hint
    assert count(bench.db, "runs") == 1
    assert not (bench.home / "out.csv").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM results",
        "DESCRIBE results",
        "FROM results",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "EXPLAIN SELECT 1",
        "SHOW TABLES",
    ],
)
def test_query_accepts_reads(bench: Bench, make_result: MakeResult, sql: str) -> None:
    ingest(bench.db, make_result())
    cols, rows = store.query(bench.db, sql)
    assert cols and rows


def test_query_errors_are_bench_errors(bench: Bench) -> None:
    store.ensure_store(bench.db)
    with pytest.raises(BenchError, match="SQL error"):
        store.query(bench.db, "SELECT nosuchcolumn FROM results")
    with pytest.raises(BenchError, match="SQL error"):
        store.query(bench.db, "SELEKT 1")
    with pytest.raises(BenchError, match="empty"):
        store.query(bench.db, "   ")


def test_to_json_handles_timestamps(bench: Bench, make_result: MakeResult) -> None:
    import json

    ingest(bench.db, make_result())
    cols, rows = store.query(
        bench.db, "SELECT run_id, started_at, batch_size FROM results ORDER BY batch_size"
    )
    doc = json.loads(store.to_json(cols, rows))
    assert doc[0]["started_at"].startswith("2025-01-01")
    assert [d["batch_size"] for d in doc] == [1, 2]


def test_old_store_is_migrated_and_keeps_rows(bench: Bench, make_result: MakeResult) -> None:
    """A store written by the first release (version 1) opens with today's code, rows intact."""
    con = duckdb.connect(str(bench.db))
    con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    first = store.MIGRATIONS[0]
    assert isinstance(first, str)  # the first release's schema is plain SQL
    con.execute(first)
    con.execute("INSERT INTO store_meta VALUES ('version', '1')")
    con.execute(
        "INSERT INTO runs (run_id, schema_version, started_at, finished_at, image, framework, model, "
        "device, status, message) VALUES ('old-run', 1, now(), now(), 'null', 'null', 'fake', 'cpu', "
        "'error', 'old failure')"
    )
    con.close()
    r = make_result()
    ingest(bench.db, r)  # migrates, then ingests with today's columns
    _, rows = store.query(bench.db, "SELECT value FROM store_meta WHERE key = 'version'")
    assert rows == [(str(store.STORE_VERSION),)]
    _, rows = store.query(
        bench.db, "SELECT run_id, status, batch_size FROM results ORDER BY run_id, batch_size"
    )
    assert ("old-run", "error", None) in rows
    assert sum(1 for row in rows if row[0] == r.run_id) == 2


@pytest.mark.parametrize("view", ["results", "summary"])
def test_every_view_column_is_documented(bench: Bench, make_result: MakeResult, view: str) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    ingest(bench.db, make_result())
    cols, _ = store.query(bench.db, f"SELECT * FROM {view} LIMIT 0")
    missing = [c for c in cols if f"`{c}`" not in doc]
    assert not missing, f"columns of {view} missing from docs/results.md: {missing}"


def _stored(db: Path, table: str, run_id: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        order = "batch_size" if table == "measurements" else "run_id"
        cur = con.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def _same(stored: object, given: object) -> bool:
    """A stored value equals the value handed to the store (JSON compared as parsed)."""
    if stored == given:
        return True
    if isinstance(given, str) and isinstance(stored, str):
        try:
            return bool(json.loads(stored) == json.loads(given))
        except json.JSONDecodeError:
            return False
    return False


def test_bulk_ingest_stores_exactly_the_rows(bench: Bench, make_result: MakeResult) -> None:
    """The bulk path (data frames) keeps every value as given: integers stay integers, NULLs stay
    NULL, timestamps keep their zone, lists and JSON survive, across runs that differ in which
    columns they fill."""
    gpu = GpuTelemetry(
        device_index=0, name="H100", samples=9, duration_s=1.0, peak_process_mem_mb=812.0, energy_j=3.5
    )
    ok = make_result(batch_sizes=(1, 8), repetition=3, within_rel=0.01)
    with_gpu = ok.model_copy(
        update={"measurements": [m.model_copy(update={"gpu": gpu}) for m in ok.measurements]}
    )
    doc = make_result().model_dump(mode="json")
    doc["spec"].update(dims={"seq": 64, "heads": 2}, sequence_dim="seq")
    for m in doc["measurements"]:
        m["tokens_per_s"] = m["throughput_sps"] * 64
    doc["accuracy"].update(
        cosine_min=0.99,
        worst_output="hidden",
        outputs=[{"name": "hidden", "max_abs_err": 0.0, "rel_err": 0.0, "cosine_min": 0.99}],
        data={"samples": 9, "output": "hidden", "top1": 0.5, "fp32_top1": 0.6},
    )
    with_dims = RunResult.model_validate(doc)
    results = [
        *(make_result() for _ in range(3)),
        with_gpu,
        make_result(status="error"),
        with_dims,
        make_result(),
    ]
    with store.connect(bench.db) as con:
        store.ingest_many(con, [(r, Path("/r") / r.run_id) for r in results])
    for r in results:
        row = _stored(bench.db, "runs", r.run_id)
        assert len(row) == 1
        expected = store.run_row(r, Path("/r") / r.run_id)
        for k, v in expected.items():
            assert _same(row[0][k], v), (r.run_id, k, row[0][k], v)
        rows = _stored(bench.db, "measurements", r.run_id)
        assert len(rows) == len(r.measurements)
        for stored, m in zip(rows, sorted(r.measurements, key=lambda m: m.batch_size), strict=True):
            values = store.measurement_row(r.run_id, m)
            for k, v in zip(["run_id", *store.MEASUREMENT_COLUMNS], values, strict=True):
                assert _same(stored[k], v), (r.run_id, k, stored[k], v)


def test_bulk_ingest_is_all_or_nothing(
    bench: Bench, make_result: MakeResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_result()
    ingest(bench.db, first)
    batch = [(make_result(), None) for _ in range(5)]
    real = store.measurement_row

    def broken(run_id: str, m: Measurement) -> list[Any]:
        row = real(run_id, m)
        row[1] = "not a batch size"  # a value the table refuses
        return row

    monkeypatch.setattr(store, "measurement_row", broken)
    with store.connect(bench.db) as con, pytest.raises(BenchError, match="cannot store 5 runs"):
        store.ingest_many(con, batch)
    assert count(bench.db, "runs") == 1 and count(bench.db, "measurements") == len(first.measurements)


def test_variants_follow_a_change_of_defaults(bench: Bench, make_result: MakeResult) -> None:
    """A run's variant names the options that differ from the defaults; when a default changes
    (as OpenVINO's precision did: None, then f32), runs stored before are renamed on the next
    write, so they do not merge with runs that now have no variant. A read before that refuses,
    with the hint."""
    from schemas import NullOptions

    def with_options(options: NullOptions) -> RunResult:
        r = make_result()
        return r.model_copy(update={"spec": r.spec.model_copy(update={"options": options})})

    busy, plain = with_options(NullOptions(work_us=100)), with_options(NullOptions())
    with store.connect(bench.db) as con:
        store.ingest(con, busy)
        store.ingest(con, plain)
    # As code with other defaults would have stored them: variants swapped, another defaults hash.
    with duckdb.connect(str(bench.db)) as con:
        con.execute("UPDATE runs SET variant = CASE WHEN variant = '' THEN 'work_us=0.0' ELSE '' END")
        con.execute("UPDATE store_meta SET value = 'older' WHERE key = 'defaults'")
    with pytest.raises(BenchError, match="option defaults older than this code") as refused:
        store.read(bench.db, "SELECT 1")
    assert "bench-ctl ingest" in (refused.value.hint or "")
    with store.connect(bench.db):
        pass  # any write brings the store up to date
    rows = dict(store.read(bench.db, "SELECT run_id, variant FROM runs")[1])
    assert rows == {busy.run_id: "work_us=100.0", plain.run_id: ""}
