"""Find-peak: the highest server rate that holds a latency bound, as LoadGen's FindPeakPerformance."""

from __future__ import annotations

from functools import partial

from controller.errors import BenchError
from controller.launch.base import LineSink
from controller.paths import Paths
from controller.run.pipeline import Here, check_destinations, execute_here, prepare
from controller.run.planning import RunRequest, new_group_id
from controller.run.rounds import run_clean
from schemas import RunResult

PEAK_MAX_PROBES = 12
PEAK_PRECISION = 0.05  # bisection stops once the bracket is within 5 % of its lower end
PEAK_START_QPS = 10.0


def probe_ok(result: RunResult) -> bool:
    """A probed rate holds: the server run is VALID (which includes p99 within the bound)."""
    return result.status == "ok" and all(m.valid for m in result.measurements)


def find_peak(
    req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink
) -> tuple[list[RunResult], float | None]:
    """The highest `server.target_qps` whose run is VALID with p99 under `server.latency_bound_ms`,
    as LoadGen's FindPeakPerformance searches: from the start rate (`server.target_qps`, else
    PEAK_START_QPS), double while VALID (halve while INVALID), then bisect the bracket. Every probe
    is its own run, stored, with one group id: a latency-throughput curve. Returns the probes, in
    order, and the peak (None when no probed rate held)."""
    if not any(s.partition("=")[0].strip() == "server.target_qps" for s in req.sets):
        req = req.model_copy(update={"sets": [*req.sets, f"server.target_qps={PEAK_START_QPS:g}"]})
    planned = prepare(req, paths)
    if len(planned) != 1:
        raise BenchError(
            f"--find-peak searches one configuration; this command asks for {len(planned)}",
            "one image, one model, no --sweep",
        )
    one = planned[0].request
    base = [s for s in one.sets if s.partition("=")[0].strip() != "server.target_qps"]
    given = [s for s in one.sets if s.partition("=")[0].strip() == "server.target_qps"]
    rate = float(given[0].partition("=")[2]) if given else PEAK_START_QPS
    check_destinations(paths)
    here = Here(paths, log, on_line, req.launcher)
    group = new_group_id()
    reruns = planned[0].spec.policy.noisy_reruns
    probes: list[RunResult] = []
    low: float | None = None  # highest rate that held
    high: float | None = None  # lowest rate that did not
    while len(probes) < PEAK_MAX_PROBES:
        [probe] = prepare(one.model_copy(update={"sets": [*base, f"server.target_qps={rate:.6g}"]}), paths)
        log(f"peak search, probe {len(probes) + 1}: {rate:.6g} queries/s")
        runs = run_clean(partial(execute_here, probe, here, group=group), log, reruns)
        probes.extend(runs)
        result = runs[-1]
        if result.status != "ok":
            break  # a failure is not a verdict: stop
        m = result.measurements[0]
        held = probe_ok(result)
        log(
            f"  {rate:.6g} queries/s: p99 {m.latency_p99_ms:.2f} ms, achieved {m.achieved_qps or 0:.1f}/s: "
            + ("VALID" if held else f"INVALID ({m.invalid_reason})")
            + (" but noisy" if m.noisy else "")
        )
        if m.noisy:
            # Other load decided this probe, VALID or not: neither bound is known at this rate.
            log(
                f"  peak search stopped: the probe at {rate:.6g} queries/s stayed noisy after "
                f"{reruns} more runs; the peak is of the clean probes below it, if any"
            )
            break
        if held:
            low = rate if low is None else max(low, rate)
        else:
            high = rate if high is None else min(high, rate)
        if low is not None and high is not None:
            if (high - low) / low <= PEAK_PRECISION:
                break
            rate = (low + high) / 2
        elif high is None:
            rate *= 2
        else:
            rate /= 2
    return probes, low
