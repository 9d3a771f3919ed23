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
    below). The candidate is called **faster** or **slower** only when all three hold:

    1. a two-sided Mann-Whitney U test on the per-repetition values gives p < alpha
       (0.05 by default; exact distribution, or an exact permutation test of the midranks when
       values tie, with the normal approximation beyond 20 000 relabellings),
    2. the ratio's interval (Welch's t on log values at confidence 1 - alpha, the interval that
       is shown beside the verdict) excludes 1, and
    3. the ratio candidate / baseline (ratio of geometric means) is at least ``1 + min_effect``
       or at most ``1 / (1 + min_effect)`` (``min_effect`` = 0.02 by default).

    Otherwise the verdict is **no significant difference**, with the condition that failed in
    its message. For a metric where higher is better (throughput) a ratio above 1 is faster;
    where lower is better (latency) a ratio below 1 is faster. With too few repetitions for the
    test to ever reach p < alpha, the verdict is **insufficient data**, with a message saying
    how many repetitions are needed. Runs flagged noisy are left out first (`clean_runs`): a
    verdict is never made of noisy runs, and when too few clean ones remain it says so.

Why: the exact Mann-Whitney test assumes nothing about the noise distribution; when both
configurations are the same (an A/A comparison) their repetitions are exchangeable, so the
false-positive rate is at most alpha whatever the noise looks like (skewed, bimodal, with
outliers from other load). Requiring the interval to exclude 1 as well makes the verdict and the
interval printed beside it agree by construction (a rank test alone called differences whose
interval included 1 when one run fell far off), at a small cost in power. The effect threshold
keeps statistically real but practically irrelevant differences from being called. It is
symmetric in log space, so swapping candidate and baseline swaps faster and slower exactly. The
price is a minimum number of repetitions: the smallest two-sided p-value the exact test can give
for groups of n and m values is 2 / C(n + m, n), e.g. 0.1 for 3 against 3 and 0.029 for 4
against 4. The calibration figures (simulation and the null runner) are in docs/statistics.md,
benchmarks/stats_calibration.py and benchmarks/noise_calibration.py.

All functions take plain sequences or 1-D numpy arrays of finite floats and raise ValueError on
empty, non-finite or (for ratios) non-positive input. Results are frozen dataclasses;
`dataclasses.asdict` turns them into JSON-ready dicts.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

# scipy.stats is never imported here: its half a second of import would be paid by every process
# that renders a table or a report. The distributions below are written out on numpy, with the
# few special functions (t quantile, normal tail) taken from scipy.special, imported where used.


Values = Sequence[float] | npt.NDArray[np.floating[Any]] | npt.NDArray[np.integer[Any]]
IntervalMethod = Literal["t", "batch-means", "none"]
T = TypeVar("T")
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
    note: str | None = None  # why there is no verdict beyond the test, e.g. "5 of 6 runs noisy"


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
    with np.errstate(over="ignore", invalid="ignore"):
        sem = float(np.std(x, ddof=1) / math.sqrt(n))  # as scipy.stats.sem
    if not math.isfinite(sem) or not math.isfinite(mean):  # overflow near the float limits
        return Interval(mean, None, None, n, "none", confidence)
    if sem == 0:
        return Interval(mean, mean, mean, n, method, confidence)
    # The t quantile itself (scipy.special): what scipy.stats.t.interval computes, without
    # importing scipy.stats, which a report's hundreds of intervals would wait on.
    from scipy.special import stdtrit

    half = float(stdtrit(n - 1, (1 + confidence) / 2)) * sem
    low, high = mean - half, mean + half
    return Interval(mean, min(low, mean), max(high, mean), n, method, confidence)


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
    ci_low, ci_high = _welch_interval(a, b, confidence)
    low = min(math.exp(ci_low), estimate)
    high = max(math.exp(ci_high), estimate)
    return Interval(estimate, low, high, n, "t", confidence)


def _welch_interval(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], confidence: float
) -> tuple[float, float]:
    """Welch's t interval for mean(a) - mean(b): unequal variances, Welch-Satterthwaite degrees of
    freedom (the interval of scipy.stats.ttest_ind(a, b, equal_var=False)). Both groups need at
    least two values."""
    from scipy.special import stdtrit

    va = np.var(a, ddof=1) / a.size
    vb = np.var(b, ddof=1) / b.size
    with np.errstate(divide="ignore", invalid="ignore"):
        df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    if math.isnan(df):  # both variances zero: the interval has zero width whatever df is
        df = 1.0
    se = math.sqrt(float(va + vb))
    diff = float(a.mean() - b.mean())
    tail = (1 - confidence) / 2
    return diff + float(stdtrit(df, tail)) * se, diff + float(stdtrit(df, 1 - tail)) * se


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


