"""The steady-state timing loop, shared by every framework.

Only `perf_counter_ns` calls and one list append surround each timed call; window bookkeeping runs
after an iteration's end timestamp is taken, so its cost lands between iterations, not inside them.
The clock is injectable so the stopping rule is tested deterministically.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas import Measurement, MeasurementPolicy

Clock = Callable[[], int]


@dataclass
class SteadyState:
    """Raw outcome of one steady-state loop (nanoseconds)."""

    latencies_ns: list[int]
    elapsed_ns: int
    windows: list[float] = field(default_factory=list)  # mean latency per window, ns
    stable: bool = False
    warmup_iterations: int = 0
    warmup_ns: int = 0
    # Asynchronous runners: each call submits a request; these are the requests' own latencies.
    request_latencies_ns: list[int] | None = None


def windows_agree(window_means: list[float], count: int, tolerance: float) -> bool:
    """True when the last `count` window means spread by at most `tolerance` of their minimum."""
    if len(window_means) < count:
        return False
    last = window_means[-count:]
    low = min(last)
    return low > 0 and (max(last) - low) / low <= tolerance


# Student-t 97.5% quantiles by degrees of freedom: the runner has no scipy. Batch means use at
# most BATCHES batches, so 19 degrees of freedom at most.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093)  # fmt: skip
BATCHES = 20
MIN_BATCHES = 10


def _rel_half_width(batch_means: list[float], overall: float) -> float | None:
    g = len(batch_means)
    if g < 2 or overall <= 0:
        return None
    mean = sum(batch_means) / g
    var = sum((b - mean) ** 2 for b in batch_means) / (g - 1)
    half: float = T975[min(g, len(T975) + 1) - 2] * (var / g) ** 0.5 / overall
    return half


def window_ci_rel(means: list[float], counts: list[int], batches: int = BATCHES) -> float | None:
    """Relative half-width of the 95% interval of the mean iteration time, from the windows
    regrouped into at most `batches` contiguous batches (batch means); None below MIN_BATCHES."""
    k = len(means)
    if k < MIN_BATCHES:
        return None
    g = min(batches, k)
    bounds = [round(i * k / g) for i in range(g + 1)]
    groups = []
    for a, b in itertools.pairwise(bounds):
        n = sum(counts[a:b])
        groups.append(sum(means[i] * counts[i] for i in range(a, b)) / n)
    overall = sum(m * c for m, c in zip(means, counts, strict=True)) / sum(counts)
    return _rel_half_width(groups, overall)


def latency_ci_rel(latencies: Any, batches: int = BATCHES) -> float | None:
    """The same from per-iteration times: `batches` equal contiguous batches, the leftover at the
    start (closest to warm-up) dropped; None with fewer than 2 iterations per batch."""
    x = np.asarray(latencies, dtype=np.float64)
    size = len(x) // batches
    if size < 2:
        return None
    groups = x[len(x) - size * batches :].reshape(batches, size).mean(axis=1)
    return _rel_half_width([float(v) for v in groups], float(x.mean()))


def warm_up(
    step: Callable[[], Any], policy: MeasurementPolicy, clock: Clock = time.perf_counter_ns
) -> tuple[int, int]:
    """Run `step` at least `warmup_iterations` times and `warmup_min_s` seconds."""
    start = clock()
    n = 0
    min_ns = int(policy.warmup_min_s * 1e9)
    while n < policy.warmup_iterations or (policy.warmup_iterations and clock() - start < min_ns):
        step()
        n += 1
    return n, clock() - start


def steady_state(
    step: Callable[[], Any],
    policy: MeasurementPolicy,
    clock: Clock = time.perf_counter_ns,
    finish: Callable[[], list[int] | None] | None = None,
) -> SteadyState:
    """Time `step` per iteration until stable or out of time (see `MeasurementPolicy`).

    `finish` (asynchronous runners) waits for the requests still in flight, inside the elapsed
    time, and returns every request's latency."""
    lat: list[int] = []
    append = lat.append
    window_means: list[float] = []
    window_counts: list[int] = []
    min_ns = int(policy.min_time_s * 1e9)
    max_ns = int(policy.max_time_s * 1e9)
    window_ns = int(policy.window_s * 1e9)
    start = clock()
    window_start_idx = 0
    window_start = start
    stable = False
    while True:
        t0 = clock()
        step()
        t1 = clock()
        append(t1 - t0)
        if t1 - window_start >= window_ns and len(lat) - window_start_idx >= policy.window_min_iterations:
            chunk = lat[window_start_idx:]
            window_means.append(sum(chunk) / len(chunk))
            window_counts.append(len(chunk))
            window_start_idx = len(lat)
            window_start = t1
            elapsed = t1 - start
            if elapsed >= min_ns and len(lat) >= policy.min_iterations:
                if policy.target_ci is not None:  # long enough when the interval is narrow enough
                    rel = window_ci_rel(window_means, window_counts)
                    done = rel is not None and rel <= policy.target_ci
                else:
                    done = windows_agree(window_means, policy.stable_windows, policy.tolerance)
                if done:
                    stable = True
                    break
        if t1 - start >= max_ns or len(lat) >= policy.max_iterations:
            break
    requests = finish() if finish is not None else None
    end = clock()
    if not window_means or window_start_idx < len(lat):
        # The tail that did not fill a window still counts in the statistics.
        tail = lat[window_start_idx:]
        if tail:
            window_means.append(sum(tail) / len(tail))
    return SteadyState(
        latencies_ns=lat,
        elapsed_ns=end - start,
        windows=window_means,
        stable=stable,
        request_latencies_ns=requests if requests and len(requests) == len(lat) else None,
    )


