"""The result store: `results.duckdb`. Schema, migrations, ingest and read-only queries.

Tables `runs` (one row per run) and `measurements` (one row per run and batch size), and the view
`results` documented in docs/results.md. A result is ingested in one transaction, replacing any
earlier copy of the same run_id, so ingesting twice changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from controller.errors import BenchError
from controller.store import QUERY_TIMEOUT_S, stopping
from controller.store import file as storefile
from controller.store.file import READ_CONFIG, first_line, open_error
from schemas import FRAMEWORK_OPTION_MODELS, Measurement, RunResult
from schemas.frameworks.base import FrameworkOptions, configuration, whole_cores

# Each migration takes the store from version i to i+1. Never edit one that has shipped: append.
MIGRATIONS: list[str | Callable[[], str]] = [
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        schema_version INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL,
        host VARCHAR,
        launcher VARCHAR,
        image VARCHAR NOT NULL,
        image_ref VARCHAR,
        image_digest VARCHAR,
        lock_hash VARCHAR,
        framework VARCHAR NOT NULL,
        framework_version VARCHAR,
        model VARCHAR NOT NULL,
        device VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        message VARCHAR,
        precision VARCHAR,
        options JSON,
        policy JSON,
        import_s DOUBLE,
        model_read_s DOUBLE,
        compile_s DOUBLE,
        first_inference_s DOUBLE,
        load_time_s DOUBLE,
        compile_cache_hit BOOLEAN,
        accuracy_reference VARCHAR,
        max_abs_err DOUBLE,
        rel_err DOUBLE,
        top1_agreement DOUBLE,
        top5_agreement DOUBLE,
        peak_host_mem_mb DOUBLE,
        cpu_model VARCHAR,
        cpu_limit DOUBLE,
        exit_code INTEGER,
        fingerprint JSON,
        result_path VARCHAR,
        ingested_at TIMESTAMPTZ DEFAULT current_timestamp
    );
    CREATE TABLE measurements (
        run_id VARCHAR NOT NULL,
        batch_size INTEGER NOT NULL,
        iterations INTEGER NOT NULL,
        duration_s DOUBLE NOT NULL,
        throughput_sps DOUBLE NOT NULL,
        latency_mean_ms DOUBLE,
        latency_stdev_ms DOUBLE,
        latency_min_ms DOUBLE,
        latency_p50_ms DOUBLE,
        latency_p90_ms DOUBLE,
        latency_p99_ms DOUBLE,
        latency_max_ms DOUBLE,
        warmup_iterations INTEGER,
        warmup_s DOUBLE,
        windows INTEGER,
        stable BOOLEAN NOT NULL,
        peak_host_mem_mb DOUBLE,
        latencies_ms DOUBLE[],
        PRIMARY KEY (run_id, batch_size)
    );
    """,
    # 2: GPU telemetry per measurement (NVML).
    """
    ALTER TABLE measurements ADD COLUMN peak_device_mem_mb DOUBLE;
    ALTER TABLE measurements ADD COLUMN avg_power_w DOUBLE;
    ALTER TABLE measurements ADD COLUMN idle_power_w DOUBLE;
    ALTER TABLE measurements ADD COLUMN energy_j DOUBLE;
    ALTER TABLE measurements ADD COLUMN energy_j_per_4096 DOUBLE;
    ALTER TABLE measurements ADD COLUMN energy_j_per_4096_net DOUBLE;
    ALTER TABLE measurements ADD COLUMN sm_clock_mhz_mean DOUBLE;
    ALTER TABLE measurements ADD COLUMN throttled BOOLEAN;
    ALTER TABLE measurements ADD COLUMN gpu JSON;
    """,
    # 3: the options that differ from the framework's defaults, e.g. "mode=compile".
    """
    ALTER TABLE runs ADD COLUMN variant VARCHAR;
    """,
    # 4: co-located ensembles: members and their slowdown per measurement.
    """
    ALTER TABLE runs ADD COLUMN members VARCHAR[];
    ALTER TABLE measurements ADD COLUMN members JSON;
    """,
    # 5: runs made together (co-located processes): their group and role.
    """
    ALTER TABLE runs ADD COLUMN group_id VARCHAR;
    ALTER TABLE runs ADD COLUMN role VARCHAR;
    """,
    # 6: asynchronous requests in flight per timed call (OpenVINO's throughput hint).
    """
    ALTER TABLE measurements ADD COLUMN in_flight INTEGER;
    """,
    # 7: repetitions, the within-run interval, host load; Student-t quantiles for `summary`.
    lambda: (
        f"""
    ALTER TABLE runs ADD COLUMN repetition INTEGER;
    ALTER TABLE measurements ADD COLUMN within_run_ci_rel DOUBLE;
    ALTER TABLE measurements ADD COLUMN other_cpu_cores DOUBLE;
    ALTER TABLE measurements ADD COLUMN noisy BOOLEAN;
    CREATE TABLE t_quantiles (df INTEGER PRIMARY KEY, t975 DOUBLE NOT NULL);
    INSERT INTO t_quantiles VALUES {_t_quantile_rows()};
    """
    ),
    # 8: scenarios (offline, single-stream, server): the spec's scenario and the server's figures.
    """
    ALTER TABLE runs ADD COLUMN scenario VARCHAR;
    ALTER TABLE runs ADD COLUMN scenario_options JSON;
    ALTER TABLE measurements ADD COLUMN scenario VARCHAR;
    ALTER TABLE measurements ADD COLUMN latency_p999_ms DOUBLE;
    ALTER TABLE measurements ADD COLUMN target_qps DOUBLE;
    ALTER TABLE measurements ADD COLUMN offered_qps DOUBLE;
    ALTER TABLE measurements ADD COLUMN achieved_qps DOUBLE;
    ALTER TABLE measurements ADD COLUMN queueing_mean_ms DOUBLE;
    ALTER TABLE measurements ADD COLUMN compute_mean_ms DOUBLE;
    ALTER TABLE measurements ADD COLUMN mean_batch DOUBLE;
    ALTER TABLE measurements ADD COLUMN batch_histogram JSON;
    ALTER TABLE measurements ADD COLUMN padding_waste DOUBLE;
    ALTER TABLE measurements ADD COLUMN valid BOOLEAN;
    ALTER TABLE measurements ADD COLUMN invalid_reason VARCHAR;
    """,
    # 9: sweeps: the plan cell a run measures (its spec, host and lock, hashed).
    """
    ALTER TABLE runs ADD COLUMN cell VARCHAR;
    CREATE INDEX runs_cell ON runs (cell);
    """,
    # 10: CPU energy (RAPL) and where each energy figure comes from.
    """
    ALTER TABLE measurements ADD COLUMN cpu_energy_j DOUBLE;
    ALTER TABLE measurements ADD COLUMN energy_source VARCHAR;
    """,
    # 11: the whole spec, so a run can be made again elsewhere (bench-ctl rerun).
    """
    ALTER TABLE runs ADD COLUMN spec JSON;
    """,
    # 12: MLPerf's early-stopping estimate of a scenario's latency percentile.
    """
    ALTER TABLE measurements ADD COLUMN latency_early_stop_ms DOUBLE;
    """,
    # 13: runs as scheduler jobs (Slurm): job id and node per run, and the registry of jobs submitted.
    """
    ALTER TABLE runs ADD COLUMN job_id VARCHAR;
    ALTER TABLE runs ADD COLUMN node VARCHAR;
    CREATE TABLE jobs (
        run_id VARCHAR PRIMARY KEY,
        job_id VARCHAR NOT NULL,
        scheduler VARCHAR NOT NULL,
        group_id VARCHAR,
        cell VARCHAR,
        image VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        run_dir VARCHAR NOT NULL,
        submitted_at TIMESTAMPTZ NOT NULL,
        state VARCHAR NOT NULL,
        reason VARCHAR,
        node VARCHAR,
        updated_at TIMESTAMPTZ NOT NULL,
        status VARCHAR,
        stored_at TIMESTAMPTZ
    );
    """,
    # 14: noise measured per window (what was left out and waited) and the threads against the cores.
    """
    ALTER TABLE measurements ADD COLUMN starved_share DOUBLE;
    ALTER TABLE measurements ADD COLUMN windows_discarded INTEGER;
    ALTER TABLE measurements ADD COLUMN discarded_iterations INTEGER;
    ALTER TABLE measurements ADD COLUMN discarded_s DOUBLE;
    ALTER TABLE measurements ADD COLUMN quiet_wait_s DOUBLE;
    ALTER TABLE runs ADD COLUMN threads INTEGER;
    ALTER TABLE runs ADD COLUMN warnings VARCHAR[];
    """,
    # 15: the model's named dimensions (seq=128) and tokens/s; agreement per output; accuracy on the
    # user's labelled data. A run stored before keeps the dimensions its spec holds (none for a spec
    # of version 1), and its tokens/s is the runner's: samples/s x the sequence dimension's value.
    """
    ALTER TABLE runs ADD COLUMN dims MAP(VARCHAR, BIGINT);
    ALTER TABLE runs ADD COLUMN sequence_dim VARCHAR;
    ALTER TABLE runs ADD COLUMN cosine_min DOUBLE;
    ALTER TABLE runs ADD COLUMN worst_output VARCHAR;
    ALTER TABLE runs ADD COLUMN accuracy_outputs JSON;
    ALTER TABLE runs ADD COLUMN data_output VARCHAR;
    ALTER TABLE runs ADD COLUMN data_samples INTEGER;
    ALTER TABLE runs ADD COLUMN data_top1 DOUBLE;
    ALTER TABLE runs ADD COLUMN data_top5 DOUBLE;
    ALTER TABLE runs ADD COLUMN data_fp32_top1 DOUBLE;
    ALTER TABLE runs ADD COLUMN data_fp32_top5 DOUBLE;
    ALTER TABLE measurements ADD COLUMN tokens_per_s DOUBLE;
    UPDATE runs SET
        dims = coalesce(
            map_from_entries(list_sort(map_entries(CAST(spec -> '$.dims' AS MAP(VARCHAR, BIGINT))))), MAP {}
        ),
        sequence_dim = spec ->> '$.sequence_dim';
    UPDATE measurements SET tokens_per_s = measurements.throughput_sps * r.dims[r.sequence_dim]
        FROM runs r WHERE r.run_id = measurements.run_id AND r.dims[r.sequence_dim] IS NOT NULL;
    """,
    # 16: `bench-ctl tune` searches: the question each call asked (scenario, objective, latency
    # bound), the cells of its candidates (its trials, those of earlier calls it went on from
    # included) and, once it ended, its answer. Written by the controller, never from a result.
    """
    CREATE TABLE searches (
        search_id VARCHAR PRIMARY KEY,
        model VARCHAR NOT NULL,
        host VARCHAR NOT NULL,
        images VARCHAR[] NOT NULL,
        scenario VARCHAR NOT NULL,
        objective VARCHAR NOT NULL,
        bound VARCHAR,
        bound_metric VARCHAR,
        bound_ms DOUBLE,
        batch_sizes INTEGER[] NOT NULL,
        cells VARCHAR[] NOT NULL,
        request JSON NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        stopped VARCHAR,
        winner VARCHAR,
        answer JSON
    );
    """,
]


