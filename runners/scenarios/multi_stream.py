"""Multi-stream: queries of `samples_per_query` samples issued at a fixed interval; p99 latency.

The server scenario's driver with a deterministic schedule: every `interval_ms` the generator
enqueues one query's samples at once and the batcher (max batch: the query's size, no delay)
runs them as one batch, padded to a `-b` size. A query's latency runs from its scheduled issue
to its completion. A query that waits more than one interval to start is late (the previous
ones overran the interval); more than LATE_LIMIT of them make the run INVALID, as do queries
left unfinished.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner
from runners.core.common import input_batch, log
from runners.core.measure import latency_fields
from runners.core.trackers import HostTrackers
from runners.scenarios import server
from schemas import Measurement, ModelManifest, MultiStreamScenario

LATE_LIMIT = 0.01


def schedule(sc: MultiStreamScenario) -> np.ndarray:
    """Arrival offsets (ns) of every sample: each query's samples together, one query per interval."""
    queries = max(sc.min_queries, math.ceil(sc.min_duration_s * 1000 / sc.interval_ms))
    issue = (np.arange(1, queries + 1, dtype=np.int64) * int(sc.interval_ms * 1e6)).astype(np.int64)
    return np.repeat(issue, sc.samples_per_query)


def summarize(sc: MultiStreamScenario, d: server.Drive, keep_latencies: bool) -> dict[str, object]:
    k = sc.samples_per_query
    firsts = np.arange(0, len(d.arrivals_ns), k)  # one sample stands for its query
    ok = d.done_ns[firsts] != server.NOT_DONE
    completed = int(ok.sum())
    if completed == 0:
        raise RuntimeError("multi-stream scenario: no query completed")
    q = firsts[ok]
    lat_ms = (d.done_ns[q] - d.arrivals_ns[q]) / 1e6
    wait_ms = (d.starts_ns[q] - d.arrivals_ns[q]) / 1e6
    duration_s = (int(d.done_ns[q].max()) - d.t0_ns) / 1e9
    late = int((wait_ms > sc.interval_ms).sum())
    unfinished = len(firsts) - completed
    reasons = []
    if unfinished:
        reasons.append(f"{unfinished} queries unfinished after the schedule ended")
    if late > LATE_LIMIT * len(firsts):
        reasons.append(
            f"{late} of {len(firsts)} queries started more than one interval late "
            f"(limit {LATE_LIMIT:.0%}): a query takes longer than {sc.interval_ms:g} ms"
        )
    reason = "; ".join(reasons) or None
    padded = sum(p for _, p in d.groups)
    formed = sum(g for g, _ in d.groups)
    return {
        "batch_size": k,
        "iterations": completed,
        "duration_s": duration_s,
        "throughput_sps": completed * k / duration_s,
        **latency_fields(lat_ms, keep_latencies, p999=True, early_stop_percentile=0.99),
        "windows": 1,
        "stable": reason is None,
        "scenario": "multi-stream",
        "target_qps": 1000 / sc.interval_ms,
        "offered_qps": len(firsts) / ((int(d.arrivals_ns[-1]) - d.t0_ns) / 1e9),
        "achieved_qps": completed / duration_s,
        "queueing_mean_ms": float(wait_ms.mean()),
        "compute_mean_ms": float((lat_ms - wait_ms).mean()),
        "mean_batch": formed / len(d.groups),
        "padding_waste": (padded - formed) / padded if padded else 0.0,
        "valid": reason is None,
        "invalid_reason": reason,
    }


def measure(
    runner: Runner[Any], manifest: ModelManifest, tracker: gpu.GpuTracker | None = None
) -> list[Measurement]:
    spec = runner.spec
    sc = spec.scenario
    assert isinstance(sc, MultiStreamScenario)
    policy = spec.policy
    k = sc.samples_per_query
    size = min(s for s in spec.batch_sizes if s >= k)
    prepared = runner.prepare(input_batch(manifest, size, spec.dims))

    def run_batch(_: int) -> object:
        return runner.run(prepared)

    warm_start = time.perf_counter_ns()
    n_warm = max(1, policy.warmup_iterations)
    for _ in range(n_warm):
        run_batch(size)
    warm_ns = time.perf_counter_ns() - warm_start
    offsets = schedule(sc)
    log(
        f"multi-stream: {len(offsets) // k} queries of {k} samples (padded to {size}), one every "
        f"{sc.interval_ms:g} ms"
    )
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(HostTrackers(policy=policy, threads=runner.threads_used() or 1))
        if tracker is not None:
            stack.enter_context(tracker)
        d = server.drive(run_batch, offsets, k, [0] + [size] * k, max_delay_ms=0)
    m = Measurement.model_validate(
        {
            **summarize(sc, d, policy.keep_latencies),
            "warmup_iterations": n_warm,
            "warmup_s": warm_ns / 1e9,
        }
    )
    m = host.apply(m, policy)
    if tracker is not None:
        m = gpu.with_telemetry(m, tracker)
    log(
        f"multi-stream: p99 {m.latency_p99_ms:.2f} ms per query of {k}, mean {m.latency_mean_ms:.2f} ms: "
        + ("VALID" if m.valid else f"INVALID ({m.invalid_reason})")
    )
    return [m]