EARLY_STOP_CONFIDENCE = 0.99


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) <= k], summed in log space (n may be large, p small)."""
    if k < 0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(min(k, n) + 1):
        log_term = (
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )
        total += math.exp(log_term)
    return min(total, 1.0)


def early_stopping_latency(
    lat_ms: Any, percentile: float, confidence: float = EARLY_STOP_CONFIDENCE
) -> float | None:
    """MLPerf's early-stopping estimate: a latency that the true `percentile` (e.g. 0.99) is below
    with `confidence`, from n queries. It is the (h+1)-th largest latency, h the most queries that
    may lie above the true percentile: the largest h with P[Binomial(n, 1-percentile) <= h] <=
    1 - confidence. None when n is too small to claim anything (p99 at 99 %: under 459 queries)."""
    x = np.sort(np.asarray(lat_ms, dtype=np.float64))
    n = len(x)
    tail = 1.0 - percentile
    if n == 0 or _binomial_cdf(0, n, tail) > 1.0 - confidence:
        return None
    h = 0
    while h + 1 < n and _binomial_cdf(h + 1, n, tail) <= 1.0 - confidence:
        h += 1
    return float(x[n - h - 1])


def latency_fields(
    lat_ms: Any, keep: bool, p999: bool = False, early_stop_percentile: float | None = None
) -> dict[str, Any]:
    """Measurement fields of a set of latencies in ms: mean, spread, percentiles, the raw values,
    and with `early_stop_percentile` the early-stopping estimate of that percentile."""
    x = np.asarray(lat_ms, dtype=np.float64)
    qs = [50, 90, 99, 99.9] if p999 else [50, 90, 99]
    pct = [float(v) for v in np.percentile(x, qs)]
    fields: dict[str, Any] = {
        "latency_mean_ms": float(x.mean()),
        "latency_stdev_ms": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "latency_min_ms": float(x.min()),
        "latency_p50_ms": pct[0],
        "latency_p90_ms": pct[1],
        "latency_p99_ms": pct[2],
        "latency_max_ms": float(x.max()),
        "latencies_ms": [round(float(v), 6) for v in x] if keep else None,
    }
    if p999:
        fields["latency_p999_ms"] = pct[3]
    if early_stop_percentile is not None:
        fields["latency_early_stop_ms"] = early_stopping_latency(x, early_stop_percentile)
    return fields


def summarize(
    batch_size: int,
    state: SteadyState,
    policy: MeasurementPolicy,
    peak_host_mem_mb: float | None = None,
    in_flight: int = 1,
    other_cpu_cores: float | None = None,
    early_stop_percentile: float | None = None,
) -> Measurement:
    """Statistics of one steady state as a validated `Measurement`.

    `in_flight`: asynchronous requests the runner kept in flight; latencies are then the requests'
    own (submission to completion), and throughput counts completed batches."""
    raw = state.request_latencies_ns or state.latencies_ns
    lat_ms = np.asarray(raw, dtype=np.float64) / 1e6
    elapsed_s = state.elapsed_ns / 1e9
    return Measurement(
        batch_size=batch_size,
        iterations=len(lat_ms),
        duration_s=elapsed_s,
        throughput_sps=batch_size * len(lat_ms) / elapsed_s,
        in_flight=in_flight,
        **latency_fields(lat_ms, policy.keep_latencies, early_stop_percentile=early_stop_percentile),
        warmup_iterations=state.warmup_iterations,
        warmup_s=state.warmup_ns / 1e9,
        windows=len(state.windows),
        stable=state.stable,
        peak_host_mem_mb=peak_host_mem_mb,
        within_run_ci_rel=latency_ci_rel(state.latencies_ns),
        other_cpu_cores=other_cpu_cores,
        noisy=None if other_cpu_cores is None else other_cpu_cores > policy.noise_cores,
    )