def _t_quantile_rows(max_df: int = 1000) -> str:
    """(df, 97.5% Student-t quantile) rows: DuckDB has no t distribution, `summary` joins these."""
    from scipy.special import stdtrit  # the t quantile itself: half the import time of scipy.stats

    return ", ".join(f"({df}, {float(stdtrit(df, 0.975))!r})" for df in range(1, max_df + 1))


RESULTS_VIEW = """
CREATE OR REPLACE VIEW results AS
SELECT
    r.run_id, r.started_at, r.host, r.image, r.framework, r.framework_version, r.model, r.device, r.variant,
    coalesce(m.scenario, r.scenario, 'offline') AS scenario,
    m.batch_size, r.dims, r.sequence_dim, r.dims[r.sequence_dim] AS sequence_length,
    m.throughput_sps, m.tokens_per_s, m.latency_p50_ms, m.latency_p90_ms, m.latency_p99_ms,
    m.latency_p999_ms, m.latency_early_stop_ms, m.latency_mean_ms, m.latency_stdev_ms, m.iterations,
    m.in_flight,
    m.target_qps, m.offered_qps, m.achieved_qps, m.queueing_mean_ms, m.compute_mean_ms,
    m.mean_batch, m.batch_histogram, m.padding_waste, m.valid, m.invalid_reason, r.scenario_options,
    r.load_time_s, r.compile_s, r.compile_cache_hit,
    coalesce(m.peak_host_mem_mb, r.peak_host_mem_mb) AS peak_host_mem_mb,
    r.max_abs_err, r.rel_err, r.top1_agreement, r.top5_agreement, r.cosine_min, r.worst_output,
    r.accuracy_outputs, r.data_output, r.data_samples, r.data_top1, r.data_top5, r.data_fp32_top1,
    r.data_fp32_top5, r.precision,
    m.peak_device_mem_mb, m.energy_j_per_4096, m.energy_j_per_4096_net, m.energy_source, m.cpu_energy_j,
    m.avg_power_w, m.throttled,
    m.members AS ensemble_members,
    r.group_id, r.role, r.repetition, r.cell, m.within_run_ci_rel, m.other_cpu_cores, m.noisy,
    m.starved_share, m.windows_discarded, m.discarded_iterations, m.discarded_s, m.quiet_wait_s,
    r.threads, r.cpu_limit, r.warnings,
    m.stable, r.status, r.message, r.launcher, r.job_id, r.node, r.image_digest, r.lock_hash, r.options
FROM runs r LEFT JOIN measurements m USING (run_id)
"""

