"""Confidence intervals and the comparison rule for repeated benchmark runs.

The unit of evidence is the **repetition**: one independent runner process measuring one
configuration. With `bench-ctl run --repeat N`, each configuration has N values of every metric
(throughput, mean latency, p50, p99, ...), one per repetition, and everything across
repetitions is computed from those N values. Iterations inside one run are not independent
(caches, frequency scaling, other load come and go in bursts), so they are never treated as
N_iterations independent samples: the only within-run interval is `batch_means_ci`, labelled
"batch-means".

Intervals (`Interval.method`):

* ``"t"``: Student-t interval over per-repetition values (`mean_ci`, `quantile_ci`), or Welch's
  t interval on log values for a ratio (`ratio_ci`).
* ``"batch-means"``: within one run, from non-overlapping batch means (`batch_means_ci`).
* ``"none"``: too little data for an interval (fewer than two values or batches); only the
  estimate is given, ``low`` and ``high`` are None.

The comparison rule (`verdict`), the one used wherever two configurations are compared:

    Candidate and baseline are each measured in at least ``min_repetitions(alpha)``
    independent repetitions (4 at alpha = 0.05; unequal groups such as 3 and 5 also qualify, see
    below). The candidate is called **faster** or **slower** only when both

    1. a two-sided Mann-Whitney U test on the per-repetition values gives p < alpha
       (0.05 by default; exact distribution, or an exact permutation test of the midranks when
       values tie, with the normal approximation beyond 20 000 relabellings), and
    2. the ratio candidate / baseline (ratio of geometric means) is at least ``1 + min_effect``
       or at most ``1 / (1 + min_effect)`` (``min_effect`` = 0.02 by default).

    Otherwise the verdict is **no significant difference**. For a metric where higher is better
    (throughput) a ratio above 1 is faster; where lower is better (latency) a ratio below 1 is
    faster. With too few repetitions for the test to ever reach p < alpha, the verdict is
    **insufficient data**, with a message saying how many repetitions are needed.

Why: the exact Mann-Whitney test assumes nothing about the noise distribution; when both
configurations are the same (an A/A comparison) their repetitions are exchangeable, so the
false-positive rate is at most alpha whatever the noise looks like (skewed, bimodal, with
outliers from other load). The effect threshold keeps statistically real but practically
irrelevant differences from being called. It is symmetric in log space, so swapping candidate
and baseline swaps faster and slower exactly. The price is a minimum number of repetitions: the
smallest two-sided p-value the exact test can give for groups of n and m values is
2 / C(n + m, n), e.g. 0.1 for 3 against 3 and 0.029 for 4 against 4. The calibration figures
(simulation) and the comparison with Welch's t-test are in docs/decisions.md and
benchmarks/stats_calibration.py.

The ratio's interval (`Verdict.ratio`) is Welch's t interval on log values at confidence
1 - alpha. It describes the size of the difference; the verdict comes from the rule above, and
in borderline cases the two can disagree (an interval that just includes 1 with a called
difference, or the reverse).

All functions take plain sequences or 1-D numpy arrays of finite floats and raise ValueError on
empty, non-finite or (for ratios) non-positive input. Results are frozen dataclasses;
`dataclasses.asdict` turns them into JSON-ready dicts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as st

Values = Sequence[float] | npt.NDArray[np.floating[Any]] | npt.NDArray[np.integer[Any]]
IntervalMethod = Literal["t", "batch-means", "none"]
VerdictKind = Literal["faster", "slower", "no significant difference", "insufficient data"]

DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_EFFECT = 0.02
DEFAULT_BATCHES = 20
# Ties: an exact permutation test when it has at most this many distinct relabellings, else the
# normal approximation with tie correction (which is then accurate).
_MAX_EXACT_PERMUTATIONS = 20_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    `n` is the number of independent values behind it: repetitions for ``"t"`` (the smaller
    group for a ratio), batches for ``"batch-means"``. `low` and `high` are None when `method`
    is ``"none"``.
    """

    estimate: float
    low: float | None
    high: float | None
    n: int
    method: IntervalMethod
    confidence: float

    @property
    def within_run(self) -> bool:
        """True for an interval computed inside one run (batch means), not across repetitions."""
        return self.method == "batch-means"

    @property
    def relative_half_width(self) -> float | None:
        """Half the interval's width relative to the estimate (0.03 means about ±3%)."""
        if self.low is None or self.high is None or self.estimate == 0:
            return None
        return (self.high - self.low) / 2 / abs(self.estimate)


