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
from typing import Any, Protocol

import numpy as np

from runners.core import noise
from schemas import Measurement, MeasurementPolicy

Clock = Callable[[], int]


@dataclass
class SteadyState:
    """Raw outcome of one steady-state loop (nanoseconds)."""

    latencies_ns: list[int]
    elapsed_ns: int
    windows: list[float] = field(default_factory=list)  # mean latency per window kept, ns
    stable: bool = False
    warmup_iterations: int = 0
    warmup_ns: int = 0
    # Asynchronous runners: each call submits a request; these are the requests' own latencies.
    request_latencies_ns: list[int] | None = None
    noise: Noise | None = None  # per-window noise figures, when the loop had a probe


@dataclass
class Noise:
    """What the loop's probe saw: the windows it left out (iteration index ranges and their
    time), and over the windows kept the other load and the runner's starved share."""

    discarded: list[tuple[int, int]] = field(default_factory=list)  # [start, end) iteration indexes
    discarded_ns: int = 0
    kept_ns: int = 0
    kept_iterations: int = 0
    other_cores: float | None = None
    starved_share: float | None = None
    noisy: bool = False  # windows were left out and too few clean ones remain to make a figure of


class Prober(Protocol):
    def sample(self, wall_ns: int | None = None) -> noise.Sample: ...


class _Load:
    """Other load and starved share, weighted over the windows added."""

    def __init__(self) -> None:
        self.wall_ns = 0
        self._other = self._waited = self._runnable = 0.0
        self._seen_other = self._seen_starved = False

    def add(self, r: noise.Reading) -> None:
        self.wall_ns += r.wall_ns
        if r.other_cores is not None:
            self._other += r.other_cores * r.wall_ns
            self._seen_other = True
        if r.starved_share is not None:
            self._waited += r.starved_share * r.runnable_ns
            self._runnable += r.runnable_ns
            self._seen_starved = True

    @property
    def other_cores(self) -> float | None:
        return self._other / self.wall_ns if self._seen_other and self.wall_ns else None

    @property
    def starved_share(self) -> float | None:
        if not self._seen_starved:
            return None
        return self._waited / self._runnable if self._runnable else 0.0


