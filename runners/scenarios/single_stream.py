"""Single-stream: one query at a time, the next sent when the last has completed; the metric is
p90 latency. A query is one batch of each `-b` size (MLPerf's single-stream is `-b 1`). The
measurement policy decides its length, as for offline."""

from __future__ import annotations

from typing import Any

from probes import gpu
from runners.base import Runner
from runners.scenarios.offline import measure_batch
from schemas import Measurement, ModelManifest


def measure(
    runner: Runner[Any], manifest: ModelManifest, tracker: gpu.GpuTracker | None = None
) -> list[Measurement]:
    return [
        measure_batch(runner, manifest, bs, tracker, one_at_a_time=True) for bs in runner.spec.batch_sizes
    ]