@dataclass(frozen=True)
class Verdict:
    """Outcome of the comparison rule (see the module docstring) for candidate vs baseline."""

    verdict: VerdictKind
    ratio: Interval  # candidate / baseline (ratio of geometric means), confidence 1 - alpha
    p_value: float | None  # two-sided Mann-Whitney U; None with insufficient data
    n_candidate: int
    n_baseline: int
    message: str


def _as_array(values: Values, name: str = "values", positive: bool = False) -> npt.NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name}: needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: values must be finite (no NaN or infinity)")
    if positive and not np.all(x > 0):
        raise ValueError(f"{name}: values must be positive (ratios are taken on log values)")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _t_interval(x: npt.NDArray[np.float64], confidence: float, method: IntervalMethod) -> Interval:
    """Student-t interval for the mean of the values in `x` (treated as independent)."""
    mean = float(np.mean(x))
    n = int(x.size)
    if n < 2:
        return Interval(mean, None, None, n, "none", confidence)
    sem = float(st.sem(x))
    if not math.isfinite(sem) or not math.isfinite(mean):  # overflow near the float limits
        return Interval(mean, None, None, n, "none", confidence)
    if sem == 0:
        return Interval(mean, mean, mean, n, method, confidence)
    low, high = st.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, min(float(low), mean), max(float(high), mean), n, method, confidence)