class _Windows:
    """The loop's window bookkeeping: each closed window is judged by the probe (starved or
    crowded out: left out) and the stopping rule sees the clean ones only."""

    def __init__(self, policy: MeasurementPolicy, probe: Prober | None, start_ns: int) -> None:
        self.policy = policy
        self.probe = probe
        self.last = probe.sample(start_ns) if probe is not None else None
        self.means: list[float] = []
        self.counts: list[int] = []
        self.clean_ns = 0
        self.noise = Noise()
        self._kept, self._all = _Load(), _Load()

    def close(self, lat: list[int], first: int, start_ns: int, end_ns: int) -> None:
        chunk = lat[first:]
        reading = None
        if self.probe is not None and self.last is not None:
            now = self.probe.sample(end_ns)
            reading, self.last = noise.between(self.last, now), now
            self._all.add(reading)
        if reading is not None and not self._clean(reading):
            self.noise.discarded.append((first, len(lat)))
            self.noise.discarded_ns += end_ns - start_ns
            return
        self.means.append(sum(chunk) / len(chunk))
        self.counts.append(len(chunk))
        self.clean_ns += end_ns - start_ns
        if reading is not None:
            self._kept.add(reading)

    def _clean(self, r: noise.Reading) -> bool:
        if r.starved_share is not None:
            return not noise.starved_by_others(r, self.policy.starved_share)
        return r.other_cores is None or r.other_cores <= self.policy.noise_cores

    def enough(self) -> bool:
        return (
            self.clean_ns >= int(self.policy.min_time_s * 1e9)
            and sum(self.counts) >= self.policy.min_iterations
        )

    def figure(self) -> bool:
        """Enough clean windows to make a figure of, if not one as long as asked: as many as the
        stability rule compares, with min_iterations. Shorter is less precise, which the spread
        between runs shows; starved windows would make it biased, which nothing would show."""
        return (
            len(self.means) >= self.policy.stable_windows and sum(self.counts) >= self.policy.min_iterations
        )

    def done(self) -> bool:
        """Long enough, and stable (or, with target_ci, narrow enough), on clean windows alone."""
        if not self.enough():
            return False
        if self.policy.target_ci is not None:
            rel = window_ci_rel(self.means, self.counts)
            return rel is not None and rel <= self.policy.target_ci
        return windows_agree(self.means, self.policy.stable_windows, self.policy.tolerance)

    def result(self) -> Noise | None:
        """The noise figures, over the windows kept (over all of them when none was: the
        figures are then made of those)."""
        if self.probe is None:
            return None
        n = self.noise
        n.kept_ns, n.kept_iterations = self.clean_ns, sum(self.counts)
        load = self._kept if self.clean_ns else self._all
        n.other_cores, n.starved_share = load.other_cores, load.starved_share
        n.noisy = bool(n.discarded) and not self.figure()
        return n


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
    probe: Prober | None = None,
) -> SteadyState:
    """Time `step` per iteration until stable or out of time (see `MeasurementPolicy`).

    With a `probe`, each window is judged when it closes, between iterations: one in which the
    runner was starved (`policy.starved_share`) is left out of every figure, and the loop goes on
    (up to `max_time_s`) until the clean windows alone are long and stable enough.
    `finish` (asynchronous runners) waits for the requests still in flight, inside the elapsed
    time, and returns every request's latency."""
    lat: list[int] = []
    append = lat.append
    max_ns = int(policy.max_time_s * 1e9)
    window_ns = int(policy.window_s * 1e9)
    start = clock()
    book = _Windows(policy, probe, start)
    window_start_idx = 0
    window_start = start
    stable = False
    t1 = start
    while True:
        t0 = clock()
        step()
        t1 = clock()
        append(t1 - t0)
        if t1 - window_start >= window_ns and len(lat) - window_start_idx >= policy.window_min_iterations:
            book.close(lat, window_start_idx, window_start, t1)
            window_start_idx = len(lat)
            window_start = t1
            if book.done():
                stable = True
                break
        if t1 - start >= max_ns or len(lat) >= policy.max_iterations:
            break
    if window_start_idx < len(lat):
        book.close(lat, window_start_idx, window_start, t1)  # the tail counts too, judged alike
    requests = finish() if finish is not None else None
    end = clock()
    return SteadyState(
        latencies_ns=lat,
        elapsed_ns=end - start,
        windows=book.means,
        stable=stable,
        request_latencies_ns=requests if requests and len(requests) == len(lat) else None,
        noise=book.result(),
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


def kept(values: list[int], n: Noise | None) -> list[int]:
    """The per-iteration `values` of the windows kept (all of them when none was left out, or
    when every window was: the figures are then noisy ones, and flagged so)."""
    if n is None or not n.discarded or n.kept_iterations == 0:
        return values
    out: list[int] = []
    previous = 0
    for first, end in n.discarded:
        out.extend(values[previous:first])
        previous = end
    out.extend(values[previous:])
    return out


def noise_fields(n: Noise) -> dict[str, Any]:
    """Measurement fields of the loop's noise figures: what it left out and what it kept."""
    return {
        "other_cpu_cores": n.other_cores,
        "starved_share": n.starved_share,
        "noisy": n.noisy,
        "windows_discarded": len(n.discarded),
        "discarded_iterations": sum(end - first for first, end in n.discarded),
        "discarded_s": n.discarded_ns / 1e9,
    }


def summarize(
    batch_size: int,
    state: SteadyState,
    policy: MeasurementPolicy,
    peak_host_mem_mb: float | None = None,
    in_flight: int = 1,
    early_stop_percentile: float | None = None,
) -> Measurement:
    """Statistics of one steady state as a validated `Measurement`, of the windows kept when the
    loop left some out (their time is then the duration).

    `in_flight`: asynchronous requests the runner kept in flight; latencies are then the requests'
    own (submission to completion), and throughput counts completed batches."""
    n = state.noise
    lat_ns = kept(state.latencies_ns, n)
    lat_ms = np.asarray(kept(state.request_latencies_ns or state.latencies_ns, n), dtype=np.float64) / 1e6
    left_out = n is not None and bool(n.discarded) and n.kept_iterations > 0
    elapsed_s = (n.kept_ns if left_out and n is not None else state.elapsed_ns) / 1e9
    return Measurement(
        batch_size=batch_size,
        iterations=len(lat_ms),
        duration_s=elapsed_s,
        throughput_sps=batch_size * len(lat_ms) / elapsed_s,
        in_flight=in_flight,
        **latency_fields(lat_ms, policy.keep_latencies, early_stop_percentile=early_stop_percentile),
        warmup_iterations=state.warmup_iterations,
        warmup_s=state.warmup_ns / 1e9,
        windows=len(state.windows) or max(1, len(n.discarded) if n is not None else 0),
        stable=state.stable,
        peak_host_mem_mb=peak_host_mem_mb,
        within_run_ci_rel=latency_ci_rel(lat_ns),
        **(noise_fields(n) if n is not None else {}),
    )
