"""Server: queries of one sample arrive as a Poisson process; a dynamic batcher groups them.

LoadGen's semantics, driven by a hand-written load generator (the `mlcommons-loadgen` package is
in none of the runner images' locks; adding it means re-locking every image):

- the arrival schedule is drawn up front from a seeded exponential distribution at `target_qps`,
  long enough for `min_duration_s` and `min_queries` (scaled to offer exactly `target_qps`);
- a generator thread enqueues each sample at its scheduled time; a batcher thread takes up to
  `max_batch` waiting samples, or fewer once the oldest has waited `max_delay_ms`, pads the group
  to the nearest `-b` size (each prepared once, before the schedule starts), runs it and
  completes its samples. The two threads share only a queue, so the batcher never delays the
  arrivals (the frameworks, and the null runner's work, release the GIL while they compute);
- a sample's latency is completion minus its scheduled arrival: queueing (arrival to the start
  of its batch) plus compute (start to completion);
- the achieved rate is the completions' over the arrivals' window shifted by the first query's
  latency, so that a short schedule's last latencies are no shortfall;
- the verdict is INVALID when the achieved rate falls short of the offered one by more than
  QPS_TOLERANCE, when queries are still unfinished DRAIN_S after the last arrival (the queue
  grew without bound), or when p99 exceeds `latency_bound_ms`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner
from runners.core.common import input_batch, log
from runners.core.measure import latency_fields
from runners.core.trackers import HostTrackers
from schemas import Measurement, ModelManifest, ServerScenario
from schemas.spec import QPS_TOLERANCE  # achieved below offered by more than this: INVALID

DRAIN_S = 2.0  # after the last arrival, unfinished queries get this long (plus 10 % of the schedule)
SWITCH_INTERVAL_S = 5e-5  # GIL hand-over while driving: a waiting thread gets it within 50 us
NOT_DONE = -1
PR_SET_TIMERSLACK = 29

Clock = Callable[[], int]


def _tight_timer_slack() -> None:
    """Linux lets a sleeping thread wake up to 50 us late (timer slack): ask for 1 us in this
    thread, so arrivals are enqueued on time. Elsewhere, or if refused, nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def schedule(qps: float, count: int, seed: int) -> np.ndarray:
    """Arrival offsets (ns from the start) of `count` samples of a Poisson process at `qps`.

    The exponential gaps are scaled so the schedule lasts exactly count / qps: the rate offered is
    the target, not a draw that strays by 1/sqrt(count) (10 % at 100 queries). Given their number
    in a fixed time, the arrivals of a Poisson process are still what this is."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / qps, size=count)
    gaps *= (count / qps) / gaps.sum()
    return np.asarray(np.cumsum(gaps) * 1e9, dtype=np.int64)


def query_count(sc: ServerScenario) -> int:
    return max(sc.min_queries, math.ceil(sc.min_duration_s * sc.target_qps))


def pad_sizes(batch_sizes: list[int], max_batch: int) -> list[int]:
    """pad[n] for n = 1..max_batch: the smallest allowed size that holds n samples (pad[0] unused)."""
    sizes = sorted(batch_sizes)
    return [0] + [next(s for s in sizes if s >= n) for n in range(1, max_batch + 1)]


@dataclass
class Drive:
    """Raw outcome of one schedule: per sample (perf_counter ns), and the groups formed."""

    t0_ns: int
    arrivals_ns: np.ndarray  # scheduled arrival, absolute
    starts_ns: np.ndarray  # start of the sample's batch; NOT_DONE if never run
    done_ns: np.ndarray  # completion; NOT_DONE if never completed
    groups: list[tuple[int, int]]  # (samples, padded size) per batch run
    drain_timed_out: bool


def drive(
    run_batch: Callable[[int], object],
    offsets_ns: np.ndarray,
    max_batch: int,
    pad: list[int],
    max_delay_ms: float,
    drain_s: float = DRAIN_S,
    clock: Clock = time.perf_counter_ns,
) -> Drive:
    """Offer the schedule to `run_batch(padded size)` through the dynamic batcher."""
    n = len(offsets_ns)
    starts = np.full(n, NOT_DONE, dtype=np.int64)
    done = np.full(n, NOT_DONE, dtype=np.int64)
    groups: list[tuple[int, int]] = []
    queue: deque[int] = deque()
    cond = threading.Condition()
    flags = {"generated": False, "stop": False}
    max_delay_ns = int(max_delay_ms * 1e6)
    errors: list[BaseException] = []
    t0 = clock() + 20_000_000  # both threads running before the first arrival
    arrivals = offsets_ns + t0

    def generate() -> None:
        _tight_timer_slack()
        i = 0
        while i < n:
            delay = int(arrivals[i]) - clock()
            if delay > 0:
                time.sleep(delay / 1e9)
            now = clock()
            with cond:
                while i < n and arrivals[i] <= now:  # every sample due by now, in one go
                    queue.append(i)
                    i += 1
                cond.notify()
            if flags["stop"]:
                break
        with cond:
            flags["generated"] = True
            cond.notify()

    def take() -> list[int] | None:
        """The next group, or None when nothing more will come."""
        with cond:
            while True:
                if flags["stop"]:
                    return None
                if queue:
                    if len(queue) >= max_batch or flags["generated"]:
                        break
                    wait_ns = int(arrivals[queue[0]]) + max_delay_ns - clock()
                    if wait_ns <= 0:
                        break
                    cond.wait(wait_ns / 1e9)
                elif flags["generated"]:
                    return None
                else:
                    cond.wait(0.1)
            return [queue.popleft() for _ in range(min(max_batch, len(queue)))]

    def batcher() -> None:
        _tight_timer_slack()  # its timed waits (max_delay_ms) end on time too
        try:
            while (group := take()) is not None:
                size = pad[len(group)]
                start = clock()
                run_batch(size)
                end = clock()
                starts[group] = start
                done[group] = end
                groups.append((len(group), size))
        except BaseException as e:  # reported by the caller, after the threads are stopped
            errors.append(e)
            with cond:
                flags["stop"] = True
                cond.notify_all()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        workers = [
            threading.Thread(target=f, name=f"server-{f.__name__}", daemon=True) for f in (generate, batcher)
        ]
        for w in workers:
            w.start()
        workers[0].join()
        drain_timeout = drain_s + 0.1 * (int(offsets_ns[-1]) / 1e9 if n else 0.0)
        workers[1].join(drain_timeout)
        timed_out = workers[1].is_alive()
        if timed_out:
            with cond:
                flags["stop"] = True
                cond.notify_all()
            workers[1].join()
    finally:
        sys.setswitchinterval(old_interval)
    if errors:
        raise errors[0]
    return Drive(t0, arrivals, starts, done, groups, timed_out)


def verdict(
    sc: ServerScenario,
    offered_qps: float,
    achieved_qps: float,
    unfinished: int,
    p99_ms: float,
    early_stop_ms: float | None = None,
) -> str | None:
    """Why the run is INVALID, or None when it is VALID. The latency bound is checked against
    the early-stopping estimate of p99 (what the run shows with 99 % confidence) when there were
    queries enough for one, else against the observed p99."""
    reasons = []
    if unfinished:
        reasons.append(
            f"{unfinished} queries unfinished after the schedule ended (the queue grew without bound)"
        )
    if achieved_qps < offered_qps * (1 - QPS_TOLERANCE):
        reasons.append(
            f"achieved {achieved_qps:.1f} qps, below the offered {offered_qps:.1f} by more than "
            f"{QPS_TOLERANCE:.0%}"
        )
    if sc.latency_bound_ms is not None:
        if early_stop_ms is not None and early_stop_ms > sc.latency_bound_ms:
            reasons.append(
                f"p99 early-stopping estimate {early_stop_ms:.2f} ms (observed {p99_ms:.2f}) exceeds "
                f"the bound {sc.latency_bound_ms:g} ms"
            )
        elif early_stop_ms is None and p99_ms > sc.latency_bound_ms:
            reasons.append(f"p99 {p99_ms:.2f} ms exceeds the bound {sc.latency_bound_ms:g} ms")
    return "; ".join(reasons) or None


def summarize(sc: ServerScenario, d: Drive, label_batch: int, keep_latencies: bool) -> dict[str, object]:
    """Measurement fields of one drive (everything but warm-up and host readings)."""
    n = len(d.arrivals_ns)
    ok = d.done_ns != NOT_DONE
    completed = int(ok.sum())
    if completed == 0:
        raise RuntimeError("server scenario: no query completed")
    lat_ms = (d.done_ns[ok] - d.arrivals_ns[ok]) / 1e6
    queue_ms = (d.starts_ns[ok] - d.arrivals_ns[ok]) / 1e6
    compute_ms = (d.done_ns[ok] - d.starts_ns[ok]) / 1e6
    duration_s = (int(d.done_ns[ok].max()) - d.t0_ns) / 1e9
    offered = n / ((int(d.arrivals_ns[-1]) - d.t0_ns) / 1e9)
    # The completion rate over the arrivals' window shifted by the latency (start: the schedule's
    # start plus the first query's latency; end: the last completion), as the offered rate is
    # over the arrivals' own window. The tail of the last queries is then no shortfall (a
    # schedule of a few dozen queries would fall short of any rate by it alone), and a queue
    # that grows shows as it must: its last queries wait far longer than its first.
    first_ms = float(lat_ms[0]) if ok[0] else 0.0
    window_s = duration_s - first_ms / 1e3
    achieved = completed / window_s if window_s > 0 else completed / duration_s
    lat = latency_fields(lat_ms, keep_latencies, p999=True, early_stop_percentile=0.99)
    reason = verdict(
        sc, offered, achieved, n - completed, lat["latency_p99_ms"], lat["latency_early_stop_ms"]
    )
    formed = [g for g, _ in d.groups]
    padded = sum(p for _, p in d.groups)
    histogram: dict[str, int] = {}
    for g in sorted(formed):
        histogram[str(g)] = histogram.get(str(g), 0) + 1
    return {
        "batch_size": label_batch,
        "iterations": completed,
        "duration_s": duration_s,
        "throughput_sps": achieved,
        **lat,
        "windows": 1,
        "stable": reason is None,
        "scenario": "server",
        "target_qps": sc.target_qps,
        "offered_qps": offered,
        "achieved_qps": achieved,
        "queueing_mean_ms": float(queue_ms.mean()),
        "compute_mean_ms": float(compute_ms.mean()),
        "mean_batch": float(np.mean(formed)),
        "batch_histogram": histogram,
        "padding_waste": (padded - sum(formed)) / padded if padded else 0.0,
        "valid": reason is None,
        "invalid_reason": reason,
    }


def measure(
    runner: Runner[Any], manifest: ModelManifest, tracker: gpu.GpuTracker | None = None
) -> list[Measurement]:
    spec = runner.spec
    sc = spec.scenario
    assert isinstance(sc, ServerScenario)
    policy = spec.policy
    max_batch = sc.max_batch or max(spec.batch_sizes)
    pad = pad_sizes(spec.batch_sizes, max_batch)
    prepared = {s: runner.prepare(input_batch(manifest, s, spec.dims)) for s in sorted(set(pad[1:]))}

    def run_batch(size: int) -> object:
        return runner.run(prepared[size])

    warm_start = time.perf_counter_ns()
    n_warm = 0
    for size in prepared:  # every padded size, so no first call lands in the schedule
        for _ in range(max(1, policy.warmup_iterations)):
            run_batch(size)
            n_warm += 1
    warm_ns = time.perf_counter_ns() - warm_start
    offsets = schedule(sc.target_qps, query_count(sc), sc.seed)
    log(
        f"server: {len(offsets)} queries at {sc.target_qps:g} qps over {offsets[-1] / 1e9:.1f}s, "
        f"max_batch {max_batch}, max_delay {sc.max_delay_ms:g} ms, padded to {sorted(prepared)}"
    )
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(HostTrackers(policy=policy, threads=runner.threads_used() or 1))
        if tracker is not None:
            stack.enter_context(tracker)
        d = drive(run_batch, offsets, max_batch, pad, sc.max_delay_ms)
    fields = summarize(sc, d, max_batch, policy.keep_latencies)
    m = Measurement.model_validate({**fields, "warmup_iterations": n_warm, "warmup_s": warm_ns / 1e9})
    m = host.apply(m, policy, samples=m.iterations)  # one sample per query
    if tracker is not None:
        # Energy per prediction counts samples: label the measurement batch 1 for the computation.
        m = gpu.with_telemetry(m.model_copy(update={"batch_size": 1}), tracker)
        m = m.model_copy(update={"batch_size": max_batch})
    log(
        f"server: offered {m.offered_qps:.1f} qps, achieved {m.achieved_qps:.1f}, "
        f"mean {m.latency_mean_ms:.2f} ms (queue {m.queueing_mean_ms:.2f} "
        f"+ compute {m.compute_mean_ms:.2f}), "
        f"p99 {m.latency_p99_ms:.2f} ms, mean batch {m.mean_batch:.2f}: "
        + ("VALID" if m.valid else f"INVALID ({m.invalid_reason})")
    )
    return [m]
