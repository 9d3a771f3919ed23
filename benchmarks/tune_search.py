"""`bench-ctl tune`'s search against a known answer: the null runner's landscape.

The null runner with `landscape=true` multiplies its work by `null_landscape(knob_a, knob_b)`
(schemas/frameworks/null.py): one optimum (factor 1.0), a near-tie 0.8 % from it far away in
the grid, a bowl elsewhere and a cliff. A search must return the optimum or the near-tie (then
reported as not significantly different from the other), never a candidate significantly worse
(a factor above 1 + the minimum effect), and use at most a third of the runs of the full grid
(every candidate `FINAL_RUNS` times).

Two modes, printed side by side when both run:

- simulated (default 20 seeded trials, seconds): the race itself (`controller.run.tune.race`)
  on candidates whose runs are drawn from the truth with run-to-run noise (`--noise`, lognormal,
  default 3 %) and a within-run interval (`--within`, default 1 %);
- screened (`--screened N`, default 20 seeded trials, seconds): the same race on a simulated
  clock, each trial taking `TRIAL_S`, under a budget of `SCREENED_TRIALS` trials, which pays for
  no full first round: the search screens one option at a time from the defaults, then races
  the combination of the best values (on this landscape, the optimum);
- real (`--real N`): N calls of `bench-ctl tune --images null --set landscape=true` in a scratch
  store, each a few minutes on a 2-core host.

    .venv/bin/python benchmarks/tune_search.py [--trials 20] [--noise 0.03] [--real 1]

Exit codes: 0 every goal met, 1 a goal missed, 2 a precondition is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import EXIT_FAIL, REPO, ScratchHome, bench_ctl, ensure_local_env, say

from controller.analysis import stats
from controller.run import tune
from schemas.frameworks.base import search_space
from schemas.frameworks.null import NULL_NEAR_TIE, NULL_OPTIMUM, NullOptions, null_landscape

WORK_US = 2000.0


def simulated_candidates() -> list[tune.Candidate]:
    space = search_space(NullOptions, cores=2)
    defaults = {k: NullOptions.model_fields[k].default for k in space}
    out = []
    for a in space["knob_a"]:
        for b in space["knob_b"]:
            combo = {"knob_a": a, "knob_b": b}
            out.append(
                tune.Candidate("null", "null", combo, 1, None, f"{a}-{b}", combo == defaults, defaults)
            )
    return out


TRIAL_S = 10.0  # a simulated trial's seconds (screened mode)
SCREENED_TRIALS = 30  # the screened mode's budget, in trials: less than the 32 candidates


class Clock:
    """Simulated seconds: a trial advances them by TRIAL_S."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    seed: int, noise: float, within: float, budget_trials: int | None = None
) -> tuple[tuple[int, int], int, int, bool, tune.Search]:
    """One seeded search: (the answer's knobs, runs used, full-grid runs, whether the answer's
    ties include the optimum or the near-tie, the search). With `budget_trials`, on a simulated
    clock under a budget of that many trials."""
    rng = np.random.default_rng(seed)
    cands = simulated_candidates()
    budget = 1e9 if budget_trials is None else budget_trials * TRIAL_S
    req = tune.TuneRequest(model="fake", images=["null"], batch_sizes=[1], budget_s=budget)
    clock = Clock()
    search = tune.Search(req, cands, None, True, clock=clock)

    def execute(c: tune.Candidate, repetition: int) -> tune.Trial | str:
        clock.now += TRIAL_S
        factor = null_landscape(c.options["knob_a"], c.options["knob_b"])
        value = 1e6 / (WORK_US * factor) * math.exp(rng.normal(0, noise))
        return tune.Trial(f"{c.key}-{repetition}", value, value, 1000 / value, None, within, False, None)

    tune.race(search, execute, lambda _: None)
    answer = tune.answer(search)
    best = answer.images[0].best
    assert best is not None
    found = (int(best.options["knob_a"]), int(best.options["knob_b"]))
    tied = {found} | {_knobs(label) for label in answer.images[0].ties}
    return found, search.runs_made, answer.full_grid_runs, bool(tied & {NULL_OPTIMUM, NULL_NEAR_TIE}), search


def _knobs(label: str) -> tuple[int, int]:
    knobs = {"knob_a": 0, "knob_b": 0}
    for part in label.split():
        k, _, v = part.partition("=")
        if k in knobs:
            knobs[k] = int(v)
    return knobs["knob_a"], knobs["knob_b"]


def worse(found: tuple[int, int]) -> bool:
    """Significantly worse than the optimum: a factor above 1 + the minimum effect."""
    return null_landscape(*found) > 1 + stats.DEFAULT_MIN_EFFECT


