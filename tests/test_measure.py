"""The steady-state loop with a fake clock (deterministic), warm-up, and summary statistics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from runners.core.measure import SteadyState, steady_state, summarize, warm_up, windows_agree
from schemas import Measurement, MeasurementPolicy

MS = 1_000_000  # ns


class FakeClock:
    """Time moves only when `step` runs: each call takes `latency(i)` ns for the i-th call."""

    def __init__(self, latency: Callable[[int], int]) -> None:
        self.now = 0
        self.calls = 0
        self.latency = latency

    def clock(self) -> int:
        return self.now

    def step(self) -> None:
        self.now += self.latency(self.calls)
        self.calls += 1


def policy(**over: float | int | bool) -> MeasurementPolicy:
    base: dict[str, float | int | bool] = dict(
        min_time_s=0.1,
        max_time_s=1.0,
        window_s=0.01,
        window_min_iterations=2,
        min_iterations=10,
        stable_windows=3,
        tolerance=0.1,
    )
    base.update(over)
    return MeasurementPolicy(**base)


def test_stable_stop_when_windows_agree() -> None:
    fc = FakeClock(lambda i: 1 * MS)
    state = steady_state(fc.step, policy(), fc.clock)
    # 10 ms windows of 1 ms iterations; stops at the first window end past min_time_s (100 ms).
    assert state.stable is True
    assert len(state.latencies_ns) == 100 == fc.calls
    assert state.latencies_ns == [MS] * 100
    assert state.elapsed_ns == 100 * MS
    assert state.windows == [float(MS)] * 10


def test_stable_stop_waits_for_min_iterations() -> None:
    fc = FakeClock(lambda i: 10 * MS)  # one iteration fills a window; min_iterations rules
    state = steady_state(
        fc.step, policy(min_time_s=0.0, min_iterations=40, window_min_iterations=1), fc.clock
    )
    assert state.stable is True
    assert len(state.latencies_ns) == 40


def test_stable_needs_agreement_within_tolerance() -> None:
    # Window means drift by 5% then settle: stops only once the last 3 windows agree within 10%.
    def latency(i: int) -> int:
        window = i // 10
        return int(MS * (1.0 + 0.5 * max(0, 5 - window)))  # 3.5, 3.0, ..., 1.0 ms, then flat

    fc = FakeClock(latency)
    state = steady_state(fc.step, policy(min_time_s=0.0), fc.clock)
    assert state.stable is True
    last = state.windows[-3:]
    assert (max(last) - min(last)) / min(last) <= 0.1


def test_unstable_flag_at_max_time() -> None:
    # Alternating slow/fast stretches never give 3 agreeing windows.
    fc = FakeClock(lambda i: MS if (i // 10) % 2 == 0 else 2 * MS)
    p = policy(max_time_s=0.5)
    state = steady_state(fc.step, p, fc.clock)
    assert state.stable is False
    assert state.elapsed_ns >= 500 * MS
    # It stopped at the first iteration that reached max_time_s, not later.
    assert sum(state.latencies_ns[:-1]) < 500 * MS <= sum(state.latencies_ns)
    assert len(state.windows) >= 3


def test_max_iterations_cap() -> None:
    fc = FakeClock(lambda i: MS)
    p = policy(min_time_s=5.0, max_time_s=10.0, max_iterations=50)
    state = steady_state(fc.step, p, fc.clock)
    assert state.stable is False
    assert len(state.latencies_ns) == 50 == fc.calls
    assert state.elapsed_ns == 50 * MS
    # the 5 full windows; no partial tail
    assert state.windows == [float(MS)] * 5


def test_tail_window_counted_when_stopped_mid_window() -> None:
    fc = FakeClock(lambda i: MS)
    p = policy(min_time_s=5.0, max_time_s=10.0, max_iterations=55)
    state = steady_state(fc.step, p, fc.clock)
    assert len(state.latencies_ns) == 55
    assert len(state.windows) == 6  # 5 full windows + the 5-iteration tail


def test_window_needs_min_iterations() -> None:
    # 20 ms iterations exceed a 10 ms window, but a window needs 3 iterations.
    fc = FakeClock(lambda i: 20 * MS)
    p = policy(min_time_s=0.0, max_time_s=10.0, window_min_iterations=3, min_iterations=1)
    state = steady_state(fc.step, p, fc.clock)
    assert state.stable is True
    assert len(state.latencies_ns) == 9  # 3 windows x 3 iterations


@pytest.mark.parametrize(
    ("means", "count", "tol", "agree"),
    [
        ([1.0, 1.0, 1.0], 3, 0.1, True),
        ([1.0, 1.0], 3, 0.1, False),
        ([5.0, 1.0, 1.05, 1.08], 3, 0.1, True),
        ([1.0, 1.2, 1.0], 3, 0.1, False),
        ([0.0, 0.0, 0.0], 3, 0.1, False),
    ],
)
def test_windows_agree(means: list[float], count: int, tol: float, agree: bool) -> None:
    assert windows_agree(means, count, tol) is agree


def test_warm_up_counts_and_time() -> None:
    fc = FakeClock(lambda i: MS)
    n, ns = warm_up(fc.step, policy(warmup_iterations=3, warmup_min_s=0.01), fc.clock)
    assert (n, ns) == (10, 10 * MS)  # 3 iterations are not enough: 10 ms are
    fc = FakeClock(lambda i: 100 * MS)
    n, ns = warm_up(fc.step, policy(warmup_iterations=3, warmup_min_s=0.01), fc.clock)
    assert (n, ns) == (3, 300 * MS)  # the time is met, the count rules


def test_summarize_percentiles_and_throughput() -> None:
    lat = [i * MS for i in range(1, 101)]  # 1..100 ms
    state = SteadyState(
        latencies_ns=lat,
        elapsed_ns=sum(lat),
        windows=[1.0, 2.0],
        stable=True,
        warmup_iterations=5,
        warmup_ns=250 * MS,
    )
    m = summarize(4, state, policy(), peak_host_mem_mb=12.5)
    assert isinstance(m, Measurement)
    ref = np.arange(1, 101, dtype=float)
    assert m.iterations == 100
    assert m.duration_s == pytest.approx(5.05)
    assert m.throughput_sps == pytest.approx(4 * 100 / 5.05)
    assert m.latency_mean_ms == pytest.approx(50.5)
    assert m.latency_min_ms == 1.0 and m.latency_max_ms == 100.0
    assert m.latency_p50_ms == pytest.approx(np.percentile(ref, 50)) == pytest.approx(50.5)
    assert m.latency_p90_ms == pytest.approx(90.1)
    assert m.latency_p99_ms == pytest.approx(99.01)
    assert m.latency_stdev_ms == pytest.approx(float(ref.std(ddof=1)))
    assert m.warmup_iterations == 5 and m.warmup_s == pytest.approx(0.25)
    assert m.windows == 2 and m.stable is True
    assert m.peak_host_mem_mb == 12.5
    assert m.latencies_ms is not None and len(m.latencies_ms) == 100
    assert m.latencies_ms[:3] == [1.0, 2.0, 3.0]


def test_summarize_single_iteration_and_no_latencies_kept() -> None:
    state = SteadyState(latencies_ns=[3 * MS], elapsed_ns=3 * MS, windows=[float(3 * MS)])
    m = summarize(1, state, policy(keep_latencies=False))
    assert m.iterations == 1
    assert m.latency_stdev_ms == 0.0
    assert m.latency_p50_ms == m.latency_p99_ms == 3.0
    assert m.latencies_ms is None
    assert m.stable is False


def test_real_clock_loop_ends() -> None:
    """The default clock: a short policy ends within its max time and gives a valid summary."""
    p = policy(min_time_s=0.02, max_time_s=0.2, window_s=0.005, max_iterations=20_000)
    state = steady_state(lambda: sum(range(50)), p)
    assert 0 < state.elapsed_ns < 2 * 10**9
    m = summarize(2, state, p)
    assert m.iterations == len(state.latencies_ns) <= 20_000


def test_async_finish_supplies_request_latencies() -> None:
    """An asynchronous runner's `finish` runs inside the elapsed time and its request latencies
    replace the call durations in the statistics."""
    from runners.core.measure import steady_state, summarize
    from schemas import MeasurementPolicy

    class Clock:
        now = 0

        def __call__(self) -> int:
            self.now += 1_000_000  # 1 ms per read
            return self.now

    clock = Clock()
    policy = MeasurementPolicy(
        min_iterations=4,
        max_iterations=4,
        min_time_s=0,
        window_s=0.001,
        window_min_iterations=1,
        warmup_iterations=0,
        warmup_min_s=0,
    )
    calls: list[int] = []
    state = steady_state(
        lambda: calls.append(1), policy, clock=clock, finish=lambda: [9_000_000] * len(calls)
    )
    assert state.request_latencies_ns == [9_000_000] * 4
    m = summarize(2, state, policy, in_flight=3)
    assert m.latency_p50_ms == 9.0 and m.in_flight == 3
    assert m.throughput_sps == 2 * 4 / (state.elapsed_ns / 1e9)


# --------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("n", [44, 100, 459, 1000, 5000, 20000])
@pytest.mark.parametrize("percentile", [0.90, 0.99])
def test_early_stopping_h_matches_the_binomial(n: int, percentile: float) -> None:
    """Truth: scipy's binomial CDF. The estimate is the (h+1)-th largest latency, h the largest
    count with P[Binom(n, 1-p) <= h] <= 1 - 0.99."""
    from scipy.stats import binom

    from runners.core.measure import early_stopping_latency

    lat = np.arange(1, n + 1, dtype=np.float64)  # the k-th smallest is k
    allowed = [h for h in range(n) if binom.cdf(h, n, 1 - percentile) <= 0.01]
    got = early_stopping_latency(lat, percentile)
    if not allowed:
        assert got is None
    else:
        assert got == float(n - max(allowed))


def test_early_stopping_covers_the_true_percentile() -> None:
    """Exponential latencies (true p99 = ln(100)): the estimate lies above it in >= 99 % of runs."""
    from runners.core.measure import early_stopping_latency

    rng = np.random.default_rng(7)
    true_p99 = float(np.log(100.0))
    trials = 1500
    above = 0
    for _ in range(trials):
        est = early_stopping_latency(rng.exponential(1.0, size=2000), 0.99)
        assert est is not None
        above += est >= true_p99
    assert above / trials >= 0.985, above / trials  # 99 % nominal, binomial noise of 1500 trials


def test_server_bound_is_checked_on_the_early_stopping_estimate() -> None:
    from runners.scenarios.server import verdict
    from schemas import ServerScenario

    sc = ServerScenario(target_qps=100, latency_bound_ms=10)
    assert verdict(sc, 100, 100, 0, p99_ms=9.0, early_stop_ms=9.5) is None
    reason = verdict(sc, 100, 100, 0, p99_ms=9.0, early_stop_ms=11.0)
    assert reason is not None and "early-stopping estimate 11.00 ms" in reason
    # Too few queries for an estimate: the observed p99 decides.
    assert verdict(sc, 100, 100, 0, p99_ms=9.0, early_stop_ms=None) is None
    assert verdict(sc, 100, 100, 0, p99_ms=12.0, early_stop_ms=None) is not None
