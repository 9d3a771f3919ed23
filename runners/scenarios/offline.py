"""Offline: back-to-back batches of each `-b` size, the closed loop the study's batch
applications see; its metric is throughput. Asynchronous runners keep their requests in flight."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from probes import gpu
from runners import ensemble
from runners.base import Runner
from runners.core import barrier
from runners.core import measure as core
from runners.core.common import input_batch, log
from runners.core.trackers import HostTrackers
from schemas import Measurement, ModelManifest

SINGLE_STREAM_PERCENTILE = 0.90  # single-stream's metric is p90 latency


def measure(
    runner: Runner[Any], manifest: ModelManifest, tracker: gpu.GpuTracker | None = None
) -> list[Measurement]:
    if isinstance(runner, ensemble.Together):  # each member alone, then together: the slowdown
        return [ensemble.measure_batch(runner, manifest, bs, tracker) for bs in runner.spec.batch_sizes]
    return [measure_batch(runner, manifest, bs, tracker) for bs in runner.spec.batch_sizes]


def measure_batch(
    runner: Runner[Any],
    manifest: ModelManifest,
    batch_size: int,
    tracker: gpu.GpuTracker | None = None,
    one_at_a_time: bool = False,
) -> Measurement:
    """Warm up, then time the closed loop of one batch size until stable or out of time.

    `one_at_a_time` (single-stream): each query is `run` to completion before the next is sent,
    so asynchronous runners keep one request in flight instead of their usual number."""
    spec = runner.spec
    policy = spec.policy
    prepared = runner.prepare(input_batch(manifest, batch_size, spec.dims))

    def step() -> object:
        return runner.start(prepared)

    def query() -> object:
        return runner.run(prepared)

    call: Callable[[], object] = query if one_at_a_time else step
    finish = None if one_at_a_time else runner.finish
    n_warm, warm_ns = core.warm_up(call, policy)
    runner.finish()  # drain the warm-up's requests (asynchronous runners)
    if spec.barrier is not None:
        waited = barrier.wait(spec.barrier, f"batch{batch_size}")
        log(f"batch {batch_size}: co-located parties met (waited {waited:.2f}s)")
    with contextlib.ExitStack() as stack:
        # Co-located parties are each other's load by design: they do not wait for quiet.
        quiet = policy if spec.barrier is None else None
        host = stack.enter_context(HostTrackers(policy=quiet, threads=runner.threads_used() or 1))
        if tracker is not None:
            stack.enter_context(tracker)
        state = core.steady_state(call, policy, finish=finish, probe=host.probe)
    state.warmup_iterations, state.warmup_ns = n_warm, warm_ns
    m = core.summarize(
        batch_size,
        state,
        policy,
        in_flight=1 if one_at_a_time else runner.in_flight(),
        early_stop_percentile=SINGLE_STREAM_PERCENTILE if one_at_a_time else None,
    )
    m = host.apply(m.model_copy(update={"scenario": spec.scenario.name}), policy)
    if tracker is not None:
        m = gpu.with_telemetry(m, tracker)
        telemetry = m.gpu
        assert telemetry is not None
        log(
            f"batch {batch_size}: {telemetry.avg_power_w or 0:.0f} W, "
            f"{m.energy_j_per_4096 or 0:.1f} J per 4096 predictions, "
            f"{telemetry.peak_process_mem_mb or 0:.0f} MB device memory"
            + (f", THROTTLED ({', '.join(telemetry.throttle_reasons)})" if telemetry.throttled else "")
        )
    log(
        f"batch {batch_size}: {m.throughput_sps:.1f} samples/s, p50 {m.latency_p50_ms:.2f} ms, "
        f"p90 {m.latency_p90_ms:.2f} ms, {m.iterations} iterations in {m.duration_s:.1f}s"
        + ("" if m.stable else " (UNSTABLE)")
        + noise_note(m)
    )
    return m


def noise_note(m: Measurement) -> str:
    """What other load did to a measurement, for the runner's log line."""
    parts = []
    if m.windows_discarded:
        parts.append(f"{m.windows_discarded} starved window(s), {m.discarded_s or 0:.1f}s, left out")
    if m.other_cpu_cores is not None:
        parts.append(f"other load {m.other_cpu_cores:.2f} cores")
    if m.starved_share is not None:
        parts.append(f"starved {m.starved_share:.1%}")
    note = "; " + ", ".join(parts) if parts else ""
    return note + (" (NOISY)" if m.noisy else "")