def mean_ci(values: Values, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Mean of per-repetition values with a Student-t interval (method "t").

    `values` holds one value per independent repetition (e.g. each run's throughput). With fewer
    than two values the result has method "none" and no bounds. Identical values give a
    zero-width interval.
    """
    _check_confidence(confidence)
    return _t_interval(_as_array(values), confidence, "t")


def quantile_ci(per_rep_quantiles: Values, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Interval for a latency quantile (p50, p99, ...) across repetitions (method "t").

    Each repetition's own quantile (e.g. the `latency_p99_ms` of each run) is one value; the
    interval is the Student-t interval of their mean, i.e. of the quantile a run of this length
    reports. A quantile estimated from thousands of iterations is close to normally distributed
    across runs, so the t interval fits; a bootstrap over 3-10 values undercovers (as it does
    for the ratio, see docs/decisions.md). Pooling the iterations of all runs and bootstrapping
    them is not offered: iterations are autocorrelated and runs differ from each other, so that
    interval would be far too narrow.
    """
    _check_confidence(confidence)
    return _t_interval(_as_array(per_rep_quantiles, "per_rep_quantiles"), confidence, "t")


def batch_means_ci(
    series: Values, confidence: float = DEFAULT_CONFIDENCE, batches: int = DEFAULT_BATCHES
) -> Interval:
    """Within-run interval for the mean of an autocorrelated series (method "batch-means").

    `series` is one run's per-iteration values (e.g. `latencies_ms`) or its window means, in time
    order. It is cut into `batches` contiguous, non-overlapping batches of equal length (the
    first ``len(series) % batches`` values, nearest to warm-up, are dropped) and the interval is
    the Student-t interval over the batch means. Batches much longer than the series' correlation
    time are nearly independent, which iid intervals over single iterations are not. 10 to 30
    batches is the usual range; fewer values than batches gives one value per batch. The
    estimate is the mean of the values used. `n` is the number of batches; fewer than two gives
    method "none".

    This describes one run only: it says nothing about run-to-run differences (another process,
    another memory layout), which only repetitions measure. Window means from runs whose windows
    hold different numbers of iterations weigh each window equally, so pass per-iteration values
    when the iteration-weighted mean is wanted.
    """
    _check_confidence(confidence)
    if batches < 2:
        raise ValueError(f"batches must be at least 2, got {batches}")
    x = _as_array(series, "series")
    k = min(batches, int(x.size))
    if k < 2:
        return Interval(float(x.mean()), None, None, k, "none", confidence)
    size = x.size // k
    batch_means = x[x.size - k * size :].reshape(k, size).mean(axis=1)
    return _t_interval(batch_means, confidence, "batch-means")


def ratio_ci(candidate: Values, baseline: Values, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Ratio candidate / baseline of two independent groups of repetitions, with an interval.

    The estimate is the ratio of geometric means, exp(mean(log candidate) - mean(log baseline)),
    equal to the ratio of means when the two groups differ by a scale factor (the usual model of
    a performance change). The interval is Welch's t interval (unequal variances) for the
    difference of mean log values, exponentiated: it is asymmetric around the estimate, and
    scale-invariant (multiplying both groups by a constant changes nothing). Values must be
    positive. With fewer than two values in either group the result has method "none".
    `n` is the smaller group's size.
    """
    _check_confidence(confidence)
    a = np.log(_as_array(candidate, "candidate", positive=True))
    b = np.log(_as_array(baseline, "baseline", positive=True))
    diff = float(a.mean() - b.mean())
    estimate = math.exp(diff)
    n = int(min(a.size, b.size))
    if n < 2:
        return Interval(estimate, None, None, n, "none", confidence)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Interval(estimate, estimate, estimate, n, "t", confidence)
    with warnings.catch_warnings():
        # Nearly identical values make scipy warn about precision; the interval is then nearly
        # empty, which is the right answer for such data.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        ci = st.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    low = min(math.exp(float(ci.low)), estimate)
    high = max(math.exp(float(ci.high)), estimate)
    return Interval(estimate, low, high, n, "t", confidence)


def min_attainable_p(n: int, m: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney test can give for groups of n and m."""
    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 2 / math.comb(n + m, n))


def min_repetitions(alpha: float = DEFAULT_ALPHA) -> int:
    """Fewest repetitions per configuration (equal groups) with which a verdict can be reached.

    4 at alpha = 0.05 (3 against 3 cannot give p below 0.1), 5 at alpha = 0.01.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    k = 1
    while min_attainable_p(k, k) >= alpha:
        k += 1
    return k


def _mann_whitney_p(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sided Mann-Whitney U p-value: exact without ties, exact permutation test with ties."""
    if np.unique(np.concatenate([a, b])).size == a.size + b.size:
        return float(st.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    if math.comb(a.size + b.size, a.size) > _MAX_EXACT_PERMUTATIONS:
        return float(st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)

    # U of the candidate is its rank sum minus a constant, and the pooled midranks are the same
    # under every relabelling: permuting the ranks and summing them is the exact tied U test.
    ranks = st.rankdata(np.concatenate([a, b]))

    def rank_sum(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], axis: int) -> Any:
        return np.sum(x, axis=axis)

    result = st.permutation_test(
        (ranks[: a.size], ranks[a.size :]),
        rank_sum,
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=np.inf,
        vectorized=True,
    )
    return min(1.0, float(result.pvalue))


def verdict(
    candidate: Values,
    baseline: Values,
    higher_is_better: bool,
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = DEFAULT_ALPHA,
) -> Verdict:
    """Apply the comparison rule (module docstring) to per-repetition values of one metric.

    `candidate` and `baseline` hold one value per independent repetition (e.g. each run's
    throughput). `higher_is_better` is True for throughput-like metrics and False for latencies
    ("faster" then means lower). The ratio is candidate / baseline with Welch's log-t interval at
    confidence 1 - alpha.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    if min_effect < 0:
        raise ValueError(f"min_effect must be at least 0, got {min_effect}")
    a = _as_array(candidate, "candidate", positive=True)
    b = _as_array(baseline, "baseline", positive=True)
    ratio = ratio_ci(a, b, confidence=1 - alpha)
    n, m = int(a.size), int(b.size)
    if min_attainable_p(n, m) >= alpha:
        need = min_repetitions(alpha)
        return Verdict(
            "insufficient data",
            ratio,
            None,
            n,
            m,
            f"needs at least {need} repetitions of each configuration (have {n} and {m}): with "
            f"fewer, the Mann-Whitney test cannot reach p < {alpha:g}",
        )
    p = _mann_whitney_p(a, b)
    log_ratio = float(np.log(a).mean() - np.log(b).mean())
    big_enough = abs(log_ratio) >= math.log1p(min_effect)
    change = f"ratio {ratio.estimate:.3f}"
    if ratio.low is not None and ratio.high is not None:
        change += f" [{ratio.low:.3f}, {ratio.high:.3f}]"
    change += f", p = {p:.3g}"
    if p < alpha and big_enough:
        better = (log_ratio > 0) == higher_is_better
        kind: VerdictKind = "faster" if better else "slower"
        return Verdict(kind, ratio, p, n, m, f"{kind}: {change}")
    reason = f"difference below the {min_effect:.0%} threshold" if p < alpha else f"p >= {alpha:g}"
    message = f"no significant difference ({reason}): {change}"
    return Verdict("no significant difference", ratio, p, n, m, message)


def cv(values: Values) -> float | None:
    """Coefficient of variation: sample standard deviation (n - 1) over the mean.

    None with fewer than two values or a zero mean.
    """
    x = _as_array(values)
    if x.size < 2 or x.mean() == 0:
        return None
    return float(st.variation(x, ddof=1))
