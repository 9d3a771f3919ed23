"""Is `compare --baseline` right? A/A and A/B pairs of the null runner, whose work is set.

Each trial is what a user would type: `bench-ctl run --image null --repeat N` with two
configurations interleaved, then `bench-ctl compare --baseline ... --json`, in a fresh store.

- A/A: the same work (1000 us per call) under two labels (`tag=a`, `tag=b`, an option with no
  effect). The truth: no difference. A verdict of faster or slower is a false positive.
- A/B: 1000 us against 1100 us per call. The truth: the second has (1000 + o) / (1100 + o) of the
  first's throughput, o being the harness's own time per call, measured first with work 0.
  The verdict must be "slower", and the ratio's 95 % interval should cover the true ratio.

Goals (issue: answers you can trust): A/A false positives <= 5 %, A/B detected >= 95 %, the
interval covers the true ratio >= 90 %. With T trials a rate is known to about +-1/sqrt(T): the
printed Wilson intervals say how sure each figure is.

    .venv/bin/python benchmarks/compare_calibration.py [--trials 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EXIT_FAIL,
    REPO,
    ScratchHome,
    bench_ctl,
    die,
    ensure_local_env,
    say,
)
from harness_overhead import FAKE_MODEL, make_fake_model

POLICY = ["policy.min_time_s=0.5", "policy.max_time_s=1", "policy.window_s=0.1", "policy.warmup_min_s=0.1"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ctl(ctl_path: str, home: ScratchHome, db: Path, *args: str) -> dict[str, Any] | list[Any]:
    env = {**home.env(), "BENCH_DB": str(db)}
    proc = subprocess.run([ctl_path, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        die(
            f"`bench-ctl {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr[-600:]}",
            code=EXIT_FAIL,
        )
    doc: dict[str, Any] | list[Any] = json.loads(proc.stdout)
    return doc


def trial(ctl_path: str, home: ScratchHome, db: Path, sweep: str, repeat: int, work: str) -> dict[str, Any]:
    sets = [x for s in [*POLICY, *([work] if work else [])] for x in ("--set", s)]
    ctl(
        ctl_path, home, db, "run", "--image", "null", "--model", FAKE_MODEL, "-b", "1", "--launcher", "local",
        "--repeat", str(repeat), "--sweep", sweep, *sets,
    )  # fmt: skip
    listing = ctl(ctl_path, home, db, "compare", "--model", FAKE_MODEL)
    assert isinstance(listing, dict)
    first = sweep.partition("=")[2].split(",")[0]
    labels = sorted(listing["labels"], key=lambda label: first not in label)  # the baseline first
    doc = ctl(ctl_path, home, db, "compare", "--model", FAKE_MODEL, "--baseline", labels[0])
    assert isinstance(doc, dict)
    verdict: dict[str, Any] = doc["rows"][0]["verdicts"][labels[1]]
    return verdict


def overhead_us(ctl_path: str, home: ScratchHome) -> float:
    db = home.root / "overhead.duckdb"
    sets = [x for s in [*POLICY, "work_us=0"] for x in ("--set", s)]
    doc = ctl(
        ctl_path,
        home,
        db,
        "run",
        "--image",
        "null",
        "--model",
        FAKE_MODEL,
        "-b",
        "1",
        "--launcher",
        "local",
        *sets,
    )
    assert isinstance(doc, dict)
    return float(doc["measurements"][0]["latency_mean_ms"]) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20, help="trials of each pair (default 20)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per configuration (default 5)")
    parser.add_argument("--work-us", type=float, default=1000.0, help="work per call of A (default 1000)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    ctl_path = bench_ctl()
    ensure_local_env(ctl_path, "null")
    with ScratchHome(envs=["null"], keep=args.keep) as home:
        make_fake_model(home.models / FAKE_MODEL)
        o = overhead_us(ctl_path, home)
        a, b = args.work_us, args.work_us * 1.1
        truth = (a + o) / (b + o)
        say(f"null runner: {o:.2f} us of harness per call; A/B true throughput ratio {truth:.4f}")
        started = time.monotonic()
        false_pos = detected = covered = 0
        for t in range(args.trials):
            db = home.root / f"aa-{t}.duckdb"
            v = trial(ctl_path, home, db, "tag=a,b", args.repeat, f"work_us={a}")
            false_pos += v["verdict"] in ("faster", "slower")
            db = home.root / f"ab-{t}.duckdb"
            w = trial(ctl_path, home, db, f"work_us={a},{b}", args.repeat, "")
            detected += w["verdict"] == "slower"
            covered += w["ratio_low"] is not None and w["ratio_low"] <= truth <= w["ratio_high"]
            say(
                f"trial {t + 1}/{args.trials}: A/A {v['verdict']} (x{v['ratio']:.4f}); "
                f"A/B {w['verdict']} (x{w['ratio']:.4f} [{w['ratio_low']:.4f}, {w['ratio_high']:.4f}])"
            )
        n = args.trials
        rows = [
            ("A/A false positives", false_pos, "<= 5%", false_pos / n <= 0.05),
            ("A/B 10% detected", detected, ">= 95%", detected / n >= 0.95),
            ("ratio interval covers truth", covered, ">= 90%", covered / n >= 0.90),
        ]
        say(
            f"\n{n} trials of each pair, {args.repeat} repetitions per configuration, "
            f"{time.monotonic() - started:.0f} s"
        )
        for name, k, goal, ok in rows:
            lo, hi = wilson(k, n)
            say(
                f"  {name:28} {k:3}/{n} = {k / n:6.1%}  (95% Wilson {lo:.0%}-{hi:.0%})  "
                f"goal {goal}: {'met' if ok else 'MISSED'}"
            )
    return 0 if all(ok for *_, ok in rows) else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
