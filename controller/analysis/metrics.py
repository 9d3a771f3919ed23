"""The metrics a comparison can be made on (plain names: the CLI's help reads them at start-up)."""

from __future__ import annotations

COMPARABLE = (
    "throughput_sps",
    "tokens_per_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "peak_host_mem_mb",
    "load_time_s",
)
HIGHER_IS_BETTER = {"throughput_sps", "tokens_per_s"}
