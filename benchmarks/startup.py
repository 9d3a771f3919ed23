"""What does bench-ctl cost before it does anything, and around each run? Goal: `--help` under 0.3 s.

Prints the median wall time over `--runs` (10) of

  python -c pass                   the interpreter alone (the floor)
  bench-ctl --help                 start-up: imports of the command tree
  bench-ctl query "select 1"       start-up plus one read-only store open
  bench-ctl models list            start-up plus the model store
  bench-ctl compare --model M      start-up plus a comparison over an empty selection

and the controller's own cost per run: the wall time of `bench-ctl run --image null` minus what the
runner process reports it spent (its load phases and every steady state and warm-up), so
planning, launching, validating and storing remain. Everything runs in a scratch BENCH_HOME with the
real null environment linked in; the user's store is not touched. Exit code 0, or 2 when the null
environment is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, ScratchHome, bench_ctl, ensure_local_env, say
from harness_overhead import FAKE_MODEL, make_fake_model

GOAL_HELP_S = 0.3


def timed(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, int]:
    """Median wall seconds of `cmd` over `runs`, and its exit code."""
    times: list[float] = []
    code = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        code = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), code


def controller_cost(ctl: str, home: ScratchHome, runs: int) -> list[float]:
    """Seconds per `bench-ctl run --image null` not spent inside the runner's own phases."""
    cmd = [ctl, "run", "--image", "null", "--model", FAKE_MODEL, "-b", "1", "--launcher", "local", "--json"]
    for s in ("policy.min_time_s=0.2", "policy.max_time_s=0.5", "policy.window_s=0.05"):
        cmd += ["--set", s]
    costs: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=home.env(), cwd=REPO)
        wall = time.perf_counter() - t0
        result = json.loads(proc.stdout)
        inside = sum(p["seconds"] for p in result["phases"])
        inside += sum(m["duration_s"] + m["warmup_s"] for m in result["measurements"])
        costs.append(wall - inside)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (median)")
    args = parser.parse_args()
    ctl = bench_ctl()
    ensure_local_env(ctl, "null")
    with ScratchHome(envs=["null"]) as home:
        make_fake_model(home.models / FAKE_MODEL)
        env = home.env()
        # A store with one run in it, so query and compare read a real store.
        first = controller_cost(ctl, home, 1)
        floor, _ = timed([sys.executable, "-c", "pass"], env, args.runs)
        say(f"{'command':<34} {'median s':>9} {'minus python':>13}")
        say(f"{'python -c pass':<34} {floor:9.3f} {0:13.3f}")
        help_s = 0.0
        for label, cmd in [
            ("bench-ctl --help", [ctl, "--help"]),
            ('bench-ctl query "select 1"', [ctl, "query", "select 1"]),
            ("bench-ctl models list", [ctl, "models", "list"]),
            ("bench-ctl compare --model M", [ctl, "compare", "--model", FAKE_MODEL]),
        ]:
            seconds, code = timed(cmd, env, args.runs)
            help_s = seconds if label.endswith("--help") else help_s
            failed = "" if code == 0 else f"   (exit {code})"
            say(f"{label:<34} {seconds:9.3f} {seconds - floor:13.3f}{failed}")
        costs = first + controller_cost(ctl, home, max(1, args.runs // 2) - 1)
        say(
            f"controller cost per null run: median {statistics.median(costs):.3f} s over {len(costs)} runs "
            "(command wall time minus the runner's load phases, warm-ups and steady states)"
        )
        verdict = "PASS" if help_s < GOAL_HELP_S else "FAIL"
        say(f"bench-ctl --help: {help_s:.3f} s against a goal of {GOAL_HELP_S} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
