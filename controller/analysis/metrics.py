"""The metrics a comparison can be made on (plain names: the CLI's help reads them at start-up)."""

from __future__ import annotations

import math

COMPARABLE = (
    "throughput_sps",
    "tokens_per_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "peak_host_mem_mb",
    "load_time_s",
    "energy_j_per_4096",
    "energy_j_per_4096_net",
    "cost_per_million",
)
HIGHER_IS_BETTER = {"throughput_sps", "tokens_per_s"}
# Metrics in proportion to a run's mean iteration time: a single run's interval is its within-run
# interval of that time, scaled.
MEAN_TIME = {"latency_mean_ms", "cost_per_million"}
# Dollars per million inferences (samples): not a column, computed from throughput and the host's
# price per hour, which the user gives.
COST = "cost_per_million"
NAMES = {
    "energy_j_per_4096": "J per 4096 inferences, gross (idle power included)",
    "energy_j_per_4096_net": "J per 4096 inferences, net (idle power subtracted)",
    "cost_per_million": "$ per 1M inferences",
}


def cost_per_million(price_per_hour: float, throughput_sps: float) -> float:
    """Dollars per million inferences on a host rented at `price_per_hour` dollars per hour."""
    return price_per_hour / 3600 / throughput_sps * 1e6


def value_sql(metric: str, price_per_hour: float | None) -> str:
    """The metric's value as SQL over `results`: its column, or the cost computed from
    throughput (a run's cost is its own throughput's, so its runs keep their spread)."""
    if metric != COST:
        return metric
    if price_per_hour is None or not math.isfinite(price_per_hour) or price_per_hour <= 0:
        raise ValueError(f"{COST} needs a price per hour above 0, not {price_per_hour!r}")
    return f"({float(price_per_hour)!r} / 3600 / nullif(throughput_sps, 0) * 1e6)"


def describe(metric: str, price_per_hour: float | None = None) -> str:
    """The metric as a table's title names it: `cost_per_million ($ per 1M inferences at $2.5/h)`."""
    what = NAMES.get(metric)
    if metric == COST and price_per_hour is not None:
        what = f"{what} at ${price_per_hour:g}/h"
    return f"{metric} ({what})" if what else metric
