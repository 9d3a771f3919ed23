"""Is the server scenario's load generator and batcher right? Queueing theory as the truth.

With the null runner's deterministic work (`work_us`, busy in C with the GIL released) and
`server.max_batch=1`, the server is an M/D/1 queue: Poisson arrivals at rate lambda, one server,
constant service time S. Its mean latency (sojourn time) is

    W = S + rho * S / (2 * (1 - rho)),   rho = lambda * S.

Steps, each through the real tool (`bench-ctl run --launcher local --json`, scratch state folder):

1. S: the null runner's mean latency at batch 1 in the closed loop (`--scenario offline`).
2. For rho = 0.5 and 0.8 of the service rate 1/S: `--scenario server` at that target rate,
   `max_batch=1`, `max_delay_ms=0`. Printed side by side: measured mean latency and the M/D/1
   prediction from S and the rate of the schedule actually offered (verdict: within 15 %), and
   achieved against offered QPS (verdict: within 3 %).
3. The driver's own cost per query: `work_us=0`, a light load; the mean latency is then the
   generator's wake-up, the hand-over to the batcher thread, the batcher's wake-up and the
   bookkeeping, in microseconds.
4. In this process, the driver against the ideal queue on the same schedule with the same compute
   times: how much latency the driver itself adds at each load, split into the wake-up of an idle
   batcher and the gap between back-to-back queries (printed, not judged).

Exit codes: 0 PASS, 1 FAIL (or a run failed), 2 a precondition is missing. About a minute with
the default `--seconds 20`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    EXIT_FAIL,
    LoadMeter,
    ScratchHome,
    bench_ctl,
    ctl_run,
    ensure_local_env,
    say,
)
from harness_overhead import FAKE_MODEL, make_fake_model

LATENCY_TOLERANCE = 0.15
QPS_TOLERANCE = 0.03


def parse_args(description: str | None = __doc__) -> argparse.Namespace:
    """The options of this benchmark and of server_vs_loadgen.py (the same server, the same loads)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-us", type=float, default=2000.0, help="null runner work per call (default 2000)")
    p.add_argument("--seconds", type=float, default=20.0, help="arrival schedule per load (default 20)")
    p.add_argument("--loads", default="0.5,0.8", help="fractions of the service rate (default 0.5,0.8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch state folder")
    args = p.parse_args()
    if args.work_us <= 0 or args.seconds <= 0:
        p.error("--work-us and --seconds must be > 0")
    return args


def server_sets(work_us: float, qps: float, seconds: float, seed: int) -> list[str]:
    return [
        f"work_us={work_us:g}",
        "policy.keep_latencies=false",
        f"server.target_qps={qps:.3f}",
        "server.max_batch=1",
        "server.max_delay_ms=0",
        f"server.min_duration_s={seconds:g}",
        "server.min_queries=100",
        f"server.seed={seed}",
    ]


def mdl(service_ms: float, qps: float) -> float:
    rho = qps * service_ms / 1000
    return service_ms + rho * service_ms / (2 * (1 - rho)) if rho < 1 else float("inf")