# One row per group of repetitions: the unit of an answer (one build of an image: runs of two
# locks are never pooled; `compare` and `report` show the newest; runs at other values of the
# model's dimensions, e.g. seq=16 and seq=64, are other groups). Intervals are Student-t over the
# repetitions' values (as controller/analysis/stats.py computes them); a group of one repetition gets the
# within-run batch-means interval for throughput, labelled so. Keep in step with docs/results.md.
_SUMMARY_SELECT = """WITH g AS (
    SELECT
        host, image, framework, framework_version, lock_hash, variant, model, device, scenario, batch_size,
        dims, sequence_dim,
        count(*) AS repetitions,
        avg(throughput_sps) AS throughput_sps,
        avg(tokens_per_s) AS tokens_per_s,
        any_value(sequence_length) AS sequence_length,
        stddev_samp(throughput_sps) AS throughput_sd,
        avg(latency_p50_ms) AS latency_p50_ms,
        stddev_samp(latency_p50_ms) AS p50_sd,
        avg(latency_p99_ms) AS latency_p99_ms,
        stddev_samp(latency_p99_ms) AS p99_sd,
        any_value(within_run_ci_rel) AS within_rel,
        bool_or(coalesce(noisy, false)) AS noisy,
        count(*) FILTER (WHERE noisy) AS noisy_runs,
        bool_and(stable) AS stable,
        avg(load_time_s) FILTER (WHERE NOT coalesce(compile_cache_hit, false)) AS load_time_cold_s,
        avg(load_time_s) FILTER (WHERE compile_cache_hit) AS load_time_warm_s,
        string_agg(DISTINCT precision, ',') AS precision,
        min(started_at) AS first_run_at,
        max(started_at) AS last_run_at,
        list(run_id ORDER BY started_at) AS run_ids
    FROM results
    WHERE status = 'ok' AND batch_size IS NOT NULL{condition}
    GROUP BY host, image, framework, framework_version, lock_hash, variant, model, device, scenario,
        batch_size, dims, sequence_dim
)
SELECT
    g.host, g.image, g.framework, g.framework_version, g.lock_hash, g.variant, g.model, g.device, g.scenario,
    g.batch_size, g.dims, g.sequence_dim, g.sequence_length, g.repetitions,
    g.throughput_sps, g.tokens_per_s,
    CASE WHEN g.repetitions > 1 THEN g.throughput_sps - h.t * g.throughput_sd / sqrt(g.repetitions)
         WHEN g.within_rel IS NOT NULL THEN g.throughput_sps / (1 + g.within_rel) END AS throughput_ci_low,
    CASE WHEN g.repetitions > 1 THEN g.throughput_sps + h.t * g.throughput_sd / sqrt(g.repetitions)
         WHEN g.within_rel IS NOT NULL AND g.within_rel < 1 THEN g.throughput_sps / (1 - g.within_rel)
    END AS throughput_ci_high,
    CASE WHEN g.repetitions > 1 THEN 't' WHEN g.within_rel IS NOT NULL THEN 'batch-means' ELSE 'none'
    END AS ci_method,
    g.latency_p50_ms,
    g.latency_p50_ms - h.t * g.p50_sd / sqrt(g.repetitions) AS latency_p50_ci_low,
    g.latency_p50_ms + h.t * g.p50_sd / sqrt(g.repetitions) AS latency_p50_ci_high,
    g.latency_p99_ms,
    g.latency_p99_ms - h.t * g.p99_sd / sqrt(g.repetitions) AS latency_p99_ci_low,
    g.latency_p99_ms + h.t * g.p99_sd / sqrt(g.repetitions) AS latency_p99_ci_high,
    g.throughput_sd / g.throughput_sps AS cv,
    g.noisy, g.noisy_runs, g.stable, g.load_time_cold_s, g.load_time_warm_s, g.precision,
    g.first_run_at, g.last_run_at, g.run_ids
FROM g LEFT JOIN (SELECT df, t975 AS t FROM t_quantiles) h ON h.df = g.repetitions - 1
"""


