"""Ingest and import rate: 10,000 SYNTHETIC results (benchmarks/synthetic.py, labelled synthetic)
into an empty store. Goal: under 10 s for 10,000 results, by `bench-ctl ingest` and by
`bench-ctl import` of a Parquet export.

Three timings in one process, on the same files:
  1. one transaction per result, as `bench-ctl run` stores each run (a sample, extrapolated);
  2. `bench-ctl ingest DIR`'s path (ingestion.ingest_paths): read, validate, bulk insert by chunks;
  3. `bench-ctl import` of the store's Parquet export into another empty store.
The ratio of (2) to (1) is what batching the writes bought.

    .venv/bin/python benchmarks/ingest_rate.py [--results 10000] [--sample 300] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import EXIT_FAIL, LoadMeter, say
from benchmarks.synthetic import synthetic_results
from controller.store import db as store
from controller.store import ingest as ingestion
from controller.store import transfer
from schemas import load_result

GOAL_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300, help="results stored one transaction each")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ingest-rate-"))
    try:
        t0 = time.perf_counter()
        results = synthetic_results(a.results, seed=0)
        runs = scratch / "runs"
        for r in results:
            folder = runs / r.run_id
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(r.model_dump_json())
        size_mb = sum(f.stat().st_size for f in runs.rglob("result.json")) / 1e6
        measurements = sum(len(r.measurements) for r in results)
        say(
            f"{a.results:,} SYNTHETIC results ({measurements:,} measurements, {size_mb:.0f} MB of JSON) "
            f"written in {time.perf_counter() - t0:.1f} s"
        )

        files = sorted(runs.rglob("result.json"))[: a.sample]
        one_db = scratch / "one-by-one.duckdb"
        t0 = time.perf_counter()
        with store.connect(one_db) as con:
            for f in files:
                store.ingest(con, load_result(f), f)
        per_result = (time.perf_counter() - t0) / len(files)
        say(
            f"1. one transaction per result: {per_result * 1e3:.1f} ms each ({len(files)} stored), "
            f"{a.results:,} would take {per_result * a.results:.0f} s"
        )

        bulk_db = scratch / "bulk.duckdb"
        t0, cpu0 = time.perf_counter(), time.process_time()
        with LoadMeter() as load:
            report = ingestion.ingest_paths([runs], bulk_db)
        bulk_s, bulk_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if report.failed or len(report.ingested) != a.results:
            say(
                f"ingest stored {len(report.ingested)} of {a.results}; "
                f"failed: {list(report.failed.items())[:3]}"
            )
            return EXIT_FAIL
        say(
            f"2. bench-ctl ingest (bulk): {bulk_s:.1f} s ({bulk_cpu:.1f} s of CPU; other processes kept "
            f"{load.other_cores:.1f} cores busy meanwhile), {a.results / bulk_s:,.0f} results/s, "
            f"{per_result * a.results / bulk_s:.0f}x the one-by-one rate"
        )

        export_dir = scratch / "export"
        transfer.export(bulk_db, export_dir, "parquet", None)
        imported_db = scratch / "imported.duckdb"
        t0 = time.perf_counter()
        imported = transfer.import_export(export_dir, imported_db)
        import_s = time.perf_counter() - t0
        say(
            f"3. bench-ctl import (Parquet): {import_s:.1f} s, {imported.runs / import_s:,.0f} results/s "
            f"({imported.runs:,} runs, {imported.measurements:,} measurements)"
        )
        ok = bulk_s < GOAL_S and import_s < GOAL_S
        say(
            f"goal: {a.results:,} results in under {GOAL_S:.0f} s: "
            f"ingest {bulk_s:.1f} s, import {import_s:.1f} s: " + ("PASS" if ok else "FAIL")
        )
        return 0 if ok else EXIT_FAIL
    finally:
        if a.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
