"""The distributions controller.analysis.stats computes on numpy (Mann-Whitney U exact, its exact
permutation test with ties, its normal approximation, Welch's t interval, midranks) against
scipy.stats itself over many seeded cases, and a check that the module never imports scipy.stats."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from scipy import stats as st

from controller.analysis import stats
from controller.analysis.stats import cv, ratio_ci

REL = 1e-9
SIZES = range(1, 13)


def close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=REL, abs_tol=0.0)


def tied(rng: np.random.Generator, size: int, levels: int, shift: int = 0) -> np.ndarray:
    """Values drawn from a few levels, so that ties are common."""
    return (rng.integers(0, levels, size) + shift).astype(np.float64)


def continuous(rng: np.random.Generator, size: int, shift: float = 0.0) -> np.ndarray:
    return rng.normal(shift, 1.0, size)


def scipy_permutation_p(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's exact permutation test of the midrank sum, two-sided (groups of two or more)."""
    ranks = st.rankdata(np.concatenate([a, b]))

    def rank_sum(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(np.sum(x, axis=axis))

    result = st.permutation_test(
        (ranks[: a.size], ranks[a.size :]),
        rank_sum,
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=np.inf,
        vectorized=True,
    )
    return min(1.0, float(result.pvalue))


def brute_permutation_p(a: np.ndarray, b: np.ndarray) -> float:
    """The same test by plain enumeration, for groups of one value (which scipy refuses)."""
    ranks = st.rankdata(np.concatenate([a, b]))
    observed = ranks[: a.size].sum()
    sums = [ranks[list(c)].sum() for c in itertools.combinations(range(ranks.size), a.size)]
    low = sum(bool(s <= observed + 1e-9) for s in sums)
    high = sum(bool(s >= observed - 1e-9) for s in sums)
    return min(1.0, 2 * min(low, high) / len(sums))


def scipy_mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """The dispatch of stats._mann_whitney_p, done with scipy.stats."""
    pooled = np.concatenate([a, b])
    if np.unique(pooled).size == pooled.size:
        return float(st.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    if np.ptp(pooled) == 0:
        return 1.0
    if math.comb(pooled.size, a.size) > stats._MAX_EXACT_PERMUTATIONS:
        return float(st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)
    if min(a.size, b.size) < 2:
        return brute_permutation_p(a, b)
    return scipy_permutation_p(a, b)


def test_midranks_are_scipy_average_ranks() -> None:
    rng = np.random.default_rng(11)
    for size in [1, 2, 3, 5, 8, 13, 40, 200]:
        for levels in [1, 2, 3, 10, 10_000]:
            x = tied(rng, size, levels) * 0.37
            ranks2, ties = stats._midranks2(x)
            assert ranks2.dtype == np.int64
            np.testing.assert_array_equal(ranks2 / 2, st.rankdata(x, method="average"))
            np.testing.assert_array_equal(ties, np.unique(x, return_counts=True)[1])
            assert int(ties.sum()) == size


def test_exact_without_ties_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    for n, m in itertools.product(SIZES, SIZES):
        for shift in [0.0, 0.8, 3.0]:
            for _ in range(3):
                a, b = continuous(rng, n, shift), continuous(rng, m)
                expected = float(st.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
                got = stats._mann_whitney_exact_p(a, b)
                assert close(got, expected), (n, m, a, b, got, expected)
                assert close(stats._mann_whitney_p(a, b), expected)


def test_exact_extremes_and_symmetry() -> None:
    for n, m in itertools.product(SIZES, SIZES):
        a, b = np.arange(n, dtype=float), np.arange(n, n + m, dtype=float)
        smallest = min(1.0, 2 / math.comb(n + m, n))
        assert close(stats._mann_whitney_exact_p(a, b), smallest)
        assert close(stats._mann_whitney_exact_p(b, a), smallest)
        assert close(smallest, stats.min_attainable_p(n, m))


def test_null_counts_sum_to_the_relabellings() -> None:
    for n, m in [(1, 1), (3, 9), (12, 12), (30, 31)]:
        cumulative = stats._u_null_cumulative(n, m)
        assert len(cumulative) == n * m + 1 and int(cumulative[-1]) == math.comb(n + m, n)
        counts = np.diff(np.concatenate([[0], cumulative.astype(object)]))
        assert all(c >= 0 for c in counts) and list(counts) == list(counts[::-1])


def test_exact_with_many_labellings_matches_scipy() -> None:
    """Counts beyond 64 bits switch to Python integers; p stays exact."""
    rng = np.random.default_rng(5)
    for n, m in [(20, 25), (35, 40)]:
        a, b = continuous(rng, n, 0.4), continuous(rng, m)
        expected = float(st.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
        assert close(stats._mann_whitney_exact_p(a, b), expected)


def test_permutation_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    cases = 0
    for n, m in itertools.product(SIZES, SIZES):
        if math.comb(n + m, n) > stats._MAX_EXACT_PERMUTATIONS:
            continue
        repeats = 3 if math.comb(n + m, n) <= 500 else 1
        for levels, shift in [(2, 0), (3, 1), (5, 0)][:repeats]:
            a, b = tied(rng, n, levels, shift), tied(rng, m, levels)
            if np.unique(np.concatenate([a, b])).size in (1, n + m):
                continue
            expected = scipy_permutation_p(a, b) if min(n, m) >= 2 else brute_permutation_p(a, b)
            got = stats._mann_whitney_permutation_p(a, b)
            assert close(got, expected), (n, m, a, b, got, expected)
            assert close(stats._mann_whitney_p(a, b), expected)
            cases += 1
    assert cases > 150


def test_permutation_of_a_single_value_matches_enumeration() -> None:
    rng = np.random.default_rng(3)
    for m in [1, 2, 5, 12, 40, 60]:
        for _ in range(4):
            a, b = tied(rng, 1, 4), tied(rng, m, 4)
            if np.ptp(np.concatenate([a, b])) == 0:
                continue
            assert close(stats._mann_whitney_permutation_p(a, b), brute_permutation_p(a, b))
            assert close(stats._mann_whitney_permutation_p(b, a), brute_permutation_p(b, a))


def test_two_constant_groups() -> None:
    for n, m in [(2, 2), (4, 4), (3, 7), (6, 6)]:
        a, b = np.full(n, 1.5), np.full(m, 2.5)
        assert close(stats._mann_whitney_p(a, b), scipy_permutation_p(a, b))
        assert stats._mann_whitney_p(a, a[:1].repeat(m)) == 1.0


def test_asymptotic_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for n, m in itertools.product(SIZES, SIZES):
        for a, b in [
            (continuous(rng, n, 0.7), continuous(rng, m)),
            (tied(rng, n, 3, 1), tied(rng, m, 3)),
            (tied(rng, n, 6), tied(rng, m, 6)),
        ]:
            if np.ptp(np.concatenate([a, b])) == 0:
                continue
            expected = float(st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)
            got = stats._mann_whitney_asymptotic_p(a, b)
            assert close(got, expected), (n, m, a, b, got, expected)


def test_large_tied_groups_take_the_asymptotic_branch() -> None:
    rng = np.random.default_rng(6)
    for n, m, levels, shift in [(15, 15, 4, 0), (12, 20, 3, 1), (40, 60, 10, 2), (500, 700, 30, 1)]:
        a, b = tied(rng, n, levels, shift), tied(rng, m, levels)
        assert math.comb(n + m, n) > stats._MAX_EXACT_PERMUTATIONS
        expected = float(st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)
        assert close(stats._mann_whitney_p(a, b), expected)
        assert close(scipy_mann_whitney_p(a, b), expected)


def test_dispatch_matches_scipy_over_mixed_cases() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, m = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        kind = rng.integers(0, 3)
        if kind == 0:
            a, b = continuous(rng, n, float(rng.normal())), continuous(rng, m)
        elif kind == 1:
            a, b = tied(rng, n, 4, int(rng.integers(0, 2))), tied(rng, m, 4)
        else:
            a, b = np.round(continuous(rng, n, 0.5), 1), np.round(continuous(rng, m), 1)
        if math.comb(n + m, n) > 5000 and np.unique(np.concatenate([a, b])).size < n + m:
            continue  # keeps scipy's enumeration short; larger cases are covered above
        assert close(stats._mann_whitney_p(a, b), scipy_mann_whitney_p(a, b)), (a, b)


def scipy_ratio_bounds(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    with warnings.catch_warnings():  # scipy warns of precision loss for a constant group
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        ci = st.ttest_ind(np.log(a), np.log(b), equal_var=False).confidence_interval(confidence)
    return math.exp(float(ci.low)), math.exp(float(ci.high))


def test_welch_interval_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    for n, m in itertools.product(range(2, 13), range(2, 13)):
        for confidence in [0.8, 0.95, 0.99]:
            a = np.exp(rng.normal(0.1, float(rng.uniform(0.01, 0.5)), n))
            b = np.exp(rng.normal(0.0, float(rng.uniform(0.01, 0.5)), m))
            low, high = stats._welch_interval(np.log(a), np.log(b), confidence)
            expected = st.ttest_ind(np.log(a), np.log(b), equal_var=False).confidence_interval(confidence)
            assert close(low, float(expected.low)) and close(high, float(expected.high))
            got = ratio_ci(a, b, confidence)
            want_low, want_high = scipy_ratio_bounds(a, b, confidence)
            assert got.low is not None and got.high is not None
            assert close(got.low, min(want_low, got.estimate))
            assert close(got.high, max(want_high, got.estimate))


def test_welch_interval_with_one_constant_group() -> None:
    rng = np.random.default_rng(9)
    for n, m in [(2, 2), (3, 8), (10, 4)]:
        a, b = np.full(n, 2.0), np.exp(rng.normal(0.0, 0.2, m))
        for x, y in [(a, b), (b, a)]:
            got = ratio_ci(x, y)
            want_low, want_high = scipy_ratio_bounds(x, y, 0.95)
            assert got.low is not None and got.high is not None
            assert close(got.low, want_low) and close(got.high, want_high)


def test_cv_matches_scipy_variation() -> None:
    rng = np.random.default_rng(10)
    for size in range(2, 13):
        x = rng.normal(5.0, 1.0, size)
        got = cv(x)
        assert got is not None and close(got, float(st.variation(x, ddof=1)))


@pytest.mark.parametrize("call", ["verdict", "ratio_ci", "mean_ci", "cv"])
def test_no_scipy_stats_import(call: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from controller.analysis import stats
        calls = {{
            "verdict": lambda: [
                stats.verdict([1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10], True),
                stats.verdict([1.0, 2, 2, 4, 5], [6.0, 7, 7, 9, 10], False),
                stats.verdict([1.0, 1, 2, 2] * 8, [2.0, 3, 3, 3] * 8, True),
                stats.verdict([3.0] * 5, [3.0] * 5, True),
            ],
            "ratio_ci": lambda: stats.ratio_ci([1.0, 2, 3], [2.0, 3, 4]),
            "mean_ci": lambda: stats.mean_ci([1.0, 2, 3]),
            "cv": lambda: stats.cv([1.0, 2, 3]),
        }}
        calls["{call}"]()
        loaded = sorted(m for m in sys.modules if m == "scipy.stats" or m.startswith("scipy.stats."))
        print(loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