def real(n: int, budget: str) -> list[tuple[tuple[int, int], int, int, float]]:
    ctl = bench_ctl()
    ensure_local_env(ctl, "null")
    out = []
    with ScratchHome(envs=["null"]) as home:
        from tests.conftest import write_fake_model

        write_fake_model(home.models / "fake")
        for i in range(n):
            db = home.root / f"tune-{i}.duckdb"
            t0 = time.monotonic()
            proc = subprocess.run(
                [ctl, "tune", "-m", "fake", "-i", "null", "--set", "landscape=true",
                 "--set", f"work_us={WORK_US}", "--set", "policy.max_time_s=1",
                 "--set", "policy.min_time_s=0.3", "--launcher", "local", "--budget", budget, "--json"],
                capture_output=True, text=True, env={**home.env(), "BENCH_DB": str(db)}, cwd=REPO,
            )  # fmt: skip
            seconds = time.monotonic() - t0
            if proc.returncode != 0:
                tail = proc.stderr[-400:]
                say(f"  real trial {i + 1}: bench-ctl tune failed (exit {proc.returncode}): {tail}")
                continue
            doc = json.loads(proc.stdout)
            best = doc["images"][0]["best"]
            found = (int(best["options"]["knob_a"]), int(best["options"]["knob_b"]))
            out.append((found, int(doc["runs_made"]), int(doc["full_grid_runs"]), seconds))
            factor = null_landscape(*found)
            say(f"  real trial {i + 1}: found {found} (factor {factor:.3f}), {doc['runs_made']} runs")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="simulated seeded searches (default 20)")
    p.add_argument(
        "--noise", type=float, default=0.03, help="run-to-run noise, lognormal sigma (default 0.03)"
    )
    p.add_argument("--within", type=float, default=0.01, help="a run's own relative interval (default 0.01)")
    p.add_argument(
        "--screened", type=int, default=20, help="simulated searches under a budget that screens (default 20)"
    )
    p.add_argument("--real", type=int, default=0, help="real searches with the null runner (default 0)")
    p.add_argument("--budget", default="15m", help="budget of a real search (default 15m)")
    args = p.parse_args()
    if args.trials < 0 or args.real < 0 or args.screened < 0 or not 0 <= args.noise < 1:
        p.error("--trials, --screened and --real >= 0, --noise in [0, 1)")
    ok = True
    near_factor = null_landscape(*NULL_NEAR_TIE)
    say(f"truth: optimum {NULL_OPTIMUM} (factor 1.0), near-tie {NULL_NEAR_TIE} (factor {near_factor})")
    if args.trials:
        sims = [simulate(seed, args.noise, args.within)[:4] for seed in range(args.trials)]
        hits = sum(f in (NULL_OPTIMUM, NULL_NEAR_TIE) for f, *_ in sims)
        bad = sum(worse(f) for f, *_ in sims)
        used = [r / g for _, r, g, _ in sims]
        say(f"\nsimulated, {args.trials} seeded searches, noise {args.noise:.0%}, within {args.within:.0%}:")
        said_tie = sum(tied for f, _, _, tied in sims if f == NULL_NEAR_TIE)
        near = sum(f == NULL_NEAR_TIE for f, *_ in sims)
        say(f"  found the optimum or the near-tie: {hits}/{args.trials}   (goal: all)")
        say(f"  near-tie answers that name the optimum as not significantly different: {said_tie}/{near}")
        say(f"  answer significantly worse than the optimum: {bad}/{args.trials}   (goal: 0)")
        mid, top = statistics.median(used), max(used)
        say(f"  runs used / full grid: median {mid:.1%}, worst {top:.1%}   (goal: median <= 33.3%)")
        found = {}
        for f, *_ in sims:
            found[f] = found.get(f, 0) + 1
        say(
            "  answers: "
            + ", ".join(f"{k} x{v} (factor {null_landscape(*k):.3f})" for k, v in sorted(found.items()))
        )
        ok &= bad == 0 and hits == args.trials and statistics.median(used) <= 1 / 3 + 1e-9
    if args.screened:
        runs = [simulate(seed, args.noise, args.within, SCREENED_TRIALS) for seed in range(args.screened)]
        say(
            f"\nscreened, {args.screened} seeded searches on a simulated clock ({TRIAL_S:g} s a trial, "
            f"a budget of {SCREENED_TRIALS} trials for 32 candidates):"
        )
        opt = sum(f == NULL_OPTIMUM for f, *_ in runs)
        default = null_landscape(0, 0)
        gained = sum(null_landscape(*f) < default for f, *_ in runs)
        screened = sum(r[4].screened for r in runs)
        over = [r[4].elapsed() / r[4].request.budget_s for r in runs]
        say(f"  screened: {screened}/{args.screened}")
        say(
            f"  answers faster than the defaults (factor {default:.2f}): {gained}/{args.screened}"
            "   (goal: all)"
        )
        say(
            f"  time used / budget: median {statistics.median(over):.0%}, worst {max(over):.0%}"
            "   (goal: <= 100%)"
        )
        say(
            f"  found the optimum: {opt}/{args.screened} (no goal: one run of each option's value cannot "
            f"always tell knob_b=1 from the defaults, {default / null_landscape(0, 1) - 1:.1%} apart, under "
            f"{args.noise:.0%} noise; a missed value leaves the combination short of the optimum)"
        )
        answers: dict[tuple[int, int], int] = {}
        for f, *_ in runs:
            answers[f] = answers.get(f, 0) + 1
        say(
            "  answers: "
            + ", ".join(f"{k} x{v} (factor {null_landscape(*k):.3f})" for k, v in sorted(answers.items()))
        )
        ok &= gained == args.screened and screened == args.screened and max(over) <= 1 + 1e-9
    if args.real:
        reals = real(args.real, args.budget)
        say(f"\nreal, {len(reals)} search(es) with the null runner ({WORK_US:g} us of work x the landscape):")
        for found_r, runs, grid, seconds in reals:
            factor = null_landscape(*found_r)
            say(
                f"  found {found_r} (factor {factor:.3f}), {runs} runs of a {grid}-run grid "
                f"({runs / grid:.1%}), {seconds:.0f} s"
            )
            ok &= not worse(found_r) and runs <= grid / 3
    return 0 if ok else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
