"""The steady-state timing loop, shared by every framework.

Only `perf_counter_ns` calls and one list append surround each timed call; window bookkeeping runs
after an iteration's end timestamp is taken, so its cost lands between iterations, not inside them.
The clock is injectable so the stopping rule is tested deterministically.
"""

from __future__ import annotations

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
            window_start_idx = len(lat)
            window_start = t1
            elapsed = t1 - start
            if (
                elapsed >= min_ns
                and len(lat) >= policy.min_iterations
                and windows_agree(window_means, policy.stable_windows, policy.tolerance)
            ):
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


def summarize(
    batch_size: int,
    state: SteadyState,
    policy: MeasurementPolicy,
    peak_host_mem_mb: float | None = None,
    in_flight: int = 1,
) -> Measurement:
    """Statistics of one steady state as a validated `Measurement`.

    `in_flight`: asynchronous requests the runner kept in flight; latencies are then the requests'
    own (submission to completion), and throughput counts completed batches."""
    raw = state.request_latencies_ns or state.latencies_ns
    lat_ms = np.asarray(raw, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(lat_ms, [50, 90, 99])
    elapsed_s = state.elapsed_ns / 1e9
    return Measurement(
        batch_size=batch_size,
        iterations=len(lat_ms),
        duration_s=elapsed_s,
        throughput_sps=batch_size * len(lat_ms) / elapsed_s,
        in_flight=in_flight,
        latency_mean_ms=float(lat_ms.mean()),
        latency_stdev_ms=float(lat_ms.std(ddof=1)) if len(lat_ms) > 1 else 0.0,
        latency_min_ms=float(lat_ms.min()),
        latency_p50_ms=float(p50),
        latency_p90_ms=float(p90),
        latency_p99_ms=float(p99),
        latency_max_ms=float(lat_ms.max()),
        warmup_iterations=state.warmup_iterations,
        warmup_s=state.warmup_ns / 1e9,
        windows=len(state.windows),
        stable=state.stable,
        peak_host_mem_mb=peak_host_mem_mb,
        latencies_ms=[round(float(v), 6) for v in lat_ms] if policy.keep_latencies else None,
    )