def main() -> int:
    args = parse_args()
    ctl = bench_ctl()
    ensure_local_env(ctl, "null")
    loads = [float(x) for x in args.loads.split(",")]
    failed = False
    started = time.monotonic()
    with ScratchHome(envs=["null"], keep=args.keep) as home:
        make_fake_model(home.models / FAKE_MODEL)
        closed = [
            f"work_us={args.work_us:g}",
            "policy.keep_latencies=false",
            "policy.min_time_s=3",
            "policy.max_time_s=6",
        ]
        say(f"1. service time S: bench-ctl run --image null --model {FAKE_MODEL} -b 1 --scenario offline "
            + " ".join(f"--set {s}" for s in closed))  # fmt: skip
        with LoadMeter() as load:
            offline = ctl_run(ctl, home, "null", FAKE_MODEL, "1", closed, timeout_s=300)
        s_ms = float(offline["measurements"][0]["latency_mean_ms"])
        say(f"   S = {s_ms:.4f} ms (work_us {args.work_us:g}); service rate 1/S = {1000 / s_ms:.1f}/s; "
            f"other processes kept {load.other_cores:.2f} cores busy")  # fmt: skip
        say(f"2. M/D/1: bench-ctl run --image null --model {FAKE_MODEL} -b 1 --scenario server "
            + " ".join(f"--set {s}" for s in server_sets(args.work_us, 0, args.seconds, args.seed)).replace(
                "target_qps=0.000", "target_qps=RHO/S"))  # fmt: skip
        say(
            f"   {'rho':>5} {'target':>9} {'offered':>9} {'achieved':>9} {'qps err':>8}  "
            f"{'measured ms':>11} {'M/D/1 ms':>9} {'error':>7}  {'queue ms':>8} {'compute ms':>10}  verdict"
        )
        for rho in loads:
            target = rho * 1000 / s_ms
            res = run_server(ctl, home, server_sets(args.work_us, target, args.seconds, args.seed))
            m = res["measurements"][0]
            offered, achieved = float(m["offered_qps"]), float(m["achieved_qps"])
            predicted = mdl(s_ms, offered)
            lat_err = m["latency_mean_ms"] / predicted - 1
            qps_err = achieved / offered - 1
            ok = abs(lat_err) <= LATENCY_TOLERANCE and abs(qps_err) <= QPS_TOLERANCE
            failed |= not ok
            say(
                f"   {offered * s_ms / 1000:5.3f} {target:9.1f} {offered:9.1f} {achieved:9.1f} "
                f"{qps_err:+8.2%}  {m['latency_mean_ms']:11.3f} {predicted:9.3f} {lat_err:+7.1%}  "
                f"{m['queueing_mean_ms']:8.3f} {m['compute_mean_ms']:10.3f}  {'PASS' if ok else 'FAIL'}"
            )
        say(f"   limits: mean latency within {LATENCY_TOLERANCE:.0%} of M/D/1, achieved within "
            f"{QPS_TOLERANCE:.0%} of offered")  # fmt: skip
        zero = server_sets(0, 200, min(args.seconds, 5), args.seed)
        res = run_server(ctl, home, zero)
        m = res["measurements"][0]
        say(
            "3. driver overhead (work_us=0, 200 queries/s, max_batch 1): mean "
            f"{m['latency_mean_ms'] * 1000:.1f} us per query (p50 {m['latency_p50_ms'] * 1000:.1f}, "
            f"p99 {m['latency_p99_ms'] * 1000:.1f}); of which queueing {m['queueing_mean_ms'] * 1000:.1f} us "
            "(generator and batcher wake-ups, hand-over)"
        )
    ideal_queue_excess(args.work_us, loads, s_ms, min(args.seconds, 10), args.seed)
    say(f"server M/D/1 check: {'FAIL' if failed else 'PASS'} ({time.monotonic() - started:.0f}s)")
    return EXIT_FAIL if failed else 0


def ideal_queue_excess(work_us: float, loads: list[float], s_ms: float, seconds: float, seed: int) -> None:
    """Step 4, in this process: the driver (`runners.scenarios.server.drive`) against the ideal
    single-server queue on the same schedule with the same compute times (start = max(arrival,
    previous done), done = start + that query's compute). The excess is the driver's own cost, in
    two parts: the wake-up from an idle batcher to a start, and the gap between back-to-back
    queries. Printed, not judged: it explains what steps 2 and 3 measure."""
    import numpy as np

    from runners.frameworks.null import busy
    from runners.scenarios.server import drive, schedule

    say("4. the driver against the ideal queue on the same schedule and compute times (in process):")
    head = ("rho", "excess mean us", "p99 us", "idle wake-up us (p50)", "back-to-back gap us (p50)")
    say("   " + " ".join(f"{h:>{w}}" for h, w in zip(head, (5, 14, 8, 23, 27), strict=True)))
    for rho in loads:
        qps = rho * 1000 / s_ms
        d = drive(lambda _: busy(work_us), schedule(qps, int(seconds * qps), seed), 1, [0, 1], 0.0)
        arrive, start, done = d.arrivals_ns, d.starts_ns, d.done_ns
        ideal = np.empty(len(arrive))
        free = 0
        for i in range(len(arrive)):
            free = max(int(arrive[i]), free) + int(done[i] - start[i])
            ideal[i] = free - arrive[i]
        excess = (done - arrive - ideal) / 1e3
        queued = arrive[1:] < done[:-1]  # waiting when the query before it finished
        gap = (start[1:] - done[:-1])[queued] / 1e3
        wake = (start[1:] - arrive[1:])[~queued] / 1e3
        say(
            f"   {rho:5.2f} {excess.mean():14.1f} {np.percentile(excess, 99):8.1f}  "
            f"{wake.mean():13.1f} ({np.median(wake):6.1f})  {gap.mean():17.1f} ({np.median(gap):6.1f})"
        )


def run_server(ctl: str, home: ScratchHome, sets: list[str]) -> dict[str, Any]:
    """ctl_run with --scenario server (ctl_run passes --set values only)."""
    return ctl_run(ctl, home, "null", FAKE_MODEL, "1", [*sets], timeout_s=600, extra=["--scenario", "server"])


if __name__ == "__main__":
    raise SystemExit(main())
