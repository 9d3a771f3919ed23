"""Scenarios: when queries reach a runner and how they are grouped (MLPerf's vocabulary).

One module per scenario, each with `measure(runner, manifest, tracker) -> list[Measurement]`.
They use only the runner contract (`prepare`, `run`, `start`/`finish`, `in_flight`), so every
framework gets every scenario without code of its own. The scenario and its options are
`runner.spec.scenario`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probes import gpu
from runners.base import Runner
from runners.scenarios import multi_stream, offline, server, single_stream
from schemas import Measurement, ModelManifest

Measure = Callable[[Runner[Any], ModelManifest, "gpu.GpuTracker | None"], list[Measurement]]

SCENARIOS: dict[str, Measure] = {
    "offline": offline.measure,
    "single-stream": single_stream.measure,
    "multi-stream": multi_stream.measure,
    "server": server.measure,
}


def measure(
    runner: Runner[Any], manifest: ModelManifest, tracker: gpu.GpuTracker | None = None
) -> list[Measurement]:
    """The measurements of the runner's spec's scenario (one per batch size, or one for server)."""
    return SCENARIOS[runner.spec.scenario.name](runner, manifest, tracker)