def summary_select(condition: str | None = None) -> str:
    """The `summary` view's SELECT; with a condition over `results` columns, the groups of only the
    results that meet it (intervals over those runs alone)."""
    return _SUMMARY_SELECT.format(condition=f" AND ({condition})" if condition else "")


SUMMARY_VIEW = "\nCREATE OR REPLACE VIEW summary AS\n" + summary_select()

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}
STORE_VERSION = len(MIGRATIONS)
VIEWS = [RESULTS_VIEW, SUMMARY_VIEW]
_WRITER = threading.Lock()  # one writer at a time within this process (co-located runs finish together)
_STORES: set[str] = set()  # paths this process has found to hold our store_meta (checked once)


def _views_hash() -> str:
    return hashlib.sha256("\n".join(VIEWS).encode()).hexdigest()[:16]


def _meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    row = con.execute("SELECT value FROM store_meta WHERE key = ?", [key]).fetchone()
    return str(row[0]) if row else None


def _has_meta(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'store_meta'"
    ).fetchone()
    return row == (1,)


def build(con: duckdb.DuckDBPyConnection) -> None:
    """A new store's schema, in a file nobody else sees yet (`storefile.create`)."""
    con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    migrate(con)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the schema and the views up to date; writes nothing when they already are."""
    version = int(_meta(con, "version") or 0)
    if version > STORE_VERSION:
        raise BenchError(
            f"the store has version {version}, newer than this code ({STORE_VERSION})",
            "update bench-ctl, or use another --db",
        )
    for i in range(version, STORE_VERSION):
        con.execute("BEGIN")
        step = MIGRATIONS[i]
        con.execute(step if isinstance(step, str) else step())
        con.execute("INSERT OR REPLACE INTO store_meta VALUES ('version', ?)", [str(i + 1)])
        con.execute("COMMIT")
    if _meta(con, "views") != _views_hash():
        con.execute("BEGIN")
        for view in VIEWS:
            con.execute(view)
        con.execute("INSERT OR REPLACE INTO store_meta VALUES ('views', ?)", [_views_hash()])
        con.execute("COMMIT")
    if _meta(con, "defaults") != _defaults_hash():
        con.execute("BEGIN")
        refresh_variants(con)
        con.execute("COMMIT")


@functools.cache
def table_columns() -> dict[str, list[str]]:
    """The columns of this code's tables, read from a schema built in memory."""
    con = storefile.open_duckdb(config=storefile.WRITE_CONFIG)
    try:
        build(con)
        return {
            t: [str(r[0]) for r in con.execute(f"SELECT name FROM pragma_table_info('{t}')").fetchall()]
            for t in ("runs", "measurements")
        }
    finally:
        con.close()


def _not_a_store(db: Path) -> BenchError:
    return BenchError(
        f"--db {db} is a DuckDB database but not a result store (no store_meta table); it is left as it is",
        "pass another --db (a path that does not exist yet becomes a new store)",
    )


def _ours(db: Path) -> None:
    """Create the store if `db` does not exist; refuse a file that is not one, unchanged (it is
    read on a read-only connection: a writable one would replay a write-ahead log into it)."""
    if not storefile.check_file(db):  # also when found before: it may have been deleted since
        storefile.create(db, build)
    elif str(db) not in _STORES:
        con = storefile.open_store(db, read_only=True)
        try:
            if not _has_meta(con):
                raise _not_a_store(db)
        finally:
            con.close()
    _STORES.add(str(db))