def _midranks2(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Twice the midranks of `x` (ranks from 1, tied values sharing the mean of their ranks), as
    integers so that rank sums are exact, and the size of each group of equal values."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    doubled = (ends - counts) + ends + 1  # (first rank + last rank) of each group of equal values
    return doubled[inverse].astype(np.int64), counts.astype(np.int64)


@functools.lru_cache(maxsize=128)
def _u_null_cumulative(n: int, m: int) -> npt.NDArray[Any]:
    """Entry u: how many of the C(n + m, n) equally likely labellings give a Mann-Whitney U <= u,
    for groups of n <= m values without ties.

    The counts of U are the coefficients of the Gaussian binomial [n + m choose n](q), the
    product over i = 1..n of (1 - q^(m + i)) / (1 - q^i), built up one factor at a time as power
    series cut at degree n * m (the largest U): after factor i they are the counts for groups of
    i and m. Multiplying by 1 - q^k subtracts the series shifted by k; dividing by 1 - q^i is a
    running sum over every i-th coefficient. Integers throughout (Python integers once the
    counts could overflow 64 bits), so the p-value is exact up to its final division.
    """
    top = n * m
    dtype: Any = np.int64 if math.comb(n + m, n) < 2**62 else object
    counts = np.zeros(top + 1, dtype=dtype)
    counts[0] = 1
    for i in range(1, n + 1):
        k = m + i
        if k <= top:
            counts[k:] = counts[k:] - counts[: top + 1 - k]
        rows = -(-(top + 1) // i)
        padded = np.zeros(rows * i, dtype=dtype)
        padded[: top + 1] = counts
        counts = np.cumsum(padded.reshape(rows, i), axis=0).reshape(-1)[: top + 1]
    cumulative = np.cumsum(counts)
    cumulative.flags.writeable = False
    return cumulative


def _mann_whitney_exact_p(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sided exact Mann-Whitney U p-value for values without ties: twice the probability of a
    U at most the smaller of U(a) and U(b) under the null distribution, capped at 1 (the p-value
    of scipy.stats.mannwhitneyu with method="exact")."""
    n, m = int(a.size), int(b.size)
    ranks2, _ = _midranks2(np.concatenate([a, b]))
    u = (int(ranks2[:n].sum()) - n * (n + 1)) // 2
    u = min(u, n * m - u)
    at_most = int(_u_null_cumulative(min(n, m), max(n, m))[u])
    return min(1.0, 2 * at_most / math.comb(n + m, n))


def _mann_whitney_permutation_p(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sided exact permutation test of the midrank sum, for values with ties.

    Every one of the C(n + m, n) relabellings of the pooled values into groups of the original
    sizes is equally likely under the null hypothesis, and the pooled midranks are the same under
    each, so the null distribution is the rank sum of every subset of n midranks. The p-value is
    twice the smaller of the fractions of relabellings with a rank sum at most and at least the
    observed one, capped at 1 (the definition of scipy.stats.permutation_test with
    alternative="two-sided"; its relative tolerance for equal values is not needed here, as
    twice the midranks are integers and the sums are exact). Enumerating the subsets of the
    smaller group gives the same p-value, since its rank sum is the total less the other's.
    """
    ranks2, _ = _midranks2(np.concatenate([a, b]))
    total = int(ranks2.size)
    k = int(min(a.size, b.size))
    observed = int((ranks2[: a.size] if a.size == k else ranks2[a.size :]).sum())
    subsets = math.comb(total, k)
    chosen = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(total), k)),
        dtype=np.intp,
        count=subsets * k,
    ).reshape(subsets, k)
    sums = ranks2[chosen].sum(axis=1)
    extreme = min(int(np.count_nonzero(sums <= observed)), int(np.count_nonzero(sums >= observed)))
    return min(1.0, 2 * extreme / subsets)


