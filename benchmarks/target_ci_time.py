"""How long does a +-2 % answer take? `policy.target_ci` against a fixed 60 s measurement.

OpenVINO's benchmark_app measures for 60 s by default, whatever the noise. With
`--set policy.target_ci=0.02` a run stops once the 95 % interval of its mean iteration time
(batch means, which respect autocorrelation) is within 2 % of the mean. Both runs here: ONNX
Runtime, ResNet50, batch 1, in the same session; printed side by side with the interval each
reached. Goal: target_ci takes at most half the time of the fixed run.

    .venv/bin/python benchmarks/target_ci_time.py [--model resnet50] [--image ort] [--target 0.02]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    EXIT_FAIL,
    LoadMeter,
    ScratchHome,
    bench_ctl,
    ctl_run,
    ensure_local_env,
    require_model,
    say,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="ort")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--target", type=float, default=0.02, help="relative half-width wanted (0.02)")
    parser.add_argument("--fixed-s", type=float, default=60.0, help="the fixed run's duration (60)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    ctl = bench_ctl()
    ensure_local_env(ctl, args.image)
    model = require_model(args.model)
    rows = []
    with ScratchHome(envs=[args.image], models=[model], keep=args.keep) as home:
        # A first run warms the compile cache, so both timed runs load alike.
        ctl_run(ctl, home, args.image, args.model, "1", ["policy.max_time_s=2"], 900)
        plans = [
            (
                f"target_ci={args.target}",
                [f"policy.target_ci={args.target}", f"policy.max_time_s={args.fixed_s}"],
            ),
            (
                f"fixed {args.fixed_s:.0f} s",
                [f"policy.min_time_s={args.fixed_s}", f"policy.max_time_s={args.fixed_s}"],
            ),
        ]
        for name, sets in plans:
            started = time.monotonic()
            with LoadMeter() as load:
                result = ctl_run(ctl, home, args.image, args.model, "1", sets, args.fixed_s + 900)
            wall = time.monotonic() - started
            m = result["measurements"][0]
            rows.append(
                (name, wall, m["duration_s"], m["within_run_ci_rel"], m["throughput_sps"], load.other_cores)
            )
    say(f"{args.image} {args.model} batch 1 on this host (one session):")
    head = ("wall s", "measured s", "half-width", "samples/s", "other cores")
    say(f"  {'run':16} " + " ".join(f"{h:>11}" for h in head))
    for name, wall, measured, rel, sps, other in rows:
        half = f"{rel:.2%}" if rel is not None else "n/a"
        say(f"  {name:16} {wall:11.1f} {measured:11.1f} {half:>11} {sps:11.2f} {other:11.2f}")
    ratio = rows[0][1] / rows[1][1]
    reached = rows[0][3] is not None and rows[0][3] <= args.target
    say(f"time ratio target_ci / fixed: {ratio:.2f} (goal <= 0.50: {'met' if ratio <= 0.5 else 'MISSED'}); ")
    say(f"target reached: {'yes' if reached else 'NO (stopped at max_time_s)'}")
    return 0 if ratio <= 0.5 and reached else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
