"""`bench-ctl report` over a large store: 10,000 synthetic results must render in under 10 s.

Builds a scratch store of N synthetic results (benchmarks/synthetic.py, labelled synthetic: hosts
`synthetic-...`) with one bulk `store.ingest_many`, then times `bench-ctl report --db STORE --out
DIR` as a user runs it (a fresh process: Python and matplotlib start-up included), several times,
and prints the median wall time against the goal, with the CPU time the report's processes used
(figures are drawn in parallel, one process per core) and how busy other processes kept the host.
Nothing of the user's store is read or written.

    .venv/bin/python benchmarks/report_speed.py [--results 10000] [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EXIT_FAIL, LoadMeter, _clean_env, bench_ctl, die, fmt_list, median, say

from benchmarks.synthetic import synthetic_results
from controller.store import db as store

GOAL_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=10_000, help="synthetic results in the store")
    parser.add_argument("--rounds", type=int, default=3, help="reports rendered (the median counts)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch store and the last report")
    args = parser.parse_args()
    if args.results < 1 or args.rounds < 1:
        die("--results and --rounds must be at least 1", "e.g. --results 10000 --rounds 3")
    ctl = bench_ctl()
    scratch = Path(tempfile.mkdtemp(prefix="bench-report-speed-"))
    try:
        db = scratch / "results.duckdb"
        t0 = time.perf_counter()
        results = synthetic_results(args.results, seed=0)
        t1 = time.perf_counter()
        with store.connect(db) as con:
            store.ingest_many(con, [(r, None) for r in results])
        t2 = time.perf_counter()
        rows = sum(max(1, len(r.measurements)) for r in results)
        say(f"synthetic store: {args.results} results ({rows} result rows), generated in {t1 - t0:.1f} s,")
        per_result_ms = 1000 * (t2 - t1) / args.results
        say(f"  stored in {t2 - t1:.1f} s by one ingest_many ({per_result_ms:.2f} ms per result)")
        times: list[float] = []
        cpus: list[float] = []
        loads: list[float] = []
        for i in range(args.rounds):
            out = scratch / "report"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with LoadMeter() as load:
                start = time.perf_counter()
                proc = subprocess.run(
                    [ctl, "report", "--db", str(db), "--out", str(out), "--json"],
                    capture_output=True,
                    text=True,
                    env=_clean_env(),
                )
                elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                die(
                    f"bench-ctl report failed (exit {proc.returncode})", proc.stderr.strip()[-500:], EXIT_FAIL
                )
            times.append(elapsed)
            cpus.append(cpu)
            loads.append(load.other_cores)
            say(
                f"  round {i + 1}: {elapsed:.2f} s wall, {cpu:.2f} s CPU in its processes "
                f"(other processes kept {load.other_cores:.2f} cores busy)"
            )
        figures = sorted(p.name for p in (scratch / "report").glob("*.png"))
        took = median(times)
        verdict = "PASS" if took < GOAL_S else "FAIL"
        say(f"report rounds: {fmt_list(times)} s wall, {fmt_list(cpus)} s CPU; figures: {', '.join(figures)}")
        say(
            f"report over {args.results} results: {took:.2f} s median (goal < {GOAL_S:.0f} s, "
            f"{took / GOAL_S:.2f} of it): {verdict}"
        )
        if median(loads) > 0.5:
            say(f"  note: the host was busy (median {median(loads):.2f} other cores): times are inflated")
        if args.keep:
            say(f"kept: {scratch} (store results.duckdb, report/index.html)")
        return 0 if verdict == "PASS" else EXIT_FAIL
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
