"""Calibration of the comparison rule and the intervals of controller/analysis/stats.py, by SIMULATION.

Nothing is measured here: every figure comes from random numbers drawn with a seeded generator,
to check that the statistics do what they claim under noise like that of repeated benchmark runs.
Each simulated repetition is one run's throughput, 100 samples/s times a noise factor:

  quiet           lognormal noise, coefficient of variation 3% per repetition;
  shared machine  the same, and with probability 0.2 a repetition loses 3-30% of its throughput
                  to other load (skewed, heavy-tailed: the noise of a busy 2-core machine).

For n = 3, 4, 5, 10 repetitions per configuration it prints

  A/A false positives   both groups from the same distribution; fraction called faster or slower
                        (goal <= 5%, the rule's alpha);
  A/B detection at 10%  the candidate 10% faster; fraction called "faster" (goal >= 95% from
                        n = 5 in the quiet model);
  ratio CI coverage     fraction of 95% intervals of the ratio candidate / baseline (`ratio_ci`)
                        that contain the true ratio 1.1 (goal >= 90%, ideally about 95%);
  A/B: test alone       the fraction the rank test and the threshold would call without the
                        rule's third condition (the interval excludes 1): the power that
                        condition costs; and the fraction not called although the interval
                        excludes 1 (the test's p >= 0.05);

with, in the same table for comparison, the alternative that was not chosen (Welch's t-test on
log values with the same 2% threshold) and the coverage of bootstrap ratio intervals
(scipy.stats.bootstrap, percentile and BCa). Then the coverage of `quantile_ci` (p99 over
repetitions) and of `batch_means_ci` against an iid interval on one autocorrelated AR(1) series.
docs/statistics.md and docs/decisions.md quote these figures.

    .venv/bin/python benchmarks/stats_calibration.py [--trials 1000] [--seed 1]

Exit codes: 0 every goal met, 1 a goal missed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats as st
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.analysis.stats import (
    DEFAULT_MIN_EFFECT,
    Interval,
    batch_means_ci,
    excludes_one,
    mean_ci,
    quantile_ci,
    ratio_ci,
    verdict,
)

Noise = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
CV = 0.03
TRUE_RATIO = 1.1
SIZES = (3, 4, 5, 10)


def quiet(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Lognormal factor with mean 1 and coefficient of variation CV."""
    sigma = math.sqrt(math.log1p(CV**2))
    return rng.lognormal(-(sigma**2) / 2, sigma, shape)


