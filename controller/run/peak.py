"""Find-peak: the highest server rate that holds a latency bound, as LoadGen's FindPeakPerformance."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from controller.errors import BenchError
from controller.launch.base import LineSink
from controller.paths import Paths
from controller.run.pipeline import Here, check_destinations, execute_here, prepare
from controller.run.planning import RunRequest, new_group_id
from controller.run.rounds import run_clean
from schemas import RunResult, ServerScenario
from schemas.spec import QPS_TOLERANCE, tail_free_schedule_s

PEAK_MAX_PROBES = 12
PEAK_PRECISION = 0.05  # bisection stops once the bracket is within 5 % of its lower end
PEAK_START_QPS = 10.0
PEAK_STEP = 2.0  # a search from a guess doubles (halves) the rate until the bound is crossed


def probe_ok(result: RunResult) -> bool:
    """A probed rate holds: the server run is VALID (which includes p99 within the bound)."""
    return result.status == "ok" and all(m.valid for m in result.measurements)


@dataclass
class Bracket:
    """A peak search's state: the rates probed, and whether each held. From `start`, the rate is
    multiplied by `step` while it holds (divided while it does not) until the bound is crossed,
    then the bracket [highest that held, lowest that did not] is bisected (its ratio while it
    spans more than a factor 2, its width after) until it is within
    PEAK_PRECISION of its lower end. A search from a known peak takes a small step (1.1: the
    bracket is made in two probes). The next rate depends on the outcomes alone, so probes
    stored by an interrupted search continue it (`record` each, in order, then `next_rate`).

    A `floor` is a rate below which the peak is of no interest (a fraction of a better
    configuration's peak): the search does not go below it, and ends as soon as a rate at or
    under it did not hold (`floored`)."""

    start: float
    step: float = PEAK_STEP
    max_probes: int = PEAK_MAX_PROBES
    rates: list[float] = field(default_factory=list)
    low: float | None = None  # highest rate that held
    high: float | None = None  # lowest rate that did not
    noisy: bool = False  # a probe stayed noisy: neither bound is known at its rate
    floor: float | None = None

    def record(self, rate: float, held: bool, noisy: bool = False) -> None:
        self.rates.append(rate)
        if noisy:
            self.noisy = True
        elif held:
            self.low = rate if self.low is None else max(self.low, rate)
        else:
            self.high = rate if self.high is None else min(self.high, rate)

    @property
    def narrow(self) -> bool:
        low, high = self.low, self.high
        return low is not None and high is not None and (high - low) / low <= PEAK_PRECISION

    @property
    def floored(self) -> bool:
        """A rate at or below the floor did not hold: the peak lies under it."""
        # The floor as a spec holds it (6 significant digits) counts as the floor.
        return self.floor is not None and self.high is not None and self.high <= self.floor * (1 + 1e-5)

    @property
    def done(self) -> bool:
        return self.noisy or self.narrow or self.floored or len(self.rates) >= self.max_probes

    def next_rate(self) -> float:
        if not self.rates:
            return self.start
        if self.low is not None and self.high is not None:
            # Halve the bracket's ratio while it is wide (a bracket from 10 to 2560 queries/s is
            # narrowed in as many probes as one from 10 to 20), its width once it is narrow.
            if self.high > 2 * self.low:
                return math.sqrt(self.low * self.high)
            return (self.low + self.high) / 2
        if self.high is None:
            return self.rates[-1] * self.step
        down = self.rates[-1] / self.step
        return down if self.floor is None else max(down, self.floor)


def probe_runs(
    bracket: Bracket, request: RunRequest, paths: Paths, here: Here, log: LineSink, reruns: int, **tags: Any
) -> Iterator[tuple[float, list[RunResult]]]:
    """A peak search's probes, until its bracket is done: the bracket's next rate as
    `server.target_qps` of `request`, run (made again while noisy, `reruns` times at most: every
    run stored, with `tags`), recorded in the bracket, then yielded with its runs (a caller that
    stops iterating starts no more probes). A probe that failed is yielded unrecorded and ends
    the search: a failure is not a verdict."""
    base = [s for s in request.sets if s.partition("=")[0].strip() != "server.target_qps"]
    while not bracket.done:
        rate = float(f"{bracket.next_rate():.6g}")  # as the spec holds it
        [probe] = prepare(
            request.model_copy(update={"sets": [*base, f"server.target_qps={rate:.6g}"]}), paths
        )
        log(f"peak search, probe {len(bracket.rates) + 1}: {rate:.6g} queries/s")
        runs = run_clean(partial(execute_here, probe, here, **tags), log, reruns)
        result = runs[-1]
        if result.status != "ok" or not result.measurements:
            yield rate, runs
            return
        bracket.record(rate, probe_ok(result), bool(result.measurements[0].noisy))
        yield rate, runs


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
    given = [s for s in one.sets if s.partition("=")[0].strip() == "server.target_qps"]
    rate = float(given[0].partition("=")[2]) if given else PEAK_START_QPS
    sc = planned[0].spec.scenario
    if isinstance(sc, ServerScenario) and sc.latency_bound_ms is not None:
        tail_s = tail_free_schedule_s(sc.latency_bound_ms)
        if max(sc.min_duration_s, sc.min_queries / rate) < tail_s:
            log(
                f"note: a probe of {sc.min_duration_s:g} s can fall {QPS_TOLERANCE:.0%} short of its rate "
                f"through a tail within the bound alone; --set server.min_duration_s={tail_s:g} or more "
                "finds where p99 crosses the bound instead"
            )
    check_destinations(paths)
    here = Here(paths, log, on_line, req.launcher)
    reruns = planned[0].spec.policy.noisy_reruns
    probes: list[RunResult] = []
    bracket = Bracket(rate)
    for rate, runs in probe_runs(bracket, one, paths, here, log, reruns, group=new_group_id()):
        probes.extend(runs)
        result = runs[-1]
        if result.status != "ok":
            continue  # the search ends here
        m = result.measurements[0]
        log(
            f"  {rate:.6g} queries/s: p99 {m.latency_p99_ms:.2f} ms, achieved {m.achieved_qps or 0:.1f}/s: "
            + ("VALID" if probe_ok(result) else f"INVALID ({m.invalid_reason})")
            + (" but noisy" if m.noisy else "")
        )
        if m.noisy:
            # Other load decided this probe, VALID or not: neither bound is known at this rate.
            log(
                f"  peak search stopped: the probe at {rate:.6g} queries/s stayed noisy after "
                f"{reruns} more runs; the peak is of the clean probes below it, if any"
            )
    return probes, bracket.low