def _mann_whitney_asymptotic_p(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sided Mann-Whitney U p-value by the normal approximation, with the tie correction of the
    variance and a continuity correction of 1/2 (scipy.stats.mannwhitneyu with
    method="asymptotic"). Needs at least two distinct values."""
    from scipy.special import ndtr

    n, m = int(a.size), int(b.size)
    ranks2, ties = _midranks2(np.concatenate([a, b]))
    u1 = float(ranks2[:n].sum()) / 2 - n * (n + 1) / 2
    u = max(u1, n * m - u1)
    pooled = n + m
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties))
    sd = math.sqrt(n * m / 12 * ((pooled + 1) - tie_term / (pooled * (pooled - 1))))
    z = (u - n * m / 2 - 0.5) / sd
    return min(1.0, max(0.0, 2 * float(ndtr(-z))))


def _mann_whitney_p(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Two-sided Mann-Whitney U p-value: exact without ties, exact permutation test with ties."""
    pooled = np.concatenate([a, b])
    if np.unique(pooled).size == pooled.size:
        return _mann_whitney_exact_p(a, b)
    if np.ptp(pooled) == 0:
        return 1.0
    if math.comb(a.size + b.size, a.size) > _MAX_EXACT_PERMUTATIONS:
        return _mann_whitney_asymptotic_p(a, b)
    return _mann_whitney_permutation_p(a, b)


RULE = (
    "faster or slower only when a two-sided Mann-Whitney U test on per-run values gives "
    f"p < {DEFAULT_ALPHA:g}, the ratio's {1 - DEFAULT_ALPHA:.0%} interval excludes 1 and the ratio is "
    f"at least {DEFAULT_MIN_EFFECT:.0%} from 1 (at least {min_repetitions()} runs of each)"
)


def excludes_one(ratio: Interval) -> bool:
    """Whether a ratio's interval lies entirely above or entirely below 1."""
    return ratio.low is not None and ratio.high is not None and (ratio.low > 1 or ratio.high < 1)


def ratio_number(x: float, digits: int = 3) -> str:
    """`x` to `digits` significant digits, with more where fewer would print a value other than 1
    as 1 (an interval bound of 1.0004 reads 1.0004, never 1: the printed interval then shows
    what the verdict saw)."""
    text = f"{x:.{digits}g}"
    while x != 1 and float(text) == 1 and digits < 12:
        digits += 1
        text = f"{x:.{digits}g}"
    return text


def ratio_text(estimate: float, low: float | None, high: float | None) -> str:
    """A ratio and its interval as printed: `1.1 [1.02, 1.19]`."""
    text = ratio_number(estimate)
    if low is not None and high is not None:
        text += f" [{ratio_number(low)}, {ratio_number(high)}]"
    return text


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
    change = f"ratio {ratio_text(ratio.estimate, ratio.low, ratio.high)}, p = {p:.3g}"
    if p >= alpha:
        reason = f"p >= {alpha:g}"
    elif not excludes_one(ratio):
        reason = f"the ratio's {1 - alpha:.0%} interval includes 1"
    elif abs(log_ratio) < math.log1p(min_effect):
        reason = f"difference below the {min_effect:.0%} threshold"
    else:
        better = (log_ratio > 0) == higher_is_better
        kind: VerdictKind = "faster" if better else "slower"
        return Verdict(kind, ratio, p, n, m, f"{kind}: {change}")
    message = f"no significant difference ({reason}): {change}"
    return Verdict("no significant difference", ratio, p, n, m, message)


def clean_runs(values: Sequence[T], noisy: Sequence[bool], include_noisy: bool = False) -> list[T]:
    """The runs a figure is made of: those not flagged noisy, or every run when none is clean or
    with `include_noisy`. A noisy run is one whose runner was starved or crowded out for more of
    its measurement than the policy allows (see docs/decisions.md): its value is biased low by
    the other load, so it is left out rather than pooled."""
    if len(values) != len(noisy):
        raise ValueError("values and noisy flags differ in length")
    clean = [v for v, n in zip(values, noisy, strict=True) if not n]
    return list(values) if include_noisy or not clean else clean


def verdict_of_runs(
    candidate: Sequence[float],
    candidate_noisy: Sequence[bool],
    baseline: Sequence[float],
    baseline_noisy: Sequence[bool],
    higher_is_better: bool,
    include_noisy: bool = False,
) -> Verdict:
    """The rule on each side's clean runs (`clean_runs`): never a verdict made of noisy runs.

    When noisy runs are left out and what remains cannot give a verdict (a side has no clean run,
    or too few for the test), the verdict is "no significant difference" with the note "k of n
    runs noisy": the host was too busy to decide, which more or quieter runs would. With
    `include_noisy` every run counts, as before this rule existed."""
    used_c = clean_runs(candidate, candidate_noisy, include_noisy)
    used_b = clean_runs(baseline, baseline_noisy, include_noisy)
    v = verdict(used_c, used_b, higher_is_better)
    noisy = sum(map(bool, candidate_noisy)) + sum(map(bool, baseline_noisy))
    if include_noisy or noisy == 0:
        return v
    if min_attainable_p(len(candidate), len(baseline)) >= DEFAULT_ALPHA:
        return v  # too few runs even with the noisy ones: insufficient data, whatever the noise
    note = f"{noisy} of {len(candidate) + len(baseline)} runs noisy"
    all_noisy = (any(candidate_noisy) and len(used_c) == len(candidate)) or (
        any(baseline_noisy) and len(used_b) == len(baseline)
    )
    if all_noisy or v.verdict == "insufficient data":
        shown = ratio_text(v.ratio.estimate, v.ratio.low, v.ratio.high)
        message = f"no verdict: {note} (--include-noisy judges them anyway): ratio {shown}"
        return replace(v, verdict="no significant difference", p_value=None, message=message, note=note)
    left = f"{noisy} noisy run{'s' if noisy > 1 else ''} left out"
    return replace(v, message=f"{v.message}; {left}")


def cv(values: Values) -> float | None:
    """Coefficient of variation: sample standard deviation (n - 1) over the mean.

    None with fewer than two values or a zero mean.
    """
    x = _as_array(values)
    if x.size < 2 or x.mean() == 0:
        return None
    return float(np.std(x, ddof=1) / x.mean())