def shared_machine(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """`quiet`, and one repetition in five loses 3-30% to other load."""
    hit = rng.random(shape) < 0.2
    return quiet(rng, shape) * np.where(hit, rng.uniform(0.70, 0.97, shape), 1.0)


def rule_rates(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """The module's rule on each row pair: fractions (called either way, called faster, called
    faster by the test and the threshold alone, without the interval's condition, not called
    while the interval excludes 1)."""
    called = faster = test_only = uncalled_ci_excludes_one = 0
    for x, y in zip(a, b, strict=True):
        v = verdict(x, y, higher_is_better=True)
        called += v.verdict in ("faster", "slower")
        faster += v.verdict == "faster"
        p = v.p_value
        test_only += p is not None and p < 0.05 and v.ratio.estimate >= 1 + DEFAULT_MIN_EFFECT
        uncalled_ci_excludes_one += v.verdict == "no significant difference" and excludes_one(v.ratio)
    n = len(a)
    return called / n, faster / n, test_only / n, uncalled_ci_excludes_one / n


def welch_rates(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The alternative not chosen: Welch's t-test on log values, p < 0.05, same threshold."""
    la, lb = np.log(a), np.log(b)
    p = st.ttest_ind(la, lb, axis=1, equal_var=False).pvalue
    diff = la.mean(axis=1) - lb.mean(axis=1)
    called = (p < 0.05) & (np.abs(diff) >= math.log1p(DEFAULT_MIN_EFFECT))
    return float(called.mean()), float((called & (diff > 0)).mean())


def ratio_coverage(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([covered(ratio_ci(x, y), TRUE_RATIO) for x, y in zip(a, b, strict=True)]))


def bootstrap_coverage(a: np.ndarray, b: np.ndarray, method: str, rng: np.random.Generator) -> float:
    def ratio_of_means(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(x.mean(axis=axis) / y.mean(axis=axis))

    hits = 0
    for x, y in zip(a, b, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns on degenerate resamples with n = 3
            res = st.bootstrap(
                (x, y),
                ratio_of_means,
                vectorized=True,
                n_resamples=999,
                method=method,
                random_state=rng,
            )
        ci = res.confidence_interval
        hits += bool(ci.low <= TRUE_RATIO <= ci.high)
    return hits / len(a)


def covered(ci: Interval, truth: float) -> bool:
    return ci.low is not None and ci.high is not None and ci.low <= truth <= ci.high


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="simulated comparisons per figure")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    trials = args.trials
    boot_trials = min(trials, 300)
    started = time.perf_counter()
    failures: list[str] = []

    print("SIMULATION (no benchmark is run): seeded random repetitions, see the docstring for the model")
    print(f"{trials} simulated comparisons per figure, {boot_trials} for the bootstrap columns\n")
    models: list[tuple[str, Noise]] = [
        ("quiet (CV 3%)", quiet),
        ("shared machine (CV 3% + 20% of runs slowed 3-30%)", shared_machine),
    ]
    for name, noise in models:
        print(f"noise: {name}")
        print(
            "   n | rule: A/A false pos.  A/B detect. | A/B: test alone  not called, CI excl. 1 |"
            " ratio CI cover | Welch-log: A/A   A/B | bootstrap cover: pct   BCa"
        )
        for n in SIZES:
            base_a = 100 * noise(rng, (trials, n))
            base_b = 100 * noise(rng, (trials, n))
            cand = TRUE_RATIO * 100 * noise(rng, (trials, n))
            fp, _, _, _ = rule_rates(base_a, base_b)
            _, det, test_only, excl_one = rule_rates(cand, base_b)
            cover = ratio_coverage(cand, base_b)
            w_fp, _ = welch_rates(base_a, base_b)
            _, w_det = welch_rates(cand, base_b)
            b_pct = bootstrap_coverage(cand[:boot_trials], base_b[:boot_trials], "percentile", rng)
            b_bca = bootstrap_coverage(cand[:boot_trials], base_b[:boot_trials], "BCa", rng)
            print(
                f"  {n:2d} |            {pct(fp)}       {pct(det)} |"
                f"        {pct(test_only)}                 {pct(excl_one)} |"
                f"         {pct(cover)} |        {pct(w_fp)} {pct(w_det)} |"
                f"                 {pct(b_pct)} {pct(b_bca)}"
            )
            if fp > 0.05:
                failures.append(f"{name}, n={n}: A/A false positives {pct(fp)} (goal <= 5%)")
            if cover < 0.90:
                failures.append(f"{name}, n={n}: ratio CI coverage {pct(cover)} (goal >= 90%)")
            if noise is quiet and n >= 5 and det < 0.95:
                failures.append(f"{name}, n={n}: detection at 10% {pct(det)} (goal >= 95%)")
        print()

    print("intervals of one configuration (95%):")
    sigma = 0.2  # per-iteration latencies lognormal(0, 0.2), 2000 iterations per repetition
    true_p99 = math.exp(sigma * st.norm.ppf(0.99))
    for n in (3, 5, 10):
        p99 = np.percentile(rng.lognormal(0, sigma, (boot_trials, n, 2000)), 99, axis=2)
        cover = np.mean([covered(quantile_ci(row), true_p99) for row in p99])
        print(f"  quantile_ci, p99 of {n:2d} repetitions covers the true p99: {pct(cover)}")
        if cover < 0.90:
            failures.append(f"quantile_ci, n={n}: coverage {pct(cover)} (goal >= 90%)")
    phi = 0.9  # AR(1) per-iteration series, correlation time about 19 iterations
    series = 10 + lfilter([1.0], [1.0, -phi], rng.normal(0, 1, (boot_trials, 2200)), axis=1)[:, 200:]
    batch = np.mean([covered(batch_means_ci(row), 10.0) for row in series])
    naive = np.mean([covered(mean_ci(row), 10.0) for row in series])
    print(f"  one run of 2000 AR(1) iterations (phi {phi}): batch means (20 batches) cover the mean")
    print(f"  {pct(batch)}, an iid t interval over the iterations only {pct(naive)}")
    if batch < 0.90:
        failures.append(f"batch_means_ci: coverage {pct(batch)} (goal >= 90%)")
    print()

    print("n = 3 gives 'insufficient data' by design: the exact Mann-Whitney test cannot go below p = 0.1.")
    print(f"({time.perf_counter() - started:.0f} s)")
    for line in failures:
        print(f"FAIL: {line}")
    print("calibration goals: " + ("FAIL" if failures else "PASS"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