@contextmanager
def connect(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection with the schema up to date (the store is created if missing).

    DuckDB lets one process write a file at a time: another bench-ctl storing a result holds it
    for a moment, so opening is retried for up to storefile.LOCK_WAIT_S seconds."""
    if db.is_dir() or (db.parent.exists() and not db.parent.is_dir()):
        raise open_error(db, OSError("not a file"), write=True)
    with _WRITER:
        storefile.check_file(db)  # before any folder is made for it
        db.parent.mkdir(parents=True, exist_ok=True)
        _ours(db)
        con = storefile.open_store(db, read_only=False)
        try:
            try:
                migrate(con)
            except duckdb.Error as e:
                raise open_error(db, e, write=True) from None
            yield con
        finally:
            con.close()


def _phase(result: RunResult, name: str) -> float | None:
    return next((p.seconds for p in result.phases if p.name == name), None)


def host_of(result: RunResult) -> str | None:
    """The host a result is stored under: where its runner was launched (a Slurm job's node)."""
    launch, fp = result.launch, result.fingerprint
    return (launch.host if launch and launch.host else None) or (fp.host if fp else None)


def run_row(result: RunResult, result_path: Path | None) -> dict[str, Any]:
    spec, fp, acc, launch = result.spec, result.fingerprint, result.accuracy, result.launch
    compile_phase = next((p for p in result.phases if p.name == "compile"), None)
    return {
        "run_id": result.run_id,
        "schema_version": result.schema_version,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "host": host_of(result),
        "launcher": launch.launcher if launch else None,
        "image": spec.image,
        "image_ref": launch.image_ref if launch else None,
        "image_digest": launch.image_digest if launch else None,
        "lock_hash": launch.lock_hash if launch else None,
        "framework": result.framework,
        "framework_version": result.framework_version,
        "model": spec.model,
        "device": spec.device,
        "status": result.status,
        "message": result.message,
        "precision": result.precision,
        "options": spec.options.model_dump_json(),
        "variant": variant(result),
        "members": [m.model for m in spec.members] or None,
        "group_id": spec.group,
        "repetition": spec.repetition,
        "role": spec.role,
        "cell": spec.cell,
        "spec": spec.model_dump_json(),
        "policy": spec.policy.model_dump_json(),
        "scenario": spec.scenario.name,
        "scenario_options": spec.scenario.model_dump_json(),
        "import_s": _phase(result, "import"),
        "model_read_s": _phase(result, "model_read"),
        "compile_s": _phase(result, "compile"),
        "first_inference_s": _phase(result, "first_inference"),
        "load_time_s": result.load_time_s,
        "compile_cache_hit": compile_phase.cache_hit if compile_phase else None,
        "accuracy_reference": acc.reference if acc else None,
        "max_abs_err": acc.max_abs_err if acc else None,
        "rel_err": acc.rel_err if acc else None,
        "top1_agreement": acc.top1_agreement if acc else None,
        "top5_agreement": acc.top5_agreement if acc else None,
        **_accuracy_extras(result),
        "dims": dims_of(result),
        "sequence_dim": spec.sequence_dim,
        "peak_host_mem_mb": result.peak_host_mem_mb,
        "cpu_model": fp.cpu_model if fp else None,
        "cpu_limit": fp.cpu_limit if fp else None,
        "threads": result.threads,
        "warnings": result.warnings or None,
        "exit_code": launch.exit_code if launch else None,
        "job_id": launch.job_id if launch else None,
        "node": launch.node if launch else None,
        "fingerprint": fp.model_dump_json() if fp else None,
        "result_path": str(result_path) if result_path else None,
    }


def dims_of(result: RunResult) -> dict[str, int]:
    """The run's named dimensions, by name: a MAP compares its entries in order, so runs with the
    same dimensions group together only when every map lists them alike."""
    return dict(sorted(result.spec.dims.items()))


def _accuracy_extras(result: RunResult) -> dict[str, Any]:
    """Columns of the agreement per output and of the accuracy on the user's labelled data."""
    acc = result.accuracy
    data = acc.data if acc else None
    outputs = [o.model_dump() for o in acc.outputs] if acc else []
    return {
        "cosine_min": acc.cosine_min if acc else None,
        "worst_output": acc.worst_output if acc else None,
        "accuracy_outputs": json.dumps(outputs) if outputs else None,
        "data_output": data.output if data else None,
        "data_samples": data.samples if data else None,
        "data_top1": data.top1 if data else None,
        "data_top5": data.top5 if data else None,
        "data_fp32_top1": data.fp32_top1 if data else None,
        "data_fp32_top5": data.fp32_top5 if data else None,
    }


MEASUREMENT_COLUMNS = [
    "batch_size",
    "iterations",
    "duration_s",
    "throughput_sps",
    "latency_mean_ms",
    "latency_stdev_ms",
    "latency_min_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "warmup_iterations",
    "warmup_s",
    "windows",
    "stable",
    "peak_host_mem_mb",
    "latencies_ms",
    "peak_device_mem_mb",
    "avg_power_w",
    "idle_power_w",
    "energy_j",
    "energy_j_per_4096",
    "energy_j_per_4096_net",
    "sm_clock_mhz_mean",
    "throttled",
    "gpu",
    "members",
    "in_flight",
    "within_run_ci_rel",
    "other_cpu_cores",
    "noisy",
    "scenario",
    "latency_p999_ms",
    "target_qps",
    "offered_qps",
    "achieved_qps",
    "queueing_mean_ms",
    "compute_mean_ms",
    "mean_batch",
    "batch_histogram",
    "padding_waste",
    "valid",
    "invalid_reason",
    "cpu_energy_j",
    "energy_source",
    "latency_early_stop_ms",
    "starved_share",
    "windows_discarded",
    "discarded_iterations",
    "discarded_s",
    "quiet_wait_s",
    "tokens_per_s",
]


def _measurement_extras(m: Measurement) -> dict[str, Any]:
    """Columns flattened from a measurement's GPU telemetry and ensemble members."""
    g = m.gpu
    return {
        "peak_device_mem_mb": g.peak_process_mem_mb if g else None,
        "avg_power_w": g.avg_power_w if g else None,
        "idle_power_w": g.idle_power_w if g else None,
        "energy_j": g.energy_j if g else None,
        "sm_clock_mhz_mean": g.sm_clock_mhz_mean if g else None,
        "throttled": g.throttled if g else None,
        "gpu": g.model_dump_json() if g else None,
        "members": json.dumps([mm.model_dump() for mm in m.members]) if m.members else None,
        "batch_histogram": json.dumps(m.batch_histogram) if m.batch_histogram is not None else None,
    }


def variant(result: RunResult) -> str:
    """Options that differ from the framework's defaults, as `k=v,k=v` ('' when none); an option
    left to the framework (None) reads `auto`, as `--set k=auto` gives it. A threads option at the
    cores the runner was given (`fingerprint.cpu_limit`) is its default: 0 and None mean them."""
    fp = result.fingerprint
    return options_variant(result.spec.options, whole_cores(fp.cpu_limit if fp else None))


def options_variant(options: FrameworkOptions, cores: int | None = None) -> str:
    """The variant of these options on a runner given `cores` whole cores (None: not known)."""
    defaults = option_defaults(options.framework)
    return ",".join(
        f"{k}={'auto' if v is None else v}"
        for k, v in configuration(options, cores).items()
        if defaults.get(k) != v
    )


@functools.cache
def option_defaults(framework: str) -> dict[str, Any]:
    """A framework's option defaults, computed once per process (shared: read it, do not change it)."""
    return FRAMEWORK_OPTION_MODELS[framework](framework=framework).model_dump()


# How a variant is made from a run's options: 1, the options that differ from the defaults; 2,
# and a threads option at the cores the runner was given reads as its default (0 or None).
VARIANT_RULE = 2


@functools.cache
def _defaults_hash() -> str:
    """The frameworks' option defaults and the variant rule, hashed: the stored variants are
    relative to them, and are made again when either changes (`refresh_variants`)."""
    defaults = {name: option_defaults(name) for name in FRAMEWORK_OPTION_MODELS}
    made = {"defaults": defaults, "variant_rule": VARIANT_RULE}
    return hashlib.sha256(json.dumps(made, sort_keys=True, default=str).encode()).hexdigest()[:16]


def refresh_variants(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every run's `variant` from its stored options and the cores its runner was given
    (`cpu_limit`) against today's defaults and rule, inside the caller's transaction. A default
    changed, the rule did, or runs came from a store written by other code: runs made before keep
    saying what they ran with, and do not merge with runs that now have no variant (or stay apart
    from those they now are). Options this code cannot read keep their variant."""
    changed = []
    for run_id, framework, options, cpu_limit, stored in con.execute(
        "SELECT run_id, framework, options, cpu_limit, variant FROM runs WHERE options IS NOT NULL"
    ).fetchall():
        model = FRAMEWORK_OPTION_MODELS.get(framework)
        if model is None:
            continue
        try:
            now = options_variant(model.model_validate_json(options), whole_cores(cpu_limit))
        except ValueError:
            continue
        if now != (stored or ""):
            changed.append((run_id, now))
    if changed:
        con.execute("CREATE OR REPLACE TEMP TABLE _variants (run_id VARCHAR, variant VARCHAR)")
        con.executemany("INSERT INTO _variants VALUES (?, ?)", changed)
        con.execute("UPDATE runs SET variant = v.variant FROM _variants v WHERE runs.run_id = v.run_id")
        con.execute("DROP TABLE _variants")
    con.execute("INSERT OR REPLACE INTO store_meta VALUES ('defaults', ?)", [_defaults_hash()])


def measurement_row(run_id: str, m: Measurement) -> list[Any]:
    extras = _measurement_extras(m)
    # Attributes as they are (lists are not copied): values the table takes directly.
    return [run_id, *(extras[c] if c in extras else getattr(m, c, None) for c in MEASUREMENT_COLUMNS)]


def ingest(con: duckdb.DuckDBPyConnection, result: RunResult, result_path: Path | None = None) -> None:
    """Store one validated result in one transaction; replaces an earlier copy of the run.

    A failure (full disk, corrupt file, interruption) rolls back and leaves the store as it was."""
    ingest_many(con, [(result, result_path)])


@dataclass(frozen=True)
class Rows:
    """One result as the rows it adds to `runs` and `measurements`: plain values, cheap to send
    between processes (a pool of workers builds them when many files are ingested)."""

    run: dict[str, Any]
    measurements: list[list[Any]]

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])


def rows_of(result: RunResult, result_path: Path | None = None) -> Rows:
    return Rows(
        run_row(result, result_path), [measurement_row(result.run_id, m) for m in result.measurements]
    )


def ingest_many(con: duckdb.DuckDBPyConnection, items: Sequence[tuple[RunResult, Path | None]]) -> None:
    """Store many validated results in one transaction (see `insert_rows`)."""
    insert_rows(con, [rows_of(result, path) for result, path in items])


def insert_rows(con: duckdb.DuckDBPyConnection, items: Sequence[Rows]) -> None:
    """Store many results' rows in one transaction, replacing earlier copies of their runs: all of
    them or, on a failure, none."""
    if not items:
        return
    ids = {r.run_id for r in items}
    what = f"run {items[0].run_id}" if len(ids) == 1 else f"{len(ids)} runs"
    hint = "free disk space or fix the store, then `bench-ctl ingest` the result again"
    with transaction(con, f"cannot store {what}", hint):
        replace_rows(con, items)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, failed: str, hint: str) -> Iterator[None]:
    """One transaction around the block: committed at its end, rolled back on any failure. A
    database error becomes one line, `failed: why`, with the hint."""
    con.execute("BEGIN")
    try:
        yield
        con.execute("COMMIT")
    except BaseException as e:
        # The transaction may already be gone (a failed COMMIT on a full disk): the original error
        # is the one worth telling, not "cannot rollback".
        with contextlib.suppress(duckdb.Error, RuntimeError):
            con.execute("ROLLBACK")
        if isinstance(e, duckdb.InterruptException) or (
            isinstance(e, RuntimeError) and "interrupt" in str(e).lower()
        ):
            raise KeyboardInterrupt from None
        if isinstance(e, duckdb.Error):
            raise BenchError(f"{failed}: {first_line(e)}", hint, exit_code=1) from None
        raise


def replace_rows(con: duckdb.DuckDBPyConnection, items: Sequence[Rows]) -> None:
    """Insert results' rows, deleting earlier copies of their runs first, inside the caller's
    transaction. The rows go in as two bulk inserts from data frames, which is what makes
    importing thousands of results take seconds rather than minutes."""
    if not items:
        return
    latest = {r.run_id: r for r in items}  # a run given twice: its last copy
    runs = [r.run for r in latest.values()]
    measurements = [m for r in latest.values() for m in r.measurements]
    import pandas  # type: ignore[import-untyped]  # here: every command would pay for its import

    run_cols = list(runs[0])
    meas_cols = ["run_id", *MEASUREMENT_COLUMNS]
    # dtype=object keeps Python values as they are (no NaN for a missing integer); DuckDB infers
    # each column's type from the values and casts to the table's on insert.
    run_frame = pandas.DataFrame([list(r.values()) for r in runs], columns=run_cols, dtype=object)
    meas_frame = pandas.DataFrame(measurements, columns=meas_cols, dtype=object)
    try:
        con.register("_ingest_runs", run_frame)
        con.register("_ingest_measurements", meas_frame)
        con.execute("DELETE FROM measurements WHERE run_id IN (SELECT run_id FROM _ingest_runs)")
        con.execute("DELETE FROM runs WHERE run_id IN (SELECT run_id FROM _ingest_runs)")
        cols = ", ".join(run_cols)
        con.execute(f"INSERT INTO runs ({cols}) SELECT {cols} FROM _ingest_runs")
        if measurements:
            mcols = ", ".join(meas_cols)
            con.execute(f"INSERT INTO measurements ({mcols}) SELECT {mcols} FROM _ingest_measurements")
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister("_ingest_runs")
            con.unregister("_ingest_measurements")


def ensure_store(db: Path) -> None:
    """Create the store if missing and bring it up to date: a write, so it also fails now, before
    anything is measured, if results could not be stored in `db`."""
    with connect(db):
        pass


def check_read_only(sql: str) -> int:
    """Refuse, before touching any database, statements that are not reads; the number of
    statements otherwise.

    Defence in depth: the read connection itself can neither write nor reach files (READ_CONFIG)."""
    parser = storefile.open_duckdb(config=READ_CONFIG)
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as e:
        raise BenchError(f"SQL error: {first_line(e)}", "see `bench-ctl query --help`") from None
    finally:
        parser.close()
    if not statements:
        raise BenchError(
            "no SQL statement in the query", 'try: bench-ctl query "SELECT * FROM results LIMIT 5"'
        )
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise BenchError(
                f"refused: {kind} statement; queries are read-only", "use SELECT over the `results` view"
            )
    return len(statements)


MAX_QUERY_TIMEOUT_S = 7 * 86400.0
MAX_QUERY_ROWS = 10**9


def check_query_options(limit: int | None, timeout_s: float) -> None:
    """`bench-ctl query`'s --limit and --timeout, refused when out of range."""
    if limit is not None and not 0 <= limit <= MAX_QUERY_ROWS:
        raise BenchError(
            f"--limit {limit}: must be from 0 to {MAX_QUERY_ROWS}",
            "e.g. --limit 100, or --limit 0 for every row",
        )
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_QUERY_TIMEOUT_S):
        raise BenchError(
            f"--timeout {timeout_s:g}: must be more than 0 and at most {MAX_QUERY_TIMEOUT_S:g} seconds",
            f"e.g. --timeout 600 (the default is {QUERY_TIMEOUT_S:g})",
        )


def query(
    db: Path, sql: str, limit: int | None = None, timeout_s: float | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a user's read-only SQL; statements that are not reads are refused before they run.

    It reads a snapshot of the store, so however long it runs no writer waits for it; it fetches
    at most `limit` rows (None: all), and Ctrl-C, SIGTERM or `timeout_s` stop it."""
    if not sql.strip():
        raise BenchError("empty query", 'try: bench-ctl query "SELECT * FROM results LIMIT 5"')
    if (n := check_read_only(sql)) > 1:
        # Every statement but the last would run whole, past --limit, for a result never shown.
        raise BenchError(f"refused: {n} statements; a query runs one", "run them one at a time")
    return read_user_sql(db, sql, limit, timeout_s)


def read_user_sql(
    db: Path, sql: str, limit: int | None = None, timeout_s: float | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL a user wrote (checked by `check_read_only`) on a snapshot of the store, so that
    however long it runs no writer waits for it; Ctrl-C, SIGTERM or `timeout_s` stop it."""
    with (
        stopping.stopper(timeout_s, "query") as stop,
        reader(db, snapshot=True, check=stop.check) as con,
        stop.watching(con),
    ):
        return fetch(con, sql, limit=limit)


def _go_on() -> None:
    """A snapshot's check that never stops it."""


@contextmanager
def reader(
    db: Path, snapshot: bool = False, check: Callable[[], None] = _go_on
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection that creates and changes no file and reaches nothing outside the store.

    The views are defined on the connection itself (temporary), so a store written by an older
    bench-ctl with the same tables still answers, and reading never writes. With `snapshot`, it
    reads a private copy (see `storefile.snapshot`); `check` may stop the copy."""
    if not storefile.check_file(db):
        raise BenchError(
            f"no result database at {db}",
            "run a benchmark first (bench-ctl run ...), or check --db / $BENCH_DB",
        )
    source = storefile.snapshot(db, check) if snapshot else contextlib.nullcontext(db)
    with source as path:
        con = storefile.open_store(path, read_only=True, name=db)
        try:
            _check_readable(con, db)
            for view in VIEWS:
                con.execute(view.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1))
            yield con
        finally:
            con.close()


def _check_readable(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """The store answers as this code expects: ours, of this version, variants up to date."""
    if not _has_meta(con):
        raise _not_a_store(db)
    _STORES.add(str(db))
    version = int(_meta(con, "version") or 0)
    if version > STORE_VERSION:
        raise BenchError(
            f"the store has version {version}, newer than this code ({STORE_VERSION})",
            "update bench-ctl, or use another --db",
        )
    if version < STORE_VERSION:
        raise BenchError(
            f"the store {db} has version {version}, older than this code ({STORE_VERSION})",
            "any `bench-ctl run` or `bench-ctl ingest` with this --db upgrades it",
        )
    if _meta(con, "defaults") != _defaults_hash() and con.execute("SELECT count(*) FROM runs").fetchone() != (
        0,
    ):
        raise BenchError(
            f"the store {db} names its runs' variants after option defaults older than this code "
            "(or by an older rule)",
            "any `bench-ctl run` or `bench-ctl ingest` with this --db renames them",
        )


def read(db: Path, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL on a read-only connection: (column names, rows)."""
    with reader(db) as con:
        return fetch(con, sql, params)


def fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None, limit: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL on a connection from `reader`: (column names, rows), at most `limit` rows (fetched
    as the query streams them: the rest are never made); an SQL error is one line."""
    try:
        rel = con.execute(sql, params or [])
        if not rel.description:
            return [], []
        cols = [d[0] for d in rel.description]
        rows = rel.fetchall() if limit is None else rel.fetchmany(limit)
    except duckdb.InterruptException:
        raise  # stopped on purpose (stopping.stopper says why), not an error in the SQL
    except RuntimeError as e:
        if "interrupt" in str(e).lower():
            raise KeyboardInterrupt from None
        raise
    except duckdb.Error as e:
        raise BenchError(
            f"SQL error: {first_line(e)}",
            'columns of the results view: `bench-ctl query "DESCRIBE results"`',
        ) from None
    return cols, rows


def run_ids_where(db: Path, where: str | None) -> list[str]:
    """The runs whose `results` rows match a user's SQL condition (all runs without one), found on
    the sandboxed read connection: a condition can read the store and nothing else."""
    sql = "SELECT DISTINCT run_id FROM results" + (f" WHERE ({where})" if where else "") + " ORDER BY run_id"
    example = "e.g. --where \"model = 'resnet50' AND batch_size >= 8\" (columns of the results view)"
    if where is not None and not where.strip():
        raise BenchError("--where is empty", example)
    try:
        if where is not None:
            try:  # one expression: a condition cannot close its parentheses and go on (UNION ...)
                duckdb.SQLExpression(where)
            except duckdb.Error as e:
                raise BenchError(f"SQL error: {first_line(e)}", example) from None
            if check_read_only(sql) != 1:
                raise BenchError("more than one statement", example)
        _, rows = read_user_sql(db, sql)
    except BenchError as e:
        if where is None or not e.message.startswith(("SQL error", "refused", "more than one")):
            raise  # about the store, not the condition
        what = e.message.removeprefix("SQL error: ")
        raise BenchError(
            f"--where {where!r} is not a condition over the results view: {what}", example
        ) from None
    return [str(r[0]) for r in rows]


def dumps_default(value: Any) -> Any:
    """JSON encoder fallback for query rows (timestamps, decimals)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def rows_as_dicts(cols: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(cols, r, strict=True)) for r in rows]


def to_json(cols: list[str], rows: list[tuple[Any, ...]]) -> str:
    return json.dumps(rows_as_dicts(cols, rows), default=dumps_default, indent=1)
